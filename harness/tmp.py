"""Where our private directories go: TMPDIR when its path is short enough for sockets.

Each one carries an owner file (OWNER: the creating process's pid, its parent's pid
and its start time), so that when a process dies without cleaning up (a pytest-xdist
worker killed mid-case, or interrupted and killed), the process that started it can
find and remove what it left: `reclaim(parent)` removes the directories of `parent`'s
dead children (and of `parent` itself, once dead). A directory whose owner still runs
is never touched, nor one without an owner file, nor another process tree's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# sun_path holds 107 bytes; leave room for "/qrc-XXXXXXXX/nbd.sock" and friends.
MAX_BASE = 60
OWNER = ".qrc-owner"
PREFIX = "qrc"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: it will clean nothing up
        return None
    return fields[19]


def _bases() -> list[str]:
    base = tempfile.gettempdir()
    return [base] if base == "/tmp" else [base, "/tmp"]


def _own(path: Path) -> Path:
    pid = os.getpid()
    (path / OWNER).write_text(f"{pid} {os.getppid()} {_start_time(pid) or '?'}\n")
    return path


def private_dir(prefix: str = "qrc-", short: bool = True) -> Path:
    """A fresh 0700 directory with an owner file: under TMPDIR, or /tmp when TMPDIR's
    path is too long for sockets in it (`short`)."""
    base = tempfile.gettempdir()
    if short and len(base) > MAX_BASE:
        base = "/tmp"
    assert prefix.startswith(PREFIX), prefix
    return _own(Path(tempfile.mkdtemp(prefix=prefix, dir=base)))


def disown(path: Path) -> None:
    """`path` is handed to the user (kept logs): never reclaimed."""
    (path / OWNER).unlink(missing_ok=True)


def _owned_dirs() -> Iterator[tuple[Path, int, int, str]]:
    for base in _bases():
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for e in entries:
            if not e.name.startswith(PREFIX):
                continue
            try:
                pid, ppid, start = (Path(e.path) / OWNER).read_text().split()
                yield Path(e.path), int(pid), int(ppid), start
            except (OSError, ValueError):
                continue


def reclaim(parent: int) -> list[Path]:
    """Remove the private directories of `parent`'s children that died (and of `parent`,
    if it died too); the removed paths."""
    removed = []
    for path, pid, ppid, start in _owned_dirs():
        if parent not in (pid, ppid) or pid == os.getpid():
            continue
        if start == "?" and os.path.exists(f"/proc/{pid}"):
            continue
        if _start_time(pid) == start:  # its owner runs (the same process, not a reused pid)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
