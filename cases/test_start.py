"""Starting replication (`xen-set-replication enable=true`): every precondition and its exact
text, in QEMU's order, and what a start does to the graph and the layers.

replication_start (7.2 = 10.0), in order:
  DONE or FAILOVER -> silent success; any other stage but NONE -> "Block replication is
  running or done"; mode mismatch -> "The parameter mode's value is invalid, needs M, but
  got N"; primary: RUNNING. Secondary: active without backing; hidden without backing;
  secondary disk without a BlockBackend; lengths differ; active or hidden without
  make_empty; (reopen hidden/secondary read-write; attach the `hidden disk` and
  `secondary disk` children; set s->blocker) top-id must name a root containing the
  node -> "No top_bs or it is invalid"; block the top's operations; start the backup job;
  RUNNING; a checkpoint (empties active and hidden); error cleared.
Before all of that, qmp_xen_set_replication refuses `failover` with enable=true.

Each refusal is followed by proof that nothing changed (status, I/O, the graph), and by a
retry: a retry repeats the same answer, except after "No top_bs or it is invalid", where
QEMU 7.2 and 10.0 abort (a known bug of the model's profile: the model predicts it, and a
strict xfail states what QEMU should do). The texts are the profile's (`msg`).
"""

from __future__ import annotations

import re

import pytest

from harness.faults import ReleaseCommit, Throttle, over_secondary
from harness.graph import block_job_nodes, node_info, rep_edges
from harness.images import Recipe, load_recipe
from harness.machine import MachineDied
from harness.observe import IO_EIO, IO_OK, QMP_OK, Crashed, IoResult, qmp_error, status
from harness.ops import (
    PRIMARY,
    REP,
    SECONDARY,
    Checkpoint,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)
from harness.topology.standard import secondary_chain
from harness.topology.values import Export, Null, Quorum
from harness.units import MiB

QUICK = pytest.mark.quick

OPEN_EDGES = {"file": "active"}


def running_edges(profile) -> dict[str, str]:
    """What the graph shows once a secondary start got past the attach step: the children
    start adds where the release attaches them (profile.start_attaches_children; else the
    node keeps `file` only), the secondary disk's parents moved to the backup's filter."""
    if not profile.start_attaches_children:
        return OPEN_EDGES
    return {
        "file": "active",
        "hidden disk": "hidden",
        "secondary disk": profile.backup_filter_driver,
    }


def leaked_edges(profile) -> dict[str, str]:
    """... and after a start refused at the top-id check: the children stay attached, to the
    secondary disk itself (no filter was inserted)."""
    if not profile.start_attaches_children:
        return OPEN_EDGES
    return {"file": "active", "hidden disk": "hidden", "secondary disk": "secondary"}


def abort_line(msg) -> re.Pattern[str]:
    """glibc's assert() line for the start-retry abort."""
    return re.compile(
        r"^qemu-system-x86_64: \S*util/error\.c:\d+: error_setv: "
        + re.escape(msg.ERRP_ASSERTION)
        + r"\.$",
        re.M,
    )


def _no_backing_recipe(layer: str) -> Recipe:
    """A secondary chain whose `layer` is raw, so it cannot have a backing node."""
    layers = load_recipe("secondary").to_dict()["layers"]
    layers[layer] = {"format": "raw", "size": "64M"}
    if layer == "active":
        layers["active"].pop("backing", None)
    return Recipe.from_dict({"layers": layers}, source=f"<secondary, raw {layer}>")


# ---- the secondary's preconditions

