"""The I/O matrix: every guest request on the replication node, in every mode and stage.

Table: mode (primary, secondary) x stage x request (read, write, write-zeroes, discard,
flush) x alignment. Each case builds the stage, sends the one request, states its answer
(success or the exact errno text), then checks where the data went: the secondary VM's
view (Read), the secondary disk or the primary's child (PrimaryRead over NBD), the
replication status, every layer's allocation live (HMP qemu-io map) and, after QEMU
quits, offline (qemu-img map and byte checks).

Stages:
- none: never started.
- running: started (the secondary: guest and primary writes already in active/hidden).
- done-stop: a plain stop (failover=false). The secondary's stop answers `Backup job was
  cancelled unexpectedly`, goes to DONE and leaves active and hidden as they were: `file`
  is still the active disk.
- done-failover: a stop with failover=true whose commit succeeded; for the secondary
  `file` is now the secondary disk; for the primary it is the same as a plain stop.
- failover-failed (secondary only): the failover commit fails on a blkdebug error rule
  over the secondary disk (one sector inside the range the commit must copy, a range no
  later write touches). Writes are then split by allocation: runs allocated in active or
  hidden go to the active disk, the rest straight to the secondary disk.

Secondary layout (recipe secondary-prefilled: the secondary disk holds 0x11 on [0, 1M)),
64 KiB clusters, before the request:
  active  [0, 0x20000)       guest write 0x33 on [0x8000, 0x18000) (two clusters)
  hidden  [0x20000, 0x40000) the old 0x11, copied before the primary's 0x44
  secondary                  0x44 on [0x28000, 0x38000), 0x11 elsewhere in [0, 1M)
The requests sit on the boundary B = 0x40000 between "allocated in hidden" and "allocated
in neither", so in failover-failed they exercise both targets of the split:
  aligned    [0x30000, 0x50000)   two whole clusters, one on each side of B
  unaligned  B + 0x1064, 1000 B   offset and length not multiples of 512, inside a cluster
  cross      B - 700, 1500 B      unaligned and crossing the cluster boundary B
Primary layout (recipe primary-child): the child holds 0x11 on [0, 0x60000) (written over
NBD), the same requests go to the primary node. The primary's unaligned writes leave the
rest of each touched sector undefined (the read-modify-write read fails and is ignored).

FAILOVER in flight is out of scope here (the commit is too quick to catch without a
throttle; see the failover cases).
"""

from __future__ import annotations

import pytest

from harness.faults import over_secondary
from harness.graph import node_names
from harness.observe import (
    IO_EIO,
    IO_OK,
    QMP_OK,
    Crashed,
    IoResult,
    Observation,
    qmp_error,
    status,
)
from harness.ops import (
    PRIMARY,
    REP,
    SECONDARY,
    Checkpoint,
    Discard,
    Flush,
    Op,
    PrimaryRead,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
    WriteZeroes,
)
from harness.units import SECTOR, KiB, MiB

CL = 64 * KiB
B = 0x40000
WINDOW = (0, 0x60000)
PATTERN = 0x55

ALIGNMENTS: dict[str, tuple[int, int]] = {
    "aligned": (B - CL, 2 * CL),
    "unaligned": (B + 0x1064, 1000),
    "cross": (B - 700, 1500),
}

# The commit must copy [0, B) (allocated in active or hidden); the error sector lies in the
# guest-written clusters, which neither the primary's writes nor the split's writes to the
# secondary disk touch afterwards.
ERROR_SECTOR = (0x10000 + 0x200) // SECTOR


PRIMARY_STAGES = ("none", "running", "done-stop", "done-failover")
SECONDARY_STAGES = ("none", "running", "done-stop", "done-failover", "failover-failed")
REQUESTS = ("read", "write", "write-zeroes", "discard")


# The table's quick case: an aligned write to a running secondary.
QUICK_CASE = "secondary-running-write-aligned"


def _table() -> list[object]:
    rows: list[object] = []
    for mode, stages in (("primary", PRIMARY_STAGES), ("secondary", SECONDARY_STAGES)):
        mark = pytest.mark.primary if mode == "primary" else pytest.mark.secondary
        for stage in stages:
            cases = [
                (req, align, f"{mode}-{stage}-{req}-{align}")
                for req in REQUESTS
                for align in ALIGNMENTS
            ]
            cases.append(("flush", None, f"{mode}-{stage}-flush"))
            for req, align, case_id in cases:
                marks = [mark, pytest.mark.quick] if case_id == QUICK_CASE else [mark]
                rows.append(pytest.param(mode, stage, req, align, marks=marks, id=case_id))
    return rows


