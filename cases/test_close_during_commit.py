"""The replication node closed while its failover commit runs (issue 23, list A item 8):
replication_close cancels the commit job; what the secondary disk holds afterwards.

The commit is held in flight by a throttle over the secondary disk (harness.faults
HoldCommit: the first of its writes goes through, the others wait), then the node goes:
the secondary QEMU quits, or the node is deleted (blockdev-del). Four chunks to copy,
one of them where the primary wrote since the checkpoint (the commit rolls it back to
the hidden disk's old copy), the other three the secondary VM's own writes.

Facts pinned here (5.2, 7.2, 10.0, 11.1):
- quit ends at once, QEMU exits cleanly: the job is cancelled (a quit cancels every
  job before it closes the nodes), the drain that comes with it restarts the writes the
  throttle held, so every copy the commit had issued (here all of them: a commit issues
  up to 16 copies at once) reaches the secondary disk. Offline the secondary disk holds
  what a completed failover would have given it; the active and hidden disks are as the
  commit left them (it never writes them).
- blockdev-del of the node (replication_close's own job_cancel_sync: the job is still
  there) waits for the cancelled job, whose held writes nothing drains (with the
  standard hold, minutes: QMP does not answer meanwhile); with a write held half a
  second it answers after it, and the secondary disk, read through its export, holds
  every chunk.
"""

from __future__ import annotations

import pytest

from harness import faults
from harness.graph import commit_in_flight, node_names
from harness.observe import IO_OK, QMP_OK, data
from harness.ops import (
    REP,
    SECONDARY,
    BlockdevDel,
    Checkpoint,
    PrimaryRead,
    PrimaryWrite,
    Quit,
    Start,
    Stop,
    Write,
)
from harness.units import KiB

QUICK = pytest.mark.quick
pytestmark = [pytest.mark.secondary, pytest.mark.faults]

CHUNK = 128 * KiB  # the chunks the commit copies lie this far apart (not adjacent)
SLOW = "tg-slow"  # a throttle group that takes a 64 KiB write every half second
SLOW_THROTTLE = faults.Throttle(
    groups=((faults.THROTTLE_FREE, None), (SLOW, {"bps-write": 128 * KiB}))
)


def held_failover(secondary, throttle: faults.Throttle, hold: faults.HoldCommit, chunks: int):
    """A failover whose commit the throttle holds: `chunks` chunks to copy."""
    s = secondary(over_secondary=throttle)
    s.expect(Start(primary=False), QMP_OK)
    s.run(PrimaryWrite(0, 64 * KiB, 0x22), Checkpoint())
    s.expect(PrimaryWrite(0, 64 * KiB, 0x23), IO_OK)  # since the checkpoint: rolled back
    for i in range(1, chunks):
        s.expect(Write(i * CHUNK, 4 * KiB, 0x30 + i), IO_OK)
    s.do(hold)
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    assert commit_in_flight(s.topo.machine(SECONDARY))
    return s


def committed(chunks: int) -> tuple[tuple[int, int, int], ...]:
    """What the secondary disk holds where the commit copied: the chunk the primary
    wrote since the checkpoint rolled back, and the secondary VM's writes."""
    out = [(0, 64 * KiB, 0x22), (64 * KiB, CHUNK - 64 * KiB, 0)]
    for i in range(1, chunks):
        out += [(i * CHUNK, 4 * KiB, 0x30 + i), (i * CHUNK + 4 * KiB, CHUNK - 4 * KiB, 0)]
    return tuple(out)


@QUICK
def test_quit_while_the_failover_commit_is_held(secondary):
    s = held_failover(secondary, faults.Throttle(), faults.HoldCommit(), 4)
    s.expect(Quit(), QMP_OK)
    s.finish()  # offline: the secondary disk as a completed failover leaves it


@QUICK
def test_blockdev_del_while_the_failover_commit_is_held(secondary):
    s = held_failover(secondary, SLOW_THROTTLE, faults.HoldCommit(group=SLOW), 2)
    m = s.topo.machine(SECONDARY)
    s.expect(BlockdevDel(), QMP_OK)
    assert REP not in node_names(m) and not commit_in_flight(m)
    s.expect(PrimaryRead(0, 2 * CHUNK), data(*committed(2)))
    s.finish()
