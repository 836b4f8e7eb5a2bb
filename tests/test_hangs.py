"""Nothing waits forever (issue 15): a case that blocks anyway meets the per-case
backstop as a hang.

pyproject.toml configures pytest-timeout for every pytest run (plain, `qrc run`,
`qrc bisect`). tests/data/hang/case_hang.py raises the harness's own deadlines and
waits on a held commit. `qrc bisect` (PYTEST_TIMEOUT lowered to keep this test short)
answers 1, names it a hang and keeps the machines' QMP transcripts; in a plain pytest
run, the case after it finds none of its processes left. Elapsed times are printed,
never asserted (timings live in benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.cli_helpers import fake_build, qrc

ROOT = Path(__file__).resolve().parents[1]
HANG = "tests/data/hang/case_hang.py"
BACKSTOP = "12"  # PYTEST_TIMEOUT for the inner runs: well above the case's ~2 s set-up


def ini_timeout() -> float:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return float(tomllib.load(f)["tool"]["pytest"]["ini_options"]["timeout"])


def test_the_backstop_is_configured_for_every_run() -> None:
    """pyproject.toml's timeout, well above the slowest healthy case, reaches plain
    pytest (its header says so); `qrc run`/`bisect` run pytest in the project's root."""
    assert ini_timeout() >= 120
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-p", "no:xdist", HANG],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    assert f"timeout: {ini_timeout():.1f}s" in r.stdout, r.stdout + r.stderr
    assert "timeout method: signal" in r.stdout


@pytest.mark.needs_qemu
@pytest.mark.timeout(180)
def test_a_blocked_case_fails_as_a_hang_in_bisect(tmp_path: Path) -> None:
    fake_build(tmp_path / "build")
    pids = tmp_path / "pids"
    t = time.perf_counter()
    r = qrc(
        "bisect",
        "--qemu-dir",
        "build",
        "--case",
        f"{HANG}::test_held_commit_forever",
        "--report-dir",
        "rep",
        "--progress",
        "none",
        cwd=tmp_path,
        env={"PYTEST_TIMEOUT": BACKSTOP, "QRC_SELFTEST_PIDS": str(pids)},
        timeout=150,
    )
    print(f"qrc bisect answered {r.returncode} after {time.perf_counter() - t:.1f} s")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("qrc bisect: bad (1): 1 of 1 selected result fails"), r.stdout
    assert f"hang: no result within the {float(BACKSTOP)} s per-case backstop" in lines[1]
    assert "stopped in _settle (side.py:" in lines[1]  # where it waited, not pytest's frames
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    [rec] = doc["cases"]
    assert rec["outcome"] == "failed" and rec["message"].startswith("hang: ")
    failure = (Path(rec["artifacts"]) / "failure.txt").read_text()
    assert "QMP transcript" in failure and "machine 'secondary'" in failure
    assert "x-debug-query-block-graph" in failure  # what it was doing: polling the commit
    transcripts = list(Path(rec["artifacts"]).glob("machines/*/transcript.jsonl"))
    assert transcripts


@pytest.mark.needs_qemu
@pytest.mark.timeout(180)
def test_a_blocked_case_leaves_no_process_behind(tmp_path: Path) -> None:
    """Plain pytest, one process: the hang fails, then the next case finds every QEMU
    of the hung one gone (its teardown ran: quit, or SIGKILL)."""
    pids = tmp_path / "pids"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTEST_TIMEOUT=BACKSTOP, QRC_SELFTEST_PIDS=str(pids))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "-rA", HANG],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "FAILED tests/data/hang/case_hang.py::test_held_commit_forever" in out
    assert "hang: no result within the" in out
    assert "PASSED tests/data/hang/case_hang.py::test_nothing_left_behind" in out, out
    assert pids.read_text().split()