REFUSALS = [
    pytest.param(
        "secondary",
        {"active_backing": False},
        lambda msg: msg.NO_ACTIVE_BACKING,
        id="active-backing-null",
    ),
    pytest.param(
        _no_backing_recipe("active"), {}, lambda msg: msg.NO_ACTIVE_BACKING, id="active-raw"
    ),
    pytest.param(
        "secondary",
        {"hidden_backing": False},
        lambda msg: msg.NO_HIDDEN_BACKING,
        id="hidden-backing-null",
    ),
    pytest.param(
        _no_backing_recipe("hidden"), {}, lambda msg: msg.NO_HIDDEN_BACKING, id="hidden-raw"
    ),
    pytest.param(
        "secondary",
        {"export": False},
        lambda msg: msg.NO_BLOCK_BACKEND,
        id="no-block-backend",
        marks=QUICK,
    ),
    pytest.param("length-mismatch-active", {}, lambda msg: msg.LENGTHS_DIFFER, id="length-active"),
    pytest.param("length-mismatch-hidden", {}, lambda msg: msg.LENGTHS_DIFFER, id="length-hidden"),
    pytest.param(
        "length-mismatch-secondary", {}, lambda msg: msg.LENGTHS_DIFFER, id="length-secondary"
    ),
    # vmdk (monolithicSparse, the default subformat) takes a backing node and opens fine;
    # qed likewise: both are refused only at the make_empty check.
    pytest.param("active-vmdk", {}, lambda msg: msg.NO_MAKE_EMPTY, id="active-vmdk"),
    pytest.param("hidden-qed", {}, lambda msg: msg.NO_MAKE_EMPTY, id="hidden-qed"),
    pytest.param(
        secondary_chain(active_format="qed"),
        {},
        lambda msg: msg.NO_MAKE_EMPTY,
        id="active-qed",
    ),
    pytest.param(
        secondary_chain(hidden_format="vmdk"),
        {},
        lambda msg: msg.NO_MAKE_EMPTY,
        id="hidden-vmdk",
    ),
    # the order of the checks, where two preconditions fail at once
    pytest.param(
        "secondary",
        {"active_backing": False, "export": False},
        lambda msg: msg.NO_ACTIVE_BACKING,
        id="order-active-backing-before-backend",
    ),
    pytest.param(
        "secondary",
        {"hidden_backing": False, "export": False},
        lambda msg: msg.NO_HIDDEN_BACKING,
        id="order-hidden-backing-before-backend",
    ),
    pytest.param(
        "length-mismatch-hidden",
        {"export": False},
        lambda msg: msg.NO_BLOCK_BACKEND,
        id="order-backend-before-lengths",
    ),
    pytest.param(
        secondary_chain(active_format="vmdk", active_size="32M"),
        {},
        lambda msg: msg.LENGTHS_DIFFER,
        id="order-lengths-before-make-empty",
    ),
    pytest.param(
        "hidden-qed",
        {"top_id": "no-such-node"},
        lambda msg: msg.NO_MAKE_EMPTY,
        id="order-make-empty-before-top-id",
    ),
]


@pytest.mark.quick  # every precondition of start, in the default set
@pytest.mark.secondary
@pytest.mark.parametrize(("recipe", "options", "text"), REFUSALS)
def test_start_refused(secondary, msg, recipe, options, text):
    """Refused before the attach step: nothing changes, and a retry says the same."""
    text = text(msg)
    s = secondary(recipe, **options)
    m = s.topo.machine(SECONDARY)
    s.expect(Start(primary=False), qmp_error(text))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    assert rep_edges(m) == OPEN_EDGES
    assert block_job_nodes(m) == 0
    s.expect(Start(primary=False), qmp_error(text))
    s.finish()


# ---- top-id


# Nodes the topology creates after rep (harness.topology.standard.secondary's `extra`);
# the model decides from them whether the top-id names a root above rep.
_extra_null = {"extra": (Null("extra"),)}
_other_blockbackend = {"extra": (Null("other", drive_id="other"),)}
# rep's parent (quorum) does not share WRITE: guest I/O goes through the root
_quorum_above = {"extra": (Quorum("q", (REP,)),), "guest_through": "q"}
_export_rep = {"extra": (Export(REP, REP, "rep-export"),)}


# Quick: one case per path of the lookup (a name that finds nothing, a BlockBackend's, a
# node's) and of the check (not a root; an unrelated root; GOOD_TOPS: the node itself, a
# root above it).
BAD_TOPS = [
    pytest.param("no-such-node", {}, None, id="names-nothing", marks=QUICK),
    pytest.param("", {}, None, id="empty"),
    pytest.param("active", {}, None, id="active-not-root"),
    pytest.param("hidden", {}, None, id="hidden-not-root"),
    pytest.param("secondary", {}, None, id="secondary-not-root"),
    pytest.param("secondary-file", {}, None, id="protocol-node-not-root"),
    pytest.param("extra", {}, _extra_null, id="unrelated-root-node", marks=QUICK),
    pytest.param("other", {}, _other_blockbackend, id="unrelated-blockbackend", marks=QUICK),
    pytest.param(REP, {}, _quorum_above, id="rep-under-quorum", marks=QUICK),
]


