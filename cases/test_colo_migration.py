"""COLO drives the filter: the pair's migration with x-colo, and its checkpoints.

Both QEMUs as the other cases run them (`-M none`, no guest); the secondary waits with
`-incoming defer`. The replication nodes are never started by hand: COLO's migration
starts them (the secondary first, the primary once the secondary is READY), and each
COLO checkpoint stops both VMs, asks the secondary for its replication error and
checkpoints it. Each step is compared with the model's COLO (harness.model.colo):
each side's query-colo-status, run state, STOP/RESUME events and COLO_EXIT; after
each step both VMs' whole views and every live layer (PairStory's check).

Facts pinned here (every release Debian ships; its profile says what differs):
- COLO starts the secondary's replication before the primary's; both VMs RESUME and
  no replication error is pending.
- A primary write is in the secondary disk (its old data copied into the hidden disk)
  but not in the secondary VM's view until the next checkpoint, after which both
  views are equal and the active and hidden disks are empty again.
- The secondary VM's own writes live in the active disk and are dropped at the next
  checkpoint.
- 10.0.0 to 10.1 never enter COLO on the primary (a profile bug): the primary's
  replication never starts, so nothing it writes reaches the secondary.
"""

from __future__ import annotations

import pytest

from harness.colo_story import in_colo
from harness.observe import IO_OK, QMP_OK, ColoSideState, ColoState, data, qmp_error, status
from harness.ops import PRIMARY, SECONDARY, ColoCheckpoint, ColoStart, LostHeartbeat, Status
from harness.topology.pair import pair_recipe
from harness.units import KiB, MiB

pytestmark = [pytest.mark.colo, pytest.mark.colo_migration, pytest.mark.primary]
QUICK = pytest.mark.quick

GEOMETRIES = [
    pytest.param(pair_recipe(cluster="64k"), id="64k"),
    pytest.param(pair_recipe(cluster="512"), id="512"),
    pytest.param(pair_recipe(cluster="2M"), id="2m"),
    pytest.param(
        pair_recipe(cluster="512", hidden_cluster="2M", active_cluster="64k", local_cluster="4k"),
        id="mixed",
    ),
]


def both(profile, runs=("STOP", "RESUME")) -> ColoState:
    """Both sides in COLO with their VMs running, after `runs` on each."""
    return ColoState((in_colo(profile, PRIMARY, runs), in_colo(profile, SECONDARY, runs)))


def whole(s, *extents: tuple[int, int, int]):
    end = extents[-1][0] + extents[-1][1] if extents else 0
    tail = ((end, s.size - end, 0x11 if end < MiB else 0x00),) if end < s.size else ()
    return data(*extents, *tail)


# ---- start


@QUICK
@pytest.mark.parametrize("quorum", [False, True], ids=["rep", "quorum"])
def test_migration_starts_replication_on_both_sides(colo, profile, xfail_bug, msg, quorum):
    """x-colo migration: both VMs RESUME in COLO, the secondary first; no replication
    error; the active and hidden disks are emptied by start's checkpoint; both views
    are the disks as they were (PairStory's check after every step)."""
    xfail_bug(profile.colo_plain_migration)
    s = colo(secondary_quorum=quorum)
    s.connect()
    s.expect(ColoStart(), both(profile, runs=("RESUME",)))
    s.expect(Status(), status(None))
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.sread(0, 2 * MiB), data((0, MiB, 0x11), (MiB, MiB, 0x00)))
    s.finish()


def test_plain_migration_never_enters_colo(colo, profile, needs_bug, msg):
    """10.0.0 to 10.1: the primary completes a plain migration (its VM stays stopped, no
    COLO); the secondary started replication, entered COLO and left it (error). The
    primary's replication node never started: its writes reach only the local disk."""
    needs_bug(profile.colo_plain_migration)
    s = colo()
    s.connect()
    seen = s.expect(
        ColoStart(),
        ColoState(
            (
                ColoSideState(PRIMARY, "none", "none", "none", False),
                ColoSideState(SECONDARY, "secondary", "none", "none", True, ("RESUME",), "error"),
            )
        ),
    )
    assert isinstance(seen, ColoState)
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(ColoCheckpoint(), s.model.colo.observe())
    s.expect(s.sread(0, 64 * KiB), data((0, 64 * KiB, 0x11)))
    s.finish()


def test_secondary_start_refused_ends_its_colo(colo, profile, xfail_bug, msg):
    """A secondary whose replication cannot start (its top-id names no root) leaves COLO
    at once (COLO_EXIT error) with its VM stopped; the primary entered COLO and waits
    for a READY that never comes, its VM stopped too, its replication not started."""
    xfail_bug(profile.colo_plain_migration)
    s = colo(top_id="nonexistent")
    s.connect()
    s.expect(
        ColoStart(),
        ColoState(
            (
                in_colo(profile, PRIMARY, running=False),
                in_colo(profile, SECONDARY, running=False, exit="error"),
            )
        ),
    )
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    # the primary's own failover lets it go on alone
    s.lost_heartbeat(PRIMARY)
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.finish()


