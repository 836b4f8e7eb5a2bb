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
from collections.abc import Mapping
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

# Where git finds the repository: `git bisect run` exports GIT_DIR when the checkout is
# a worktree (`git worktree add`), and a build that runs git (QEMU's configure updating
# its submodules, meson downloading a wrap into subprojects/) would then act on the
# bisected repository itself: meson's `git init; git fetch --depth 1; git checkout`
# for a subproject checks the subproject's commit out over the QEMU checkout (and
# leaves the repository shallow). The build runs without them; git finds the
# checkout from the build's working directory, as it would at a shell prompt.
GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
)


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


def build_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables that tell git where the repository is."""
    return {k: v for k, v in env.items() if k not in GIT_LOCATION_VARS}


def build(argv: list[str], log: Path) -> BuildResult:
    """Run `argv` with its whole output in `log`. OSError if the tool cannot be started."""
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        rc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=build_env(os.environ),
            check=False,
        ).returncode
    seconds = time.monotonic() - t0
    with open(log, errors="replace") as f:
        tail = [line.rstrip("\n") for line in deque(f, maxlen=TAIL_LINES)]
    return BuildResult(argv, rc, seconds, tail)
