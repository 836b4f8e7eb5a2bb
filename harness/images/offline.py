"""Inspect one layer's file after QEMU has quit: what it holds, and whether it is sound.

The layer is opened alone (backing null): the question is what the replication
filter left in this very file, not what a guest would read through the chain.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.images.tools import DEFAULT_TIMEOUT, ImageCorrupt, ImageError, run

if TYPE_CHECKING:
    from harness.builds import QemuBuild

# qemu-img check's exit codes (docs/tools/qemu-img.rst).
_CHECK_INCOMPLETE, _CHECK_CORRUPT, _CHECK_LEAKS = 1, 2, 3
CHECKED_FORMATS = ("qcow2",)


@dataclass(frozen=True)
class MapExtent:
    """One run of `qemu-img map`: present = allocated in this layer itself."""

    start: int
    length: int
    present: bool
    zero: bool
    data: bool

    @property
    def end(self) -> int:
        return self.start + self.length


def layer_filename(path: str | os.PathLike[str], fmt: str) -> str:
    """A json: filename opening the layer without its backing (raw has none)."""
    if fmt == "raw":
        return os.fspath(path)
    return "json:" + json.dumps(
        {
            "driver": fmt,
            "file": {"driver": "file", "filename": os.fspath(path)},
            "backing": None,
        }
    )


def _layer_args(path: str | os.PathLike[str], fmt: str) -> list[str]:
    return ["-f", "raw", os.fspath(path)] if fmt == "raw" else [layer_filename(path, fmt)]


def _img_json(
    build: QemuBuild,
    command: str,
    path: str | os.PathLike[str],
    fmt: str,
    force_share: bool,
    timeout: float,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`qemu-img COMMAND --output=json` of the layer alone; `force_share` (-U) if QEMU
    still has it."""
    argv = [os.fspath(build.img), command, "--output=json", *(["-U"] if force_share else [])]
    return run(build, argv + _layer_args(path, fmt), timeout=timeout, check=check)


def coalesce(entries: Iterable[MapExtent]) -> list[MapExtent]:
    """Merge adjacent runs with equal flags (host offsets are not compared)."""
    out: list[MapExtent] = []
    for e in entries:
        last = out[-1] if out else None
        if (
            last is not None
            and last.end == e.start
            and (last.present, last.zero, last.data) == (e.present, e.zero, e.data)
        ):
            out[-1] = MapExtent(last.start, last.length + e.length, e.present, e.zero, e.data)
        else:
            out.append(e)
    return out


def _present(r: Mapping[str, Any]) -> bool:
    """Allocated in this layer. qemu-img says so since 6.1 ("present"); before, a layer
    opened alone reads its unallocated parts as zero, like a zero cluster, so only data
    or a host offset (a cluster of its own) can tell: a zero cluster without one is
    taken as unallocated there."""
    if "present" in r:
        return bool(r["present"])
    return bool(r["data"]) or "offset" in r


def parse_qemu_img_map(text: str) -> list[MapExtent]:
    """qemu-img map --output=json text → coalesced extents."""
    raw: list[Mapping[str, Any]] = json.loads(text)
    return coalesce(
        MapExtent(int(r["start"]), int(r["length"]), _present(r), bool(r["zero"]), bool(r["data"]))
        for r in raw
    )


def allocation_map(
    build: QemuBuild,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    force_share: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[MapExtent]:
    """The layer's own allocation, opened alone; `force_share` (-U) if QEMU still has it."""
    proc = _img_json(build, "map", path, fmt, force_share, timeout)
    try:
        return parse_qemu_img_map(proc.stdout)
    except (ValueError, KeyError, TypeError) as e:
        raise ImageError(f"qemu-img map {path}: unreadable output ({e}): {proc.stdout!r}") from None


def allocated(extents: Iterable[MapExtent]) -> list[tuple[int, int]]:
    """(start, length) of the ranges allocated in the layer (data or zero clusters)."""
    out: list[tuple[int, int]] = []
    for e in extents:
        if not e.present:
            continue
        if out and out[-1][0] + out[-1][1] == e.start:
            out[-1] = (out[-1][0], out[-1][1] + e.length)
        else:
            out.append((e.start, e.length))
    return out


@dataclass(frozen=True)
class CheckResult:
    """What `qemu-img check` said about a sound image."""

    format: str
    allocated_clusters: int
    total_clusters: int
    image_end_offset: int | None
    report: Mapping[str, Any]


def check_image(
    build: QemuBuild,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    force_share: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckResult | None:
    """Raise ImageCorrupt if qcow2 `path` has corruptions or leaks; None for other formats."""
    if fmt not in CHECKED_FORMATS:
        return None
    proc = _img_json(build, "check", path, fmt, force_share, timeout, check=False)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        report = {}
    if proc.returncode == _CHECK_INCOMPLETE or not report:
        raise ImageError(
            f"qemu-img check {path}: exit {proc.returncode}: "
            f"{(proc.stderr + proc.stdout).strip() or '(no output)'}"
        )
    corrupt = int(report.get("corruptions", 0))
    leaks = int(report.get("leaks", 0))
    errors = int(report.get("check-errors", 0))
    if proc.returncode in (_CHECK_CORRUPT, _CHECK_LEAKS) or corrupt or leaks or errors:
        raise ImageCorrupt(
            f"{path}: qemu-img check: {corrupt} corruptions, {leaks} leaked clusters, "
            f"{errors} check errors: {json.dumps(report, sort_keys=True)}"
            + (f" {proc.stderr.strip()}" if proc.stderr.strip() else "")
        )
    if proc.returncode != 0:
        raise ImageError(f"qemu-img check {path}: exit {proc.returncode}: {proc.stderr.strip()}")
    end = report.get("image-end-offset")
    return CheckResult(
        format=fmt,
        allocated_clusters=int(report.get("allocated-clusters", 0)),
        total_clusters=int(report.get("total-clusters", 0)),
        image_end_offset=None if end is None else int(end),
        report=report,
    )


def image_info(
    build: QemuBuild,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    force_share: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """`qemu-img info --output=json` of the layer alone (virtual-size, cluster-size...)."""
    proc = _img_json(build, "info", path, fmt, force_share, timeout)
    info: dict[str, Any] = json.loads(proc.stdout)
    return info
