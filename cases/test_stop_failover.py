"""Stopping replication: plain stop, primary stop, failover, and what the node does afterwards.

Facts pinned here (QEMU 7.2 and 10.0, block/replication.c; docs/qemu-sources.md 1.9-1.11, 3):
- A plain secondary stop cancels the backup job first (the stage is still RUNNING, so its
  completion sets error = -EIO), then its checkpoint finds no backup job: the reply is
  `Backup job was cancelled unexpectedly`, the stage becomes DONE, and the active and hidden
  disks are NOT emptied. The status then reads `I/O error occurred`; later
  checkpoint/stop/start return silently (stage DONE).
- A primary stop goes to DONE and clears the error; the primary then refuses every write.
- Failover runs an internal active commit of active+hidden into the secondary disk. The
  secondary disk ends up equal to the secondary VM's view: the primary's writes since the
  last checkpoint are rolled back wherever the hidden disk holds their old copy. The active
  and hidden images are left as they were; the replication node's file child becomes the
  secondary disk, and the inline active/hidden nodes are closed.
- Completion is detected by Settle (it polls the block graph), never by sleeping.
"""

from __future__ import annotations

import pytest

from harness.faults import CHILD, LinkDown
from harness.graph import children, node_names
from harness.images import Recipe
from harness.model.replication import Stage
from harness.observe import IO_EIO, IO_OK, QMP_OK, IoResult, OneOf, QmpResult, data, status
from harness.ops import (
    PRIMARY,
    Checkpoint,
    PrimaryRead,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)
from harness.topology.standard import secondary_chain
from harness.units import KiB, MiB

# Geometry: the backup copies max(64 KiB, hidden cluster) per cluster, qcow2 COW copies whole
# clusters of each layer, and the commit works in chunks of the secondary's cluster size
# (4 KiB..64 KiB). Contents must not depend on any of it; allocation does.
QUICK, SLOW = pytest.mark.quick, pytest.mark.slow
GEOMETRIES = [
    pytest.param("secondary-512", id="512"),
    pytest.param("secondary", id="64k", marks=QUICK),
    pytest.param("secondary-2m", id="2m"),
    pytest.param("secondary-mixed", id="mixed"),
]

# A plain stop or a failover: which one is each test's quick case.
# Both kinds of stop in every stage are in the quick set (what a bisect must pin).
PLAIN_QUICK = [
    pytest.param(False, id="plain", marks=QUICK),
    pytest.param(True, id="failover", marks=QUICK),
]
FAILOVER_QUICK = PLAIN_QUICK

# The secondary disk's contents for the rollback stories (as in secondary-prefilled).
PREFILL = ((0, "1M", 0x11), ("4M", "192k", 0x22))


def prefilled(cluster: str, *, hidden: str | None = None, active: str | None = None) -> Recipe:
    return secondary_chain(
        "64M",
        cluster,
        hidden_cluster=hidden,
        active_cluster=active,
        secondary_contents=PREFILL,
    )


PREFILLED = [
    pytest.param(prefilled("512"), id="512"),
    pytest.param(prefilled("64k"), id="64k", marks=QUICK),
    pytest.param(prefilled("2M"), id="2m"),
    pytest.param(prefilled("512", hidden="2M", active="64k"), id="mixed", marks=SLOW),
]


def require_plain_stop_report(profile) -> None:
    if profile.without_plain_stop_report:
        pytest.skip(profile.without_plain_stop_report)


# ---- plain stop (secondary)


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", GEOMETRIES)
def test_plain_stop_reports_cancelled_backup_and_keeps_layers(secondary, msg, profile, recipe):
    require_plain_stop_report(profile)
    s = secondary(recipe)
    s.run(Start(primary=False), Write(0, 96 * KiB, 0x11), PrimaryWrite(64 * KiB, 128 * KiB, 0x22))
    s.run(Write(1 * MiB, 4 * KiB, 0x33), Read(0, 2 * MiB))
    s.check_layers_live()
    s.expect(Stop(primary=False), QmpResult(False, None, "GenericError", msg.BACKUP_CANCELLED))
    assert s.model.stage("rep") is Stage.DONE
    # Nothing was emptied: each layer still holds exactly what it held before the stop.
    s.check_layers_live()
    s.expect(Status(), status(msg.IO_ERROR))
    # The view is still active -> hidden -> secondary.
    s.expect(
        Read(0, 2 * MiB),
        data(
            (0, 96 * KiB, 0x11),
            (96 * KiB, 96 * KiB, 0x00),
            (192 * KiB, 1 * MiB - 192 * KiB, 0x00),
            (1 * MiB, 4 * KiB, 0x33),
            (1 * MiB + 4 * KiB, 1 * MiB - 4 * KiB, 0x00),
        ),
    )
    s.finish()


