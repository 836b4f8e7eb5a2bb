"""What a differential run found: the failure it raises to hypothesis for QEMU's
misbehaviour, and the result it counts as it runs and reports."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.verdicts import QemuCrashed, QemuMisbehaved
from harness.words import plural


class DifferentialFailure(QemuMisbehaved):
    """QEMU misbehaved during a random run: `cause` (the verdict: a divergence, a crash,
    a hang), where it happened, and the trace that replays it."""

    def __init__(
        self, cause: QemuMisbehaved, where: str, topology: str, seed: int, trace: Path
    ) -> None:
        self.cause = cause
        self.where, self.topology, self.seed, self.trace = where, topology, seed, trace
        self.expected, self.actual, self.details = cause.expected, cause.actual, cause.details
        self.evidence = cause.evidence
        super().__init__(cause.headline)

    @property
    def headline(self) -> str:
        return self.cause.headline

    def __str__(self) -> str:
        return (
            f"{self.cause}\n"
            f"failed at: {self.where} (topology {self.topology}, seed {self.seed})\n"
            f"trace: {self.trace}\n"
            f"replay: qrc replay {self.trace} [--qemu-dir DIR]"
        )


def found(cause: QemuMisbehaved) -> str:
    """What a run found, for its summary: 'DIVERGENCE', 'CRASH (SIGKILL)', 'HANG'."""
    what = cause.verdict.upper()
    if isinstance(cause, QemuCrashed) and cause.signal is not None:
        what += f" ({cause.signal})"
    return what


@dataclass
class RunResult:
    """What one run found, counted as it runs (the state machine adds to it). `failure`
    is None when QEMU always agreed with the model."""

    group: str
    qemu: str  # the version
    seed: int
    examples: int = 0
    steps: int = 0
    ops: int = 0
    # the reads of the guest views the policy made after the operations
    view_reads: int = 0
    # operations by kind, plus "failover_failed" (failover commits that failed)
    kinds: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    failure: str | None = None
    # the last failing run's trace, and what it found (found()): 'DIVERGENCE',
    # 'CRASH (SIGKILL)', 'HANG'...
    trace: Path | None = None
    found: str = "DIVERGENCE"
    failing_runs: int = 0
    first_failure_s: float | None = None
    t0: float = field(default_factory=time.perf_counter, repr=False)

    def summary(self) -> str:
        head = (
            f"differential {self.group} on QEMU {self.qemu}: "
            f"{plural(self.examples, 'example')}, {plural(self.steps, 'step')} "
            f"({plural(self.ops, 'operation')}, {plural(self.view_reads, 'guest-view read')}) "
            f"in {self.wall_s:.1f} s, seed {self.seed}"
        )
        if self.failure is None:
            return head + ": no divergence"
        return head + f": {self.found} (first found after {self.first_failure_s:.2f} s)"
