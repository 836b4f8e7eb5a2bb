"""Faults injected into the real side, for tests/test_verdicts.py (issue 12).

`harness_bug`: the real side's apply raises a plain AssertionError for one kind of
operation, as a bug in harness code would: not QEMU's, so never a verdict.
`sigkill_before`: QEMU is SIGKILLed just before the real side applies one kind of
operation: QEMU died mid-case, a crash naming SIGKILL.
"""

from __future__ import annotations

import signal

import pytest

from harness import ops
from harness.observe import Observation
from harness.real import RealSide

BUG = "injected harness bug: the real side's own check failed"


def harness_bug(monkeypatch: pytest.MonkeyPatch, kind: type[ops.Op] = ops.Status) -> None:
    apply = RealSide.apply

    def broken(self: RealSide, op: ops.Op, expected: Observation) -> Observation:
        if isinstance(op, kind):
            raise AssertionError(BUG)
        return apply(self, op, expected)

    monkeypatch.setattr(RealSide, "apply", broken)


def sigkill_before(monkeypatch: pytest.MonkeyPatch, kind: type[ops.Op] = ops.Status) -> None:
    apply = RealSide.apply

    def killing(self: RealSide, op: ops.Op, expected: Observation) -> Observation:
        if isinstance(op, kind):
            self.topo.machine(getattr(op, "machine", ops.SECONDARY)).kill(signal.SIGKILL)
        return apply(self, op, expected)

    monkeypatch.setattr(RealSide, "apply", killing)
