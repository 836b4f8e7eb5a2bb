"""Checkpoint semantics: copy-before-write into the hidden disk, and what a checkpoint resets.

- The primary's writes reach the secondary disk over NBD; before each one the backup job
  copies the old data of every touched backup cluster into the hidden disk. The backup
  cluster is max(64 KiB, hidden's cluster size): 64 KiB for hidden clusters of 512 B and
  64 KiB, 2 MiB for 2 MiB hidden clusters (recipes secondary-512, secondary, secondary-2m,
  secondary-mixed: active 64 KiB, hidden 2 MiB, secondary 512 B).
- Once per cluster per checkpoint: a second write to a copied cluster copies nothing, so the
  hidden disk keeps the OLDEST data; after a checkpoint the next write copies again.
- The secondary VM sees the primary's writes only after a checkpoint, and loses its own
  writes at a checkpoint: active and hidden are emptied (checked live with HMP qemu-io map
  and offline with qemu-img map).
- The checkpoint's answer in every mode and stage.
- Write-zeroes over NBD copy like writes; NBD trims do nothing at all here (neither the
  secondary disk nor the copy-before-write filter has discard=unmap).
"""

from __future__ import annotations

import pytest

from harness.faults import over_secondary
from harness.graph import live_allocation
from harness.observe import IO_OK, QMP_OK, data, normalize, qmp_error, status
from harness.ops import (
    PRIMARY,
    Checkpoint,
    PrimaryDiscard,
    PrimaryRead,
    PrimaryWrite,
    PrimaryWriteZeroes,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)
from harness.topology.standard import secondary_chain
from harness.units import KiB, MiB

# Each test's quick case is its 64 KiB-cluster ("secondary") or running-stage one.
QUICK, SLOW = pytest.mark.quick, pytest.mark.slow

# recipe -> backup cluster size (max(64 KiB, hidden's cluster size))
GEOMETRIES = {
    "secondary-512": 64 * KiB,
    "secondary": 64 * KiB,
    "secondary-2m": 2 * MiB,
    "secondary-mixed": 2 * MiB,
}
RECIPES = [
    pytest.param("secondary-512", id="secondary-512"),
    pytest.param("secondary", id="secondary", marks=QUICK),
    pytest.param("secondary-2m", id="secondary-2m"),
    pytest.param("secondary-mixed", id="secondary-mixed"),
]


def hidden_live(s) -> list[tuple[int, int]]:
    return live_allocation(s.topo.machine("secondary"), "hidden")


def active_live(s) -> list[tuple[int, int]]:
    return live_allocation(s.topo.machine("secondary"), "active")


def seed(s, size: int, pattern: int) -> None:
    """Started, and the secondary disk holds `pattern` on [0, size) as of the last checkpoint."""
    s.expect(Start(primary=False), QMP_OK)
    s.expect(PrimaryWrite(0, size, pattern), IO_OK)
    s.expect(Checkpoint(), QMP_OK)
    assert hidden_live(s) == []


