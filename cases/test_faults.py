"""Faults injected into the running COLO pair, checked byte by byte against the model.

Each case kills, crashes or breaks one part of the pair (harness.pair, harness.faults)
and then checks what the other side does: every step compared with the model, both VMs'
whole disks read back, every live layer's allocation, and every image offline at the end
(except the images of a machine that died: its qcow2 metadata caches died with it).

Facts pinned here (7.2 and 10.0; the texts are the release's, its profile's):
- Secondary gone (SIGKILL, SIGABRT, crash): the primary's writes still report success,
  the status turns to `I/O error occurred` (a checkpoint does not clear it, a stop does),
  and the local disk has every byte.
- nbd-server-stop or a hard block-export-del: the same for the primary; the secondary
  keeps running unaware (`{"error": false}`). A safe block-export-del is refused while
  the primary is connected: `export 'export' still in use`.
- Primary gone mid-interval: after the failover the secondary disk holds exactly the
  last checkpoint plus the secondary VM's own writes; the primary's writes since the
  checkpoint are gone from every byte of it.
- A failing failover commit leaves FAILOVER_FAILED: reads through active -> hidden ->
  secondary, writes split by allocation (active where active or hidden has the range,
  else straight into the secondary disk), checkpoint/stop/start refused with the exact
  texts, status `I/O error occurred`.
- A held commit shows FAILOVER itself: status `I/O error occurred`, start, stop and
  checkpoint answered with success and ignored.
- A failing copy-before-write fails the primary's NBD write (stored on the primary as
  `I/O error occurred`; the secondary disk does not get the write; a cluster that reads
  as zeros is still copied, as metadata). Once the hidden image refuses writes the
  checkpoint's make-empty fails: `Failed to empty <hidden filename>: Input/output error`,
  after the active disk was emptied.
"""

from __future__ import annotations

import signal

import pytest

from harness import faults
from harness.graph import commit_in_flight
from harness.model.replication import Stage
from harness.observe import EIO, IO_OK, QMP_OK, Crashed, IoResult, data, qmp_error, status
from harness.ops import (
    PRIMARY,
    REP,
    SECONDARY,
    Checkpoint,
    Flush,
    Settle,
    Start,
    Status,
    Stop,
)
from harness.topology.pair import PQ, pair_recipe
from harness.units import KiB, MiB

pytestmark = [pytest.mark.faults, pytest.mark.colo, pytest.mark.primary, pytest.mark.secondary]
# Quick (the default set has room for only a few fault cases): a secondary killed before
# the primary starts, and an I/O error injected into the copy-before-write.
QUICK = pytest.mark.quick
SLOW = pytest.mark.slow

SIGS = [
    pytest.param(signal.SIGKILL, id="SIGKILL"),
    pytest.param(signal.SIGABRT, id="SIGABRT"),
]


def whole(s, *extents: tuple[int, int, int]) -> IoResult:
    """A whole-disk read: `extents`, then zeros up to the disk's end."""
    end = extents[-1][0] + extents[-1][1] if extents else 0
    tail = ((end, s.size - end, 0x00),) if end < s.size else ()
    return data(*extents, *tail)


def patterns(disk) -> set[int]:
    return {v for _, _, v in disk.data.items()}


# ---- the secondary lost


@pytest.mark.parametrize("sig", SIGS)
def test_secondary_killed_during_primary_writes(pair, msg, sig):
    s = pair()
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))
    crash = s.kill(SECONDARY, sig)
    assert crash.signal == sig.name
    # The crash is reported with QEMU's exit and stderr.
    report = s.report("after the kill")
    assert f"killed by {sig.name}" in report and "stderr" in report
    # The primary keeps serving: writes succeed (the NBD error is stored), reads are local.
    for i in range(3):
        s.expect(s.pwrite((2 + i) * 64 * KiB, 64 * KiB, 0x30 + i), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Flush(node=PQ), IO_OK)
    s.expect(
        s.pread(0, 384 * KiB),
        data(
            (0, 64 * KiB, 0x22),
            (64 * KiB, 64 * KiB, 0x23),
            (128 * KiB, 64 * KiB, 0x30),
            (192 * KiB, 64 * KiB, 0x31),
            (256 * KiB, 64 * KiB, 0x32),
            (320 * KiB, 64 * KiB, 0x11),
        ),
    )
    s.primary_alone()
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(1 * MiB, 4 * KiB, 0x40), IO_OK)
    s.finish()


