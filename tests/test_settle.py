"""A failover commit that stops making progress is reported at once (issue 15).

tests/data/hang/held.py holds a failover commit with a throttle that never releases: a
QEMU whose commit never completes, made from a good one. Settle must answer within
seconds (SETTLE_STALL), with why: nothing left to copy and the job still there (ready
but never completed, or its last writes held), or bytes left that no longer move (its
job paused, e.g. on an error). Run on every build with --all-builds: where QEMU keeps the
commit's dirty bitmap moved in 10.0. The time is printed, never asserted.
"""

from __future__ import annotations

import time

import pytest

from cases.conftest import _maker, machines, pair, profile, topologies  # noqa: F401  (fixtures)
from harness.ops import Settle
from harness.real import COMMIT_STALLED
from harness.verdicts import CommitStalled, QemuHung
from tests.data.hang.held import held_failover


@pytest.mark.needs_qemu
@pytest.mark.faults
@pytest.mark.parametrize(
    ("left", "why"),
    [
        pytest.param(0, "with nothing left to copy", id="nothing-left"),
        pytest.param(32 << 20, "left to copy (its job paused", id="bytes-left"),
    ],
)
def test_a_held_failover_commit_is_reported_at_once(pair, left, why):  # noqa: F811
    s = held_failover(pair, left)
    t = time.perf_counter()
    with pytest.raises(CommitStalled) as caught:
        s.do(Settle())
    print(f"held commit ({left} bytes left) reported after {time.perf_counter() - t:.2f} s")
    stalled = caught.value
    assert isinstance(stalled, QemuHung) and stalled.verdict == "hang"
    assert stalled.machine == "secondary" and stalled.evidence is not None
    assert stalled.evidence.live_not_asked is not None and not stalled.evidence.live_layers
    report = str(stalled)
    assert report.splitlines()[1] == "QEMU secondary: the failover commit did not finish"
    assert COMMIT_STALLED in report and "the failover commit made no progress" in report
    assert why in report, report
    assert "not asked: qemu-io would wait on the stalled commit" in report