@pytest.mark.secondary
@pytest.mark.parametrize(("top_id", "options", "setup"), BAD_TOPS)
def test_start_bad_top_id(secondary, profile, msg, top_id, options, setup):
    """ "No top_bs or it is invalid": the stage stays NONE, but the children attached just
    before the check stay attached (to the secondary disk itself: no backup filter), and
    the hidden disk stays read-write (inferred from the sources: the reopen back to
    read-only gets no errp and fails, the `hidden disk` child holding WRITE). Where start
    attaches no children (profile.start_attaches_children), nothing holds WRITE on the
    hidden disk and that reopen makes it read-only again."""
    s = secondary(top_id=top_id, **options, **(setup or {}))
    m = s.topo.machine(SECONDARY)
    assert node_info(m, "hidden")["ro"] is True
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    assert rep_edges(m) == leaked_edges(profile)
    assert block_job_nodes(m) == 0
    assert node_info(m, "hidden")["ro"] is not profile.start_attaches_children
    s.finish()


GOOD_TOPS = [
    pytest.param(REP, {}, None, REP, id="the-node-itself", marks=QUICK),
    pytest.param(REP, {}, _export_rep, None, id="the-node-exported"),
    pytest.param("q", {}, _quorum_above, "q", id="quorum-above", marks=QUICK),
    pytest.param("repblk", {"drive_id": "repblk"}, None, None, id="its-blockbackend"),
    pytest.param(REP, {"drive_id": "repblk"}, None, None, id="node-name-under-blockbackend"),
]


@pytest.mark.secondary
@pytest.mark.parametrize(("top_id", "options", "setup", "blocked"), GOOD_TOPS)
def test_start_good_top_id(secondary, profile, msg, top_id, options, setup, blocked):
    """A root containing the node: start works, the children appear, the backup job runs,
    the top node's operations are blocked (blockdev-del answers with the blocker)."""
    s = secondary(top_id=top_id, **options, **(setup or {}))
    m = s.topo.machine(SECONDARY)
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    assert rep_edges(m) == running_edges(profile)
    assert block_job_nodes(m) == 1
    assert node_info(m, "hidden")["ro"] is False
    if blocked is not None:
        assert m.qmp("blockdev-del", **{"node-name": blocked}) == qmp_error(msg.node_busy(blocked))
    s.run(Write(0, 65536, 0x33), PrimaryWrite(65536, 65536, 0x44), Read(0, 3 * 65536))
    s.check_layers_live()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Read(0, 3 * 65536), IoResult(True, None, ((0, 65536, 0x33), (65536, 131072, 0))))
    s.finish()


# ---- the retry after "No top_bs or it is invalid"


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("top_id", "setup"),
    [
        pytest.param("no-such-node", None, id="names-nothing", marks=QUICK),
        pytest.param("active", None, id="not-root"),
        pytest.param("extra", _extra_null, id="unrelated-root"),
    ],
)
def test_start_retry_after_bad_top_aborts(secondary, profile, msg, needs_bug, top_id, setup):
    """Known QEMU bug, predicted by the model's profile: the second start aborts in
    error_setv (s->blocker was set before the top_bs check and never cleared)."""
    needs_bug(profile.start_retry_after_bad_top_aborts)
    s = secondary(top_id=top_id, **(setup or {}))
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    got = s.expect(Start(primary=False), Crashed("SIGABRT", msg.ERRP_ASSERTION))
    assert isinstance(got, Crashed)
    assert abort_line(msg).search(got.stderr_contains), got.stderr_contains
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_retry_after_fixing_top_still_aborts(secondary, profile, msg, needs_bug):
    """Creating the missing top node between the attempts does not help: the leaked
    s->blocker trips the assertion before the top-id is looked up again."""
    needs_bug(profile.start_retry_after_bad_top_aborts)
    s = secondary(top_id="q", extra=(Quorum("q", (REP,), late=True),), guest_through="q")
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    s.add_late("q")
    s.expect(Start(primary=False), Crashed("SIGABRT", msg.ERRP_ASSERTION))
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_retry_mode_mismatch_does_not_abort(secondary, msg):
    """Checks before the blocker still answer after the failed start: a start with the
    wrong mode gets the mode error, not the abort."""
    s = secondary(top_id="no-such-node")
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    s.expect(Start(primary=True), qmp_error(msg.mode_mismatch(1, 0)))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_retry_after_bad_top_fails_cleanly(secondary, profile, msg, xfail_bug):
    """What QEMU should do: answer the retry exactly as the first attempt."""
    xfail_bug(profile.start_retry_after_bad_top_aborts, raises=MachineDied)
    s = secondary(top_id="no-such-node")
    m = s.topo.machine(SECONDARY)
    first = m.qmp("xen-set-replication", enable=True, primary=False)
    assert first == qmp_error(msg.BAD_TOP)
    again = m.qmp("xen-set-replication", enable=True, primary=False)
    assert again == qmp_error(msg.BAD_TOP)
    assert m.qmp("query-xen-replication-status") == status(msg.NOT_RUNNING)


