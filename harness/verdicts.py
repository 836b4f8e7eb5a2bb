"""What ended a case: QEMU misbehaving, in one tree, and nothing else in it.

    QemuMisbehaved        QEMU did not do what the model allows (an AssertionError, so
    |                     pytest shows a failure)
    +-- Divergence        it answered, and not as the model allows
    +-- QemuCrashed       a QEMU process died where the model does not allow it
    |   +-- QemuAborted   ... on SIGABRT: abort(), a failed assertion
    +-- QemuHung          it did not answer, or did not finish, within its deadline
        +-- CommitStalled the failover commit stopped making progress (Settle)

The processes' own exceptions join the tree where they are raised: MachineDied is a
QemuCrashed (MachineAborted a QemuAborted) and MachineHung a QemuHung (harness.machine);
qemu-io's QemuIoDied and QemuIoTimeout (harness.qemu_io_process), the offline check's
LayerCheckHung (harness.layer_inspector) and poll's DeadlineExceeded likewise.

Everything else that ends a case is not QEMU's and stays out of the tree: a case's own
`assert` (its statement about QEMU, a plain failure), ModelDisagrees below (the case's
statement against the model; QEMU was not asked), a QemuIoError or QmpCommandFailed (the
harness cannot read qemu-io's output, a command the harness needs was refused), and any
other exception, a harness bug. The differential runner and `qrc replay` catch only
QemuMisbehaved: the rest propagates as the error it is, never as a divergence.

A story's verdicts (Divergence, QemuCrashed, CommitStalled, ModelDisagrees) carry its
Evidence: the steps, the layer maps of both sides, the reports of machines that are gone.
Their text is built from these fields; the report plugin reads the fields.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from harness import ops
from harness.observe import Data, Difference, Observation, fmt_data

# ---- exit states


def signal_name(returncode: int | None) -> str | None:
    """'SIGABRT' for a process killed by SIGABRT, None for a normal exit or no exit yet."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return _signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    sig = signal_name(returncode)
    return f"killed by {sig}" if sig else f"exit status {returncode}"


# ---- a story's state when something was found


@dataclass(frozen=True, slots=True)
class Step:
    """One operation of a story: what the model allowed and what QEMU did."""

    op: ops.Op
    expected: Observation
    actual: Observation


@dataclass(frozen=True, slots=True)
class ModelLayer:
    """A layer as the model has it."""

    name: str
    data: Data
    # False: the model does not predict this layer's allocation
    alloc_exact: bool = True


@dataclass(frozen=True, slots=True)
class LiveLayer:
    """A layer's own allocation as the running QEMU has it, or why it could not say."""

    name: str
    ranges: tuple[tuple[int, int], ...] = ()
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A story when a verdict was reached: what every report of it shows."""

    label: str
    steps: tuple[Step, ...]
    model_layers: tuple[ModelLayer, ...]
    live_layers: tuple[LiveLayer, ...] = ()
    # set: QEMU's live layers were not asked, and why
    live_not_asked: str | None = None
    # (machine, its failure report) of each machine that is no longer alive
    gone: tuple[tuple[str, str], ...] = ()

    def report(self, headline: str) -> str:
        """The story's report under `headline`: the operations (the last one marked),
        the layer maps of the model and of QEMU, the machines that are gone."""
        lines = [self.label, headline, "operations:"]
        for i, st in enumerate(self.steps, 1):
            mark = ">" if i == len(self.steps) else " "
            lines.append(f" {mark}{i:3d}. {st.op.describe()}")
        lines.append("layer maps (model):")
        for m in self.model_layers:
            exact = "" if m.alloc_exact else " (allocation not predicted)"
            lines.append(f"    {m.name:10s}{exact}: {fmt_data(m.data, limit=6)}")
        lines.append("layer allocation (QEMU, live):")
        if self.live_not_asked is not None:
            lines.append(f"    not asked: {self.live_not_asked}")
        for live in self.live_layers:
            what = (
                fmt_ranges(live.ranges)
                if live.unavailable is None
                else f"unavailable ({live.unavailable})"
            )
            lines.append(f"    {live.name:10s}: {what}")
        for name, failure in self.gone:
            lines.append(f"machine {name}:")
            lines.append(failure)
        return "\n".join(lines)


def fmt_ranges(rs: Iterable[tuple[int, int]]) -> str:
    parts = [f"[{s:#x}-{e:#x})" for s, e in rs]
    return " ".join(parts[:8]) + (f" ... ({len(parts) - 8} more)" if len(parts) > 8 else "") or (
        "(none)"
    )


# ---- the tree


class QemuMisbehaved(AssertionError):
    """QEMU did not do what the model allows.

    `headline` says what happened; a story's verdict also has `expected` (what the model
    allowed), `actual` (what QEMU did) and `evidence` (the story), and its text is the
    story's report under the headline."""

    # what kind of misbehaviour: divergence, crash, abort, hang
    verdict: ClassVar[str] = "misbehaved"
    expected: Observation | None = None
    actual: Observation | None = None
    # which bytes or which text differ (the comparison's lines)
    details: tuple[str, ...] = ()
    evidence: Evidence | None = None

    @property
    def headline(self) -> str:
        return str(self.args[0]) if self.args else ""

    def one_line(self) -> str:
        return " ".join(self.headline.split())

    def __str__(self) -> str:
        if self.evidence is not None:
            return self.evidence.report(self.headline)
        return super().__str__()