@QUICK
def test_lost_heartbeat_outside_colo(colo, msg):
    """x-colo-lost-heartbeat before the migration, on either side: refused (not in COLO)."""
    s = colo()
    s.expect(LostHeartbeat(PRIMARY), qmp_error(msg.colo_not_enabled))
    s.expect(LostHeartbeat(SECONDARY), qmp_error(msg.colo_not_enabled))
    s.finish()


def test_lost_heartbeat_twice(colo, profile, xfail_bug, msg):
    """A failover leaves COLO: a second x-colo-lost-heartbeat is refused as outside COLO,
    and a checkpoint request does nothing."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.primary_takes_over()
    s.expect(LostHeartbeat(PRIMARY), qmp_error(msg.colo_not_enabled))
    s.expect(
        ColoCheckpoint(),
        ColoState((ColoSideState(PRIMARY, "none", "primary", "request", True),)),
    )
    s.finish()


@QUICK
def test_capabilities_the_release_needs(colo, profile, msg):
    """11.x: x-colo alone is refused (it needs return-path). Before, return-path must stay
    off and x-colo alone is accepted (the harness's ColoStart sets what the profile
    says)."""
    s = colo()
    m = s.topo.machine(PRIMARY)
    got = m.qmp("migrate-set-capabilities", capabilities=[{"capability": "x-colo", "state": True}])
    want = qmp_error(msg.COLO_NEEDS_RETURN_PATH) if profile.colo_needs_return_path else QMP_OK
    assert got == want
    s.finish()


# ---- checkpoints


@QUICK
def test_primary_write_reaches_the_secondary_at_the_checkpoint(colo, profile, xfail_bug):
    """Between checkpoints a primary write is in the secondary disk with the old data in
    the hidden disk, and the secondary VM does not see it; the checkpoint makes the
    views equal and empties the active and hidden disks."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(s.sread(0, 128 * KiB), data((0, 128 * KiB, 0x11)))
    s.expect(s.pread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.expect(ColoCheckpoint(), both(profile))
    s.expect(s.sread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.finish()


@QUICK
def test_secondary_writes_are_dropped_at_the_checkpoint(colo, profile, xfail_bug):
    """The secondary VM's writes live in the active disk until the next checkpoint."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.expect(s.swrite(64 * KiB, 8 * KiB, 0x33), IO_OK)
    s.expect(
        s.sread(0, 128 * KiB),
        data((0, 64 * KiB, 0x11), (64 * KiB, 8 * KiB, 0x33), (72 * KiB, 56 * KiB, 0x11)),
    )
    s.expect(ColoCheckpoint(), both(profile))
    s.expect(s.sread(0, 128 * KiB), data((0, 128 * KiB, 0x11)))
    s.finish()


def test_checkpoint_without_writes(colo, profile, xfail_bug):
    """Checkpoints with nothing written stop and resume both VMs and change no data."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    for _ in range(3):
        s.expect(ColoCheckpoint(), both(profile))
    s.finish()


def test_both_sides_write_the_same_cluster(colo, profile, xfail_bug):
    """The secondary VM writes where the primary writes: the copy-before-write saves the
    checkpoint's data once, the secondary reads its own write until the checkpoint, then
    the primary's."""
    xfail_bug(profile.colo_plain_migration)
    s = colo()
    s.migrate()
    s.do(s.swrite(0, 4 * KiB, 0x33))
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.do(s.swrite(8 * KiB, 4 * KiB, 0x34))
    s.do(s.pwrite(4 * KiB, 8 * KiB, 0x23))
    s.expect(
        s.sread(0, 16 * KiB),
        data(
            (0, 4 * KiB, 0x33),
            (4 * KiB, 4 * KiB, 0x11),
            (8 * KiB, 4 * KiB, 0x34),
            (12 * KiB, 4 * KiB, 0x11),
        ),
    )
    s.colo_checkpoint()
    s.expect(
        s.sread(0, 16 * KiB),
        data((0, 4 * KiB, 0x22), (4 * KiB, 8 * KiB, 0x23), (12 * KiB, 4 * KiB, 0x22)),
    )
    s.finish()


@pytest.mark.parametrize("recipe", GEOMETRIES)
def test_checkpoint_rounds_over_geometries(colo, recipe):
    """Three COLO checkpoint intervals of primary and secondary writes across cluster
    boundaries (the copy granularity is max(64 KiB, the hidden disk's cluster)); judged
    by the model on every release (on 10.0.0 to 10.1 COLO never runs)."""
    s = colo(recipe)
    s.migrate()
    for i, base in enumerate((60 * KiB, 1 * MiB - 4 * KiB, 3 * MiB + 512)):
        s.do(s.pwrite(base, 200 * KiB, 0x21 + i))
        s.do(s.swrite(base + 100 * KiB, 8 * KiB, 0x31 + i))
        s.do(s.pwrite(base + 96 * KiB, 16 * KiB, 0x41 + i))
        s.colo_checkpoint()
    s.finish()


def test_many_checkpoints(colo):
    """Twelve checkpoints, a primary write before each: what COLO's timer does."""
    s = colo()
    s.auto_check = False  # one check at the end
    s.migrate()
    for i in range(12):
        s.do(s.pwrite(i * 256 * KiB, 64 * KiB, 0x40 + i))
        s.colo_checkpoint()
    s.check()
    s.finish()
