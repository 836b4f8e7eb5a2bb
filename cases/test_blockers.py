"""Operation blockers while replication runs, and what is left of them after a stop.

A running secondary blocks every operation on its top node (top-id; here the replication
node itself) with `Block device is in use by internal backup job`. The other nodes of the
chain are guarded by other means, each with its own text: the active disk is inline (not
owned by the monitor) and its `file` edge does not share RESIZE; the hidden disk is the
internal backup job's target (`block device is in use by block job: backup`); the secondary
disk is the hidden disk's backing node. Every text is QEMU's, exactly, as the release under
test words it (`msg`, its profile's texts; anonymous node names such as `#block123`
normalised to `#blockN`).

The model has one of these operations, BlockdevDel on a replication node (the op blocker and
the *_all list); the rest are driven through the Machine API and compared as texts.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from harness.faults import ReleaseCommit, Throttle
from harness.graph import commit_in_flight
from harness.machine import MachineDied
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
from harness.units import KiB, MiB

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

# ---- QEMU's texts (msg: the profile's)


def blocker(msg, node: str) -> str:
    """What guards `node` while replication runs: the op blocker on the top node (top-id),
    the backup job on its target (the hidden disk), the hidden disk's backing edge."""
    if node == "rep":
        return msg.node_busy(node)
    if node == "hidden":
        return msg.job_busy(node)
    assert node == "secondary", node
    return msg.backing_busy(node, "hidden")


def running(msg) -> dict[tuple[str, str], str | None]:
    """What each command answers while replication runs; None: it succeeds."""
    top, job, backing = blocker(msg, "rep"), blocker(msg, "hidden"), blocker(msg, "secondary")
    # block_resize's own BlockBackend (new) wants RESIZE, rep's `file` edge does not share it
    resize_active = msg.perm_conflict(
        "active",
        "resize",
        "an unnamed block device",
        "root",
        "node 'rep'",
        "file",
        existing="holder",
    )
    # the new backup's filter above the active disk: the active disk's backing edge then
    # no longer shares WRITE on the hidden disk, which the running backup job's filter
    # (#blockN, the replication's own) writes as its target
    backup_active = msg.backup_filter_refused(
        msg.perm_conflict(
            "hidden",
            "write",
            "node '#blockN'",
            "target",
            "node 'active'",
            "backing",
            existing="user",
        )
    )
    return {
        ("blockdev-del", "rep"): top,
        ("blockdev-del", "active"): msg.not_owned("active"),
        ("blockdev-del", "hidden"): job,
        ("blockdev-del", "secondary"): backing,
        ("block_resize", "rep"): msg.block_resize_busy(top),
        ("block_resize", "active"): resize_active,
        ("block_resize", "hidden"): msg.block_resize_busy(job),
        ("block_resize", "secondary"): msg.block_resize_busy(backing),
        ("block-commit", "rep"): top,
        ("block-commit", "active"): msg.NEED_ROOT,
        ("block-commit", "hidden"): msg.NEED_ROOT,
        ("block-commit", "secondary"): msg.NEED_ROOT,
        ("block-stream", "rep"): top,
        ("block-stream", "active"): job,
        ("block-stream", "hidden"): job,
        ("block-stream", "secondary"): None,
        ("blockdev-backup", "rep"): top,
        ("blockdev-backup", "active"): backup_active,
        ("blockdev-backup", "hidden"): job,
        ("blockdev-backup", "secondary"): None,
        ("blockdev-mirror", "rep"): top,
        ("blockdev-mirror", "active"): msg.NEED_ROOT,
        ("blockdev-mirror", "hidden"): msg.NEED_ROOT,
        ("blockdev-mirror", "secondary"): msg.NEED_ROOT,
        ("blockdev-snapshot-sync", "rep"): top,
        ("blockdev-snapshot-sync", "active"): None,
        ("blockdev-snapshot-sync", "hidden"): job,
        ("blockdev-snapshot-sync", "secondary"): backing,
        ("blockdev-snapshot", "rep"): top,
        ("blockdev-snapshot", "active"): None,
        ("blockdev-snapshot", "hidden"): job,
        ("blockdev-snapshot", "secondary"): backing,
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


def answer(expected: str | None) -> QmpResult:
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
            # one quick case per owner of the blocker: the filter (rep), the backup job
            # (its target, the hidden disk), the hidden disk's backing edge (secondary)
            marks=QUICK if name == "blockdev-del" and node != "active" else (),
        )
        for name in COMMANDS
        for node in NODES
    ],
)
def test_operation_while_running(secondary, msg, name, node):
    s = secondary()
    m = s.topo.machine("secondary")
    cmd, args = command(s, name, node)
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x11), PrimaryWrite(MiB, 64 * KiB, 0x22))
    got = normalised(m.qmp(cmd, **args))
    assert got == answer(running(msg)[name, node]), f"{cmd} {args}"
    if not got.ok:
        # Refused: replication goes on undisturbed.
        s.run(Write(4 * KiB, 4 * KiB, 0x33), Checkpoint(), Read(0, 2 * MiB))
        s.expect(Status(), status(None))
        s.check_layers_live()
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_blockdev_del_of_the_top_is_refused_by_the_model_too(secondary, msg):
    s = secondary()
    s.expect(Start(primary=False), QMP_OK)
    s.expect(BlockdevDel(REP), QmpResult(False, None, "GenericError", msg.node_busy(REP)))
    s.expect(BlockdevDel(REP), QmpResult(False, None, "GenericError", msg.node_busy(REP)))
    s.expect(Status(), status(None))
    s.run(Write(0, 4 * KiB, 0x11), Checkpoint())
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_snapshot_of_the_active_disk_is_refused(secondary, profile, xfail_bug):
    xfail_bug(profile.active_disk_snapshot_allowed)
    s = secondary()
    s.run(Start(primary=False))
    cmd, args = command(s, "blockdev-snapshot-sync", "active")
    got = s.topo.machine("secondary").qmp(cmd, **args)
    assert not got.ok
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_snapshot_of_the_active_disk_defeats_the_checkpoint(secondary, profile, needs_bug):
    """What that allowed snapshot does (pinned): the secondary VM's write made before it
    survives the checkpoint and the failover commits it into the secondary disk."""
    needs_bug(profile.active_disk_snapshot_allowed)
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
def test_block_resize_of_the_replication_node_does_not_crash(secondary, profile, xfail_bug, steps):
    xfail_bug(profile.block_resize_aborts)
    s = secondary()
    _reach(s, steps)
    got = s.topo.machine("secondary").qmp("block_resize", **{"node-name": REP, "size": 128 * MiB})
    # Either answer is acceptable, as long as QEMU lives on.
    assert got.ok or got.error_class == "GenericError"
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_block_resize_of_the_replication_node_aborts(secondary, profile, msg, needs_bug):
    """The bug above, pinned: the exact assertion."""
    needs_bug(profile.block_resize_aborts)
    s = secondary()
    m = s.topo.machine("secondary")
    with pytest.raises(MachineDied) as died:
        m.qmp("block_resize", **{"node-name": REP, "size": 64 * MiB})
    assert died.value.signal == "SIGABRT"
    assert msg.RESIZE_ASSERTION in died.value.stderr_tail