# ---- running or done

# A second start in the node's own mode (the quick case) or in the other mode.
SECONDARY_AGAIN = [
    pytest.param(False, id="same-mode", marks=QUICK),
    pytest.param(True, id="other-mode"),
]
PRIMARY_AGAIN = [
    pytest.param(True, id="same-mode", marks=QUICK),
    pytest.param(False, id="other-mode"),
]


@pytest.mark.secondary
@pytest.mark.parametrize("again_primary", SECONDARY_AGAIN)
def test_secondary_start_while_running(secondary, msg, again_primary):
    """The stage is checked before the mode: RUNNING answers "running or done" to both."""
    s = secondary()
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Start(primary=again_primary), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Status(), status(None))
    s.expect(Write(0, 4096, 0x33), IO_OK)
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("again_primary", SECONDARY_AGAIN)
def test_secondary_start_after_failover_ignored(secondary, again_primary):
    """DONE after a failover (QEMU >= 5.0): start returns silently, whatever the mode,
    and changes nothing: the node keeps serving I/O from the secondary disk."""
    s = secondary()
    s.expect(Start(primary=False), QMP_OK)
    s.run(Write(0, 65536, 0x33), Stop(primary=False, failover=True), Settle())
    s.expect(Start(primary=again_primary), QMP_OK)
    s.expect(Status(), status(None))
    s.expect(Read(0, 65536), IoResult(True, None, ((0, 65536, 0x33),)))
    assert rep_edges(s.topo.machine(SECONDARY)) == {"file": "secondary"}
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_secondary_start_after_plain_stop_ignored_keeps_error(secondary, msg):
    """A plain stop ends in DONE with error set (the cancelled backup job). The start
    then returns silently *before* `s->error = 0`, so the error stays: a start clears
    the error only when it really starts."""
    s = secondary()
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
    s.expect(Status(), status(msg.IO_ERROR))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(msg.IO_ERROR))
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("again_primary", SECONDARY_AGAIN)
def test_secondary_start_after_failed_failover(secondary, msg, again_primary):
    """FAILOVER_FAILED is neither NONE nor DONE/FAILOVER: "running or done"."""
    s = secondary(over_secondary=over_secondary())
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Write(0, 65536, 0x33), IO_OK)
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Status(), status(msg.IO_ERROR))
    s.expect(Start(primary=again_primary), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Status(), status(msg.IO_ERROR))
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_secondary_start_during_failover_ignored(secondary):
    """FAILOVER (the commit still in flight, held by a throttle over the secondary disk):
    start returns silently too, and the commit goes on to finish once released."""
    throttle = Throttle("secondary-thr", "secondary", "tg", (("tg", {"bps-write": 4096}),))
    s = secondary(over_secondary=throttle)
    m = s.topo.machine(SECONDARY)
    s.expect(Start(primary=False), QMP_OK)
    # 2 MiB: the commit copies it in two 1 MiB requests (mirror MAX_IO_BYTES); the throttle
    # lets the first through and holds the second
    s.expect(Write(0, 2 * MiB, 0x33), IO_OK)
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    # no HMP qemu-io until the commit is released: on 10.0 it would drain the commit
    assert block_job_nodes(m) == 1
    assert rep_edges(m)["file"] != "secondary"
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Start(primary=True), QMP_OK)
    assert block_job_nodes(m) == 1
    # Lift the limit; the requests already queued keep their timers (about 16 s more) until
    # a drain restarts them: a blockdev-reopen of the throttle node drains it.
    m.qmp_ok("qom-set", path="/objects/tg", property="limits", value={"bps-write": 0})
    s.do(ReleaseCommit(node="secondary-thr", group="tg"))
    s.do(Settle())
    s.expect(Status(), status(None))
    s.expect(Read(0, 2 * MiB), IoResult(True, None, ((0, 2 * MiB, 0x33),)))
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("again_primary", PRIMARY_AGAIN)
def test_primary_start_while_running(primary, msg, again_primary):
    s = primary()
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Start(primary=again_primary, machine=PRIMARY), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Write(0, 4096, 0x22), IO_OK)
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("again_primary", PRIMARY_AGAIN)
def test_primary_start_after_stop_ignored(primary, again_primary):
    """A stopped primary is DONE: start returns silently and writes stay refused."""
    s = primary()
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Start(primary=again_primary, machine=PRIMARY), QMP_OK)
    s.expect(Write(0, 4096, 0x22), IO_EIO)
    s.expect(Status(machine=PRIMARY), status(None))
    s.finish()


