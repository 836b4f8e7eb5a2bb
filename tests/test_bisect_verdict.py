"""`qrc bisect`'s verdict table (harness.bisect.verdict, replay_verdict), row by row, on
made-up results: no pytest, no QEMU, no process. tests/test_cli_bisect.py runs the same
answers for real, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.bisect import BisectVerdict, replay_verdict, verdict
from harness.errors import BISECT_ABORT, BISECT_SKIP
from harness.report import records
from harness.report.runner import RunResult

WHERE = "QEMU 7.2.22 at /b/qemu-system-x86_64"
ABORT = f"(aborting the bisection: {BISECT_ABORT})"


def rec(nodeid: str, outcome: str, when: str = "call", **more: Any) -> dict[str, Any]:
    return records.new_record(nodeid) | {"outcome": outcome, "when": when, **more}


def result(returncode: int, *cases: dict[str, Any], report: bool = True) -> RunResult:
    doc = records.document(list(cases), returncode, 1.0, []) if report else None
    d = Path("/r")
    return RunResult(returncode, doc, 1.0, d, d / "pytest.log", d / "junit.xml", d / "j", d / "a")


PASSED, XFAILED, XPASSED = rec("a", "passed"), rec("b", "xfailed"), rec("c", "xpassed")
SKIPPED = rec("s", "skipped", reason="needs 10.0")
FAILED = rec("f", "failed", message="Divergence: X", artifacts="/r/a/f")
ERROR = rec("e", "error", when="setup", message="QemuCrashed: Y")
IMPORT = rec("cases/x.py", "error", when="collect", message="ImportError: z")


@pytest.mark.parametrize("find_fix", [False, True])
def test_passing_cases_are_good_or_fixed(find_fix: bool) -> None:
    v = verdict(result(0, PASSED, XFAILED, XPASSED, SKIPPED), find_fix, WHERE)
    said = "new (1), fixed" if find_fix else "good (0)"
    assert v == BisectVerdict(int(find_fix), f"{said}: 3 selected results pass on {WHERE}")
    one = verdict(result(0, PASSED), find_fix, WHERE)
    assert one.code == int(find_fix) and "1 selected result passes" in one.line


@pytest.mark.parametrize("find_fix", [False, True])
def test_a_failure_or_an_error_is_bad_or_not_fixed(find_fix: bool) -> None:
    v = verdict(result(1, PASSED, FAILED, ERROR), find_fix, WHERE)
    said = "old (0), not fixed" if find_fix else "bad (1)"
    assert v.code == (0 if find_fix else 1)
    assert v.line == f"{said}: 2 of 3 selected results fail on {WHERE}"
    assert v.failures == (ERROR, FAILED)  # the report's order: by node id
    assert verdict(result(1, FAILED), find_fix, WHERE).line.endswith(
        f"1 of 1 selected result fails on {WHERE}"
    )


def test_pytest_saying_1_is_bad_even_without_a_failed_record() -> None:
    # a strict xfail that passed is "failed" in pytest's status, whatever the records say
    v = verdict(result(1, PASSED), False, WHERE)
    assert (v.code, v.failures) == (1, ())
    assert v.line == f"bad (1): 0 of 1 selected result fail on {WHERE}"


def test_every_case_skipped_skips_the_commit() -> None:
    other = rec("t", "skipped", reason="a needs_bug case")
    v = verdict(result(0, SKIPPED, other, SKIPPED), True, WHERE)
    assert v == BisectVerdict(
        BISECT_SKIP,
        f"skip (125): every selected case was skipped on {WHERE}: a needs_bug case; needs 10.0",
    )


def test_an_empty_selection_aborts() -> None:
    v = verdict(result(5, report=False), False, WHERE)
    assert v == BisectVerdict(BISECT_ABORT, f"the selection matched no case {ABORT}")


@pytest.mark.parametrize("find_fix", [False, True])
def test_the_environment_failing_a_case_aborts(find_fix: bool) -> None:
    """A full disk says nothing about the commit, whatever else passed or failed."""
    full = "No space left on device: /tmp/full has 0 B free of 16.0 MiB"
    broken = rec("x", "error", environment=full)
    v = verdict(result(1, PASSED, FAILED, broken), find_fix, WHERE)
    assert v == BisectVerdict(
        BISECT_ABORT,
        f"environment broken, no verdict for 1 result (not QEMU's doing): {full} {ABORT}",
    )


def test_a_case_file_that_does_not_import_aborts() -> None:
    v = verdict(result(2, IMPORT), False, WHERE)
    assert v.code == BISECT_ABORT
    assert v.line == f"a case file does not import: cases/x.py: ImportError: z {ABORT}"
    # with a real failure beside it, the failure decides
    assert verdict(result(1, IMPORT, FAILED), False, WHERE).code == 1


@pytest.mark.parametrize("returncode", [2, 3, 4])
def test_another_pytest_status_aborts(returncode: int) -> None:
    v = verdict(result(returncode, PASSED), False, WHERE)
    assert v == BisectVerdict(
        BISECT_ABORT, f"pytest exited with status {returncode}; see /r/pytest.log {ABORT}"
    )


@pytest.mark.parametrize(
    ("rc", "find_fix", "code"),
    [(0, False, 0), (1, False, 1), (0, True, 1), (1, True, 0), (125, False, 125), (125, True, 125)],
)
def test_replay_answers_pass_through(rc: int, find_fix: bool, code: int) -> None:
    assert replay_verdict(rc, find_fix, "t.json") == BisectVerdict(code, "")


@pytest.mark.parametrize("rc", [2, 8, 130])
def test_replay_failing_otherwise_aborts(rc: int) -> None:
    assert replay_verdict(rc, False, "t.json") == BisectVerdict(
        BISECT_ABORT, f"replay of t.json exited with status {rc} {ABORT}"
    )