@pytest.mark.secondary
@pytest.mark.quick
def test_plain_stop_then_every_request_is_silent(secondary, msg, profile):
    require_plain_stop_report(profile)
    s = secondary()
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x11))
    s.expect(Stop(primary=False), QmpResult(False, None, "GenericError", msg.BACKUP_CANCELLED))
    for op in (
        Checkpoint(),
        Stop(primary=False),
        Stop(primary=False, failover=True),
        Start(primary=False),
        Start(primary=True),
        Stop(primary=True),
    ):
        s.expect(op, QMP_OK)
        # None of them clears the error left by the cancelled backup job.
        s.expect(Status(), status(msg.IO_ERROR))
    assert s.model.stage("rep") is Stage.DONE
    s.check_layers_live()
    s.finish()


@pytest.mark.secondary
@pytest.mark.quick
def test_plain_stop_io_goes_through_the_old_chain(secondary, msg, profile):
    """After a plain stop `file` is still the active disk: writes land in active, and the
    primary's writes reach the secondary disk without a copy to hidden (no backup job)."""
    require_plain_stop_report(profile)
    s = secondary()
    t = s.topo.machine("secondary")
    s.run(Start(primary=False), PrimaryWrite(0, 64 * KiB, 0x11), Write(128 * KiB, 4 * KiB, 0x22))
    s.expect(Stop(primary=False), QmpResult(False, None, "GenericError", msg.BACKUP_CANCELLED))
    # The node keeps the hidden/secondary disk children its start attached (where the
    # release attaches them): only a failover's completion drops them.
    kept = {"hidden disk": "hidden", "secondary disk": "secondary"}
    assert children(t, "rep") == {
        "file": "active",
        **(kept if profile.start_attaches_children else {}),
    }
    s.expect(Write(256 * KiB, 4 * KiB, 0x33), IO_OK)
    s.expect(PrimaryWrite(0, 192 * KiB, 0x44), IO_OK)
    # [0, 64K): hidden still holds the old zeros; [64K, 128K): straight from the secondary
    # disk, so the primary's new write shows; [128K, 192K): active's cluster.
    s.expect(
        Read(0, 320 * KiB),
        data(
            (0, 64 * KiB, 0x00),
            (64 * KiB, 64 * KiB, 0x44),
            (128 * KiB, 4 * KiB, 0x22),
            (132 * KiB, 124 * KiB, 0x00),
            (256 * KiB, 4 * KiB, 0x33),
            (260 * KiB, 60 * KiB, 0x00),
        ),
    )
    s.check_layers_live()
    s.finish()


# ---- primary stop


@pytest.mark.primary
@pytest.mark.parametrize("failover", PLAIN_QUICK)
def test_primary_stop_done_then_writes_fail(primary, failover):
    s = primary()
    s.run(Start(primary=True, machine=PRIMARY), Write(0, 64 * KiB, 0x11))
    s.expect(Stop(primary=True, failover=failover, machine=PRIMARY), QMP_OK)
    assert s.model.stage("rep") is Stage.DONE
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(Write(0, 4 * KiB, 0x22), IO_EIO)
    s.expect(Read(0, 4 * KiB), IO_EIO)
    # A failed write in DONE is returned, not swallowed: the status stays clean.
    s.expect(Status(machine=PRIMARY), status(None))
    for op in (
        Checkpoint(machine=PRIMARY),
        Start(primary=True, machine=PRIMARY),
        Stop(primary=True, machine=PRIMARY),
    ):
        s.expect(op, QMP_OK)
    s.expect(Write(0, 4 * KiB, 0x33), IO_EIO)
    s.finish()


