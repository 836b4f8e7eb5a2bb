"""COLO's failover (x-colo-lost-heartbeat) on either side, in the middle of a checkpoint,
and faults while COLO runs.

Facts pinned here (every release Debian ships; its profile says what differs):
- After the primary dies, the secondary notices at once (COLO_EXIT error); its failover
  (replication_stop_all with failover) commits the active and hidden disks into the
  secondary disk: the last checkpoint plus the secondary VM's writes survive, the
  primary's writes since the checkpoint are rolled back, later writes go straight to
  the secondary disk. query-colo-status then says mode none, reason request.
- After the secondary dies, the primary notices only at its next checkpoint (it fails to
  send the request); its failover stops its replication node, which refuses writes;
  the quorum goes on with the local disk.
- COLO_EXIT's reason after a lost heartbeat races the failover: either is allowed.
- A checkpoint interrupted by a death ends as far as QEMU got; the model follows the
  branch QEMU's answer shows (harness.model.system.Fork). Every release has a known bug
  here: a primary whose secondary dies late in a checkpoint stays stopped in COLO.
- The primary's replication error (its NBD link lost) is never asked by COLO: the
  checkpoints go on and the secondary silently misses the primary's writes.
- A replication error on the secondary ends COLO at the next checkpoint (it asks
  replication_get_error_all first), both VMs left stopped.
"""

from __future__ import annotations

import signal

import pytest

from harness.colo_story import in_colo
from harness.faults import EXPORT_ID, FailingWrites, Kill, LinkDown
from harness.observe import IO_EIO, IO_OK, QMP_OK, ColoSideState, ColoState, OneOf, data, status
from harness.ops import (
    PRIMARY,
    SECONDARY,
    BlockdevDel,
    ColoCheckpoint,
    LostHeartbeat,
    Status,
)
from harness.topology.pair import PREP, PRIMARY_CHILD, pair_recipe
from harness.units import KiB, MiB

pytestmark = [pytest.mark.colo, pytest.mark.colo_migration, pytest.mark.primary]
QUICK = pytest.mark.quick
KILL = signal.Signals.SIGKILL.name

GEOMETRIES = [
    pytest.param(pair_recipe(cluster="64k"), id="64k"),
    pytest.param(pair_recipe(cluster="512"), id="512"),
    pytest.param(pair_recipe(cluster="2M"), id="2m"),
    pytest.param(
        pair_recipe(cluster="512", hidden_cluster="2M", active_cluster="64k", local_cluster="4k"),
        id="mixed",
    ),
]


def failed_over(machine: str, mode: str, exits=("request", "error")) -> OneOf:
    """A side after its failover: COLO left on request, its VM stopped and run again;
    the COLO_EXIT reason races the failover."""
    return OneOf(
        tuple(
            ColoState(
                (ColoSideState(machine, "none", mode, "request", True, ("STOP", "RESUME"), r),)
            )
            for r in exits
        )
    )


# ---- the secondary takes over


@QUICK
@pytest.mark.parametrize("quorum", [False, True], ids=["rep", "quorum"])
def test_secondary_failover_keeps_the_last_checkpoint(colo, profile, xfail_bug, quorum):
    """The primary dies after writing; the secondary stops its NBD server and fails over:
    the checkpoint's data plus the secondary VM's own writes, not the primary's later
    writes; the secondary VM then writes straight into the secondary disk."""
    xfail_bug(profile.colo_plain_migration)
    s = colo(secondary_quorum=quorum)
    s.migrate()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.colo_checkpoint()
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))
    s.do(s.swrite(128 * KiB, 64 * KiB, 0x33))
    s.do(Kill(PRIMARY, KILL))
    s.stop_nbd_server()
    # the COLO_EXIT came when the primary died (its receive failed): error
    s.expect(LostHeartbeat(SECONDARY), failed_over(SECONDARY, "secondary", exits=("error",)))
    s.settle()
    s.expect(
        s.sread(0, 256 * KiB),
        data(
            (0, 64 * KiB, 0x22),
            (64 * KiB, 64 * KiB, 0x11),
            (128 * KiB, 64 * KiB, 0x33),
            (192 * KiB, 64 * KiB, 0x11),
        ),
    )
    s.expect(s.swrite(0, 64 * KiB, 0x66), IO_OK)
    s.finish()


@pytest.mark.parametrize("recipe", GEOMETRIES)
def test_secondary_failover_over_geometries(colo, recipe):
    """Writes of both VMs across cluster boundaries, a checkpoint, more writes, the
    primary dies, the secondary takes over; checked offline after quit."""
    s = colo(recipe)
    s.migrate()
    s.do(s.pwrite(60 * KiB, 200 * KiB, 0x21))
    s.do(s.swrite(1 * MiB - 4 * KiB, 12 * KiB, 0x31))
    s.colo_checkpoint()
    s.do(s.pwrite(3 * MiB + 512, 100 * KiB, 0x22))
    s.do(s.swrite(3 * MiB + 64 * KiB, 64 * KiB, 0x32))
    s.secondary_takes_over()
    s.do(s.swrite(2 * MiB, 8 * KiB, 0x41))
    s.finish()


def test_secondary_failover_without_writes(colo):
    """Nothing written since the checkpoint: the failover commit has nothing to copy."""
    s = colo()
    s.migrate()
    s.colo_checkpoint()
    s.secondary_takes_over()
    s.finish()


