"""A broken environment is nobody's divergence.

When the machine the harness runs on fails it (a full filesystem: ENOSPC, EDQUOT; no file
descriptors left: EMFILE, ENFILE; a binary of the build gone mid-run), QEMU's answers and
the harness's own I/O fail for a reason that says nothing about QEMU. Such a failure is
harness.errors.EnvironmentBroken, outside harness.verdicts' tree: the case has no verdict,
`qrc run` says so in one line and exits 15, `qrc bisect` aborts (128) rather than tell git
that the commit is bad.

Where QEMU reports it: a QMP error (blockdev-add; xen-set-replication's "Failed to empty
...: No space left on device"), an HMP reply, qemu-io's "write failed: No space left on
device", qemu-img's stderr. Such an answer is the environment's (`from_answer`) when, at
that moment, the filesystem of the case's directory or of TMPDIR is nearly full (os.statvfs:
less than NEAR_FULL bytes free, or too few inodes); otherwise the answer stands as QEMU's.
EMFILE and ENFILE are the environment's at once (no case injects them). The harness's own
I/O failing with one of these errnos is the environment's always, the kernel said so
(`from_exception`). And a case that fails while its filesystem is nearly full has no
verdict either (`from_failure`, which the report plugin asks of every failure): QEMU does
not always say so (a job's error shows as "I/O error occurred"; a metadata write lost when
an image is closed shows only in the image).
"""

from __future__ import annotations

import errno
import os
import resource
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import EnvironmentBroken

SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
ERRNOS = SPACE_ERRNOS | FD_ERRNOS
# the texts QEMU prints for them (strerror), longest first: EMFILE's is in ENFILE's
_TEXTS = sorted(((os.strerror(e), e) for e in ERRNOS), key=lambda t: -len(t[0]))
NEAR_FULL = 64 << 20


def _size(n: int) -> str:
    x, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if x < 1024:
            break
        x, unit = x / 1024, bigger
    return f"{n} B" if unit == "B" else f"{x:.1f} {unit}"


def _mount_point(path: Path) -> Path:
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class Space:
    """What a filesystem had free when asked (os.statvfs)."""

    where: Path  # its mount point
    free: int
    size: int
    inodes_free: int
    inodes: int  # 0: the filesystem does not count them

    @classmethod
    def of(cls, path: Path | str) -> Space | None:
        """The filesystem `path` (or its nearest existing parent) is on; None if unreadable."""
        p = Path(path).absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            st = os.statvfs(p)
        except OSError:
            return None
        return cls(_mount_point(p), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize,
                   st.f_favail, st.f_files)  # fmt: skip

    @property
    def inodes_short(self) -> bool:
        return self.inodes > 0 and self.inodes_free < max(64, self.inodes // 100)

    @property
    def full(self) -> bool:
        """Nearly full: too little room left for a case's images."""
        return self.free < NEAR_FULL or self.inodes_short

    def describe(self) -> str:
        text = f"{self.where} has {_size(self.free)} free of {_size(self.size)}"
        if self.inodes_short:
            text += f" and {self.inodes_free} of {self.inodes} inodes"
        return text


def _dirs(where: tuple[Path | str, ...]) -> list[Path | str]:
    return [*where, tempfile.gettempdir()]


def full_space(*where: Path | str) -> Space | None:
    """The first nearly full filesystem among those of `where` and TMPDIR's; None."""
    for d in _dirs(where):
        space = Space.of(d)
        if space is not None and space.full:
            return space
    return None


def _fds() -> str:
    try:
        n = len(os.listdir("/proc/self/fd"))
    except OSError:
        return "no file descriptor left"
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"the harness has {n} file descriptors open (limit {soft})"


def from_answer(text: str, *where: Path | str) -> EnvironmentBroken | None:
    """QEMU's answer `text` (a QMP error, an HMP reply, qemu-io's error line, qemu-img's
    stderr) when it is the environment's (see the module's docstring): `where` are the
    case's directories (TMPDIR's filesystem is asked too). None: the answer stands."""
    code = next((c for t, c in _TEXTS if t in text), None)
    if code is None:
        return None
    said = os.strerror(code)
    if code in FD_ERRNOS:
        return EnvironmentBroken(f"{said} (QEMU's answer); {_fds()}")
    space = full_space(*where)
    return None if space is None else EnvironmentBroken(f"{said}: {space.describe()}")


def check_answer(text: str, *where: Path | str) -> None:
    """EnvironmentBroken if QEMU's answer `text` is the environment's (`from_answer`)."""
    broken = from_answer(text, *where)
    if broken is not None:
        raise broken


def from_os_error(e: OSError) -> EnvironmentBroken | None:
    """The harness's own I/O failing for the environment (one of ERRNOS), said with where
    and how much was free; None for any other OSError."""
    if e.errno not in ERRNOS:
        return None
    said = e.strerror or os.strerror(e.errno)
    if e.errno in FD_ERRNOS:
        return EnvironmentBroken(f"{said}: {_fds()}")
    files = [os.fsdecode(f) for f in (e.filename, e.filename2) if isinstance(f, (str, bytes))]
    where = [Path(f).parent for f in files]
    space = full_space(*where) or Space.of(where[0] if where else tempfile.gettempdir())
    return EnvironmentBroken(f"{said}: {space.describe()}" if space else said)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)


def from_exception(exc: BaseException) -> EnvironmentBroken | None:
    """The environment's failure behind `exc`, if any: an EnvironmentBroken, or an OSError
    with one of ERRNOS, `exc` itself or among its causes (and an exception group's)."""
    for e in _chain(exc):
        if isinstance(e, EnvironmentBroken):
            return e
        if isinstance(e, OSError) and (broken := from_os_error(e)) is not None:
            return broken
    return None


def check_binaries(*paths: str | os.PathLike[str]) -> None:
    """EnvironmentBroken if one of a build's binaries `paths` is gone (removed while the
    run went on): a process that could not start is not QEMU's doing then."""
    for p in paths:
        if os.path.isabs(p) and not os.path.exists(p):
            raise EnvironmentBroken(f"{os.fspath(p)}: the build's binary is gone")


def from_failure(exc: BaseException, *where: Path | str) -> EnvironmentBroken | None:
    """Why the environment failed the case that raised `exc`: `from_exception`'s answer,
    else a nearly full filesystem among those of the case's directories `where` and
    TMPDIR's at this moment; None: the failure stands."""
    broken = from_exception(exc)
    if broken is not None:
        return broken
    space = full_space(*where)
    return None if space is None else EnvironmentBroken(f"nearly full: {space.describe()}")