@pytest.mark.quick
@pytest.mark.primary
def test_primary_stop_clears_a_swallowed_error(primary, msg):
    s = primary()
    s.run(Start(primary=True, machine=PRIMARY), Write(0, 64 * KiB, 0x11))
    s.do(LinkDown(CHILD))
    s.expect(Write(64 * KiB, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.finish()


# ---- failover


def _fills(size: int) -> dict[str, tuple[Write, ...]]:
    """Secondary-VM writes before the failover, for a disk of `size` bytes."""
    return {
        "empty": (),
        "sparse": (
            Write(0, 4 * KiB, 0x11),
            Write(size // 2 + 512, 1536, 0x12),
            Write(size - 64 * KiB, 64 * KiB, 0x13),
        ),
        "full": (Write(0, size, 0x5A),),
    }


SMALL_CHAINS = {
    "1M-64k": secondary_chain("1M", "64k"),
    "1M-512": secondary_chain("1M", "512"),
    "1M-mixed": secondary_chain("1M", "512", hidden_cluster="2M"),
}


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("recipe", "fill"),
    [
        pytest.param(
            chain,
            fill,
            id=f"{chain_id}-{fill}",
            marks=QUICK if (chain_id, fill) == ("1M-64k", "sparse") else (),
        )
        for chain_id, chain in SMALL_CHAINS.items()
        for fill in ("empty", "sparse", "full")
    ],
)
def test_failover_commits_active_into_secondary(secondary, recipe, fill):
    s = secondary(recipe)
    t = s.topo.machine("secondary")
    size = s.model.disks["active"].size
    s.run(Start(primary=False), PrimaryWrite(0, 128 * KiB, 0x21), *_fills(size)[fill])
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Status())  # racing the commit: the model allows `I/O error occurred` or clean
    s.do(Settle())
    assert s.model.stage("rep") is Stage.DONE
    s.expect(Status(), status(None))
    assert children(t, "rep") == {"file": "secondary"}
    assert not {"active", "hidden"} & node_names(t)
    s.do(Read(0, size))
    s.do(PrimaryRead(0, size))
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize(
    "fill", [pytest.param("empty", marks=QUICK), pytest.param("full", marks=SLOW)]
)
def test_failover_of_a_64m_disk(secondary, fill):
    s = secondary("secondary")
    s.run(Start(primary=False), *_fills(64 * MiB)[fill])
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Status(), status(None))
    s.do(Read(0, 64 * MiB))
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", PREFILLED)
def test_failover_rolls_primary_writes_back_to_the_checkpoint(secondary, recipe):
    """Primary writes after the last checkpoint are undone by the failover, byte for byte;
    those before it stay; the secondary VM's own writes win over both."""
    s = secondary(recipe)
    s.run(Start(primary=False), PrimaryWrite(0, 256 * KiB, 0x33), Checkpoint())
    # Since the checkpoint: the primary overwrites old data, the checkpoint's own 0x33,
    # the end of the 0x22 run and a zero area; the secondary VM writes into two of them.
    s.run(
        PrimaryWrite(128 * KiB, 512 * KiB, 0x44),
        PrimaryWrite(4 * MiB + 60 * KiB, 200 * KiB, 0x55),
        PrimaryWrite(8 * MiB, 64 * KiB, 0x66),
        Write(512 * KiB, 4 * KiB, 0x77),
        Write(8 * MiB + 4 * KiB, 4 * KiB, 0x78),
    )
    # Before the failover the secondary VM sees the checkpoint plus its own writes.
    checkpoint_view = data(
        (0, 256 * KiB, 0x33),
        (256 * KiB, 256 * KiB, 0x11),
        (512 * KiB, 4 * KiB, 0x77),
        (516 * KiB, 508 * KiB, 0x11),
        (1 * MiB, 3 * MiB, 0x00),
        (4 * MiB, 192 * KiB, 0x22),
        (4 * MiB + 192 * KiB, 4 * MiB - 192 * KiB, 0x00),
        (8 * MiB, 4 * KiB, 0x00),
        (8 * MiB + 4 * KiB, 4 * KiB, 0x78),
        (8 * MiB + 8 * KiB, 1 * MiB - 8 * KiB, 0x00),
    )
    s.expect(Read(0, 9 * MiB), checkpoint_view)
    s.check_layers_live()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Status(), status(None))
    # The same bytes, now in the secondary disk itself: through the node and over NBD.
    s.expect(Read(0, 9 * MiB), checkpoint_view)
    s.expect(PrimaryRead(0, 9 * MiB), checkpoint_view)
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", GEOMETRIES)
def test_failover_with_only_hidden_data(secondary, recipe):
    """The active disk is empty; the hidden disk holds the backed-up old data."""
    s = secondary(recipe)
    s.run(Start(primary=False), PrimaryWrite(0, 8 * KiB, 0x21), Checkpoint())
    s.run(PrimaryWrite(0, 64 * KiB, 0x22), PrimaryWrite(3 * MiB, 4 * KiB, 0x23))
    s.check_layers_live()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(
        PrimaryRead(0, 4 * MiB),
        data((0, 8 * KiB, 0x21), (8 * KiB, 4 * MiB - 8 * KiB, 0x00)),
    )
    s.finish()


