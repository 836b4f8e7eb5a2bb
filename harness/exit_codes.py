"""qrc's exit codes, for `qrc --help` and the README (tests check both against
harness.errors): the codes of every command, and the only ones `qrc bisect` answers with
(git bisect run's protocol)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

# The exit codes, for `qrc --help` and the README (tests check both against harness.errors).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "every selected case passed (expected failures included)"),
    (1, "a case failed or errored (or a strict expected failure passed)"),
    (2, "usage error: unknown option or bad argument"),
    (3, "no QEMU where pointed: --qemu-dir without QEMU, none on PATH"),
    (4, "a binary exists but is not executable"),
    (5, "the selection matched no case"),
    (6, "the build has no replication driver (or lacks a needed QMP command)"),
    (7, "an image recipe is invalid"),
    (8, "a trace file is malformed"),
    (9, "a report path (--report-dir, --out) cannot be written"),
    (10, "setup failed (scripts/setup.sh)"),
    (11, "probing the build failed (QEMU crashed, hung or spoke no QMP)"),
    (12, "a binary of the build is missing (qemu-img, the storage daemon...)"),
    (
        13,
        "qrc export: the case cannot be exported (COLO's migration, a guest's vCPU, a "
        "differential run, several threads at once) or did not run on the build (skipped)",
    ),
    (14, "pytest itself failed (internal error)"),
    (15, "the environment failed the run (a full disk, no file descriptors): no verdict"),
    (16, "qrc coverage: no gcov data (not a build tree configured with --enable-gcov)"),
    (130, "interrupted"),
)
BISECT_CODES: tuple[tuple[int, str], ...] = (
    (0, "good: the selected cases pass (--find-fix: they still fail)"),
    (1, "bad: a selected case fails (--find-fix: they pass now)"),
    (
        125,
        "skip: this build cannot be tested (its build fails, binaries missing or not "
        "executable, no replication driver, probe fails, every selected case skipped)",
    ),
    (
        128,
        "abort the bisection: the command line is wrong (unknown option or --profile, "
        "unwritable report path, a selection matching no case, --build on a directory "
        "that is not a build tree) or the environment failed the run (a full disk...)",
    ),
    (130, "interrupted (git aborts the bisection too)"),
)


def code_rows(codes: Sequence[tuple[int, str]]) -> list[str]:
    return [
        textwrap.fill(f"  {code:>3}  {text}", width=92, subsequent_indent=" " * 7)
        for code, text in codes
    ]


def codes_text() -> str:
    head = ["exit codes (one line on stderr for each error):", *code_rows(EXIT_CODES), ""]
    tail = ["qrc bisect exits only with git bisect run's codes:", *code_rows(BISECT_CODES)]
    return "\n".join([*head, *tail])