@pytest.mark.secondary
@pytest.mark.parametrize("node", [pytest.param("rep", marks=QUICK), "hidden", "secondary"])
def test_block_resize_names_the_blocker(secondary, profile, msg, xfail_bug, node):
    """block_resize reports the op blocker's own text."""
    xfail_bug(profile.block_resize_null_device)
    s = secondary()
    s.do(Start(primary=False))
    got = s.topo.machine("secondary").qmp("block_resize", **{"node-name": node, "size": 64 * MiB})
    assert got.desc == blocker(msg, node)
    s.finish()


# ---- after the stop: the blockers are gone


LIFTED_STAGES = ("none", "plain-stop", "failover")
STEPS = {
    "none": (),
    "plain-stop": (Start(primary=False), Stop(primary=False)),
    "failover": (Start(primary=False), Stop(primary=False, failover=True), Settle()),
}


def _commit_rep(msg, stage: str) -> str:
    if stage == "failover":
        return msg.MIRROR_INTO_ITSELF
    return msg.perm_conflict(
        "active",
        "consistent read",
        "node 'rep'",
        "file",
        "commit job 'j'",
        "intermediate node",
        existing="user",
    )


def _stream_rep(msg, stage: str) -> str:
    node = "secondary" if stage == "failover" else "active"
    return msg.perm_conflict(
        node, "write", "node 'rep'", "file", "stream job 'j'", "intermediate node", existing="user"
    )