@QUICK
def test_secondary_killed_before_the_primary_starts(pair, msg):
    s = pair()
    s.expect(Start(primary=False), QMP_OK)
    s.connect()
    s.kill(SECONDARY)
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    # A stop clears the stored error; a new start begins clean and fails again on use.
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.finish()


def test_secondary_crashes_on_the_start_retry(pair, profile, msg, needs_bug):
    """A real QEMU abort on the secondary (known bug: a start retried after `No top_bs or
    it is invalid` trips error_setv's assertion): the crash comes with its stderr, and
    the primary goes on alone."""
    needs_bug(profile.start_retry_after_bad_top_aborts)
    s = pair(top_id="no-such-node")
    s.connect()
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    crash = s.expect(Start(primary=False), Crashed("SIGABRT", msg.ERRP_ASSERTION))
    assert isinstance(crash, Crashed) and msg.ERRP_ASSERTION in crash.stderr_contains
    assert msg.ERRP_ASSERTION in s.report("after the crash")
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.primary_alone()
    s.finish()


def test_nbd_server_stopped_while_the_primary_writes(pair, msg):
    s = pair()
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))
    s.stop_nbd_server()
    sm = s.topo.machine(SECONDARY)
    assert sm.qmp_ok("query-block-exports") == []
    s.expect(s.pwrite(128 * KiB, 64 * KiB, 0x24), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Status(), status(None))  # the secondary did not notice
    # The secondary still checkpoints: it sees what reached it before the stop, only.
    s.checkpoint()
    s.expect(
        s.sread(0, 256 * KiB),
        data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x23), (128 * KiB, 128 * KiB, 0x11)),
    )
    s.primary_alone()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.after_failover()
    s.finish()


def test_export_removed_while_the_primary_writes(pair, msg):
    s = pair()
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    refused = s.remove_export("safe")  # the primary is connected
    assert refused == qmp_error(msg.export_in_use("export"))
    s.expect(s.pwrite(64 * KiB, 64 * KiB, 0x23), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.remove_export("hard")
    s.expect(s.pwrite(128 * KiB, 64 * KiB, 0x24), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.checkpoint()
    s.expect(
        s.sread(0, 256 * KiB),
        data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x23), (128 * KiB, 128 * KiB, 0x11)),
    )
    s.finish()


# ---- the primary lost


KILLED_PRIMARY = [
    pytest.param(pair_recipe(cluster="64k"), signal.SIGKILL, True, id="64k-SIGKILL"),
    pytest.param(pair_recipe(cluster="64k"), signal.SIGABRT, True, id="64k-SIGABRT"),
    pytest.param(pair_recipe(cluster="512"), signal.SIGKILL, True, id="512-SIGKILL"),
    pytest.param(pair_recipe(cluster="2M"), signal.SIGKILL, True, id="2m-SIGKILL", marks=SLOW),
    pytest.param(
        pair_recipe(cluster="512", hidden_cluster="2M", active_cluster="64k"),
        signal.SIGKILL,
        True,
        id="mixed-SIGKILL",
    ),
    pytest.param(pair_recipe(cluster="64k"), signal.SIGKILL, False, id="64k-no-nbd-stop"),
]


