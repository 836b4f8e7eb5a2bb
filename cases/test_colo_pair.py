"""The full COLO pair (QEMU's docs/block-replication.txt and docs/COLO-FT.txt), step by step.

Two qemu-system processes (harness.pair): the secondary (secondary disk exported over NBD,
hidden and active disks, the replication node, optionally a quorum above it) and the
primary (its local disk under a quorum, the replication node over NBD hot-added with
x-blockdev-change). Every step is compared with the model; `check()` reads both VMs' whole
disks byte by byte and compares every live layer's allocation with the model; `finish()`
quits both QEMUs and checks every image offline.

Facts pinned here (7.2 and 10.0):
- A primary write goes to the local disk and, through the replication node and NBD, into
  the secondary disk (copy-before-write saving the old data into the hidden disk); the
  secondary VM sees it only after a checkpoint. Reads come from the local disk (fifo).
- Before the primary's replication starts, its child refuses writes with EIO, the quorum
  still succeeds on the local disk's vote, and the secondary never gets the data.
- Started in the wrong order (primary first), primary writes land in the secondary disk
  with no copy-before-write: nothing can roll them back.
- After the primary leaves, the secondary fails over to the last checkpoint plus its own
  writes and serves the VM from the secondary disk.
- After the secondary leaves, the primary's writes still succeed, the status reports
  `I/O error occurred` until replication is stopped, and x-blockdev-change/blockdev-del
  leave the primary alone on its local disk.
"""

from __future__ import annotations

import pytest

from harness.model.replication import Stage
from harness.observe import IO_EIO, IO_OK, QMP_OK, IoResult, QmpResult, data, qmp_error, status
from harness.ops import (
    PRIMARY,
    REP,
    BlockdevDel,
    Checkpoint,
    PrimaryRead,
    PrimaryWrite,
    Settle,
    Start,
    Status,
    Stop,
    WriteZeroes,
)
from harness.poll import DeadlineExceeded, poll
from harness.topology.pair import LOCAL, PQ, PREP, PRIMARY_CHILD, SQ, pair_recipe
from harness.units import KiB, MiB

pytestmark = [pytest.mark.colo, pytest.mark.primary, pytest.mark.secondary]
# Quick (the default set has room for only a few pair cases): the pair's life over the
# replication node itself, and where the primary's local disk sits in its quorum.
QUICK = pytest.mark.quick
SLOW = pytest.mark.slow

QUORUM = [
    pytest.param(False, id="rep"),
    pytest.param(True, id="quorum"),
]

GEOMETRIES = [
    pytest.param(pair_recipe(cluster="64k"), id="64k", marks=SLOW),
    pytest.param(pair_recipe(cluster="512"), id="512", marks=SLOW),
    pytest.param(pair_recipe(cluster="2M"), id="2m", marks=SLOW),
    pytest.param(
        pair_recipe(cluster="512", hidden_cluster="2M", active_cluster="64k", local_cluster="4k"),
        id="mixed",
        marks=SLOW,
    ),
]


def whole(s, *extents: tuple[int, int, int]) -> IoResult:
    """A whole-disk read: `extents`, then zeros up to the disk's end."""
    end = extents[-1][0] + extents[-1][1] if extents else 0
    tail = ((end, s.size - end, 0x00),) if end < s.size else ()
    return data(*extents, *tail)


# ---- the life cycle