def test_secondary_failover_with_the_primary_alive(colo):
    """The secondary fails over while the primary lives (its NBD server stopped first, as
    COLO-FT says): the primary notices at its next checkpoint (the request cannot be
    sent: COLO_EXIT error) and keeps running; its writes' errors are stored."""
    s = colo()
    s.migrate()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.stop_nbd_server()
    s.lost_heartbeat(SECONDARY)
    s.settle()
    s.colo_checkpoint()
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.lost_heartbeat(PRIMARY)
    s.finish()


# ---- the primary takes over


@QUICK
def test_primary_failover_goes_on_alone(colo, profile, xfail_bug, msg):
    """The secondary dies; the primary notices only at a checkpoint (COLO_EXIT error, its
    VM runs on) or at its own failover; after it, the replication node refuses writes
    (the quorum reports it and goes on), and COLO-FT's clean-up removes it."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.do(Kill(SECONDARY, KILL))
    s.expect(
        ColoCheckpoint(),
        ColoState((in_colo(profile, PRIMARY, exit="error"),)),
    )
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.lost_heartbeat(PRIMARY)
    s.expect(s.pwrite(128 * KiB, 64 * KiB, 0x24), IO_OK)
    s.remove_primary_child(PRIMARY_CHILD)
    s.expect(BlockdevDel(node=PREP, machine=PRIMARY), QMP_OK)
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


def test_primary_failover_right_after_the_kill(colo):
    """No checkpoint between the secondary's death and the primary's failover: the
    failover shuts COLO down itself; the replication node is stopped (DONE)."""
    s = colo()
    s.migrate()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.primary_takes_over()
    s.expect(s.pwrite(0, 64 * KiB, 0x23), IO_OK)
    s.expect(s.pread(0, 64 * KiB), data((0, 64 * KiB, 0x23)))
    s.finish()


# ---- a death in the middle of a checkpoint


@pytest.mark.parametrize("victim", [PRIMARY, SECONDARY])
def test_failover_in_the_middle_of_a_checkpoint(colo, victim):
    """The victim is SIGKILLed as soon as the other side's VM stopped for a checkpoint;
    the survivor then fails over. How far the checkpoint got is QEMU's timing: each end
    is a branch of the model, and the data after the failover follows it."""
    s = colo()
    s.migrate()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.do(s.swrite(64 * KiB, 64 * KiB, 0x33))
    s.do(ColoCheckpoint(kill=victim))
    if victim == PRIMARY:
        s.secondary_takes_over()
    else:
        s.primary_takes_over()
    s.finish()


# ---- faults while COLO runs


@QUICK
def test_nbd_link_lost_is_silent(colo, profile, xfail_bug, msg):
    """The secondary's NBD server stops while COLO runs: the primary's writes succeed
    (the error stored), checkpoints go on (COLO never asks the primary's replication
    error), and the secondary VM never sees the primary's writes."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.do(LinkDown(SECONDARY, EXPORT_ID, "server"))
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.colo_checkpoint()
    s.expect(s.sread(0, 64 * KiB), data((0, 64 * KiB, 0x11)))
    s.expect(s.pread(0, 64 * KiB), data((0, 64 * KiB, 0x22)))
    s.finish()


def test_hidden_disk_write_failure(colo, profile, xfail_bug):
    """The hidden disk fails the copy-before-write: the primary's write still succeeds
    (the quorum, and the primary node stores nothing: the backup job failed on the
    secondary), and the secondary's COLO ends at the next checkpoint
    (replication_get_error_all), both VMs left stopped; later requests do nothing."""
    xfail_bug(profile.colo_plain_migration)
    s = colo(hidden_fault=FailingWrites("hidden-fault", "hidden", under=True))
    s.migrate()
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    stopped = ColoState(
        (
            in_colo(profile, PRIMARY, ("STOP",), running=False),
            in_colo(profile, SECONDARY, ("STOP",), running=False, exit="error"),
        )
    )
    s.expect(ColoCheckpoint(), stopped)
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.expect(
        ColoCheckpoint(),
        ColoState(
            (
                in_colo(profile, PRIMARY, running=False),
                in_colo(profile, SECONDARY, running=False),
            )
        ),
    )
    s.finish()


def test_active_disk_write_failure(colo, profile, xfail_bug):
    """The active disk fails the secondary VM's write (EIO), and its make-empty at the
    next checkpoint: the secondary's COLO ends there (COLO_EXIT error), the primary
    waits stopped for LOADED; the secondary then takes over."""
    xfail_bug(profile.colo_plain_migration)
    s = colo(active_fault=FailingWrites("active-fault", "active", under=True))
    s.migrate()
    s.expect(s.swrite(0, 64 * KiB, 0x33), IO_EIO)
    s.expect(
        ColoCheckpoint(),
        ColoState(
            (
                in_colo(profile, PRIMARY, ("STOP",), running=False),
                in_colo(profile, SECONDARY, ("STOP",), running=False, exit="error"),
            )
        ),
    )
    s.do(Kill(PRIMARY, KILL))
    s.stop_nbd_server()
    s.lost_heartbeat(SECONDARY)
    s.settle()
    s.finish()
