"""Offline layer inspection through one long-lived qemu-io per build and process.

After QEMU has quit, each layer image is opened alone (no backing), its own
allocation read with `map` and its bytes verified with `read -P`. One qemu-io
serves every case of a worker (`open -r` ... `close`), so a case pays a few
commands instead of spawning qemu-img and qemu-io for every layer.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from harness.builds import QemuBuild
from harness.observe import Data, IoResult
from harness.qemu_io import Budget
from harness.qemu_io_process import QUIT_DEADLINE, InteractiveQemuIo
from harness.tmp import private_dir
from harness.verdicts import QemuHung

_MAP_LINE = re.compile(
    r"^.*\((0x[0-9a-f]+)\) bytes\s+(allocated|not allocated) at offset .*\((0x[0-9a-f]+)\)\s*$"
)


def parse_qemu_io_map(out: str, where: str) -> list[tuple[int, int]]:
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
    """One interactive qemu-io (no image) that opens layers read-only one at a time.

    A layer is opened once for its map and all its reads, through a symlink with a
    short path in a private directory (the same file; qemu-io's command line splits
    on spaces, and the symlink keeps the command short whatever TMPDIR is).
    """

    def __init__(self, build: QemuBuild) -> None:
        self.io = InteractiveQemuIo(build, [], name=f"layer inspector ({build.io})")
        self._dir = _link_dir()
        self._link = str(self._dir / "l")

    @contextlib.contextmanager
    def opened(self, path: str, fmt: str) -> Iterator[None]:
        """The layer `path` open alone (no backing), read-only, in the inspector."""
        if any(c.isspace() for c in path):
            raise ValueError(f"qemu-io's command line splits on spaces: {path!r}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._link)
        os.symlink(os.path.abspath(path), self._link)
        out = self.io._run(f"open -r {alone(self._link, fmt)}")
        if out.strip():
            raise AssertionError(f"qemu-io could not open {path}: {out.strip()}")
        try:
            yield
        finally:
            self.io._run("close")

    def _map(self, path: str) -> list[tuple[int, int]]:
        return parse_qemu_io_map(self.io._run("map"), f"offline map of {path}")

    def _verify(self, extents: Data) -> list[tuple[Data, IoResult]]:
        """The extents that read otherwise, with what was read: the layer's extents share
        one divergence-report budget, so a layer differing everywhere costs what one
        differing range does plus a verification per extent."""
        bad: list[tuple[Data, IoResult]] = []
        budget = Budget()
        for ext in extents:
            want: Data = (ext,)
            got = self.io.read(ext[0], ext[1], want, budget)
            if not got.ok or got.data != want:
                bad.append((want, got))
        return bad

    def allocation(self, path: str, fmt: str) -> list[tuple[int, int]]:
        """The layer's own allocated ranges."""
        with self.opened(path, fmt):
            return self._map(path)

    def verify(self, path: str, fmt: str, extents: Data) -> list[tuple[Data, IoResult]]:
        """Read each (offset, length, pattern) extent; the ones that differ, with what was read."""
        with self.opened(path, fmt):
            return self._verify(extents)

    def inspect(
        self, path: str, fmt: str, want_map: bool, extents: Data
    ) -> tuple[list[tuple[int, int]] | None, list[tuple[Data, IoResult]]]:
        """allocation() (if `want_map`, else None) and verify(), under one open."""
        with self.opened(path, fmt):
            return (self._map(path) if want_map else None), self._verify(extents)

    @property
    def pid(self) -> int | None:
        return self.io.pid

    def close(self) -> None:
        self.io.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _link_dir() -> Path:
    """A private 0700 directory with a short path for the inspector's symlink, under a
    short TMPDIR like every other directory of ours (so the leak test sees it)."""
    return private_dir("qrc-layers-")


# A case's whole offline check (each qemu-io command also has its own 10 s deadline).
INSPECT_DEADLINE = 120.0

_inspectors: dict[tuple[int, str, int], LayerInspector] = {}
_pool: dict[int, ThreadPoolExecutor] = {}


def inspector(build: QemuBuild, slot: int = 0) -> LayerInspector:
    """This process's inspector number `slot` for `build` (made on first use, closed at
    exit). Different slots are different qemu-io processes, usable at the same time."""
    key = (os.getpid(), build.io, slot)
    ins = _inspectors.get(key)
    if ins is None:
        ins = _inspectors[key] = LayerInspector(build)
    return ins


def inspect_all(
    build: QemuBuild, layers: Sequence[tuple[str, str, bool, Data]]
) -> list[tuple[list[tuple[int, int]] | None, list[tuple[Data, IoResult]]]]:
    """inspect() each (path, format, want_map, extents), one inspector per layer, all at
    once: a case's layers are checked in the time of its slowest one (each check is a
    few round trips to an otherwise idle qemu-io)."""
    if len(layers) <= 1:
        return [inspector(build).inspect(*layer) for layer in layers]
    pool = _pool.get(os.getpid())
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qrc-layers")
        _pool[os.getpid()] = pool
    used = [inspector(build, slot) for slot in range(len(layers))]
    jobs = [pool.submit(ins.inspect, *layer) for ins, layer in zip(used, layers, strict=True)]
    try:
        _, late = wait(jobs, timeout=INSPECT_DEADLINE)
        if late:
            names = [layers[jobs.index(j)][0] for j in late]
            raise LayerCheckHung(
                f"offline layer check: no answer within {INSPECT_DEADLINE:g} s for "
                + ", ".join(names)
            )
        return [job.result() for job in jobs]
    except BaseException:
        # a deadline, an interrupt or a backstop timeout: the inspectors still working
        # are killed (their threads end with QemuIoDied) and made anew on next use
        _discard(build, used, jobs)
        raise


class LayerCheckHung(QemuHung):
    """The offline layer check (the build's qemu-io on the layers' images) did not finish
    within INSPECT_DEADLINE."""

    machine = "qemu-io (offline layer check)"
    deadline = INSPECT_DEADLINE


def _discard(build: QemuBuild, used: Sequence[LayerInspector], jobs: Sequence[Future[Any]]) -> None:
    for ins in used:
        ins.io.abort()
    wait(jobs, timeout=QUIT_DEADLINE)
    me = os.getpid()
    for key in [k for k, v in _inspectors.items() if k[0] == me and v in used]:
        del _inspectors[key]
    for ins in used:
        ins.close()


def inspector_pids() -> set[int]:
    """qemu-io processes that live for the whole session on purpose (not leaks)."""
    me = os.getpid()
    return {p for (owner, _, _), ins in _inspectors.items() if owner == me for p in ins.io.pids}


@atexit.register
def close_inspectors() -> None:
    for pool in _pool.values():
        pool.shutdown(wait=True)
    _pool.clear()
    for ins in _inspectors.values():
        ins.close()
    _inspectors.clear()
