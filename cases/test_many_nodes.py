"""Several replication nodes in one QEMU: the *_all layer.

replication_new() inserts each node at the head of one global list, and every QMP command
(replication_start_all, _do_checkpoint_all, _get_error_all, _stop_all) walks that list,
newest node first, and stops at the first node that fails. A failover stop passes no errp:
its errors are dropped (the reply is {}), but the walk still ends at the failing node. With
no replication node at all every command succeeds and the status is {"error": false}.

The topology is harness.topology.standard.many_nodes: one qemu-system holding several nodes, each
with its own chain (NAME-act -> NAME-hid -> NAME-sec, the secondary disk exported over NBD
as NAME) or, for a primary-mode node, its own local child image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from harness.model.replication import Stage
from harness.observe import IO_EIO, IO_OK, QMP_OK, IoResult, qmp_error, status
from harness.ops import (
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
from harness.story import Story
from harness.topology.standard import NodeSpec, many_nodes
from harness.topology.values import Mode
from harness.units import KiB

pytestmark = [pytest.mark.secondary]

QUICK = pytest.mark.quick


@pytest.fixture
def many(_maker) -> Callable[..., Story]:
    """make(specs, size="1M") -> a Story on one QEMU with the given replication nodes."""

    def make(specs: Sequence[NodeSpec], size: str = "1M") -> Story:
        return _maker.story(many_nodes(specs, size=size))

    return make


def stages(s: Story) -> dict[str, Stage]:
    return {name: node.stage for name, node in s.model.nodes.items()}


def sec(*names: str) -> list[NodeSpec]:
    return [NodeSpec(n) for n in names]


# ---- start: newest first, stop at the first error


FAILING_START = [
    pytest.param("r3", {"r3": Stage.NONE, "r2": Stage.NONE, "r1": Stage.NONE}, id="newest"),
    pytest.param(
        "r2", {"r3": Stage.RUNNING, "r2": Stage.NONE, "r1": Stage.NONE}, id="middle", marks=QUICK
    ),
    pytest.param("r1", {"r3": Stage.RUNNING, "r2": Stage.RUNNING, "r1": Stage.NONE}, id="oldest"),
]


@pytest.mark.parametrize("bad,after", FAILING_START)
def test_start_all_stops_at_the_first_failing_node(many, msg, bad, after):
    """The node `bad` has no block backend on its secondary disk (no NBD export)."""
    s = many([NodeSpec(n, export=n != bad) for n in ("r1", "r2", "r3")])
    s.expect(Start(primary=False), qmp_error(msg.NO_BLOCK_BACKEND))
    assert stages(s) == after
    # Nodes the walk never reached (and the failing one) refuse I/O; the others run.
    for name, stage in after.items():
        want = IO_OK if stage is Stage.RUNNING else IO_EIO
        s.expect(Write(0, 4 * KiB, 0x10, node=name), want)
        s.do(Read(0, 8 * KiB, node=name))
    # Some node is still in NONE, and the walk reaches it before any clean one answers.
    s.expect(Status(), status(msg.NOT_RUNNING))
    # A second start: running nodes answer first ("running or done") when the newest runs.
    again = msg.NO_BLOCK_BACKEND if bad == "r3" else msg.RUNNING_OR_DONE
    s.expect(Start(primary=False), qmp_error(again))
    assert stages(s) == after
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.do(Status())
    s.finish()


# ---- a node newer than the running ones, in NONE


def _two_running_and_a_late_one(many) -> Story:
    s = many([NodeSpec("r1"), NodeSpec("r2"), NodeSpec("r3", late=True)])
    s.run(
        Start(primary=False), Write(0, 4 * KiB, 0x11, node="r1"), Write(0, 4 * KiB, 0x12, node="r2")
    )
    s.add_late("r3")
    assert [n.name for n in s.model.machine("secondary").nodes] == ["r1", "r2", "r3"]
    return s


@pytest.mark.quick
def test_failover_drops_the_error_but_stops_at_the_failing_node(many, msg):
    s = _two_running_and_a_late_one(many)
    # r3 (newest, NONE) fails the stop: the failover's reply drops the error...
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    # ...and r2 and r1 were never stopped.
    assert stages(s) == {"r1": Stage.RUNNING, "r2": Stage.RUNNING, "r3": Stage.NONE}
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Write(4 * KiB, 4 * KiB, 0x21, node="r1"), IO_OK)
    s.expect(Write(0, 4 * KiB, 0x23, node="r3"), IO_EIO)
    # Without failover the same error is returned.
    s.expect(Stop(primary=False), qmp_error(msg.NOT_RUNNING))
    assert stages(s)["r2"] is Stage.RUNNING
    # The running nodes block their own deletion; the idle one goes.
    s.expect(BlockdevDel("r2"), qmp_error(msg.node_busy("r2")))
    s.expect(BlockdevDel("r3"), QMP_OK)
    s.expect(Status(), status(None))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    assert stages(s) == {"r1": Stage.DONE, "r2": Stage.DONE}
    s.expect(Status(), status(None))
    s.expect(
        Read(0, 16 * KiB, node="r1"),
        IoResult(True, None, ((0, 4 * KiB, 0x11), (4 * KiB, 4 * KiB, 0x21), (8 * KiB, 8 * KiB, 0))),
    )
    s.finish()


@pytest.mark.quick
def test_checkpoint_all_stops_before_older_nodes(many, msg):
    """A failed checkpoint on the newest node leaves the older ones un-checkpointed: the
    primary's write into r1's secondary disk stays invisible to r1 until a checkpoint
    reaches it."""
    s = _two_running_and_a_late_one(many)
    s.expect(PrimaryWrite(64 * KiB, 64 * KiB, 0x31), IO_OK)  # r1's secondary disk
    old = IoResult(True, None, ((0, 4 * KiB, 0x11), (4 * KiB, 188 * KiB, 0x00)))
    s.expect(Read(0, 192 * KiB, node="r1"), old)
    s.expect(Checkpoint(), qmp_error(msg.BACKUP_CANCELLED))
    s.expect(Read(0, 192 * KiB, node="r1"), old)
    s.expect(BlockdevDel("r3"), QMP_OK)
    s.expect(Checkpoint(), QMP_OK)
    s.expect(
        Read(0, 192 * KiB, node="r1"),
        IoResult(
            True, None, ((0, 64 * KiB, 0x00), (64 * KiB, 64 * KiB, 0x31), (128 * KiB, 64 * KiB, 0))
        ),
    )
    s.finish()


@pytest.mark.quick
def test_status_reports_the_newest_nodes_error(many, msg):
    s = many([NodeSpec("r1"), NodeSpec("r2"), NodeSpec("r3", late=True)])
    s.expect(Start(primary=False), QMP_OK)
    # A plain stop fails on the newest node (r2) and never reaches r1.
    s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
    assert stages(s) == {"r1": Stage.RUNNING, "r2": Stage.DONE}
    s.expect(Status(), status(msg.IO_ERROR))
    s.add_late("r3")
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(BlockdevDel("r3"), QMP_OK)
    s.expect(Status(), status(msg.IO_ERROR))
    # r2 is done and silent now, so the next plain stop reaches r1.
    s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
    assert stages(s) == {"r1": Stage.DONE, "r2": Stage.DONE}
    s.expect(Status(), status(msg.IO_ERROR))
    s.finish()


# ---- primary- and secondary-mode nodes in one QEMU


def _mixed(where: str) -> list[NodeSpec]:
    p = NodeSpec("p", mode=Mode.PRIMARY)
    order = {"newest": ["r1", "r2", p], "middle": ["r1", p, "r2"], "oldest": [p, "r1", "r2"]}
    return [x if isinstance(x, NodeSpec) else NodeSpec(x) for x in order[where]]


MIXED = [
    # (primary's place, start mode, the mode mismatch (needs, got), stages after)
    pytest.param("newest", False, (0, 1), {}, id="newest-secondary"),
    pytest.param("newest", True, (1, 0), {"p": Stage.RUNNING}, id="newest-primary"),
    pytest.param(
        "middle", False, (0, 1), {"r2": Stage.RUNNING}, id="middle-secondary", marks=QUICK
    ),
    pytest.param("middle", True, (1, 0), {}, id="middle-primary"),
    pytest.param(
        "oldest", False, (0, 1), {"r1": Stage.RUNNING, "r2": Stage.RUNNING}, id="oldest-secondary"
    ),
    pytest.param("oldest", True, (1, 0), {}, id="oldest-primary"),
]


@pytest.mark.parametrize("where,primary,mismatch,running", MIXED)
def test_mixed_modes_never_start_all(many, msg, where, primary, mismatch, running):
    s = many(_mixed(where))
    s.expect(Start(primary=primary), qmp_error(msg.mode_mismatch(*mismatch)))
    assert {n: st for n, st in stages(s).items() if st is not Stage.NONE} == running
    for name in ("r1", "r2", "p"):
        want = IO_OK if name in running else IO_EIO
        s.expect(Write(0, 4 * KiB, 0x41, node=name), want)
    s.expect(Read(0, 4 * KiB, node="p"), IO_EIO)
    s.do(Status())
    # The other mode cannot start the rest either.
    s.do(Start(primary=not primary))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.do(Status())
    s.finish()


@pytest.mark.quick
def test_deleting_a_running_primary_node_stops_it(many, msg):
    """replication_close stops a running node; a primary has no op blocker, so blockdev-del
    works while it runs, and the node leaves the *_all walk."""
    s = many(_mixed("newest"))
    s.expect(Start(primary=True), qmp_error(msg.mode_mismatch(1, 0)))
    s.expect(Write(0, 4 * KiB, 0x51, node="p"), IO_OK)
    s.expect(BlockdevDel("p"), QMP_OK)
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Status(), status(None))
    s.finish()


# ---- all nodes healthy


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(1),
        pytest.param(2, marks=QUICK),
        pytest.param(4),
    ],
)
def test_many_secondaries_whole_life(many, msg, n):
    names = [f"r{i}" for i in range(1, n + 1)]
    s = many(sec(*names))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    for i, name in enumerate(names):
        s.expect(Write(i * 64 * KiB, 4 * KiB, 0x60 + i, node=name), IO_OK)
    s.expect(PrimaryWrite(0, 128 * KiB, 0x5F), IO_OK)  # r1's secondary disk
    s.expect(Checkpoint(), QMP_OK)
    for name in names:
        s.do(Read(0, 256 * KiB, node=name))
    s.check_layers_live()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Status())
    s.do(Settle())
    assert set(stages(s).values()) == {Stage.DONE}
    s.expect(Status(), status(None))
    for name in names:
        s.do(Read(0, 256 * KiB, node=name))
    s.finish()


# ---- no replication node at all


NO_NODE_COMMANDS = [
    pytest.param(Start(primary=False), lambda msg: QMP_OK, id="start-secondary", marks=QUICK),
    pytest.param(Start(primary=True), lambda msg: QMP_OK, id="start-primary"),
    pytest.param(Checkpoint(), lambda msg: QMP_OK, id="checkpoint"),
    pytest.param(Stop(primary=False), lambda msg: QMP_OK, id="stop"),
    pytest.param(Stop(primary=True, failover=True), lambda msg: QMP_OK, id="failover"),
    pytest.param(Status(), lambda msg: status(None), id="status"),
    # Checked by the QMP handler before any node is visited.
    pytest.param(
        Start(primary=False, failover=False),
        lambda msg: qmp_error(msg.FAILOVER_ON_ENABLE),
        id="start-with-failover",
    ),
]


@pytest.mark.parametrize("op,want", NO_NODE_COMMANDS)
def test_no_replication_node(many, msg, op, want):
    # The disks are there; the replication node is never created.
    want = want(msg)
    s = many([NodeSpec("r1", late=True)])
    assert not s.model.nodes
    s.expect(op, want)
    s.expect(op, want)
    s.expect(Status(), status(None))
    s.finish()
