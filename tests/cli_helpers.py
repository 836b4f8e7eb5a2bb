"""Helpers for tests/test_cli_*.py: fake QEMU build trees and running `qrc` for real.

A fake build tree has the layout of a meson build directory
(BUILD/qemu-system-x86_64, BUILD/storage-daemon/qemu-storage-daemon, ...) made of
symlinks to real installed binaries, so `qrc` treats it exactly as a QEMU
checkout's build.  The variants are honest versions of the bad builds:

- no replication: qemu-system-x86_64 is Debian's qemu-system-x86_64-microvm, a
  real QEMU built without the replication driver (and without the xen-* commands);
- missing binary: one binary left out; not executable: a plain 0644 file;
- probe fails: a qemu-system-x86_64 that exits at once without speaking QMP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QRC = ROOT / ".venv" / "bin" / "qrc"
PINNED = ROOT / ".qemu" / "10.0"
FLIPPED = "tests/data/bisect/case_flipped.py::test_start_twice"
FLIPPED_FILE = "tests/data/bisect/case_flipped.py"

TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")
MICROVM = "/usr/bin/qemu-system-x86_64-microvm"


def installed(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs QEMU)")
    return path


def fake_build(
    where: Path,
    system: str | None = None,
    leave_out: str | None = None,
    not_executable: str | None = None,
) -> Path:
    """A build tree of symlinks to the installed QEMU (PATH's, 7.2 on Debian 12)."""
    where.mkdir(parents=True)
    (where / "storage-daemon").mkdir()
    links = {t: where / t for t in TOOLS}
    links["qemu-storage-daemon"] = where / "storage-daemon" / "qemu-storage-daemon"
    links["qemu-system-x86_64"] = where / "qemu-system-x86_64"
    for name, dst in links.items():
        if name == leave_out:
            continue
        if name == not_executable:
            dst.write_text("#!/bin/sh\n")
            dst.chmod(0o644)
            continue
        src = system if (name == "qemu-system-x86_64" and system) else installed(name)
        dst.symlink_to(src)
    return where


def no_replication_build(where: Path) -> Path:
    if not os.access(MICROVM, os.X_OK):
        pytest.skip(f"{MICROVM} (a QEMU without replication) is not installed")
    return fake_build(where, system=MICROVM)


def probe_fails_build(where: Path) -> Path:
    build = fake_build(where, leave_out="qemu-system-x86_64")
    script = build / "qemu-system-x86_64"
    script.write_text("#!/bin/sh\necho 'qemu-system-x86_64: cannot start' >&2\nexit 1\n")
    script.chmod(0o755)
    return build


def qrc(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    assert QRC.exists(), f"{QRC} missing: run scripts/setup.sh (pip install -e .)"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    full_env.pop("QRC_SELFTEST_FLIP", None)
    full_env.update(env or {})
    return subprocess.run(
        [str(QRC), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    """stderr, asserted to be exactly one line."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]
