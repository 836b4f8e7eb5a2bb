"""Running qemu-img and qemu-io of one build, with its environment and a deadline.

Every tool call goes through `run` so that a hung or failing tool becomes an
`ImageError` carrying the command line and its stderr, not a bare
CalledProcessError or a test that never ends.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.environment import check_answer, check_binaries, from_os_error
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.builds import QemuBuild

DEFAULT_TIMEOUT = 30.0


class ImageError(HarnessError):
    """qemu-img or qemu-io failed (or hung) while building or inspecting an image."""


class ImageCorrupt(ImageError):
    """`qemu-img check` found corruptions or leaks in an image QEMU left behind."""


def tool_env(build: QemuBuild) -> dict[str, str]:
    """os.environ plus what the build needs (its module directory)."""
    return {**os.environ, **build.env()}


def run(
    build: QemuBuild,
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one tool; with `check`, a non-zero exit raises ImageError with stderr."""
    # argv[0] is one of the build's binaries: through its loader, if it has one.
    args = build.command(argv[0]) + [os.fspath(a) for a in argv[1:]]
    shown = shlex.join(args)
    try:
        proc = subprocess.run(
            args,
            env=tool_env(build),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"{shown}: no answer within {timeout:g} s") from None
    except OSError as e:
        check_binaries(args[0], argv[0])
        raise from_os_error(e) or ImageError(f"{shown}: cannot run: {e}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or "(no output)"
        # a full disk, a binary gone: the environment's, not an image's problem
        check_binaries(args[0], argv[0])
        paths = [Path(a) for a in argv[1:] if os.path.isabs(a)]  # the images': where
        check_answer(detail, *(p.parent for p in paths))
        raise ImageError(f"{shown}: exit {proc.returncode}: {detail}")
    return proc