@pytest.mark.parametrize(
    "quorum", [pytest.param(False, id="rep", marks=QUICK), pytest.param(True, id="quorum")]
)
def test_pair_life(pair, quorum):
    """Start in COLO's order, primary and secondary writes, checkpoints: after every step
    both VMs' disks and every layer are compared with the model."""
    s = pair(secondary_quorum=quorum)
    s.start()
    s.expect(Status(), status(None))
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    # The primary VM sees its write, the secondary VM still the checkpoint (the hidden
    # disk holds the old 0x11 the copy-before-write saved).
    s.expect(s.pread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.expect(s.sread(0, 128 * KiB), data((0, 128 * KiB, 0x11)))
    s.expect(s.swrite(64 * KiB, 4 * KiB, 0x33), IO_OK)
    s.checkpoint()
    # After the checkpoint the secondary VM sees the primary's data; its own write is gone.
    s.expect(s.sread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.do(s.pwrite(2 * MiB, 128 * KiB, 0x44))
    s.checkpoint()
    s.finish()


@pytest.mark.parametrize("recipe", GEOMETRIES)
def test_checkpoint_rounds_over_geometries(pair, recipe):
    """Three checkpoint intervals of primary and secondary writes across cluster
    boundaries; the copy-before-write granularity is max(64 KiB, hidden cluster)."""
    s = pair(recipe)
    s.start()
    for i, base in enumerate((60 * KiB, 1 * MiB - 4 * KiB, 3 * MiB + 512)):
        s.do(s.pwrite(base, 200 * KiB, 0x21 + i))
        s.do(s.swrite(base + 100 * KiB, 8 * KiB, 0x31 + i))
        s.do(s.pwrite(base + 96 * KiB, 16 * KiB, 0x41 + i))
        s.check()
        s.checkpoint()
        s.check()
    s.finish()


def test_primary_writes_before_the_primary_starts(pair, msg):
    """Connected but not started: the replication child refuses the write (EIO), the
    quorum succeeds on the local disk's vote, the secondary never sees the data."""
    s = pair()
    s.expect(Start(primary=False), QMP_OK)
    s.connect()
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    pm = s.topo.machine(PRIMARY)
    pm.events()
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    # QEMU reports the failing child (quorum_report_bad): the replication node. The event
    # may reach the client after the HMP answer: wait for it (with a deadline).
    seen: list[dict] = []

    def reported() -> list[dict] | None:
        seen.extend(e for e in pm.events() if e["event"] == "QUORUM_REPORT_BAD")
        return seen or None

    try:
        bad = poll(reported, "QUORUM_REPORT_BAD on the primary", deadline=10.0)
    except DeadlineExceeded:
        bad = []  # no event in 10 s: QEMU did not report the failing child
    assert [e["data"]["node-name"] for e in bad] == [PREP], bad
    s.expect(s.pread(0, 64 * KiB), data((0, 64 * KiB, 0x22)))
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.checkpoint()
    # The secondary has the second write only: the first was lost for it for good.
    s.expect(
        s.sread(0, 192 * KiB),
        data((0, 64 * KiB, 0x11), (64 * KiB, 64 * KiB, 0x23), (128 * KiB, 64 * KiB, 0x11)),
    )
    s.finish()


def test_primary_started_before_the_secondary(pair):
    """The wrong order: with no backup job yet, primary writes go straight into the
    secondary disk (nothing saved in the hidden disk); the secondary VM cannot read
    until it starts, and then sees them."""
    s = pair()
    s.connect()
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.sread(0, 64 * KiB), IO_EIO)
    assert not list(s.model.disks["hidden"].data.items())
    s.expect(Start(primary=False), QMP_OK)
    s.expect(s.sread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.finish()


def test_start_answers_on_both_sides(pair, msg):
    """Each side walks only its own replication nodes; a second start is refused; a
    checkpoint on the primary does nothing; start with failover is refused."""
    s = pair()
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)  # no node yet: nothing to do
    s.expect(Status(machine=PRIMARY), status(None))
    s.start()
    s.expect(Start(primary=False), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Start(primary=True, machine=PRIMARY), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Start(primary=True), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Start(primary=True, failover=True, machine=PRIMARY), qmp_error(msg.FAILOVER_ON_ENABLE))
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(), status(None))
    s.expect(Status(machine=PRIMARY), status(None))
    s.finish()


def test_primary_reads_come_from_its_local_disk(pair):
    """read-pattern fifo: the local disk (children.0) answers; a write that reaches only
    the secondary disk (the harness's own NBD client) is never read back by the primary."""
    s = pair(export_client=True)
    s.start()
    s.expect(PrimaryWrite(0, 64 * KiB, 0x5A), IO_OK)
    s.expect(PrimaryRead(0, 64 * KiB), data((0, 64 * KiB, 0x5A)))
    s.expect(s.pread(0, 64 * KiB), data((0, 64 * KiB, 0x11)))
    s.finish()