def _request(req: str, align: str | None) -> Op:
    """The request under test, on the replication node of the case's machine."""
    if req == "flush":
        return Flush()
    assert align is not None
    off, length = ALIGNMENTS[align]
    if req == "read":
        return Read(off, length)
    if req == "write":
        return Write(off, length, PATTERN)
    if req == "write-zeroes":
        return WriteZeroes(off, length)
    return Discard(off, length)


def _stated(profile, mode: str, stage: str, req: str) -> Observation | None:
    """The answer the case states; None: a successful read, whose data the model states."""
    if (
        stage == "failover-failed"
        and req.startswith("write")
        and (profile.failover_failed_write_crashes)
    ):
        # Before 6.1 each of these writes has a run allocated in neither active nor hidden,
        # which goes to the secondary disk through a child without WRITE: QEMU aborts.
        return Crashed("SIGABRT", profile.texts.WRITE_ASSERTION)
    if req in ("discard", "flush"):
        # No discard callback: the block layer answers success before the filter runs.
        # No flush callback: the flush goes to the children and never fails here.
        return IO_OK
    if mode == "primary":
        if req == "read":
            return IO_EIO  # the primary refuses every read
        return IO_OK if stage == "running" else IO_EIO
    if stage == "none":
        return IO_EIO
    return None if req == "read" else IO_OK


def _primary_stage(s, stage: str) -> None:
    s.run(PrimaryWrite(*WINDOW, 0x11), Status(machine=PRIMARY))
    if stage == "none":
        return
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    if stage == "done-stop":
        s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    elif stage == "done-failover":
        s.expect(Stop(primary=True, failover=True, machine=PRIMARY), QMP_OK)


def _secondary_stage(s, msg, stage: str) -> None:
    if stage == "none":
        return
    s.expect(Start(primary=False), QMP_OK)
    s.run(Write(0x8000, 0x10000, 0x33), PrimaryWrite(0x28000, 0x10000, 0x44), Read(*WINDOW))
    if stage == "done-stop":
        s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
        s.expect(Status(), status(msg.IO_ERROR))
    elif stage == "done-failover":
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Settle())
        s.expect(Status(), status(None))
        # The inline active and hidden nodes are closed once the commit drops them (their
        # images stay as they were: finish() checks them offline).
        assert node_names(s.topo.machine("secondary")) == {"rep", "secondary", "secondary-file"}
    elif stage == "failover-failed":
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Settle())
        s.expect(Status(), status(msg.IO_ERROR))
        # no backup job any more; a second stop is refused
        s.expect(Checkpoint(), qmp_error(msg.BACKUP_CANCELLED))
        s.expect(Stop(primary=False), qmp_error(msg.NOT_RUNNING))


def _staged(primary, secondary, msg, mode: str, stage: str):
    """A fresh story of `mode` brought to `stage` (the secondary over prefilled disks; in
    FAILOVER_FAILED, a blkdebug error under the secondary disk made the commit fail)."""
    if mode == "primary":
        s = primary()
        _primary_stage(s, stage)
        return s
    failing = over_secondary(ERROR_SECTOR) if stage == "failover-failed" else None
    s = secondary("secondary-prefilled", over_secondary=failing)
    _secondary_stage(s, msg, stage)
    return s


def _requested(s, profile, mode: str, stage: str, req: str, align: str | None) -> bool:
    """Send one request, stating its answer where the case states one; False when QEMU
    died of it as the profile says (the story is then finished)."""
    stated = _stated(profile, mode, stage, req)
    if stated is None:
        s.do(_request(req, align))
        return True
    s.expect(_request(req, align), stated)
    if isinstance(stated, Crashed):
        s.finish()
        return False
    return True


def _where_the_data_went(s, mode: str) -> None:
    s.run(
        PrimaryRead(*WINDOW),
        Read(*WINDOW),
        Status(machine=PRIMARY if mode == "primary" else SECONDARY),
    )


@pytest.mark.parametrize(("mode", "stage", "req", "align"), _table())
def test_io(primary, secondary, profile, msg, mode, stage, req, align):
    s = _staged(primary, secondary, msg, mode, stage)
    if not _requested(s, profile, mode, stage, req, align):
        return
    _where_the_data_went(s, mode)
    if mode == "secondary" and stage != "done-failover":
        s.check_layers_live()
    s.finish()


def _stages() -> list[object]:
    return [
        pytest.param(mode, stage, marks=[pytest.mark.quick], id=f"{mode}-{stage}")
        for mode, stages in (("primary", PRIMARY_STAGES), ("secondary", SECONDARY_STAGES))
        for stage in stages
    ]


