"""After a whole run, nothing of ours is left: no QEMU process, no temporary directory.

The run under test is a real sub-run of pytest over the tests that kill,
stop and crash QEMU, with a private TMPDIR and a marker in its environment
that every process it starts inherits; afterwards /proc and TMPDIR are searched
for anything that carries the marker or was left in the directory. The same holds
when a pytest-xdist worker is killed in the middle of a case: the controller removes
what the dead worker left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from harness.tmp import OWNER, reclaim

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ["tests/test_machine.py", "tests/test_nbd_client.py", "cases/test_smoke.py"]


def _marked(mark: str) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if f"QRC_LEAK_MARK={mark}".encode() in env:
            found.append(f"{entry.name} {comm}")
    return found


def test_whole_run_leaves_nothing_behind() -> None:
    mark = uuid.uuid4().hex
    # A short private TMPDIR: unix socket paths inside it must stay under 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="qrcleak-", dir="/tmp"))
    basetemp = tmp.parent / f"{tmp.name}-base"
    try:
        env = {**os.environ, "TMPDIR": str(tmp), "QRC_LEAK_MARK": mark}
        env.pop("PYTEST_XDIST_WORKER", None)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-n",
                "2",
                "--all-builds",
                "-p",
                "no:cacheprovider",
                f"--basetemp={basetemp}",
                *SUBSET,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert " passed" in proc.stdout
        assert _marked(mark) == [], "processes of the sub-run still running"
        left = sorted(p.name for p in tmp.iterdir())
        assert left == [], f"temporary entries left in TMPDIR: {left}"
    finally:
        subprocess.run(["rm", "-rf", str(tmp), str(basetemp)], check=False)


def test_a_killed_workers_files_are_reclaimed() -> None:
    """A worker SIGKILLed mid-case (tests/data/leaks/case_worker_dies.py) cannot clean
    up: its template images, QEMU socket directory and layer inspector directory stay in
    TMPDIR until the controller, told that the worker went down, removes them. Its QEMUs
    die with it (they run under --pdeathsig)."""
    mark = uuid.uuid4().hex
    tmp = Path(tempfile.mkdtemp(prefix="qrcleak-", dir="/tmp"))
    basetemp = tmp.parent / f"{tmp.name}-base"
    report = tmp.parent / f"{tmp.name}-killed.txt"
    try:
        env = {**os.environ, "TMPDIR": str(tmp), "QRC_LEAK_MARK": mark}
        env["QRC_LEAK_REPORT"] = str(report)
        env.pop("PYTEST_XDIST_WORKER", None)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
             f"--basetemp={basetemp}", "tests/data/leaks/case_worker_dies.py",
             "cases/test_smoke.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "crashed" in proc.stdout and " passed" in proc.stdout, proc.stdout[-3000:]
        left_by_worker = report.read_text().split()
        kinds = {name.split("-")[1] if "-" in name else name for name in left_by_worker}
        assert {"templates", "layers"} <= kinds, left_by_worker
        assert len(left_by_worker) >= 3, left_by_worker  # + QEMU's socket directory
        assert _marked(mark) == [], "processes of the sub-run still running"
        left = sorted(p.name for p in tmp.iterdir())
        assert left == [], f"temporary entries left in TMPDIR: {left}"
    finally:
        subprocess.run(["rm", "-rf", str(tmp), str(basetemp), str(report)], check=False)


def test_reclaim_spares_live_and_foreign_owners() -> None:
    """harness.tmp.reclaim(parent) removes only what dead children of `parent` left."""
    script = (
        "import os, sys; from harness.tmp import private_dir; "
        "print(private_dir('qrc-test-')); sys.stdout.flush(); "
        "sys.stdin.read() if sys.argv[1] == 'live' else os._exit(0)"
    )
    # a short TMPDIR: a long one would send private_dir to /tmp
    base = Path(tempfile.mkdtemp(prefix="qrcrc-", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(base)}
    live = None
    try:
        dead = subprocess.run(
            [sys.executable, "-c", script, "dead"], cwd=ROOT, env=env, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        live = subprocess.Popen(
            [sys.executable, "-c", script, "live"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert live.stdout is not None
        dead_dir, live_dir = Path(dead.stdout.strip()), Path(live.stdout.readline().strip())
        assert dead_dir.parent == base and live_dir.parent == base
        foreign = base / "qrc-foreign"
        foreign.mkdir()
        (foreign / OWNER).write_text(f"{os.getpid() + 1} 1 0\n")  # another tree's
        unowned = base / "qrc-unowned"
        unowned.mkdir()
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(base)
        tempfile.tempdir = None
        try:
            assert dead_dir in reclaim(os.getpid())
        finally:
            if old is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = old
            tempfile.tempdir = None
        assert not dead_dir.exists()
        assert live_dir.is_dir() and foreign.is_dir() and unowned.is_dir()
    finally:
        if live is not None:
            live.communicate("")
        subprocess.run(["rm", "-rf", str(base)], check=False)
