"""Operation blockers while replication runs, and what is left of them after a stop.

A running secondary blocks every operation on its top node (top-id; here the replication
node itself) with `Block device is in use by internal backup job`. The other nodes of the
chain are guarded by other means, each with its own text: the active disk is inline (not
owned by the monitor) and its `file` edge does not share RESIZE; the hidden disk is the
internal backup job's target (`block device is in use by block job: backup`); the secondary
disk is the hidden disk's backing node. Every text below is QEMU's, exactly, on 7.2 and 10.0
(anonymous node names such as `#block123` normalised to `#blockN`).

The model has one of these operations, BlockdevDel on a replication node (the op blocker and
the *_all list); the rest are driven through the Machine API and compared as texts.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from harness.machine import MachineDied
from harness.model import messages as msg
from harness.observe import IO_OK, QMP_OK, QmpResult, status
from harness.ops import (
    REP,
    BlockdevDel,
    Checkpoint,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)

KiB = 1 << 10
MiB = 1 << 20

QUICK = pytest.mark.quick

NODES = ("rep", "active", "hidden", "secondary")
COMMANDS = (
    "blockdev-del",
    "block_resize",
    "block-commit",
    "block-stream",
    "blockdev-backup",
    "blockdev-mirror",
    "blockdev-snapshot-sync",
    "blockdev-snapshot",
)

# ---- QEMU's texts


def top_busy(node: str) -> str:
    return msg.node_busy(node)


def job_busy(node: str) -> str:
    return f"Node '{node}' is busy: block device is in use by block job: backup"


def backing_busy(node: str, parent: str) -> str:
    return f"Node '{node}' is busy: node is used as backing hd of '{parent}'"


def not_owned(node: str) -> str:
    return f"Node {node} is not owned by the monitor"


def in_use(node: str) -> str:
    return f"Node {node} is in use"


def perm_conflict(node: str, perm: str, user: str, user_edge: str, holder: str, edge: str) -> str:
    return (
        f"Permission conflict on node '{node}': permissions '{perm}' are both required by "
        f"{user} (uses node '{node}' as '{user_edge}' child) and unshared by {holder} "
        f"(uses node '{node}' as '{edge}' child)."
    )


NEED_ROOT = "Need a root block node"
# block_resize before QEMU 9.0 (commit "blockdev: Fix block_resize error reporting for op
# blockers") prints the device argument, which is NULL when node-name is given.
RESIZE_NULL_DEVICE = "Device '(null)' is in use"
RESIZE_ACTIVE = perm_conflict(
    "active", "resize", "an unnamed block device", "root", "node 'rep'", "file"
)
BACKUP_ACTIVE = "Could not replace node: " + perm_conflict(
    "hidden", "write", "node '#blockN'", "target", "node 'active'", "backing"
)
NOT_FOUND_NODE = "Failed to find node with node-name='{}'"


def resize_blocked(real: str) -> dict[bool, str]:
    """block_resize's text: before 9.0 (False) the NULL device, from 9.0 (True) the blocker."""
    return {False: RESIZE_NULL_DEVICE, True: real}