@pytest.mark.parametrize(
    "offset,length",
    [
        pytest.param(1000, 3000, id="inside-a-sector-pair"),
        pytest.param(64 * KiB - 100, 200, id="across-a-cluster"),
    ],
)
def test_unaligned_primary_write(pair, offset, length):
    """The quorum passes the write unaligned: the local disk gets it exactly; the
    replication node pads it to 512-byte sectors with a read-modify-write whose read it
    refuses (ignored), so the secondary gets undefined bytes around it."""
    s = pair()
    s.start()
    s.expect(s.pwrite(offset, length, 0x66), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.checkpoint()
    s.finish()


def test_primary_write_zeroes(pair):
    """Write-zeroes through the quorum: zero clusters in the local disk; the replication
    node has no write-zeroes, so a buffer of zeros goes over NBD."""
    s = pair()
    s.start()
    s.expect(WriteZeroes(0, 128 * KiB, node=PQ), IO_OK)
    s.expect(WriteZeroes(1 * MiB, 64 * KiB, node=PQ), IO_OK)
    s.checkpoint()
    s.expect(s.sread(0, 192 * KiB), data((0, 128 * KiB, 0x00), (128 * KiB, 64 * KiB, 0x11)))
    s.finish()


def test_primary_unaligned_write_zeroes(pair):
    """An unaligned write-zeroes through the quorum: the local disk gets exactly its zeros;
    the replication child gets a write-zeroes of its own and writes its padded head and
    tail sectors from an uninitialised buffer (the QEMU bug that
    test_primary_unaligned_write_zeroes_zeroes_its_bytes pins): the model leaves those
    two sectors of the secondary undefined and checks every other byte."""
    s = pair()
    s.start()
    for i, size in enumerate((0x7C70, 0x200, 0x1000, 0x10000)):
        base = 0x40000 + i * 0x20000
        # a data write leaves its bytes in a freed buffer the pad buffer may reuse
        s.expect(s.pwrite(base - size, size, 0x5A), IO_OK)
        s.expect(WriteZeroes(base + 0x10, 0x100, node=PQ), IO_OK)
        s.expect(
            s.pread(base, 0x200),
            data((base, 0x10, 0x11), (base + 0x10, 0x100, 0x00), (base + 0x110, 0xF0, 0x11)),
        )
    s.checkpoint()
    s.do(s.sread(0x40000, 0x80000))
    s.finish()


# ---- x-blockdev-change


@pytest.mark.quick
def test_quorum_child_changes(pair, msg):
    """children.1 comes and goes with x-blockdev-change; removing it twice, or the last
    child, is refused with QEMU's texts; re-attaching reuses the index."""
    s = pair()
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.remove_primary_child()
    again = s.remove_primary_child()  # the child is gone
    assert again == qmp_error(msg.quorum_no_child(PQ, PRIMARY_CHILD))
    last = s.remove_primary_child("children.0")
    assert last == qmp_error(msg.quorum_below_threshold(1))
    # Detached but still RUNNING: the primary's writes stay local.
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))
    s.attach_primary()
    assert [c.name for c in s.model.quorums[PQ].children] == ["children.0", PRIMARY_CHILD]
    s.do(s.pwrite(128 * KiB, 64 * KiB, 0x24))
    s.checkpoint()
    s.expect(
        s.sread(0, 256 * KiB),
        data(
            (0, 64 * KiB, 0x22),
            (64 * KiB, 64 * KiB, 0x11),
            (128 * KiB, 64 * KiB, 0x24),
            (192 * KiB, 64 * KiB, 0x11),
        ),
    )
    s.finish()


# ---- losing one side