@pytest.mark.parametrize("recipe,sig,stop_nbd", KILLED_PRIMARY)
def test_primary_killed_mid_checkpoint_interval(pair, recipe, sig, stop_nbd):
    """The secondary fails over to the last checkpoint plus its own writes; the primary's
    writes since that checkpoint are gone from every byte of the secondary disk."""
    s = pair(recipe)
    s.start()
    s.do(s.pwrite(0, 256 * KiB, 0x22))
    s.do(s.swrite(512 * KiB, 4 * KiB, 0x23))  # dropped by the checkpoint
    s.checkpoint()
    # The interval: the primary overwrites old and checkpointed data and a zero area; the
    # secondary VM writes into one of those ranges.
    s.do(s.pwrite(128 * KiB, 512 * KiB, 0x33))
    s.do(s.pwrite(2 * MiB, 64 * KiB, 0x34))
    s.do(s.swrite(600 * KiB, 8 * KiB, 0x44))
    s.kill(PRIMARY, sig)
    if stop_nbd:
        s.failover()
    else:
        s.expect(Stop(primary=False, failover=True), QMP_OK)
        s.do(Settle())
        s.after_failover()
    assert s.model.stage(REP) is Stage.DONE
    s.expect(Status(), status(None))
    s.expect(
        s.sread(0, s.size),
        whole(
            s,
            (0, 256 * KiB, 0x22),
            (256 * KiB, 344 * KiB, 0x11),
            (600 * KiB, 8 * KiB, 0x44),
            (608 * KiB, 416 * KiB, 0x11),
        ),
    )
    # The model's secondary disk has none of the interval's primary data, and finish()
    # reads the real image offline against it, byte by byte.
    assert not {0x33, 0x34} & patterns(s.model.disks["secondary"])
    s.finish()


def test_primary_killed_before_any_checkpoint(pair):
    """Everything the primary wrote since start is rolled back; the secondary VM's own
    writes stay."""
    s = pair(secondary_quorum=True)
    s.start()
    s.do(s.pwrite(0, 1 * MiB, 0x22))
    s.do(s.pwrite(3 * MiB, 64 * KiB, 0x23))
    s.do(s.swrite(4 * KiB, 4 * KiB, 0x44))
    s.kill(PRIMARY)
    s.failover()
    s.expect(
        s.sread(0, s.size),
        whole(s, (0, 4 * KiB, 0x11), (4 * KiB, 4 * KiB, 0x44), (8 * KiB, 1016 * KiB, 0x11)),
    )
    s.expect(s.swrite(3 * MiB, 4 * KiB, 0x55), IO_OK)  # serving on the secondary disk
    s.finish()


# ---- the failover commit fails


BAD = 1 * MiB + 64 * KiB  # the secondary disk refuses writes covering this offset


@pytest.mark.parametrize("quorum", [pytest.param(False, id="rep"), pytest.param(True, id="quorum")])
def test_commit_failure_leaves_failover_failed(pair, profile, msg, quorum):
    s = pair(secondary_quorum=quorum, over_secondary=faults.at_offset(BAD))
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    s.do(s.pwrite(64 * KiB, 64 * KiB, 0x23))  # the hidden disk saves 0x11 there
    s.do(s.swrite(BAD, 4 * KiB, 0x44))  # the commit must write this chunk: EIO
    s.do(s.swrite(0, 4 * KiB, 0x45))
    s.kill(PRIMARY)
    s.failover()
    assert s.model.stage(REP) is Stage.FAILOVER_FAILED
    s.expect(Status(), status(msg.IO_ERROR))
    # Reads: the node's file is the active disk again (active -> hidden -> secondary).
    s.expect(
        s.sread(0, 256 * KiB),
        data((0, 4 * KiB, 0x45), (4 * KiB, 60 * KiB, 0x22), (64 * KiB, 192 * KiB, 0x11)),
    )
    s.expect(s.sread(BAD, 64 * KiB), data((BAD, 4 * KiB, 0x44), (BAD + 4 * KiB, 60 * KiB, 0x00)))
    # Answers in FAILOVER_FAILED.
    s.expect(Checkpoint(), qmp_error(msg.BACKUP_CANCELLED))
    s.expect(Stop(primary=False), qmp_error(msg.NOT_RUNNING))
    s.expect(Stop(primary=False, failover=True), QMP_OK)  # failover drops every error
    s.expect(Start(primary=False), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Start(primary=True), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Status(), status(msg.IO_ERROR))
    # Writes split by allocation: active where active or hidden has the range, else the
    # secondary disk itself (before 6.1 that last one aborts QEMU: see the profile).
    s.expect(s.swrite(8 * KiB, 4 * KiB, 0x51), IO_OK)  # allocated in active
    s.expect(s.swrite(96 * KiB, 4 * KiB, 0x52), IO_OK)  # allocated in hidden only
    active, sec = s.model.disks["active"], s.model.disks["secondary"]
    assert {0x51, 0x52} <= patterns(active)
    if profile.failover_failed_write_crashes:
        s.expect(s.swrite(2 * MiB, 4 * KiB, 0x53), Crashed("SIGABRT", msg.WRITE_ASSERTION))
        s.finish()
        return
    s.expect(s.swrite(2 * MiB, 4 * KiB, 0x53), IO_OK)  # in neither
    assert 0x53 not in patterns(active) and 0x53 in patterns(sec)
    s.expect(Status(), status(msg.IO_ERROR))
    s.finish()