# What each command answers while replication runs; None: it succeeds.
RUNNING: dict[tuple[str, str], str | dict[bool, str] | None] = {
    ("blockdev-del", "rep"): top_busy("rep"),
    ("blockdev-del", "active"): not_owned("active"),
    ("blockdev-del", "hidden"): job_busy("hidden"),
    ("blockdev-del", "secondary"): backing_busy("secondary", "hidden"),
    ("block_resize", "rep"): resize_blocked(top_busy("rep")),
    ("block_resize", "active"): RESIZE_ACTIVE,
    ("block_resize", "hidden"): resize_blocked(job_busy("hidden")),
    ("block_resize", "secondary"): resize_blocked(backing_busy("secondary", "hidden")),
    ("block-commit", "rep"): top_busy("rep"),
    ("block-commit", "active"): NEED_ROOT,
    ("block-commit", "hidden"): NEED_ROOT,
    ("block-commit", "secondary"): NEED_ROOT,
    ("block-stream", "rep"): top_busy("rep"),
    ("block-stream", "active"): job_busy("hidden"),
    ("block-stream", "hidden"): job_busy("hidden"),
    ("block-stream", "secondary"): None,
    ("blockdev-backup", "rep"): top_busy("rep"),
    ("blockdev-backup", "active"): BACKUP_ACTIVE,
    ("blockdev-backup", "hidden"): job_busy("hidden"),
    ("blockdev-backup", "secondary"): None,
    ("blockdev-mirror", "rep"): top_busy("rep"),
    ("blockdev-mirror", "active"): NEED_ROOT,
    ("blockdev-mirror", "hidden"): NEED_ROOT,
    ("blockdev-mirror", "secondary"): NEED_ROOT,
    ("blockdev-snapshot-sync", "rep"): top_busy("rep"),
    ("blockdev-snapshot-sync", "active"): None,
    ("blockdev-snapshot-sync", "hidden"): job_busy("hidden"),
    ("blockdev-snapshot-sync", "secondary"): backing_busy("secondary", "hidden"),
    ("blockdev-snapshot", "rep"): top_busy("rep"),
    ("blockdev-snapshot", "active"): None,
    ("blockdev-snapshot", "hidden"): job_busy("hidden"),
    ("blockdev-snapshot", "secondary"): backing_busy("secondary", "hidden"),
}


def command(s, name: str, node: str) -> tuple[str, dict]:
    """QMP command and arguments of `name` on `node`; creates the extra images it needs."""
    m = s.topo.machine("secondary")
    wd = s.topo.chain.workdir
    if name == "blockdev-del":
        return name, {"node-name": node}
    if name == "block_resize":
        return name, {"node-name": node, "size": 128 * MiB}
    if name == "block-commit":
        return name, {"device": node, "job-id": "j"}
    if name == "block-stream":
        return name, {"device": node, "job-id": "j"}
    if name in ("blockdev-backup", "blockdev-mirror"):
        _image(s, wd / "tgt.qcow2")
        m.qmp_ok("blockdev-add", **_qcow2("tgt", wd / "tgt.qcow2"))
        return name, {"device": node, "job-id": "j", "target": "tgt", "sync": "full"}
    if name == "blockdev-snapshot-sync":
        # mode=existing: QEMU would write the backing node's json: filename into a new
        # image's header, and that fails (EINVAL) once it passes qcow2's 1023-byte limit.
        _image(s, wd / "snap.qcow2")
        return name, {
            "mode": "existing",
            "node-name": node,
            "snapshot-file": str(wd / "snap.qcow2"),
            "snapshot-node-name": "snap",
            "format": "qcow2",
        }
    if name == "blockdev-snapshot":
        _image(s, wd / "ov.qcow2")
        m.qmp_ok("blockdev-add", **_qcow2("ov", wd / "ov.qcow2"), backing=None)
        return name, {"node": node, "overlay": "ov"}
    raise KeyError(name)


def _image(s, path) -> None:
    subprocess.run(
        [*s.topo.build.command(s.topo.build.img), "create", "-q", "-f", "qcow2", str(path), "64M"],
        check=True,
        timeout=30,
    )


def _qcow2(name: str, path) -> dict:
    return {"driver": "qcow2", "node-name": name, "file": {"driver": "file", "filename": str(path)}}


def normalised(res: QmpResult) -> QmpResult:
    if res.desc is None:
        return res
    return QmpResult(res.ok, res.value, res.error_class, re.sub(r"#block\d+", "#blockN", res.desc))


def answer(expected: str | dict[bool, str] | None, profile) -> QmpResult:
    if isinstance(expected, dict):
        expected = expected[profile.at_least(9, 0)]
    if expected is None:
        return QMP_OK
    return QmpResult(False, None, "GenericError", expected)


