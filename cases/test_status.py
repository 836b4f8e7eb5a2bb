"""query-xen-replication-status in every stage and mode.

replication_get_error (QEMU >= 5.0): `Block replication is not running` in NONE only; then
`I/O error occurred` while the node's error is set, else {"error": false}. The error is set
by the secondary's backup job when it is cancelled (every secondary stop, so also during the
failover commit and for good after a plain stop or a failed commit), and by a primary write
whose child failed (the write itself reports success). Start and a primary stop clear it;
a checkpoint does not. A secondary failover that completes clears it.

Faults: the primary's child is an NBD client of a qemu-storage-daemon export; the link is cut
by deleting the export (mode hard) or by killing the daemon. A throttle node under the
secondary disk keeps the failover commit in flight (FAILOVER); blkdebug under it makes the
commit fail (FAILOVER_FAILED).
"""

from __future__ import annotations

import pytest

from harness.faults import CHILD, FailingWrites, Kill, LinkDown, ReleaseCommit, Throttle
from harness.model.replication import Stage
from harness.observe import IO_EIO, IO_OK, QMP_OK, QmpResult, qmp_error, status
from harness.ops import (
    PRIMARY,
    Checkpoint,
    Flush,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)
from harness.story import Story
from harness.units import KiB, MiB


# The statuses, in the texts of the release under test (msg).
def not_running(msg) -> QmpResult:
    return status(msg.NOT_RUNNING)


def io_error(msg) -> QmpResult:
    return status(msg.IO_ERROR)


def clean(msg) -> QmpResult:
    return status(None)


QUICK = pytest.mark.quick


# ---- secondary


SECONDARY_STAGES = [
    pytest.param((), Stage.NONE, not_running, id="none"),
    pytest.param((Start(primary=False),), Stage.RUNNING, clean, id="running", marks=QUICK),
    pytest.param(
        (
            Start(primary=False),
            Write(0, 64 * KiB, 0x11),
            PrimaryWrite(0, 128 * KiB, 0x12),
            Checkpoint(),
            PrimaryWrite(MiB, 64 * KiB, 0x13),
        ),
        Stage.RUNNING,
        clean,
        id="running-with-data",
    ),
    pytest.param(
        (Start(primary=False), Write(0, 64 * KiB, 0x11), Stop(primary=False)),
        Stage.DONE,
        io_error,
        id="plain-stop",
    ),
    pytest.param(
        (
            Start(primary=False),
            Write(0, 64 * KiB, 0x11),
            Stop(primary=False, failover=True),
            Settle(),
        ),
        Stage.DONE,
        clean,
        id="failover",
    ),
    pytest.param(
        (Stop(primary=False, failover=True), Checkpoint(), Stop(primary=False)),
        Stage.NONE,
        not_running,
        id="none-after-refused-requests",
    ),
]


@pytest.mark.secondary
@pytest.mark.parametrize("steps,stage,want", SECONDARY_STAGES)
def test_secondary_status(secondary, profile, msg, steps, stage, want):
    if profile.without_plain_stop_report:
        pytest.skip(profile.without_plain_stop_report)
    want = want(msg)
    s = secondary()
    for op in steps:
        s.do(op)
    assert s.model.stage("rep") is stage
    s.expect(Status(), want)
    # Asking does not change anything.
    s.expect(Status(), want)
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize(
    "options,error",
    [
        pytest.param(
            {"export": False}, lambda msg: msg.NO_BLOCK_BACKEND, id="no-block-backend", marks=QUICK
        ),
        pytest.param({"top_id": "nowhere"}, lambda msg: msg.BAD_TOP, id="bad-top-id"),
    ],
)
def test_secondary_status_after_a_failed_start(secondary, msg, options, error):
    s = secondary(**options)
    s.expect(Start(primary=False), qmp_error(error(msg)))
    assert s.model.stage("rep") is Stage.NONE
    s.expect(Status(), not_running(msg))
    s.expect(Read(0, 4 * KiB), IO_EIO)
    s.expect(Status(), not_running(msg))
    s.finish()


THROTTLE = Throttle("thr", "secondary", "tg", (("tg", {"bps-write": 4096}), ("unlimited", {})))
# Moving the filter to the unlimited group drains it, which releases the queued requests at
# once (changing the group's limits with qom-set would not: queued requests keep their timers).
UNTHROTTLE = ReleaseCommit(node="thr", group="unlimited")


@pytest.mark.quick
@pytest.mark.secondary
def test_secondary_status_during_the_failover_commit(secondary, msg):
    """FAILOVER (the commit held by a 4 KiB/s throttle under the secondary disk): the
    backup job's cancellation set the error, so the status reads `I/O error occurred`
    until the commit completes; start/stop/checkpoint are silent meanwhile."""
    s = secondary(over_secondary=THROTTLE)
    # Several separate commit requests (the mirror merges adjacent dirty chunks into one):
    # the throttle lets the first through at once (its bucket is empty), the next ones
    # wait for it to drain at 4 KiB/s.
    s.run(Start(primary=False), *(Write(i * MiB, 64 * KiB, 0x11 + i) for i in range(4)))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    # The model allows either answer (it cannot know the commit is held); QEMU must
    # give exactly this one while the throttle holds the commit.
    for op in (
        Status(),
        Checkpoint(),
        Start(primary=False),
        Stop(primary=False),
        Stop(primary=False, failover=True),
        Status(),
    ):
        got = s.do(op)
        if isinstance(op, Status):
            assert got == io_error(msg)
        else:
            assert got == QMP_OK
    s.do(UNTHROTTLE)
    s.do(Settle())
    s.expect(Status(), clean(msg))
    s.do(Read(0, 4 * MiB))
    s.finish()


