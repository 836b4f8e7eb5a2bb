"""Test-only cases for tests/test_hangs.py: a case that blocks forever, and a check run
after it in the same process. Not collected by default (not named test_*.py).

`test_held_commit_forever` raises the harness's own deadlines (the failover commit's
stall and data deadlines) and waits for a held commit (tests/data/hang/held.py): only the
per-case backstop (pytest-timeout) can end it. It writes the pids of its QEMUs and NBD
client to $QRC_SELFTEST_PIDS. `test_nothing_left_behind` then checks, in the same
pytest process, that every one of them is gone.
"""

import os
from pathlib import Path

import pytest

from cases.conftest import _maker, machines, pair, profile, topologies  # noqa: F401  (fixtures)
from harness.ops import Settle
from harness.real import side
from tests.data.hang.held import held_failover
from tests.qemu_helpers import alive

PIDS = os.environ.get("QRC_SELFTEST_PIDS", "")


def test_held_commit_forever(pair, monkeypatch):  # noqa: F811
    if not PIDS:
        pytest.skip("run by tests/test_hangs.py (QRC_SELFTEST_PIDS)")
    monkeypatch.setattr(side, "SETTLE_STALL", 1e9)
    monkeypatch.setattr(side, "SETTLE_BASE", 1e9)
    s = held_failover(pair)
    pids = [m.pid for m in s.topo.machines]
    Path(PIDS).write_text(" ".join(map(str, pids)))
    s.do(Settle())


def test_nothing_left_behind():
    if not PIDS:
        pytest.skip("run by tests/test_hangs.py (QRC_SELFTEST_PIDS)")
    pids = [int(p) for p in Path(PIDS).read_text().split()]
    assert pids, "the hanging case wrote no pids"
    assert [p for p in pids if alive(p)] == []