def _del_hidden(msg, stage: str) -> str:
    if stage == "failover":
        return msg.node_not_found("hidden")
    return msg.backing_busy("hidden", "active")


# What each command answers once the blockers are gone, (msg, stage) -> text; None: it
# succeeds.
LIFTED: dict[tuple[str, str], object] = {
    ("blockdev-del", "rep"): lambda msg, st: None,
    ("blockdev-del", "hidden"): _del_hidden,
    ("blockdev-del", "secondary"): lambda msg, st: msg.in_use("secondary"),
    ("block-commit", "rep"): _commit_rep,
    ("block-stream", "rep"): _stream_rep,
    ("blockdev-backup", "rep"): lambda msg, st: None,
    ("blockdev-mirror", "rep"): lambda msg, st: None,
    ("blockdev-snapshot-sync", "rep"): lambda msg, st: None,
    ("blockdev-snapshot", "rep"): lambda msg, st: None,
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
def test_operation_without_the_blocker(secondary, profile, msg, xfail_bug, stage, name, node):
    if name == "block-stream":
        if profile.without_stream_through_filters:
            pytest.skip(profile.without_stream_through_filters)
        xfail_bug(profile.block_stream_aborts, raises=MachineDied)
    s = secondary()
    _reach(s, STEPS[stage])
    cmd, args = command(s, name, node)
    got = normalised(s.topo.machine("secondary").qmp(cmd, **args))
    want = LIFTED[name, node](msg, stage)  # type: ignore[operator]
    assert got == answer(want), f"{cmd} {args}: {got}"
    assert "internal backup job" not in (got.desc or "")


@pytest.mark.secondary
@pytest.mark.parametrize("stage", LIFTED_STAGES)
def test_block_stream_of_the_replication_node_aborts(secondary, profile, msg, needs_bug, stage):
    """The known bug that stops block-stream above, pinned: &error_abort on the permission
    conflict with the node's `file` edge, whose text stderr carries."""
    needs_bug(profile.block_stream_aborts)
    s = secondary()
    _reach(s, STEPS[stage])
    with pytest.raises(MachineDied) as died:
        s.topo.machine("secondary").qmp("block-stream", device=REP, **{"job-id": "j"})
    assert died.value.signal == "SIGABRT"
    assert msg.PERM_CHECK_ABORT in died.value.stderr_tail
    assert _stream_rep(msg, stage) in died.value.stderr_tail


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


# ---- during the failover commit: the commit job's blockers

# A 4 KiB/s throttle over the secondary disk holds the commit (cases/test_status.py)
_THROTTLE = Throttle("thr", "secondary", "tg", (("tg", {"bps-write": 4096}), ("unlimited", {})))


@pytest.mark.quick
@pytest.mark.secondary
def test_failover_commit_blocks_its_nodes(secondary, msg):
    """The failover's commit job blocks every operation on each node it adds, with its own
    text, until it completes: its source (the active disk, which nothing guarded while
    the backup job ran), the hidden disk between (the backup job's target until then) and
    its target (here the throttle over the secondary disk, until then guarded as the
    hidden disk's backing node; its BlockBackend, the commit's, makes blockdev-del say
    `in use` first, so block_resize asks). Then the active and hidden disks are gone."""
    s = secondary(over_secondary=_THROTTLE)
    m = s.topo.machine("secondary")
    s.run(Start(primary=False), *(Write(i * MiB, 64 * KiB, 0x11 + i) for i in range(4)))

    def deletes() -> tuple[str | None, ...]:
        return tuple(m.qmp("blockdev-del", **{"node-name": n}).desc for n in ("active", "hidden"))

    def resize() -> str | None:
        return m.qmp("block_resize", **{"node-name": "thr", "size": 128 * MiB}).desc

    assert deletes() == (msg.not_owned("active"), msg.job_busy("hidden"))
    assert resize() == msg.block_resize_busy(msg.backing_busy("thr", "hidden"))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    assert deletes() == (msg.job_busy("active", "commit"), msg.job_busy("hidden", "commit"))
    assert resize() == msg.block_resize_busy(msg.job_busy("thr", "commit"))
    assert commit_in_flight(m), "the commit ended during the commands"
    s.do(ReleaseCommit(node="thr", group="unlimited"))
    s.do(Settle())
    assert deletes() == (msg.node_not_found("active"), msg.node_not_found("hidden"))
    s.do(Read(0, 4 * MiB))
    s.finish()
