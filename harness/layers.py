"""Offline layer inspection through one long-lived qemu-io per build and process.

After QEMU has quit, each layer image is opened alone (no backing), its own
allocation read with `map` and its bytes verified with `read -P`. One qemu-io
serves every case of a worker (`open -r` ... `close`), so a case pays a few
commands instead of spawning qemu-img and qemu-io for every layer.
"""

from __future__ import annotations

import atexit
import json
import os
import re

from harness.builds import QemuBuild
from harness.nbd_client import InteractiveQemuIo
from harness.observe import Data, IoResult

_MAP_LINE = re.compile(
    r"^.*\((0x[0-9a-f]+)\) bytes\s+(allocated|not allocated) at offset .*\((0x[0-9a-f]+)\)\s*$"
)


def parse_map(out: str, where: str) -> list[tuple[int, int]]:
    """qemu-io `map` output -> merged allocated [start, end) ranges; strict about its lines."""
    ranges: list[tuple[int, int]] = []
    for line in out.splitlines():
        mt = _MAP_LINE.match(line)
        if mt is None:
            raise AssertionError(f"{where}: unexpected map line {line!r} in {out!r}")
        length, kind, offset = int(mt.group(1), 16), mt.group(2), int(mt.group(3), 16)
        if kind == "allocated":
            if ranges and ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], offset + length)
            else:
                ranges.append((offset, offset + length))
    return ranges


def alone(path: str, fmt: str) -> str:
    """The filename that opens a layer without its backing chain."""
    spec: dict[str, object] = {"driver": fmt, "file": {"driver": "file", "filename": path}}
    if fmt != "raw":
        spec["backing"] = None
    return "json:" + json.dumps(spec, separators=(",", ":"))


class LayerInspector:
    """One interactive qemu-io (no image) that opens layers read-only one at a time."""

    def __init__(self, build: QemuBuild) -> None:
        self.io = InteractiveQemuIo(build, [], name=f"layer inspector ({build.io})")

    def _open(self, path: str, fmt: str) -> None:
        if any(c.isspace() for c in path):
            raise ValueError(f"qemu-io's command line splits on spaces: {path!r}")
        out = self.io._run(f"open -r {alone(path, fmt)}")
        if out.strip():
            raise AssertionError(f"qemu-io could not open {path}: {out.strip()}")

    def allocation(self, path: str, fmt: str) -> list[tuple[int, int]]:
        """The layer's own allocated ranges."""
        self._open(path, fmt)
        try:
            return parse_map(self.io._run("map"), f"offline map of {path}")
        finally:
            self.io._run("close")

    def verify(self, path: str, fmt: str, extents: Data) -> list[tuple[Data, IoResult]]:
        """Read each (offset, length, pattern) extent; the ones that differ, with what was read."""
        self._open(path, fmt)
        bad: list[tuple[Data, IoResult]] = []
        try:
            for ext in extents:
                want: Data = (ext,)
                got = self.io.read(ext[0], ext[1], want)
                if not got.ok or got.data != want:
                    bad.append((want, got))
        finally:
            self.io._run("close")
        return bad

    @property
    def pid(self) -> int | None:
        return self.io.pid

    def close(self) -> None:
        self.io.close()


_inspectors: dict[tuple[int, str], LayerInspector] = {}


def inspector(build: QemuBuild) -> LayerInspector:
    """This process's inspector for `build` (made on first use, closed at exit)."""
    key = (os.getpid(), build.io)
    ins = _inspectors.get(key)
    if ins is None:
        ins = _inspectors[key] = LayerInspector(build)
    return ins


def inspector_pids() -> set[int]:
    """qemu-io processes that live for the whole session on purpose (not leaks)."""
    me = os.getpid()
    return {p for (owner, _), ins in _inspectors.items() if owner == me for p in ins.io.pids}


@atexit.register
def close_inspectors() -> None:
    for ins in _inspectors.values():
        ins.close()
    _inspectors.clear()