class Divergence(QemuMisbehaved):
    """QEMU answered, and not as the model allows: for one operation (`expected`, `actual`,
    `details`: which bytes or which text differ), or in a layer check (`check` names it;
    `details` are its layers' differences)."""

    verdict = "divergence"

    def __init__(
        self,
        expected: Observation | None = None,
        actual: Observation | None = None,
        details: Sequence[str] = (),
        *,
        check: str | None = None,
        evidence: Evidence | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.details = tuple(details)
        self.check = check
        self.evidence = evidence
        super().__init__(self.headline)

    @property
    def headline(self) -> str:
        if self.check is not None or self.expected is None or self.actual is None:
            return "\n".join([f"{self.check or 'layers differ'}:", *self.details])
        return str(Difference(self.expected, self.actual, list(self.details)))


class QemuCrashed(QemuMisbehaved):
    """A QEMU process died (a signal or an exit) where the model does not allow it.

    `machine` names the process, `signal` ('SIGKILL'; None for an exit), `returncode`
    (negative: a signal; None if unknown), `stderr_tail` the end of what it printed."""

    verdict = "crash"
    machine: str = "QEMU"
    signal: str | None = None
    returncode: int | None = None
    stderr_tail: str = ""

    def __init__(
        self,
        machine: str,
        signal: str | None,
        returncode: int | None = None,
        stderr_tail: str = "",
        *,
        expected: Observation | None = None,
        actual: Observation | None = None,
        details: Sequence[str] = (),
        evidence: Evidence | None = None,
    ) -> None:
        self.machine = machine
        self.signal = signal
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.expected = expected
        self.actual = actual
        self.details = tuple(details)
        self.evidence = evidence
        super().__init__(self.headline)

    def how(self) -> str:
        """'killed by SIGKILL', 'exit status 1'."""
        if self.signal is not None:
            return f"killed by {self.signal}"
        return describe_exit(self.returncode) if self.returncode is not None else "exited"

    def what_happened(self) -> str:
        return f"QEMU {self.machine} died ({self.how()}) where the model does not allow it"

    @property
    def headline(self) -> str:
        lines = [self.what_happened()]
        if self.expected is not None and self.actual is not None:
            lines.append(str(Difference(self.expected, self.actual, list(self.details))))
        return "\n".join(lines)


class QemuAborted(QemuCrashed):
    """A QEMU process died on SIGABRT (abort(), a failed assertion, &error_abort)."""

    verdict = "abort"

    @property
    def assertion(self) -> str:
        """The line of stderr that says why (an assertion, an 'Unexpected error'), or ''."""
        for line in reversed(self.stderr_tail.splitlines()):
            if "Assertion" in line or "Unexpected error" in line or "assert" in line:
                return line.strip()
        return ""

    def what_happened(self) -> str:
        why = f": {self.assertion}" if self.assertion else ""
        return f"QEMU {self.machine} aborted ({self.how()}{why}) where the model does not allow it"


class QemuHung(QemuMisbehaved):
    """QEMU (or one of the build's tools) did not answer, or did not finish, within its
    deadline. `machine` names the process, `deadline` the seconds it had (None: not
    one number)."""

    verdict = "hang"
    machine: str = "QEMU"
    deadline: float | None = None


class CommitStalled(QemuHung):
    """Settle: the failover commit stopped making progress, or outlasted the time its data
    needs, where the model has it finish (harness.real's COMMIT_STALLED answer)."""

    def __init__(
        self,
        machine: str,
        expected: Observation,
        actual: Observation,
        *,
        evidence: Evidence | None = None,
    ) -> None:
        self.machine = machine
        self.expected = expected
        self.actual = actual
        self.evidence = evidence
        super().__init__(self.headline)

    @property
    def headline(self) -> str:
        assert self.expected is not None and self.actual is not None
        return (
            f"QEMU {self.machine}: the failover commit did not finish\n"
            f"{Difference(self.expected, self.actual)}"
        )


# ---- not QEMU's


class ModelDisagrees(AssertionError):
    """The case's own statement and the model's answer differ: a model (or case) bug.

    Not QEMU's: QEMU was not asked. It stays a plain failure of the case (an
    AssertionError, like a case's own `assert`), outside QemuMisbehaved, so no runner
    reports it as a divergence. `stated` is the case's statement, `expected` the model's
    answer, `evidence` the story (its last step is the one stated)."""

    verdict: ClassVar[str] = "model disagrees"

    def __init__(self, stated: Observation, expected: Observation, evidence: Evidence) -> None:
        self.stated = stated
        self.expected = expected
        self.evidence = evidence
        super().__init__(self.headline)

    @property
    def headline(self) -> str:
        return (
            f"the case states {self.stated.describe()}\n"
            f"but the model answers {self.expected.describe()}"
        )

    def one_line(self) -> str:
        return " ".join(self.headline.split())

    def __str__(self) -> str:
        return self.evidence.report(self.headline)


__all__ = [
    "CommitStalled",
    "Divergence",
    "Evidence",
    "LiveLayer",
    "ModelDisagrees",
    "ModelLayer",
    "QemuAborted",
    "QemuCrashed",
    "QemuHung",
    "QemuMisbehaved",
    "Step",
    "describe_exit",
    "fmt_ranges",
    "signal_name",
]