# One size: 128 MiB of guest data on a 256 MiB disk, with a primary write straddling
# its end (half over the guest's data, half over hidden-only data). 64 MiB full is
# test_failover_of_a_64m_disk[full]; 64 and 256 MiB here added ~5 s and no new path.
LARGE = [pytest.param(128, id="128M")]


@pytest.mark.secondary
@pytest.mark.slow
@pytest.mark.parametrize("mib", LARGE)
def test_failover_of_a_large_active_disk(secondary, msg, mib):
    """A commit that takes a while: the status right after the stop is either answer
    (the commit may or may not have finished), Settle waits for it by polling the graph."""
    s = secondary(secondary_chain("256M", "64k"))
    size = mib * MiB
    s.run(Start(primary=False), PrimaryWrite(size - MiB, 2 * MiB if mib < 256 else MiB, 0x66))
    s.run(Write(0, size, 0x77))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    seen = s.do(Status())
    assert seen in (status(msg.IO_ERROR), status(None))
    allowed = s.steps[-1].expected
    assert isinstance(allowed, OneOf)
    assert sorted(map(repr, allowed.allowed)) == sorted(
        map(repr, (status(msg.IO_ERROR), status(None)))
    )
    s.do(Settle())
    s.expect(Status(), status(None))
    tail = 256 * MiB - size
    want = ((0, size, 0x77),) + (((size, tail, 0x00),) if tail else ())
    s.expect(Read(0, 256 * MiB), IoResult(True, None, want))
    s.finish()


@pytest.mark.secondary
@pytest.mark.quick
def test_done_io_goes_to_the_secondary_disk(secondary):
    """DONE after failover: the node's file is the secondary disk; reads and writes go to it
    directly, the NBD export sees them at once, and active/hidden stay as they were."""
    s = secondary("secondary-prefilled")
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x31), PrimaryWrite(2 * MiB, 64 * KiB, 0x32))
    s.run(Stop(primary=False, failover=True), Settle())
    s.expect(Write(128 * KiB, 4 * KiB, 0x33), IO_OK)
    s.expect(PrimaryWrite(256 * KiB, 4 * KiB, 0x34), IO_OK)
    view = data(
        (0, 64 * KiB, 0x31),
        (64 * KiB, 64 * KiB, 0x11),
        (128 * KiB, 4 * KiB, 0x33),
        (132 * KiB, 124 * KiB, 0x11),
        (256 * KiB, 4 * KiB, 0x34),
        (260 * KiB, 764 * KiB, 0x11),
        (1 * MiB, 3 * MiB, 0x00),
    )
    s.expect(Read(0, 4 * MiB), view)
    s.expect(PrimaryRead(0, 4 * MiB), view)
    # The active and hidden images hold what they held before the failover (the secondary
    # VM's write, the backed-up old data at 2 MiB): finish() reads them offline.
    active, hidden = s.model.disks["active"], s.model.disks["hidden"]
    assert list(active.data.allocated(0, active.size)) == [(0, 64 * KiB)]
    assert list(hidden.data.allocated(0, hidden.size)) == [(2 * MiB, 2 * MiB + 64 * KiB)]
    s.finish()


