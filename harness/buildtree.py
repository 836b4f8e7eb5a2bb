"""Building a QEMU build tree before `qrc bisect` tests it.

`git bisect run` checks out another commit at every step; the binaries in the
build tree stay those of the last build until something rebuilds them. A build
tree is a directory with a `build.ninja` (meson's), or a Makefile that drives one
(QEMU's build directory: its Makefile re-runs configure when `configure` changed
and updates the git submodules before handing the targets to ninja, so it is
preferred when there is one). Exactly the binaries the harness runs are built.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# ninja's names for the five binaries (harness.builds finds them under these paths)
TARGETS = (
    "qemu-system-x86_64",
    "qemu-img",
    "qemu-io",
    "qemu-nbd",
    "storage-daemon/qemu-storage-daemon",
)
TAIL_LINES = 25


def _drives_ninja(makefile: Path) -> bool:
    try:
        with open(makefile, "rb") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    return b"ninja" in text.lower()


def build_argv(directory: Path, jobs: int | None = None) -> list[str] | None:
    """The command that builds TARGETS in `directory`, or None if it is not a build tree."""
    d = Path(directory)
    jobs = jobs or len(os.sched_getaffinity(0))
    makefile = d / "Makefile"
    ninja = d / "build.ninja"
    if makefile.is_file() and (ninja.is_file() or _drives_ninja(makefile)):
        # make's -j reaches ninja through QEMU's Makefile (without it ninja runs -j1)
        return ["make", "-C", str(d), f"-j{jobs}", *TARGETS]
    if ninja.is_file():
        return ["ninja", "-C", str(d), *TARGETS]
    return None


@dataclass(frozen=True)
class BuildResult:
    argv: list[str]
    returncode: int
    seconds: float
    tail: list[str]  # the output's last lines

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def build(argv: list[str], log: Path) -> BuildResult:
    """Run `argv` with its whole output in `log`. OSError if the tool cannot be started."""
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        rc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    seconds = time.monotonic() - t0
    with open(log, errors="replace") as f:
        tail = [line.rstrip("\n") for line in deque(f, maxlen=TAIL_LINES)]
    return BuildResult(argv, rc, seconds, tail)
