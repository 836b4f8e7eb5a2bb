"""Writes after a failed failover that fail themselves (issue 23, list A item 9).

In FAILOVER_FAILED the secondary's writes go run by run (replication_co_writev): a run
allocated in the active or the hidden disk into the active disk, any other straight
into the secondary disk. Here one of those writes fails: the secondary disk refuses
the writes over one sector (a blkdebug over it, which also failed the commit, that
copies the chunk around it), or the active disk refuses its guest data (a blkdebug
under it, armed by its first data write). The active disk has 4 KiB clusters, so a
chunk the commit copies can hold runs of both kinds.

Facts pinned here (5.2, 7.2, 10.0, 11.1):
- A write whose first failing run ends it answers that run's error (`Input/output
  error`); the runs before it are written, the ones after it not. The status stays
  `I/O error occurred` (the failed commit's), a failed write stores nothing.
- Before 6.1 a run for the secondary disk aborts QEMU before it is written (the
  assertion profile.failover_failed_write_crashes names), whatever it would have met.
"""

from __future__ import annotations

import pytest

from harness import faults
from harness.model.replication import Stage
from harness.observe import EIO, IO_OK, QMP_OK, Crashed, IoResult, data, status
from harness.ops import REP, PrimaryWrite, Read, Settle, Start, Status, Stop, Write
from harness.topology.standard import secondary_chain
from harness.units import KiB, MiB

QUICK = pytest.mark.quick
pytestmark = [pytest.mark.secondary, pytest.mark.faults]

CL = 64 * KiB
C = 1 * MiB  # a chunk of the failover commit (64 KiB, the secondary disk's cluster)
BAD = C + 32 * KiB  # the secondary disk's sector the commit fails on, in that chunk
# 4 KiB clusters in the active disk: a write there dirties the whole chunk around it
# for the commit, and leaves the rest of it unallocated in the active disk
RECIPE = secondary_chain(active_cluster="4k")
# ... and data in the secondary disk's chunk C: its copy in the hidden disk is data, which
# the commit writes (a copy of zeros would be a write-zeroes, which the fault lets by)
RECIPE_DATA = secondary_chain(active_cluster="4k", secondary_contents=[(C, CL, 0x11)])


def failed_failover(s, msg) -> None:
    """The commit of the chunk holding BAD fails: FAILOVER_FAILED."""
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    assert s.model.stage(REP) is Stage.FAILOVER_FAILED
    s.expect(Status(), status(msg.IO_ERROR))


@pytest.mark.quick
def test_secondary_disk_refuses_the_write(secondary, profile, msg):
    s = secondary(RECIPE, over_secondary=faults.at_offset(BAD))
    s.expect(Start(primary=False), QMP_OK)
    s.expect(PrimaryWrite(0, CL, 0x22), IO_OK)  # the hidden disk keeps [0, CL)
    s.expect(Write(BAD - 4 * KiB, 4 * KiB, 0x33), IO_OK)  # the active disk's, before BAD
    failed_failover(s, msg)
    refused = (
        Crashed("SIGABRT", msg.WRITE_ASSERTION)
        if profile.failover_failed_write_crashes
        else IoResult(False, EIO)
    )
    # allocated in the active disk, then in the hidden disk: both into the active disk
    s.expect(Write(BAD - 4 * KiB, 4 * KiB, 0x41), IO_OK)
    s.expect(Write(4 * KiB, 4 * KiB, 0x42), IO_OK)
    # [the active disk's cluster | allocated nowhere, over BAD]: the first run written
    # into the active disk, the second refused by the secondary disk
    s.expect(Write(BAD - 4 * KiB, 8 * KiB, 0x43), refused)
    if profile.failover_failed_write_crashes:
        s.finish()
        return
    s.expect(Write(2 * MiB, 4 * KiB, 0x44), IO_OK)  # allocated nowhere, not over BAD
    s.expect(Status(), status(msg.IO_ERROR))
    s.expect(Read(BAD - 4 * KiB, 8 * KiB), data((BAD - 4 * KiB, 4 * KiB, 0x43), (BAD, 4 * KiB, 0)))
    s.expect(Read(2 * MiB, 4 * KiB), data((2 * MiB, 4 * KiB, 0x44)))
    s.finish()


@QUICK
def test_active_disk_refuses_the_write(secondary, profile, msg):
    s = secondary(
        RECIPE_DATA,
        over_secondary=faults.at_offset(BAD),
        layer_faults={"active": faults.under_layer("active")},
    )
    s.expect(Start(primary=False), QMP_OK)
    # the hidden disk keeps the chunk [C, C + CL) (the primary's write is not over BAD):
    # the commit copies it, and fails
    s.expect(PrimaryWrite(C, 4 * KiB, 0x23), IO_OK)
    failed_failover(s, msg)
    # allocated in the hidden disk: into the active disk, whose first data write arms
    # its fault and fails
    s.expect(Write(C + 8 * KiB, 4 * KiB, 0x41), IoResult(False, EIO))
    if profile.failover_failed_write_crashes:
        s.expect(Write(2 * MiB, 4 * KiB, 0x43), Crashed("SIGABRT", msg.WRITE_ASSERTION))
        s.finish()
        return
    s.expect(Write(2 * MiB, 4 * KiB, 0x43), IO_OK)  # allocated nowhere: the secondary disk
    # [allocated nowhere | the hidden disk's chunk]: the first run reaches the secondary
    # disk, the second the active disk, which refuses it
    s.expect(Write(C - 4 * KiB, 8 * KiB, 0x42), IoResult(False, EIO))
    s.expect(Status(), status(msg.IO_ERROR))
    s.expect(Read(C - 4 * KiB, 8 * KiB), data((C - 4 * KiB, 4 * KiB, 0x42), (C, 4 * KiB, 0x11)))
    s.expect(Read(2 * MiB, 4 * KiB), data((2 * MiB, 4 * KiB, 0x43)))
    s.finish()
