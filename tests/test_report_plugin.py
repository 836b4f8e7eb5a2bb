"""The report plugin on its own (no QEMU): JSON records, events and artifacts, with and
without pytest-xdist, for every outcome pytest has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SAMPLE = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.quick
def test_pass():
    pass

def test_fail():
    assert 1 == 2, "one is not two"

@pytest.mark.skip(reason="not on this build")
def test_skip():
    pass

@pytest.mark.xfail(strict=True, reason="QEMU bug (7.2): known")
def test_xfail():
    assert False

@pytest.mark.xfail(strict=True, reason="QEMU bug: fixed now")
def test_xpass_strict():
    pass

def test_setup_error(broken):
    pass

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n
"""

EXPECTED = {
    "test_sample.py::test_pass": "passed",
    "test_sample.py::test_fail": "failed",
    "test_sample.py::test_skip": "skipped",
    "test_sample.py::test_xfail": "xfailed",
    "test_sample.py::test_xpass_strict": "failed",
    "test_sample.py::test_setup_error": "error",
    "test_sample.py::test_teardown_error": "error",
    "test_sample.py::test_param[1]": "passed",
    "test_sample.py::test_param[2]": "passed",
}


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    quick: q\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    rfd, wfd = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.report.plugin",
            "--qrc-json=out/report.json",
            "--qrc-artifacts=out/artifacts",
            f"--qrc-events-fd={wfd}",
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(wfd,),
        env=env,
    )
    os.close(wfd)
    with os.fdopen(rfd) as f:
        events = [json.loads(line) for line in f]
    rc = proc.wait(120)
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    return rc, doc, events


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_records_events_and_artifacts(tmp_path: Path, xdist: list[str]) -> None:
    rc, doc, events = _run(tmp_path, *xdist)
    assert rc == 1
    got = {r["nodeid"]: r["outcome"] for r in doc["cases"]}
    assert got == EXPECTED
    assert doc["summary"] == {
        "passed": 3,
        "failed": 2,
        "error": 2,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 0,
    }
    by_id = {r["nodeid"]: r for r in doc["cases"]}
    assert by_id["test_sample.py::test_skip"]["reason"] == "not on this build"
    assert by_id["test_sample.py::test_xfail"]["reason"] == "QEMU bug (7.2): known"
    assert by_id["test_sample.py::test_pass"]["markers"] == ["quick"]
    fail = by_id["test_sample.py::test_fail"]
    assert fail["message"].startswith("AssertionError: one is not two")
    assert fail["divergence"] is None and fail["qemu_version"] is None
    assert by_id["test_sample.py::test_xpass_strict"]["message"] == (
        "[XPASS(strict)] QEMU bug: fixed now"
    )
    assert by_id["test_sample.py::test_setup_error"]["message"] == "RuntimeError: fixture broke"
    teardown = by_id["test_sample.py::test_teardown_error"]
    assert (teardown["when"], teardown["message"]) == ("teardown", "RuntimeError: teardown broke")

    # events: the total first, a start and a done per case, the end last
    assert events[0] == {"e": "total", "n": 9}
    assert sorted(e["id"] for e in events if e["e"] == "start") == sorted(EXPECTED)
    assert sorted(e["nodeid"] for e in events if e["e"] == "done") == sorted(EXPECTED)
    assert events[-1]["e"] == "end" and events[-1]["exitstatus"] == 1

    # artifacts: one directory per failed case, none for the others
    failed = {n for n, o in EXPECTED.items() if o in ("failed", "error")}
    for nodeid in EXPECTED:
        art = by_id[nodeid]["artifacts"]
        if nodeid not in failed:
            assert art is None
            continue
        text = (Path(art) / "failure.txt").read_text()
        assert text.startswith(nodeid)
        assert "made no Story" in (Path(art) / "layers.html").read_text()
    assert len(list((tmp_path / "out" / "artifacts").iterdir())) == len(failed)


def test_unwritable_json_path_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.report.plugin",
            "-p",
            "no:xdist",
            f"--qrc-json={tmp_path}/file/report.json",
            "test_one.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 4
    assert f"--qrc-json {tmp_path}/file: cannot write there: not a directory" in r.stderr
