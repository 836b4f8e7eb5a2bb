"""Errors the harness reports to users, each with its own exit code.

Bad input must end in one clear line and a distinct exit code, never a
traceback; the CLI and the pytest plugin map these classes to that line.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base: a user-facing problem with a one-line message and an exit code."""

    exit_code = 1

    def one_line(self) -> str:
        return f"qrc: {self}"


class UsageError(HarnessError):
    """The command line is wrong (an unknown option, a bad value); argparse's code."""

    exit_code = 2


class BuildNotFound(HarnessError):
    """No QEMU binary where the user pointed (or none on PATH)."""

    exit_code = 3


class BinaryNotExecutable(HarnessError):
    """The binary exists but cannot be run."""

    exit_code = 4


class BinaryMissing(BuildNotFound):
    """The build was found but one of its binaries is not there (qemu-img, the
    storage daemon...), or an iotests variable names a file that does not exist.

    A BuildNotFound (callers that only ask "is there a usable build" need not
    care), but with its own exit code: "this build is incomplete" is a
    different problem from "there is no QEMU here".
    """

    exit_code = 12


class NoCases(HarnessError):
    """The selection (-k, -m, --case, paths) matched no case: pytest's own code 5."""

    exit_code = 5


class NoReplication(HarnessError):
    """The build runs but cannot host the replication filter."""

    exit_code = 6


class RecipeError(HarnessError):
    """An image recipe is invalid: names the file and the key."""

    exit_code = 7


class TraceError(HarnessError):
    """A trace file is malformed or truncated."""

    exit_code = 8


class ReportPathError(HarnessError):
    """A report or artifacts path cannot be written."""

    exit_code = 9


class SetupError(HarnessError):
    """The environment cannot be set up (not root, no apt, ...)."""

    exit_code = 10


class ProbeError(HarnessError):
    """The build was found but probing it failed (it crashed, hung, spoke no QMP)."""

    exit_code = 11


class EnvironmentBroken(HarnessError):
    """The machine the harness runs on failed it: a full filesystem (its directory and how
    much was free are in the message), no file descriptors left, a binary of the build
    gone. Not QEMU's doing (outside harness.verdicts' QemuMisbehaved tree) and not a case's
    verdict: the case has none. harness.environment tells one from QEMU's answer."""

    exit_code = 15

    def one_line(self) -> str:
        return f"qrc: the environment failed the run: {self}"


class NoCoverageData(HarnessError):
    """`qrc coverage` has nothing to measure: the build is not a build tree configured
    with --enable-gcov (no gcov notes for block/replication.c), gcov is missing, or the
    run wrote no counts."""

    exit_code = 16


class NotExportable(HarnessError):
    """`qrc export`: the case cannot be replayed in order by a file of its own (COLO's
    migration, a guest's vCPU, a differential run, several threads at once), or it did
    not run on this build (skipped); the message says which."""

    exit_code = 13


class RunnerError(HarnessError):
    """pytest itself failed (an internal error, or it died without writing its report)."""

    exit_code = 14


# The protocol of `git bisect run`: this build cannot be tested.
BISECT_SKIP = 125
# ... and "stop bisecting": git aborts the bisection on an exit code of 128 or
# more.  `qrc bisect` uses it when the command line itself is wrong (unknown
# option, unwritable report path, a selection that matches no case), which says
# nothing about the commit under test and must not be recorded as "bad".
BISECT_ABORT = 128
