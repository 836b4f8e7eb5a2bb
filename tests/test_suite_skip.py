"""A build that cannot run replication makes the suite skip with the probe's reason, not fail.

The build is real: Debian's qemu-system-x86_64-microvm is QEMU 7.2 built without
the replication driver and the xen-* commands, laid out as a build tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import ROOT, no_replication_build


def test_cases_skip_with_the_reason_on_a_build_without_replication(tmp_path: Path) -> None:
    build = no_replication_build(tmp_path / "build")
    env = {**os.environ, "QRC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "-rs",
            "--qemu-dir",
            str(build),
            "cases/test_smoke.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-2000:]
    assert " 2 skipped" in out and "passed" not in out and "failed" not in out, out[-2000:]
    assert "has no replication block driver (built without --enable-replication)" in out
