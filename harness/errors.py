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


class BuildNotFound(HarnessError):
    """No QEMU binary where the user pointed (or none on PATH)."""

    exit_code = 3


class BinaryNotExecutable(HarnessError):
    """The binary exists but cannot be run."""

    exit_code = 4


# 5 is left out on purpose: pytest uses it for "no tests collected".


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


# The protocol of `git bisect run`: this build cannot be tested.
BISECT_SKIP = 125