# ---- while running


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("name", "node"),
    [
        pytest.param(
            name,
            node,
            id=f"{name}-{node}",
            marks=QUICK if (name, node) == ("blockdev-del", "rep") else (),
        )
        for name in COMMANDS
        for node in NODES
    ],
)
def test_operation_while_running(secondary, profile, name, node):
    s = secondary()
    m = s.topo.machine("secondary")
    cmd, args = command(s, name, node)
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x11), PrimaryWrite(MiB, 64 * KiB, 0x22))
    got = normalised(m.qmp(cmd, **args))
    assert got == answer(RUNNING[name, node], profile), f"{cmd} {args}"
    if not got.ok:
        # Refused: replication goes on undisturbed.
        s.run(Write(4 * KiB, 4 * KiB, 0x33), Checkpoint(), Read(0, 2 * MiB))
        s.expect(Status(), status(None))
        s.check_layers_live()
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_blockdev_del_of_the_top_is_refused_by_the_model_too(secondary):
    s = secondary()
    s.expect(Start(primary=False), QMP_OK)
    s.expect(BlockdevDel(REP), QmpResult(False, None, "GenericError", top_busy(REP)))
    s.expect(BlockdevDel(REP), QmpResult(False, None, "GenericError", top_busy(REP)))
    s.expect(Status(), status(None))
    s.run(Write(0, 4 * KiB, 0x11), Checkpoint())
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
@pytest.mark.xfail(
    strict=True,
    reason="QEMU bug (7.2, 10.0): only top-id's node is blocked; a snapshot of the active "
    "disk is allowed while replication runs, and checkpoints then empty the new overlay "
    "instead of the active disk",
)
def test_snapshot_of_the_active_disk_is_refused(secondary):
    s = secondary()
    s.run(Start(primary=False))
    cmd, args = command(s, "blockdev-snapshot-sync", "active")
    got = s.topo.machine("secondary").qmp(cmd, **args)
    assert not got.ok
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_snapshot_of_the_active_disk_defeats_the_checkpoint(secondary):
    """What that allowed snapshot does (pinned): the secondary VM's write made before it
    survives the checkpoint and the failover commits it into the secondary disk."""
    s = secondary()
    m = s.topo.machine("secondary")
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x11))
    cmd, args = command(s, "blockdev-snapshot-sync", "active")
    assert m.qmp(cmd, **args) == QMP_OK
    rep = s.topo.guests[REP]
    assert rep.write(64 * KiB, 64 * KiB, 0x22) == IO_OK
    assert m.qmp("xen-colo-do-checkpoint") == QMP_OK
    # A checkpoint must drop every write of the secondary VM; the one in "active" stays.
    stale = ((0, 64 * KiB, 0x11), (64 * KiB, 64 * KiB, 0x00))
    assert rep.read(0, 128 * KiB, stale).data == stale
    assert m.qmp("xen-set-replication", enable=False, primary=False, failover=True) == QMP_OK
    s.real.apply(Settle(), QMP_OK)
    assert s.topo.export_io is not None
    assert s.topo.export_io.read(0, 128 * KiB, stale).data == stale


# ---- block_resize on an unblocked replication node


STAGES_WITHOUT_BLOCKER = [
    pytest.param((), id="none", marks=QUICK),
    pytest.param((Start(primary=False), Stop(primary=False)), id="plain-stop"),
    pytest.param(
        (Start(primary=False), Stop(primary=False, failover=True), Settle()), id="failover"
    ),
]


def _reach(s, steps) -> None:
    for op in steps:
        s.do(op)


@pytest.mark.secondary
@pytest.mark.parametrize("steps", STAGES_WITHOUT_BLOCKER)
@pytest.mark.xfail(
    strict=True,
    reason="QEMU bug (7.2, 10.0): block_resize of a replication node aborts QEMU "
    "(replication_child_perm never takes RESIZE on `file`, the filter forwards the truncate: "
    "bdrv_co_write_req_prepare: Assertion `child->perm & BLK_PERM_RESIZE' failed)",
)
def test_block_resize_of_the_replication_node_does_not_crash(secondary, steps):
    s = secondary()
    _reach(s, steps)
    got = s.topo.machine("secondary").qmp("block_resize", **{"node-name": REP, "size": 128 * MiB})
    # Either answer is acceptable, as long as QEMU lives on.
    assert got.ok or got.error_class == "GenericError"
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_block_resize_of_the_replication_node_aborts(secondary):
    """The bug above, pinned: the exact assertion."""
    s = secondary()
    m = s.topo.machine("secondary")
    with pytest.raises(MachineDied) as died:
        m.qmp("block_resize", **{"node-name": REP, "size": 64 * MiB})
    assert died.value.signal == "SIGABRT"
    assert "Assertion `child->perm & BLK_PERM_RESIZE' failed" in died.value.stderr_tail