BLKDEBUG = FailingWrites("dbg", "secondary", sector=0)


@pytest.mark.quick
@pytest.mark.secondary
def test_secondary_status_after_a_failed_commit(secondary, msg):
    """FAILOVER_FAILED (blkdebug fails the commit's write of sector 0): the error stays, and
    start/stop/checkpoint answer as in a stage that is neither NONE nor RUNNING."""
    s = secondary(over_secondary=BLKDEBUG)
    s.run(Start(primary=False), Write(0, 64 * KiB, 0x11))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    assert s.model.stage("rep") is Stage.FAILOVER_FAILED
    s.expect(Status(), io_error(msg))
    s.expect(Start(primary=False), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Checkpoint(), qmp_error(msg.BACKUP_CANCELLED))
    s.expect(Stop(primary=False), qmp_error(msg.NOT_RUNNING))
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.expect(Status(), io_error(msg))
    s.finish()


# ---- primary


def link_down(s: Story, how: str) -> None:
    """Cut the primary's NBD link to its child: its export goes, or the daemon is killed."""
    s.do(LinkDown(CHILD) if how == "export-del" else Kill(CHILD))


LINK_CUTS = [pytest.param("export-del", marks=QUICK), pytest.param("kill-daemon")]


@pytest.mark.primary
@pytest.mark.parametrize(
    "steps,stage,want",
    [
        pytest.param((), Stage.NONE, not_running, id="none"),
        pytest.param(
            (Write(0, 4 * KiB, 0x11), Read(0, 4 * KiB)), Stage.NONE, not_running, id="none-io"
        ),
        pytest.param(
            (Start(primary=True, machine=PRIMARY),), Stage.RUNNING, clean, id="running", marks=QUICK
        ),
        pytest.param(
            (
                Start(primary=True, machine=PRIMARY),
                Write(0, 64 * KiB, 0x11),
                Read(0, 4 * KiB),
                Checkpoint(machine=PRIMARY),
            ),
            Stage.RUNNING,
            clean,
            id="running-io",
        ),
        pytest.param(
            (Start(primary=True, machine=PRIMARY), Stop(primary=True, machine=PRIMARY)),
            Stage.DONE,
            clean,
            id="done",
        ),
        pytest.param(
            (
                Start(primary=True, machine=PRIMARY),
                Stop(primary=True, failover=True, machine=PRIMARY),
                Write(0, 4 * KiB, 0x11),
            ),
            Stage.DONE,
            clean,
            id="done-io",
        ),
    ],
)
def test_primary_status(primary, msg, steps, stage, want):
    """Refused I/O (NONE, DONE, every read) is returned to the guest, never recorded."""
    want = want(msg)
    s = primary()
    for op in steps:
        s.do(op)
    assert s.model.stage("rep") is stage
    s.expect(Status(machine=PRIMARY), want)
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("how", LINK_CUTS)
def test_primary_swallowed_child_error(primary, msg, how):
    s = primary()
    s.run(Start(primary=True, machine=PRIMARY), Write(0, 64 * KiB, 0x11), Flush())
    link_down(s, how)
    # The write "succeeds"; only the status tells.
    s.expect(Write(64 * KiB, 64 * KiB, 0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), io_error(msg))
    s.expect(Write(0, 512, 0x23), IO_OK)
    s.expect(Read(0, 4 * KiB), IO_EIO)
    s.expect(Status(machine=PRIMARY), io_error(msg))
    # A checkpoint does not clear it, nor does a refused start.
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), io_error(msg))
    s.expect(Start(primary=True, machine=PRIMARY), qmp_error(msg.RUNNING_OR_DONE))
    s.expect(Status(machine=PRIMARY), io_error(msg))
    # The stop does.
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), clean(msg))
    # In DONE every write is refused and returned: nothing is recorded any more.
    s.expect(Write(0, 4 * KiB, 0x24), IO_EIO)
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), clean(msg))
    # The child holds the writes made before the cut, and none after it.
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("how", LINK_CUTS)
def test_primary_link_lost_without_a_write(primary, msg, how):
    """The status turns only when a write meets the dead link."""
    s = primary()
    s.run(Start(primary=True, machine=PRIMARY), Write(0, 64 * KiB, 0x11), Flush())
    link_down(s, how)
    s.expect(Status(machine=PRIMARY), clean(msg))
    s.expect(Read(0, 4 * KiB), IO_EIO)
    s.expect(Checkpoint(machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), clean(msg))
    s.expect(Write(0, 4 * KiB, 0x12), IO_OK)
    s.expect(Status(machine=PRIMARY), io_error(msg))
    s.finish()


@pytest.mark.primary
@pytest.mark.parametrize("how", LINK_CUTS)
def test_primary_start_with_a_dead_link(primary, msg, how):
    """Start does not touch the child: it succeeds with the link already down, and leaves
    the status clean (it clears the error; in NONE there is none to clear, as writes
    refused in NONE are returned, not recorded)."""
    s = primary()
    link_down(s, how)
    s.expect(Write(0, 4 * KiB, 0x11), IO_EIO)
    s.expect(Status(machine=PRIMARY), not_running(msg))
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), clean(msg))
    s.expect(Write(0, 4 * KiB, 0x12), IO_OK)
    s.expect(Status(machine=PRIMARY), io_error(msg))
    s.expect(Stop(primary=True, failover=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), clean(msg))
    s.finish()
