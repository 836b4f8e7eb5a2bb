"""The gates as tests, so that a run of tests/ (CI's) enforces them: ruff's lint rules,
ruff's formatting, and mypy --strict on harness/ at zero errors. The tools are the dev
extras (pip install -e '.[dev]', which scripts/setup.sh runs); a test skips, saying so,
where its tool is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["harness", "cases", "tests", "benchmarks", "conftest.py"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed in {sys.prefix}: pip install -e '.[dev]'")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_ruff_check() -> None:
    r = _run("ruff", "check", *PATHS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = _run("ruff", "format", "--check", *PATHS)
    assert r.returncode == 0, f"not formatted (run ruff format on them):\n{r.stdout}{r.stderr}"


@pytest.mark.timeout(600)  # a first run, with no cache, on a loaded machine
def test_mypy_strict() -> None:
    r = _run("mypy", "--strict", "harness")
    assert r.returncode == 0, r.stdout + r.stderr
