"""What ends a case about a QEMU process (harness.machine raises them): a failure with
the machine's report. MachineDied (MachineAborted) and MachineHung are QEMU misbehaving,
in harness.verdicts' tree too; QmpCommandFailed, a command the harness needs refused,
is a plain failure."""

from __future__ import annotations

from harness.observe import QmpResult
from harness.verdicts import QemuAborted, QemuCrashed, QemuHung, signal_name


class MachineError(AssertionError):
    """Something about a QEMU process ended the case; pytest shows it as a failure with
    this report. Its QEMU-misbehaving kinds (MachineDied, MachineHung) are also in
    harness.verdicts' tree; QmpCommandFailed is not (a command the harness needs)."""

    def __init__(self, message: str, report: str) -> None:
        # not super(): in MachineDied's and MachineHung's MRO the next class is a verdict
        AssertionError.__init__(self, f"{message}\n{report}")
        self.summary = message
        self.report = report

    @property
    def headline(self) -> str:
        return self.summary

    def __str__(self) -> str:
        return f"{self.summary}\n{self.report}"


class MachineDied(MachineError, QemuCrashed):
    """QEMU exited (crash, abort, signal) while we needed it."""

    def __init__(
        self,
        message: str,
        report: str,
        returncode: int | None,
        stderr_tail: str,
        machine: str = "QEMU",
    ) -> None:
        super().__init__(message, report)
        self.machine = machine
        self.returncode = returncode
        self.signal = signal_name(returncode)
        self.stderr_tail = stderr_tail


class MachineAborted(MachineDied, QemuAborted):
    """QEMU died on SIGABRT (an assertion, abort(), &error_abort) while we needed it."""


class MachineHung(MachineError, QemuHung):
    """A QMP command missed its deadline; the process was SIGKILLed."""

    def __init__(
        self, message: str, report: str, machine: str = "QEMU", deadline: float | None = None
    ) -> None:
        super().__init__(message, report)
        self.machine = machine
        self.deadline = deadline


class QmpCommandFailed(MachineError):
    """qmp_ok() got a QMP error where the caller required success: not in the verdicts'
    tree (the model has no say in the commands the harness needs), a plain failure."""

    def __init__(self, message: str, report: str, result: QmpResult) -> None:
        super().__init__(message, report)
        self.result = result