REQUESTS_AFTER_FAILOVER = [
    pytest.param(Start(primary=False), id="start-secondary", marks=QUICK),
    pytest.param(Start(primary=True), id="start-primary"),
    pytest.param(Stop(primary=False), id="stop"),
    pytest.param(Stop(primary=False, failover=True), id="failover"),
    pytest.param(Stop(primary=True, failover=True), id="failover-primary"),
    pytest.param(Checkpoint(), id="checkpoint"),
]


@pytest.mark.secondary
@pytest.mark.parametrize("request_", REQUESTS_AFTER_FAILOVER)
def test_requests_after_failover_are_ignored(secondary, profile, request_):
    if profile.without_ignore_after_failover:
        pytest.skip(profile.without_ignore_after_failover)
    s = secondary("secondary-prefilled")
    s.run(Start(primary=False), Write(0, 4 * KiB, 0x41), PrimaryWrite(MiB, 64 * KiB, 0x42))
    s.run(Stop(primary=False, failover=True), Settle())
    s.expect(request_, QMP_OK)
    s.expect(request_, QMP_OK)
    assert s.model.stage("rep") is Stage.DONE
    s.expect(Status(), status(None))
    s.expect(
        Read(0, 2 * MiB),
        data((0, 4 * KiB, 0x41), (4 * KiB, MiB - 4 * KiB, 0x11), (MiB, MiB, 0x00)),
    )
    assert children(s.topo.machine("secondary"), "rep") == {"file": "secondary"}
    s.finish()


# ---- stop when not running


@pytest.mark.secondary
@pytest.mark.parametrize("failover", PLAIN_QUICK)
def test_stop_before_start(secondary, msg, failover):
    s = secondary()
    want = QMP_OK if failover else QmpResult(False, None, "GenericError", msg.NOT_RUNNING)
    s.expect(Stop(primary=False, failover=failover), want)
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4 * KiB), IO_EIO)
    # Nothing happened: the node can still be started.
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Status(), status(None))
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("failover", PLAIN_QUICK)
def test_primary_stop_before_start(primary, msg, failover):
    s = primary()
    want = QMP_OK if failover else QmpResult(False, None, "GenericError", msg.NOT_RUNNING)
    s.expect(Stop(primary=True, failover=failover, machine=PRIMARY), want)
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Write(0, 4 * KiB, 0x11), IO_OK)
    s.finish()


# ---- the whole life, status at every step


@pytest.mark.secondary
@pytest.mark.parametrize("failover", FAILOVER_QUICK)
def test_secondary_life_status(secondary, msg, profile, failover):
    require_plain_stop_report(profile)
    s = secondary()
    s.expect(Status(), status(msg.NOT_RUNNING))
    assert s.model.stage("rep") is Stage.NONE
    s.expect(Start(primary=False), QMP_OK)
    assert s.model.stage("rep") is Stage.RUNNING
    s.expect(Status(), status(None))
    s.run(Write(0, 4 * KiB, 0x11), PrimaryWrite(0, 64 * KiB, 0x12), Checkpoint())
    s.expect(Status(), status(None))
    if failover:
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Status())
        s.do(Settle())
        final = status(None)
    else:
        s.expect(Stop(primary=False), QmpResult(False, None, "GenericError", msg.BACKUP_CANCELLED))
        final = status(msg.IO_ERROR)
    assert s.model.stage("rep") is Stage.DONE
    s.expect(Status(), final)
    s.finish()


@pytest.mark.quick
@pytest.mark.primary
def test_primary_life_status(primary, msg):
    s = primary()
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(Write(0, 4 * KiB, 0x11), IO_EIO)
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(Write(0, 4 * KiB, 0x11), IO_OK)
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    assert s.model.stage("rep") is Stage.DONE
    s.finish()
