"""Helpers shared by the process-level tests (machine, qemu-io, NBD client)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builds import QemuBuild
from harness.machine import MachineSet


def alive(pid: int) -> bool:
    """Is `pid` a live (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[MachineSet]:
    """A MachineSet whose every process must be gone when the test ends."""
    ms = MachineSet(tmp_path)
    with ms:
        yield ms
    left = [p for p in ms.pids if alive(p)]
    assert not left, f"QEMU processes left running: {left}"


def qcow2(build: QemuBuild, path: Path, size: str = "64M") -> str:
    """An empty qcow2 image made with the build's own qemu-img."""
    env = {**os.environ, **build.env()}
    create = [*build.command(build.img), "create", "-q", "-f", "qcow2", str(path), size]
    subprocess.run(create, check=True, env=env)
    return str(path)