# ---- copy-before-write granularity


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("recipe", "old"),
    [
        pytest.param("secondary-512", "zero", id="secondary-512-zero"),
        pytest.param("secondary-512", "data", id="secondary-512-data", marks=QUICK),
        pytest.param("secondary", "zero", id="secondary-zero"),
        pytest.param("secondary", "data", id="secondary-data", marks=QUICK),
        # block-copy asks the block status first: a request that starts on a zero cluster
        # is cut where the zeroes end, and the data after them copied as data
        pytest.param("secondary", "zero-data", id="secondary-zero-data", marks=QUICK),
        pytest.param("secondary-2m", "zero", id="secondary-2m-zero"),
        pytest.param("secondary-2m", "data", id="secondary-2m-data", marks=QUICK),
        pytest.param("secondary-mixed", "zero", id="secondary-mixed-zero"),
        pytest.param("secondary-mixed", "data", id="secondary-mixed-data", marks=SLOW),
    ],
)
def test_copy_granularity(secondary, recipe, old):
    """A 1 KiB primary write straddling two backup clusters copies both, whole: the old
    data as data, or (unallocated, reading as zero) as zero clusters; allocated either way.
    `zero-data`: the first of the two reads as zero, the second holds data."""
    bc = GEOMETRIES[recipe]
    s = secondary(recipe)
    # the old patterns of the two clusters the write straddles (2 and 3)
    old2, old3 = {"zero": (0, 0), "data": (0x11, 0x11), "zero-data": (0, 0x11)}[old]
    if old == "data":
        seed(s, 4 * bc, 0x11)
    else:
        s.expect(Start(primary=False), QMP_OK)
    if old == "zero-data":
        s.expect(PrimaryWrite(3 * bc, bc, old3), IO_OK)
        s.expect(Checkpoint(), QMP_OK)
    s.expect(PrimaryWrite(3 * bc - 512, 1024, 0x22), IO_OK)
    assert hidden_live(s) == [(2 * bc, 4 * bc)]
    s.check_layers_live()
    # the secondary VM still sees the old data; the secondary disk has the new
    s.expect(Read(2 * bc, 2 * bc), data(*normalize(((2 * bc, bc, old2), (3 * bc, bc, old3)))))
    s.expect(
        PrimaryRead(2 * bc, 2 * bc),
        data(
            (2 * bc, bc - 512, old2),
            (3 * bc - 512, 1024, 0x22),
            (3 * bc + 512, bc - 512, old3),
        ),
    )
    # a write of one byte, at the very start of another cluster: exactly that cluster
    s.expect(PrimaryWrite(5 * bc, 1, 0x33), IO_OK)
    assert hidden_live(s) == [(2 * bc, 4 * bc), (5 * bc, 6 * bc)]
    s.expect(Checkpoint(), QMP_OK)
    assert hidden_live(s) == [] and active_live(s) == []
    s.expect(Read(5 * bc, 4), data((5 * bc, 1, 0x33), (5 * bc + 1, 3, 0)))
    s.check_layers_live()
    s.finish()


# ---- once per cluster per checkpoint


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", RECIPES)
def test_hidden_keeps_oldest_data_until_checkpoint(secondary, recipe):
    bc = GEOMETRIES[recipe]
    s = secondary(recipe)
    seed(s, 2 * bc, 0x11)
    s.expect(PrimaryWrite(100, 1000, 0x22), IO_OK)
    s.expect(PrimaryWrite(0, bc, 0x33), IO_OK)  # the same cluster: no second copy
    s.expect(PrimaryWrite(bc - 4096, 8192, 0x44), IO_OK)  # cluster 0 again, and cluster 1
    assert hidden_live(s) == [(0, 2 * bc)]
    # the secondary VM sees the checkpoint's 0x11 everywhere (the hidden disk's copies)
    s.expect(Read(0, 2 * bc), data((0, 2 * bc, 0x11)))
    s.check_layers_live()
    s.expect(Checkpoint(), QMP_OK)
    assert hidden_live(s) == []
    newest = ((0, bc - 4096, 0x33), (bc - 4096, 8192, 0x44), (bc + 4096, bc - 4096, 0x11))
    s.expect(Read(0, 2 * bc), data(*newest))
    # a new checkpoint interval: the next write copies again, now the newest data
    s.expect(PrimaryWrite(bc - 1, 2, 0x55), IO_OK)
    assert hidden_live(s) == [(0, 2 * bc)]
    s.expect(Read(0, 2 * bc), data(*newest))
    s.check_layers_live()
    s.expect(Checkpoint(), QMP_OK)
    s.expect(
        Read(bc - 4096, 8192),
        data((bc - 4096, 4095, 0x44), (bc - 1, 2, 0x55), (bc + 1, 4095, 0x44)),
    )
    s.check_layers_live()
    s.finish()