# ---- the failover held in flight


def _held_failover(pair, guest_over_nbd=False):
    s = pair(over_secondary=faults.Throttle(), guest_over_nbd=guest_over_nbd)
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    # Four chunks the commit copies one by one (not adjacent: one request each), and a
    # primary write since the checkpoint that it must roll back.
    for i in range(4):
        s.do(s.swrite(i * 128 * KiB, 4 * KiB, 0x30 + i))
    s.do(s.pwrite(2 * MiB, 64 * KiB, 0x33))
    s.kill(PRIMARY)
    s.do(faults.HoldCommit())
    if guest_over_nbd:
        s.remove_export("hard")  # the NBD server stays up for the guest's export
    else:
        s.stop_nbd_server()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    sm = s.topo.machine(SECONDARY)
    assert commit_in_flight(sm)
    return s, sm


def _released(s, sm):
    s.do(faults.ReleaseCommit())
    s.do(Settle())
    s.after_failover()
    s.expect(Status(), status(None))
    s.finish()


def test_failover_in_flight_status_and_ignored_requests(pair, msg):
    s, sm = _held_failover(pair)
    assert s.do(Status()) == status(msg.IO_ERROR)
    for op in (
        Start(primary=False),
        Start(primary=True),
        Checkpoint(),
        Stop(primary=False),
        Stop(primary=False, failover=True),
    ):
        s.expect(op, QMP_OK)
    assert s.do(Status()) == status(msg.IO_ERROR)
    assert commit_in_flight(sm), "the commit ended during the requests: not all saw FAILOVER"
    _released(s, sm)


@pytest.mark.parametrize(
    "over_nbd",
    [pytest.param(True, id="nbd", marks=QUICK), pytest.param(False, id="hmp")],
)
def test_failover_in_flight_guest_io(pair, profile, over_nbd):
    """The secondary VM's reads and writes during FAILOVER: through its own NBD export
    (both versions), or through HMP qemu-io, which on 10.0 drains the graph and so lets
    the held commit finish (skipped there)."""
    if not over_nbd and profile.hmp_io_ends_failover:
        pytest.skip(profile.hmp_io_ends_failover)
    s, sm = _held_failover(pair, guest_over_nbd=over_nbd)
    s.expect(
        s.sread(0, 512 * KiB),
        data(
            (0, 4 * KiB, 0x30),
            (4 * KiB, 60 * KiB, 0x22),
            (64 * KiB, 64 * KiB, 0x11),
            (128 * KiB, 4 * KiB, 0x31),
            (132 * KiB, 124 * KiB, 0x11),
            (256 * KiB, 4 * KiB, 0x32),
            (260 * KiB, 124 * KiB, 0x11),
            (384 * KiB, 4 * KiB, 0x33),
            (388 * KiB, 124 * KiB, 0x11),
        ),
    )
    # Writes during FAILOVER go into the active disk through the commit's filter; the
    # commit copies them on.
    s.expect(s.swrite(64 * KiB, 4 * KiB, 0x55), IO_OK)
    s.expect(s.swrite(3 * MiB, 4 * KiB, 0x56), IO_OK)
    assert commit_in_flight(sm), "the commit ended during the guest I/O"
    _released(s, sm)


# ---- copy-before-write and make-empty failures


def _hidden_eio(pair):
    s = pair(hidden_fault=faults.under_layer("hidden"))
    s.start()
    return s


def _finish_hidden_eio(s):
    # Every write to the hidden image fails once the rule is armed, metadata included:
    # the zero cluster QEMU holds in its L2 cache never reaches the file (stderr: "Failed
    # to flush the L2 table cache: Input/output error"), so offline only the bytes count
    # (the model knows: Disk.offline_alloc_exact).
    assert not s.model.disks["hidden"].offline_alloc_exact
    s.finish()


