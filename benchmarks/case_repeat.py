"""pytest plugin for benchmarks/case_floor.py: run every selected case QRC_REPEAT times.

Loaded on request only (`PYTHONPATH=benchmarks pytest -p case_repeat ...`); with
QRC_REPEAT=N (N > 1) each case is parametrized N times (ids r0 ... rN-1), so one pytest
process runs the same case N times and its start-up and exit are paid once.
"""

from __future__ import annotations

import os

import pytest

ENV = "QRC_REPEAT"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    n = int(os.environ.get(ENV, "0") or 0)
    if n > 1:
        metafunc.fixturenames.append("_qrc_repeat")
        metafunc.parametrize("_qrc_repeat", range(n), ids=[f"r{i}" for i in range(n)])