# ---- visibility and discarding


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", RECIPES)
def test_primary_writes_visible_only_after_checkpoint(secondary, recipe):
    bc = GEOMETRIES[recipe]
    s = secondary(recipe)
    s.expect(Start(primary=False), QMP_OK)
    s.expect(PrimaryWrite(bc // 2, bc, 0x33), IO_OK)
    s.expect(Read(0, 2 * bc), data((0, 2 * bc, 0)))
    s.expect(Status(), status(None))
    s.expect(Checkpoint(), QMP_OK)
    s.expect(Read(0, 2 * bc), data((0, bc // 2, 0), (bc // 2, bc, 0x33), (3 * bc // 2, bc // 2, 0)))
    s.check_layers_live()
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("recipe", RECIPES)
def test_secondary_writes_discarded_at_checkpoint(secondary, recipe):
    """The secondary VM's own writes (across cluster boundaries, unaligned) live in the
    active disk until the checkpoint empties it; the primary's then show through."""
    bc = GEOMETRIES[recipe]
    s = secondary(recipe)
    seed(s, 2 * bc, 0x11)
    s.expect(Write(bc - 300, 600, 0x22), IO_OK)
    s.expect(Write(100, 1000, 0x23), IO_OK)
    s.expect(PrimaryWrite(bc - 1000, 2000, 0x44), IO_OK)
    s.expect(
        Read(0, 2 * bc),
        data(
            (0, 100, 0x11),
            (100, 1000, 0x23),
            (1100, bc - 1400, 0x11),
            (bc - 300, 600, 0x22),
            (bc + 300, bc - 300, 0x11),
        ),
    )
    assert active_live(s) != [] and hidden_live(s) == [(0, 2 * bc)]
    s.check_layers_live()
    s.expect(Checkpoint(), QMP_OK)
    assert active_live(s) == [] and hidden_live(s) == []
    s.expect(
        Read(0, 2 * bc),
        data((0, bc - 1000, 0x11), (bc - 1000, 2000, 0x44), (bc + 1000, bc - 1000, 0x11)),
    )
    s.check_layers_live()
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_repeated_checkpoints_keep_layers_empty(secondary):
    s = secondary("secondary-prefilled")
    s.expect(Start(primary=False), QMP_OK)
    for i in range(3):
        s.expect(Checkpoint(), QMP_OK)
        s.expect(Read(0, 1 * MiB), data((0, 1 * MiB, 0x11)))
        s.expect(Status(), status(None))
        s.expect(Write(i * 4096, 4096, 0x20 + i), IO_OK)
    s.expect(Checkpoint(), QMP_OK)
    assert active_live(s) == [] and hidden_live(s) == []
    s.check_layers_live()
    s.finish()


# ---- a disk whose size is not a multiple of the backup cluster


@pytest.mark.quick
@pytest.mark.secondary
def test_partial_last_cluster_copied_after_every_checkpoint(secondary):
    """A disk of 1 MiB + 1536 B, 64 KiB clusters: its last backup cluster is 1536 B long.
    Like a whole one, it is copied before the first primary write to it in every
    checkpoint interval (a checkpoint marks the whole disk, its tail too, to be copied
    again), and not again within the interval: the secondary VM sees the last
    checkpoint's data until the next one."""
    size = MiB + 1536
    s = secondary(secondary_chain(size, "64k"))
    s.expect(Start(primary=False), QMP_OK)
    seen = ((size - 2048, 2048, 0),)  # what the secondary VM sees of the tail
    for i in range(3):
        s.expect(PrimaryWrite(size - 1024, 512, 0x21 + i), IO_OK)
        s.expect(PrimaryWrite(size - 512, 512, 0x31 + i), IO_OK)  # the same cluster again
        assert hidden_live(s) != []
        s.expect(Read(size - 2048, 2048), data(*seen))
        s.check_layers_live()
        s.expect(Checkpoint(), QMP_OK)
        assert hidden_live(s) == []
        seen = normalize(
            ((size - 2048, 1024, 0), (size - 1024, 512, 0x21 + i), (size - 512, 512, 0x31 + i))
        )
        s.expect(Read(size - 2048, 2048), data(*seen))
    s.check_layers_live()
    s.finish()


# ---- the checkpoint's answer in every stage


SECONDARY_ANSWERS = {
    # no backup job yet
    "none": lambda msg: qmp_error(msg.BACKUP_CANCELLED),
    "running": lambda msg: QMP_OK,
    # stage DONE: replication_do_checkpoint returns silently (>= 5.0), nothing is emptied
    "done-stop": lambda msg: QMP_OK,
    "done-failover": lambda msg: QMP_OK,
    # the backup job was cancelled by the stop
    "failover-failed": lambda msg: qmp_error(msg.BACKUP_CANCELLED),
}


@pytest.mark.secondary
@pytest.mark.parametrize(
    "stage",
    # every stage in the quick set: the answers are what a bisect must pin
    [pytest.param(st, id=st, marks=QUICK) for st in SECONDARY_ANSWERS],
)
def test_checkpoint_answer_secondary(secondary, profile, msg, stage):
    if profile.without_plain_stop_report:
        pytest.skip(profile.without_plain_stop_report)
    # sector 1 lies in the guest's cluster [0, 64K), which the commit must copy
    failing = over_secondary(1) if stage == "failover-failed" else None
    s = secondary(over_secondary=failing)
    if stage != "none":
        s.expect(Start(primary=False), QMP_OK)
        s.expect(Write(0, 4096, 0x11), IO_OK)
        s.expect(PrimaryWrite(64 * KiB, 4096, 0x22), IO_OK)
    if stage == "done-stop":
        s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
    elif stage in ("done-failover", "failover-failed"):
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Settle())
    before = s.do(Status())
    answer = SECONDARY_ANSWERS[stage](msg)
    for _ in range(2):
        s.expect(Checkpoint(), answer)
        # a checkpoint never changes the status, whatever it answers
        assert s.do(Status()) == before
    if stage in ("none", "running", "done-stop", "failover-failed"):
        # running: emptied; the others: untouched (the model says which)
        s.check_layers_live()
    if stage != "none":
        s.do(Read(0, 128 * KiB))
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize(
    "stage",
    [pytest.param(st, marks=QUICK) for st in ("none", "running", "done-stop", "done-failover")],
)
def test_checkpoint_answer_primary(primary, stage):
    """The primary does nothing at a checkpoint and always succeeds."""
    s = primary()
    if stage != "none":
        s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
        s.expect(Write(0, 4096, 0x11), IO_OK)
    if stage in ("done-stop", "done-failover"):
        s.expect(Stop(primary=True, failover=stage == "done-failover", machine=PRIMARY), QMP_OK)
    for _ in range(2):
        s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.do(Status(machine=PRIMARY))
    s.do(PrimaryRead(0, 8192))
    s.finish()


# ---- write-zeroes and discards from the primary


ZERO_REQUESTS = {
    "aligned": (64 * KiB, 64 * KiB),
    "unaligned": (64 * KiB + 100, 1000),
    "cross": (128 * KiB - 700, 1500),
}


@pytest.mark.secondary
@pytest.mark.parametrize(
    ("recipe", "req"),
    [
        pytest.param(
            recipe,
            req,
            id=f"{recipe}-{req}",
            marks=QUICK if (recipe, req) == ("secondary", "aligned") else (),
        )
        for recipe in ("secondary", "secondary-512", "secondary-2m")
        for req in ZERO_REQUESTS
    ],
)
def test_primary_write_zeroes_copies_before_write(secondary, recipe, req):
    bc = GEOMETRIES[recipe]
    off, length = ZERO_REQUESTS[req]
    s = secondary(recipe)
    seed(s, 4 * bc, 0x11)
    s.expect(PrimaryWriteZeroes(off, length), IO_OK)
    first, last = off - off % bc, -(-(off + length) // bc) * bc
    assert hidden_live(s) == [(first, last)]
    s.check_layers_live()
    s.expect(Read(0, 4 * bc), data((0, 4 * bc, 0x11)))
    s.expect(
        PrimaryRead(0, 4 * bc),
        data((0, off, 0x11), (off, length, 0), (off + length, 4 * bc - off - length, 0x11)),
    )
    s.expect(Checkpoint(), QMP_OK)
    s.expect(
        Read(0, 4 * bc),
        data((0, off, 0x11), (off, length, 0), (off + length, 4 * bc - off - length, 0x11)),
    )
    s.check_layers_live()
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize("stage", ["none", pytest.param("running", marks=QUICK), "done-failover"])
def test_primary_discard_does_nothing(secondary, stage):
    """NBD trims succeed and change nothing: the export's node (the secondary disk, or the
    copy-before-write filter while running) has no BDRV_O_UNMAP, so bdrv_co_pdiscard
    returns before any driver runs; no copy into the hidden disk either."""
    s = secondary("secondary-prefilled")
    if stage != "none":
        s.expect(Start(primary=False), QMP_OK)
    if stage == "done-failover":
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Settle())
    s.expect(PrimaryDiscard(0, 1 * MiB), IO_OK)
    s.expect(PrimaryDiscard(100, 1000), IO_OK)
    s.expect(PrimaryRead(0, 1 * MiB), data((0, 1 * MiB, 0x11)))
    if stage == "running":
        assert hidden_live(s) == []
        s.expect(Read(0, 1 * MiB), data((0, 1 * MiB, 0x11)))
    if stage != "done-failover":
        s.check_layers_live()
    s.finish()