@pytest.mark.parametrize("quorum", QUORUM)
def test_secondary_failover_after_the_primary_quits(pair, quorum):
    """The primary leaves; the secondary fails over (nbd-server-stop, then failover): the
    disk is the last checkpoint plus the secondary VM's own writes, and the secondary
    serves the VM from the secondary disk from then on."""
    s = pair(secondary_quorum=quorum)
    s.start()
    s.do(s.pwrite(0, 128 * KiB, 0x22))
    s.checkpoint()
    s.do(s.pwrite(64 * KiB, 128 * KiB, 0x33))  # since the checkpoint: rolled back
    s.do(s.swrite(1 * MiB, 4 * KiB, 0x44))  # the secondary VM's own: kept
    s.quit(PRIMARY)
    s.failover()
    assert s.model.stage(REP) is Stage.DONE
    s.expect(Status(), status(None))
    want = whole(
        s,
        (0, 128 * KiB, 0x22),
        (128 * KiB, 1 * MiB - 128 * KiB, 0x11),
        (1 * MiB, 4 * KiB, 0x44),
    )
    s.expect(s.sread(0, s.size), want)
    # Serving as the new primary: reads and writes go to the secondary disk itself.
    s.expect(s.swrite(2 * MiB, 64 * KiB, 0x55), IO_OK)
    s.finish()


@pytest.mark.parametrize("quorum", QUORUM)
def test_primary_goes_on_alone_after_the_secondary_quits(pair, msg, quorum):
    """The secondary leaves; the primary's writes succeed with the error stored; then the
    replication child leaves the quorum, replication stops, the node is deleted."""
    s = pair(secondary_quorum=quorum)
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    s.quit("secondary")
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.primary_alone()
    assert PREP not in s.model.nodes
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(128 * KiB, 64 * KiB, 0x24), IO_OK)
    s.expect(
        s.pread(0, 256 * KiB),
        data(
            (0, 64 * KiB, 0x22),
            (64 * KiB, 64 * KiB, 0x23),
            (128 * KiB, 64 * KiB, 0x24),
            (192 * KiB, 64 * KiB, 0x11),
        ),
    )
    s.finish()


def test_failover_with_the_primary_still_connected(pair):
    """Without nbd-server-stop and with the primary alive, the failover still commits; the
    primary's later writes then land straight in the secondary disk (no copy-before-write
    any more) and the secondary VM sees them at once: why COLO stops the server first."""
    s = pair()
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.after_failover()
    s.expect(s.sread(0, 192 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 128 * KiB, 0x11)))
    s.expect(s.pwrite(128 * KiB, 64 * KiB, 0x24), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(
        s.sread(0, 192 * KiB),
        data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11), (128 * KiB, 64 * KiB, 0x24)),
    )
    s.finish()


@QUICK
def test_primary_stop_then_writes_refused_by_the_child(pair):
    """A stopped primary replication child refuses writes (DONE: EIO, not swallowed); the
    quorum still succeeds on the local disk, and the secondary no longer gets them."""
    s = pair()
    s.start()
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.checkpoint()
    s.expect(s.sread(0, 64 * KiB), data((0, 64 * KiB, 0x11)))
    s.remove_primary_child()
    s.expect(BlockdevDel(node=PREP, machine=PRIMARY), QMP_OK)
    s.finish()


@QUICK
def test_local_disk_is_children_0(pair):
    """The quorum's children as QEMU shows them match the model's."""
    s = pair()
    s.start()
    pm = s.topo.machine(PRIMARY)
    graph = pm.qmp_ok("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    edges = {e["name"]: names[e["child"]] for e in graph["edges"] if names[e["parent"]] == PQ}
    assert edges == {"children.0": LOCAL, PRIMARY_CHILD: PREP}
    assert [(c.name, getattr(c.node, "name", None)) for c in s.model.quorums[PQ].children] == [
        ("children.0", LOCAL),
        (PRIMARY_CHILD, PREP),
    ]
    s.finish()


def test_secondary_quorum_is_the_top(pair, msg):
    """COLO-FT: top-id names the secondary's quorum; start accepts it, and the op blocker
    sits on the quorum while replication runs."""
    s = pair(secondary_quorum=True)
    s.start()
    sm = s.topo.machine("secondary")
    res = sm.qmp("blockdev-del", **{"node-name": SQ})
    assert res == QmpResult(False, None, "GenericError", msg.node_busy(SQ))
    s.do(s.swrite(0, 4 * KiB, 0x31))
    s.finish()