@pytest.mark.secondary
@pytest.mark.parametrize("node", [pytest.param("rep", marks=QUICK), "hidden", "secondary"])
def test_block_resize_names_the_blocker(request, secondary, profile, node):
    """block_resize reports the op blocker's own text (fixed in QEMU 9.0)."""
    if not profile.at_least(9, 0):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="QEMU bug (7.2, fixed in 9.0 by 'blockdev: Fix block_resize error "
                "reporting for op blockers'): block_resize with node-name reports "
                "\"Device '(null)' is in use\"",
            )
        )
    s = secondary()
    s.do(Start(primary=False))
    got = s.topo.machine("secondary").qmp("block_resize", **{"node-name": node, "size": 64 * MiB})
    want = RUNNING["block_resize", node]
    assert isinstance(want, dict)
    assert got.desc == want[True]
    s.finish()


# ---- after the stop: the blockers are gone


LIFTED_STAGES = ("none", "plain-stop", "failover")
STEPS = {
    "none": (),
    "plain-stop": (Start(primary=False), Stop(primary=False)),
    "failover": (Start(primary=False), Stop(primary=False, failover=True), Settle()),
}


def _commit_rep(stage: str) -> str:
    if stage == "failover":
        return "Can't mirror node into itself"
    return perm_conflict(
        "active", "consistent read", "node 'rep'", "file", "commit job 'j'", "intermediate node"
    )


def _stream_rep(stage: str) -> str:
    node = "secondary" if stage == "failover" else "active"
    return perm_conflict(node, "write", "node 'rep'", "file", "stream job 'j'", "intermediate node")


def _gone_or(stage: str, node: str, text: str) -> str:
    return NOT_FOUND_NODE.format(node) if stage == "failover" else text


LIFTED: dict[tuple[str, str], object] = {
    ("blockdev-del", "rep"): lambda st: None,
    ("blockdev-del", "hidden"): lambda st: _gone_or(st, "hidden", backing_busy("hidden", "active")),
    ("blockdev-del", "secondary"): lambda st: in_use("secondary"),
    ("block-commit", "rep"): _commit_rep,
    ("block-stream", "rep"): _stream_rep,
    ("blockdev-backup", "rep"): lambda st: None,
    ("blockdev-mirror", "rep"): lambda st: None,
    ("blockdev-snapshot-sync", "rep"): lambda st: None,
    ("blockdev-snapshot", "rep"): lambda st: None,
}


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("name", "node", "stage"),
    [
        pytest.param(
            name,
            node,
            stage,
            id=f"{name}-{node}-{stage}",
            marks=QUICK if (name, node, stage) == ("blockdev-del", "rep", "plain-stop") else (),
        )
        for name, node in LIFTED
        for stage in LIFTED_STAGES
    ],
)
def test_operation_without_the_blocker(secondary, stage, name, node):
    s = secondary()
    _reach(s, STEPS[stage])
    cmd, args = command(s, name, node)
    got = normalised(s.topo.machine("secondary").qmp(cmd, **args))
    want = LIFTED[name, node](stage)  # type: ignore[operator]
    assert got == answer(want, None), f"{cmd} {args}: {got}"
    assert "internal backup job" not in (got.desc or "")


@pytest.mark.secondary
@pytest.mark.parametrize(
    "stage", [pytest.param(st, marks=QUICK if st == "plain-stop" else ()) for st in LIFTED_STAGES]
)
def test_blockdev_del_after_stop_leaves_no_replication_node(secondary, stage):
    s = secondary("secondary-prefilled")
    _reach(s, STEPS[stage])
    s.expect(BlockdevDel(REP), QMP_OK)
    # No replication node is left: every command succeeds, the status is clean.
    s.expect(Status(), status(None))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Checkpoint(), QMP_OK)
    s.expect(Stop(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    s.finish()