# ---- mode mismatch


@pytest.mark.quick
@pytest.mark.secondary
def test_secondary_started_as_primary(secondary, msg):
    s = secondary()
    s.expect(Start(primary=True), qmp_error(msg.mode_mismatch(1, 0)))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Start(primary=False), QMP_OK)
    s.finish()


@pytest.mark.quick
@pytest.mark.primary
def test_primary_started_as_secondary(primary, msg):
    s = primary()
    s.expect(Start(primary=False, machine=PRIMARY), qmp_error(msg.mode_mismatch(0, 1)))
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_mode_checked_before_secondary_preconditions(secondary, msg):
    """The mode is checked before the graph: a secondary with no block backend started as
    a primary gets the mode error."""
    s = secondary(export=False)
    s.expect(Start(primary=True), qmp_error(msg.mode_mismatch(1, 0)))
    s.expect(Start(primary=False), qmp_error(msg.NO_BLOCK_BACKEND))
    s.finish()


# ---- failover on enable

SEC, PRI = pytest.mark.secondary, pytest.mark.primary
FAILOVER_ON_ENABLE = [
    pytest.param(False, False, False, id="secondary-failover-false", marks=SEC),
    pytest.param(False, False, True, id="secondary-failover-true", marks=[SEC, QUICK]),
    pytest.param(False, True, True, id="secondary-started-as-primary-failover-true", marks=SEC),
    pytest.param(True, True, True, id="primary-failover-true", marks=PRI),
    pytest.param(True, True, False, id="primary-failover-false", marks=PRI),
]


@pytest.mark.parametrize(("node_primary", "start_primary", "failover"), FAILOVER_ON_ENABLE)
def test_start_with_failover_refused(
    primary, msg, secondary, node_primary, start_primary, failover
):
    """`failover` with enable=true is refused before any node is visited (any value,
    whatever the mode), and changes nothing."""
    if node_primary:
        s, machine = primary(), PRIMARY
    else:
        s, machine = secondary(), SECONDARY
    s.expect(
        Start(primary=start_primary, failover=failover, machine=machine),
        qmp_error(msg.FAILOVER_ON_ENABLE),
    )
    s.expect(Status(machine=machine), status(msg.NOT_RUNNING))
    s.expect(Start(primary=node_primary, machine=machine), QMP_OK)
    # ... also while running: it is answered before "running or done"
    s.expect(
        Start(primary=node_primary, failover=failover, machine=machine),
        qmp_error(msg.FAILOVER_ON_ENABLE),
    )
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_without_nodes(qemu_build, msg, machines):
    """No replication node at all: start succeeds (nothing to visit), but `failover` is
    still refused, and the status is clean."""
    m = machines.launch(qemu_build[0], SECONDARY)
    assert m.qmp("xen-set-replication", enable=True, primary=False) == QMP_OK
    assert m.qmp("xen-set-replication", enable=True, primary=True, failover=False) == qmp_error(
        msg.FAILOVER_ON_ENABLE
    )
    assert m.qmp("query-xen-replication-status") == status(None)