# Each request once, in an order where the ones that change nothing come first (and a
# write that aborts QEMU, before 6.1 in FAILOVER_FAILED, comes last).
STAGE_REQUESTS = (
    ("read", "cross"),
    ("discard", "aligned"),
    ("flush", None),
    ("write", "cross"),
    ("write-zeroes", "aligned"),
)


@pytest.mark.parametrize(("mode", "stage"), _stages())
def test_stage_cells(primary, secondary, profile, msg, mode, stage):
    """The quick set's row of the table: every request of one stage in one story, each
    answer as `test_io` states it, then where the data went."""
    s = _staged(primary, secondary, msg, mode, stage)
    for req, align in STAGE_REQUESTS:
        if not _requested(s, profile, mode, stage, req, align):
            return
    _where_the_data_went(s, mode)
    s.finish()


def _exact(actual: Observation, *extents: tuple[int, int, int]) -> None:
    """The real observation itself (not only the model's defined bytes) is exactly this."""
    assert actual == IoResult(True, None, tuple(extents)), actual.describe()


@pytest.mark.quick
@pytest.mark.secondary
def test_failover_failed_write_split_stated(secondary, profile, msg):
    """The FAILOVER_FAILED split, stated byte for byte: a write is padded to 512 B, then each
    run allocated in active or hidden goes to the active disk and the rest straight to the
    secondary disk, which the primary's NBD reads then show. Before 6.1 the second half
    aborts QEMU (the secondary disk is reached through a child without WRITE)."""
    s = secondary("secondary-prefilled", over_secondary=over_secondary(ERROR_SECTOR))
    _secondary_stage(s, msg, "failover-failed")
    # wholly below B (in active's clusters): -> active only, on every release
    s.expect(Write(0x1064, 1000, 0x77), IO_OK)
    # crossing B: [B-1024, B) is allocated in hidden -> active; [B, B+1024) -> secondary
    if profile.failover_failed_write_crashes:
        s.expect(Write(B - 700, 1500, 0x55), Crashed("SIGABRT", msg.WRITE_ASSERTION))
        s.finish()
        return
    s.expect(Write(B - 700, 1500, 0x55), IO_OK)
    # wholly above B, unaligned: -> secondary only
    s.expect(Write(B + 0x8064, 1000, 0x66), IO_OK)
    view = (
        (0, 0x1064, 0x11),
        (0x1064, 1000, 0x77),
        (0x144C, 0x8000 - 0x144C, 0x11),
        (0x8000, 0x10000, 0x33),
        (0x18000, B - 700 - 0x18000, 0x11),
        (B - 700, 1500, 0x55),
        (B + 800, 0x8064 - 800, 0x11),
        (B + 0x8064, 1000, 0x66),
        (B + 0x8064 + 1000, 0x60000 - B - 0x8064 - 1000, 0x11),
    )
    _exact(s.do(Read(*WINDOW)), *view)
    # The secondary disk: below B only what the aborted commit may have copied (the view's
    # 0x11 or the primary's 0x44 on [0x28000, 0x38000)); from 0x38000 both are 0x11, and
    # the 0x55 written below B must not be there.
    s.do(PrimaryRead(0x38000, 0x28000))  # the model leaves [0x38000, B) undefined ...
    want = (
        (0x38000, B - 0x38000, 0x11),
        (B, 800, 0x55),
        (B + 800, 0x8064 - 800, 0x11),
        (B + 0x8064, 1000, 0x66),
        (B + 0x8064 + 1000, 0x60000 - B - 0x8064 - 1000, 0x11),
    )
    # ... so read every byte with this expectation straight from the NBD client.
    assert s.topo.export_io is not None
    _exact(s.topo.export_io.read(0x38000, 0x28000, want), *want)
    s.check_layers_live()
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_export_read_before_start(secondary):
    """rep exported (as a VM's disk holds it) and read with the harness's own NBD requests
    (harness.nbd_reader: one request a range, every byte through rep, NBD_CMD_FLAG_DF).
    Before start every read fails, where the disk holds data and where it holds nothing,
    which a sparse read would answer with a hole from the block status without asking
    rep; once started, the same requests answer the bytes."""
    s = secondary("secondary-prefilled", checks_over_nbd=True)
    reader = s.topo.checkers[REP]
    ranges = ((0, CL), (MiB - CL // 2, CL), (2 * MiB, CL))  # data, data and nothing, nothing
    for off, length in ranges:
        assert reader.read(off, length, None) == IO_EIO
        s.expect(Read(off, length), IO_EIO)
        s.check_view(Read(off, length))
    s.expect(Start(primary=False), QMP_OK)
    for off, length in ranges:
        got = reader.read(off, length, None)
        assert got.ok, got.describe()
        s.check_view(Read(off, length))
    s.finish()
