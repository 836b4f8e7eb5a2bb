"""After a whole run, nothing of ours is left: no QEMU process, no temporary directory.

The run under test is a real sub-run of pytest over the tests that kill,
stop and crash QEMU, with a private TMPDIR and a marker in its environment
that every process it starts inherits; afterwards /proc and TMPDIR are searched
for anything that carries the marker or was left in the directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

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
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "--all-builds",
             "-p", "no:cacheprovider", f"--basetemp={basetemp}", *SUBSET],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert " passed" in proc.stdout
        assert _marked(mark) == [], "processes of the sub-run still running"
        left = sorted(p.name for p in tmp.iterdir())
        assert left == [], f"temporary entries left in TMPDIR: {left}"
    finally:
        subprocess.run(["rm", "-rf", str(tmp), str(basetemp)], check=False)