# ---- what a successful start does to the layers


L = 256 << 10  # the prefilled pieces' size: small enough for the 1 MiB disk


def _prefilled(base: str, size: int) -> Recipe:
    """`base` with data in all three layers: the start's checkpoint must empty active and
    hidden, leaving the secondary disk's view: 0x11 on [0, 2L), 0x12 on the last L."""
    layers = load_recipe(base).to_dict()["layers"]
    layers["secondary"]["contents"] = [
        {"offset": 0, "length": 2 * L, "pattern": 0x11},
        {"offset": size - L, "length": L, "pattern": 0x12},
    ]
    layers["hidden"]["contents"] = [
        {"offset": L, "length": L + L // 2, "pattern": 0x22},
        {"offset": size - L - 4096, "length": 8192, "pattern": 0x23},
    ]
    layers["active"]["contents"] = [
        {"offset": 2 * L - 4096, "length": 8192, "pattern": 0x33},
        {"offset": size - 1024, "length": 512, "pattern": 0x34},
    ]
    return Recipe.from_dict({"layers": layers}, source=f"<{base}, every layer prefilled>")


# Each geometry's prefilled recipe is its own template (built once per process and build);
# the 2 MiB-cluster and 1 TiB ones cost most.
GEOMETRIES = [
    pytest.param("secondary", 64 * MiB, id="64k-clusters", marks=QUICK),
    pytest.param("secondary-512", 64 * MiB, id="512-clusters"),
    pytest.param("secondary-2m", 64 * MiB, id="2m-clusters"),
    pytest.param("secondary-mixed", 64 * MiB, id="mixed-clusters"),
    pytest.param("secondary-1m", 1 * MiB, id="1m-disk"),
    pytest.param("secondary-1t", 1 << 40, id="1t-disk"),
]


@pytest.mark.secondary
@pytest.mark.parametrize(("base", "size"), GEOMETRIES)
def test_start_empties_active_and_hidden(secondary, msg, base, size):
    """The start's checkpoint empties active and hidden (checked live and offline) and the
    secondary then sees only the secondary disk; the status is clean."""
    s = secondary(_prefilled(base, size))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    s.check_layers_live()
    for d in ("active", "hidden"):
        assert s.model.disks[d].data.allocated(0, size) == []
    s.expect(Read(0, 3 * L), IoResult(True, None, ((0, 2 * L, 0x11), (2 * L, L, 0))))
    tail = size - L - 8192
    s.expect(Read(tail, L + 8192), IoResult(True, None, ((tail, 8192, 0), (size - L, L, 0x12))))
    s.expect(Checkpoint(), QMP_OK)
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_with_raw_secondary_disk(secondary):
    """A raw secondary disk is fine (only active and hidden need backing and make_empty)."""
    s = secondary(secondary_chain(secondary_format="raw", secondary_contents=[(0, "1M", 0x11)]))
    s.expect(Start(primary=False), QMP_OK)
    s.run(PrimaryWrite(0, 65536, 0x22), Read(0, 131072), Checkpoint(), Read(0, 131072))
    s.check_layers_live()
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_start_graph(secondary, profile, msg):
    """The graph around a started secondary: children, the backup job node, the copy-before-
    write filter over the secondary disk, the hidden disk now read-write, rep blocked."""
    s = secondary()
    m = s.topo.machine(SECONDARY)
    assert rep_edges(m) == OPEN_EDGES
    assert node_info(m, "hidden")["ro"] is True
    s.expect(Start(primary=False), QMP_OK)
    assert rep_edges(m) == running_edges(profile)
    assert block_job_nodes(m) == 1
    assert node_info(m, "hidden")["ro"] is False
    assert m.qmp("blockdev-del", **{"node-name": REP}) == qmp_error(msg.node_busy(REP))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    assert rep_edges(m) == {"file": "secondary"}
    assert block_job_nodes(m) == 0
    s.finish()
