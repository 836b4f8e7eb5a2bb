"""A COLO pair whose secondary's failover commit is held forever (tests/test_hangs.py).

The secondary disk sits under a throttle node moved to a group that lets one request
through and queues the rest for minutes (harness.faults.HoldCommit); the primary dies
and the secondary fails over, so its commit never ends: a QEMU whose failover commit
never completes, made from a good one.
"""

from __future__ import annotations

from typing import Any

from harness import faults
from harness.observe import QMP_OK
from harness.ops import PRIMARY, Stop
from harness.pair import PairStory
from harness.topology.pair import pair_recipe
from harness.units import KiB, MiB


def held_failover(pair: Any, left: int = 0) -> PairStory:
    """The pair in FAILOVER with its commit held. `left`: bytes the secondary VM writes
    first beyond what the commit's first requests take (the mirror job copies at most
    16 MiB at a time), so that much stays to copy; 0: a few small chunks, all of them
    dispatched at once (nothing left to copy, the writes held)."""
    recipe = pair_recipe("128M") if left else None
    s: PairStory = pair(recipe, over_secondary=faults.Throttle())
    s.start()
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    s.checkpoint()
    for i in range(4):
        s.do(s.swrite(i * 128 * KiB, 4 * KiB, 0x30 + i))
    if left:
        s.do(s.swrite(1 * MiB, 16 * MiB + left, 0x44))
    s.kill(PRIMARY)
    s.do(faults.HoldCommit())
    s.stop_nbd_server()
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    return s