@QUICK
def test_hidden_eio_during_copy_before_write(pair, msg):
    s = _hidden_eio(pair)
    s.expect(s.pwrite(0, 64 * KiB, 0x22), IO_OK)  # the copy of 0x11 fails: NBD write fails
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(Status(), status(None))
    assert 0x22 not in patterns(s.model.disks["secondary"])
    # A cluster that reads as zeros is copied as a write-zeroes (metadata only): it
    # succeeds, and so does the write.
    s.expect(s.pwrite(2 * MiB, 64 * KiB, 0x24), IO_OK)
    assert 0x24 in patterns(s.model.disks["secondary"])
    _finish_hidden_eio(s)


def test_hidden_eio_after_a_zero_cluster_copy(pair, msg):
    """A write over a zero cluster then a data cluster: the zero one is copied (metadata
    only) before the data one fails, so the write fails; a later write to the zero
    cluster needs no copy and goes through."""
    s = pair(
        pair_recipe(contents=((1 * MiB, 1 * MiB, 0x11),)),
        hidden_fault=faults.under_layer("hidden"),
    )
    s.start()
    s.expect(s.pwrite(960 * KiB, 128 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    hidden = s.model.disks["hidden"]
    assert list(hidden.data.allocated(0, hidden.size)) == [(960 * KiB, 1 * MiB)]
    s.expect(s.pwrite(960 * KiB, 64 * KiB, 0x23), IO_OK)
    assert 0x23 in patterns(s.model.disks["secondary"])
    _finish_hidden_eio(s)


@pytest.mark.quick
def test_make_empty_eio_during_checkpoint(pair, msg):
    s = _hidden_eio(pair)
    s.do(s.pwrite(0, 64 * KiB, 0x22))  # arms the rule: every later write to hidden fails
    s.do(s.pwrite(2 * MiB, 64 * KiB, 0x24))
    s.do(s.swrite(128 * KiB, 4 * KiB, 0x33))
    hidden = s.model.disks["hidden"]
    s.expect(
        Checkpoint(),
        qmp_error(msg.failed_to_empty(hidden.filename or "hidden", EIO, disk="hidden")),
    )
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    # The active disk was emptied first; the hidden disk keeps its zero cluster.
    assert not list(s.model.disks["active"].data.items())
    assert list(hidden.data.allocated(0, hidden.size)) == [(2 * MiB, 2 * MiB + 64 * KiB)]
    s.expect(Status(), status(None))
    s.expect(
        Checkpoint(),
        qmp_error(msg.failed_to_empty(hidden.filename or "hidden", EIO, disk="hidden")),
    )
    # The failover still works: the commit only reads the hidden disk.
    s.kill(PRIMARY)
    s.failover()
    assert s.model.stage(REP) is Stage.DONE
    _finish_hidden_eio(s)


@QUICK
def test_active_eio_on_secondary_writes(pair, msg):
    """EIO on the active disk (block-replication.txt's failure 5): the secondary VM's write
    fails with it (the replication status stays clean); the checkpoint's make-empty then
    fails on the active disk, before the hidden disk is emptied, but after the backup's
    bitmap was reset: the next primary write copies its new old data over the hidden
    disk's saved copy, and that is what the secondary VM sees."""
    s = pair(active_fault=faults.under_layer("active"))
    s.start()
    active = s.model.disks["active"]
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.expect(s.swrite(128 * KiB, 4 * KiB, 0x33), IoResult(False, EIO))
    s.expect(Status(), status(None))
    s.expect(
        Checkpoint(),
        qmp_error(msg.failed_to_empty(active.filename or "active", EIO, disk="active")),
    )
    s.expect(s.sread(0, 128 * KiB), data((0, 128 * KiB, 0x11)))  # hidden kept 0x11
    s.do(s.pwrite(0, 64 * KiB, 0x24))
    s.expect(s.sread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.kill(PRIMARY)
    s.failover()
    s.expect(s.sread(0, 128 * KiB), data((0, 64 * KiB, 0x22), (64 * KiB, 64 * KiB, 0x11)))
    s.finish()
