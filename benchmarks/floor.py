"""The floor of one conformance case, without the harness (issue 13, item 1).

The floor does the steps of cases/test_smoke.py::test_secondary_life with nothing but
qemu.qmp, qemu-img and one-shot qemu-io: no model, no pytest, no harness import. It
creates the three qcow2 layers of images/secondary.toml (64 MiB, 64 KiB clusters) with
`qemu-img create`, starts one `qemu-system-x86_64 -M none -nodefaults -display none -S`
whose QMP connects to a unix socket in a 0700 directory, adds the secondary disk, exports
it over NBD, adds the replication node (active -> hidden -> secondary), then runs the
case's operations and checks every answer as the case's model would: statuses, HMP
`qemu-io rep` writes and `read -P` reads (each read verifies its bytes), the primary's
write through the NBD export with a one-shot `qemu-io`, the live `map` of each layer,
checkpoint, stop with failover, the commit's end (x-debug-query-block-graph polled back
to back under a deadline), quit, and the offline check of the three layers with
one-shot `qemu-io` (`map` and `read -P`).

The expected answers are constants, the ones the model gives for this case (the same
on 7.2 and 11.1); a wrong byte, map or status fails the floor run, so it does the
same work the case does, checks included.

It runs as a child process of benchmarks/case_floor.py, which measures the harness
against it: `case_floor.py --floor-child SPEC`, SPEC the JSON of floor_spec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meter import EXIT, STARTUP, Meter, Phases, report

MiB = 1 << 20
KiB = 1 << 10


def floor_spec(
    build: Any, plain: bool, phases: bool, cases: int = 1, reuse: bool = False
) -> dict[str, Any]:
    return {
        "cases": cases,
        "reuse": reuse,
        "system": build.command(build.system),
        "img": build.command(build.img),
        "io": build.command(build.io),
        "env": build.env(),
        "data_args": build.data_args(),
        "plain": plain,
        "phases": phases,
    }


class FloorFailed(Exception):
    pass


def _expect(what: str, got: Any, *allowed: Any) -> None:
    if got not in allowed:
        raise FloorFailed(f"{what}: got {got!r}, expected {' or '.join(map(repr, allowed))}")


def _io_ok(what: str, out: str, verb: str, offset: int, length: int) -> None:
    """qemu-io's answer to one request: the result line first (a failed `read -P` puts
    `Pattern verification failed` before it), then the statistics line."""
    lines = out.splitlines()
    if len(lines) != 2 or lines[0] != f"{verb} {length}/{length} bytes at offset {offset}":
        raise FloorFailed(f"{what}: {out!r}")


def _allocated(what: str, out: str) -> list[tuple[int, int]]:
    """qemu-io `map` -> allocated [start, end) ranges."""
    ranges: list[tuple[int, int]] = []
    for line in out.splitlines():
        words = line.split()
        # "64 KiB (0x10000) bytes     allocated at offset 0 bytes (0x0)"
        try:
            length = int(words[2].strip("()"), 16)
            offset = int(words[-1].strip("()"), 16)
        except (IndexError, ValueError):
            raise FloorFailed(f"{what}: map line {line!r}") from None
        if " not allocated " in line:
            continue
        if " allocated " not in line:
            raise FloorFailed(f"{what}: map line {line!r}")
        if ranges and ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], offset + length)
        else:
            ranges.append((offset, offset + length))
    return ranges


def _run_all(argvs: Sequence[Sequence[str]], env: dict[str, str], deadline: float) -> list[str]:
    """Run one-shot tools side by side; their stdouts. Any failure or overrun raises."""
    procs = [
        subprocess.Popen(
            a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for a in argvs
    ]
    outs = []
    try:
        for p, a in zip(procs, argvs, strict=True):
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            if p.returncode != 0 or err:
                raise FloorFailed(f"{' '.join(a)}: exit {p.returncode}: {err.decode()!r}")
            outs.append(out.decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


class _Qemu:
    """One qemu-system-x86_64 -M none and its QMP client (the floor's own launcher)."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], work: Path) -> None:
        from qemu.qmp import QMPClient

        self.spec, self.env, self.work = spec, env, work
        self.client = QMPClient("floor")
        self.proc: subprocess.Popen[bytes] | None = None
        self.out_fd = -1

    async def launch(self) -> None:
        import asyncio

        sock = str(self.work / "qmp.sock")
        await self.client.start_server(sock)
        argv = [*self.spec["system"], "-M", "none", "-nodefaults", "-display", "none", "-S"]
        argv += self.spec["data_args"] + ([] if self.spec["plain"] else ["-accel", "tcg,tb-size=1"])
        self.out_fd = os.open(self.work / "stdout", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(self.work / "stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [*argv, "-qmp", f"unix:{sock}"],
                stdin=subprocess.DEVNULL,
                stdout=self.out_fd,
                stderr=err,
                env=self.env,
            )
        await asyncio.wait_for(self.client.accept(), 10)

    async def qmp(self, cmd: str, **args: Any) -> Any:
        import asyncio

        return await asyncio.wait_for(self.client.execute(cmd, args or None), 10)

    async def hmp_io(self, node: str, command: str) -> str:
        """HMP qemu-io on a node; the text it printed on QEMU's stdout."""
        mark = os.fstat(self.out_fd).st_size
        reply = await self.qmp(
            "human-monitor-command", **{"command-line": f'qemu-io {node} "{command}"'}
        )
        size = os.fstat(self.out_fd).st_size
        text = os.pread(self.out_fd, size - mark, mark).decode()
        if reply:
            raise FloorFailed(f"qemu-io {node} {command!r}: HMP said {reply!r}")
        return text

    async def quit(self) -> None:
        try:
            await self.qmp("quit")
            await self.client.disconnect()
        except (EOFError, ConnectionError):  # QEMU closes the socket as it goes
            pass
        if self.proc is not None:
            self.proc.wait(5)
        os.close(self.out_fd)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _floor(spec: dict[str, Any], ph: Phases | None) -> None:
    """spec["cases"] cases, one after the other; with spec["reuse"], all in one QEMU
    (between cases the graph is deleted instead of quitting QEMU), else each in a QEMU
    of its own, launched and quit as the case does."""

    def phase(label: str) -> None:
        if ph is not None:
            ph.switch(label)

    env = {**os.environ, **spec["env"]}
    work = Path(tempfile.mkdtemp(prefix="case-floor-"))  # 0700: sockets and QEMU's logs
    n, reuse = spec.get("cases", 1), spec.get("reuse", False)
    qemu: _Qemu | None = None
    try:
        for i in range(n):
            case = Path(tempfile.mkdtemp(prefix=f"case-{i}-", dir=work))  # the images
            last = i == n - 1
            if qemu is None:
                phase("images")
                layers = _images(spec, env, case)
                phase("launch")
                qemu = _Qemu(spec, env, work)
                await qemu.launch()
            else:
                phase("images")
                layers = _images(spec, env, case)
            await _case(spec, env, qemu, layers, work, phase)
            if reuse and not last:
                phase("teardown: graph deleted")
                await qemu.qmp("nbd-server-stop")  # the export goes with the server
                await qemu.qmp("blockdev-del", **{"node-name": "rep"})
                await qemu.qmp("blockdev-del", **{"node-name": "secondary"})
            else:
                phase("quit")
                await qemu.quit()
                qemu = None
            phase("offline layer checks")
            _offline(spec, env, layers)
            shutil.rmtree(case, ignore_errors=True)
    finally:
        if qemu is not None:
            qemu.kill()
        shutil.rmtree(work, ignore_errors=True)


def _images(spec: dict[str, Any], env: dict[str, str], case: Path) -> dict[str, Path]:
    layers = {n: case / f"{n}.qcow2" for n in ("secondary", "hidden", "active")}
    create = [*spec["img"], "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536"]
    _run_all([[*create, str(p), str(64 * MiB)] for p in layers.values()], env, _dl(30))
    return layers


async def _case(
    spec: dict[str, Any],
    env: dict[str, str],
    qemu: _Qemu,
    layers: dict[str, Path],
    work: Path,
    phase: Callable[[str], None],
) -> None:
    """test_secondary_life's steps, from the graph to the last read, every answer checked."""
    qmp, hmp_io = qemu.qmp, qemu.hmp_io

    async def write(pattern: int, offset: int, length: int) -> None:
        out = await hmp_io("rep", f"write -P {pattern} {offset} {length}")
        _io_ok(f"write {pattern:#x} {offset} {length}", out, "wrote", offset, length)

    async def read(*extents: tuple[int, int, int]) -> None:
        """One guest read of the extents' span, each extent verified with read -P."""
        start = extents[0][0]
        total = sum(n for _, n, _ in extents)
        for off, n, pat in extents:
            cmd = f"read -P {pat} -s {off - start} -l {n} {start} {total}"
            _io_ok(cmd, await hmp_io("rep", cmd), "read", start, total)

    def file_node(name: str) -> dict[str, Any]:
        node: dict[str, Any] = {"driver": "file", "filename": str(layers[name])}
        if not spec["plain"]:
            node["cache"] = {"no-flush": True}
        return node

    def qcow2(name: str, backing: Any) -> dict[str, Any]:
        return {"driver": "qcow2", "node-name": name, "file": file_node(name), "backing": backing}

    phase("graph")
    await qmp("blockdev-add", **qcow2("secondary", None))
    nbd_sock = str(work / "nbd.sock")
    await qmp("nbd-server-start", addr={"type": "unix", "data": {"path": nbd_sock}})
    await qmp(
        "block-export-add",
        type="nbd",
        id="export",
        writable=True,
        name="secondary",
        **{"node-name": "secondary"},
    )
    await qmp(
        "blockdev-add",
        driver="replication",
        mode="secondary",
        **{"node-name": "rep", "top-id": "rep"},
        file=qcow2("active", qcow2("hidden", "secondary")),
    )

    phase("operations")
    not_running = {"error": True, "desc": "Block replication is not running"}
    _expect("status", await qmp("query-xen-replication-status"), not_running)
    out = await hmp_io("rep", f"write -P 0x11 0 {64 * KiB}")
    _expect("write before start", out, "write failed: Input/output error\n")
    _expect("start", await qmp("xen-set-replication", enable=True, primary=False), {})
    _expect("status", await qmp("query-xen-replication-status"), {"error": False})
    await write(0x22, 0, 4 * KiB)
    await read((0, 4 * KiB, 0x22), (4 * KiB, 4 * KiB, 0))
    uri = f"nbd+unix:///secondary?socket={nbd_sock}"
    io = spec["io"]
    (out,) = _run_all([[*io, "-f", "raw", uri, "-c", "write -P 0x33 0 4k"]], env, _dl(10))
    _io_ok("primary write", out, "wrote", 0, 4 * KiB)
    await read((0, 4 * KiB, 0x22), (4 * KiB, 4 * KiB, 0))

    phase("live layer checks")
    for node in ("active", "hidden", "secondary"):
        got = _allocated(f"live map of {node}", await hmp_io(node, "map"))
        _expect(f"live map of {node}", got, [(0, 64 * KiB)])

    phase("operations")
    _expect("checkpoint", await qmp("xen-colo-do-checkpoint"), {})
    await read((0, 4 * KiB, 0x33), (4 * KiB, 4 * KiB, 0))
    stop = await qmp("xen-set-replication", enable=False, primary=False, failover=True)
    _expect("stop", stop, {})
    io_error = {"error": True, "desc": "I/O error occurred"}
    _expect("status", await qmp("query-xen-replication-status"), {"error": False}, io_error)
    end = _dl(10)
    while True:  # the failover commit: a block-job node in the graph while it runs
        graph = await qmp("x-debug-query-block-graph")
        if not any(n["type"] == "block-job" for n in graph["nodes"]):
            break
        if time.monotonic() > end:
            raise FloorFailed("the failover commit did not end within 10 s")
    _expect("status", await qmp("query-xen-replication-status"), {"error": False})
    await read((0, 4 * KiB, 0x33), (4 * KiB, 4 * KiB, 0))


def _offline(spec: dict[str, Any], env: dict[str, str], layers: dict[str, Path]) -> None:
    """The three layers checked offline with one-shot qemu-io: map and read -P."""
    oneshot = [*spec["io"], "-r", "-f", "qcow2"]
    sec, hidden, active = _run_all(
        [
            [
                *oneshot,
                str(layers["secondary"]),
                "-c",
                "map",
                "-c",
                "read -P 0x33 0 4k",
                "-c",
                f"read -P 0 4k {60 * KiB}",
            ],
            [*oneshot, str(layers["hidden"]), "-c", "map"],
            [*oneshot, str(layers["active"]), "-c", "map"],
        ],
        env,
        _dl(10),
    )
    lines = sec.splitlines()
    maps = [ln for ln in lines if "allocated at offset" in ln]
    reads = lines[len(maps) :]
    _expect("offline map of secondary", _allocated("secondary", "\n".join(maps)), [(0, 64 * KiB)])
    _io_ok("secondary 0x33", "\n".join(reads[0:2]), "read", 0, 4 * KiB)
    _io_ok("secondary 0", "\n".join(reads[2:]), "read", 4 * KiB, 60 * KiB)
    _expect("offline map of hidden", _allocated("hidden", hidden), [])
    _expect("offline map of active", _allocated("active", active), [])


def _dl(seconds: float) -> float:
    return time.monotonic() + seconds


def floor_child(spec: dict[str, Any]) -> int:
    """The floor as a process: exit 0 when every check passed. With spec["phases"], its
    phases as JSON on stdout."""
    import asyncio

    ph = None
    if spec["phases"]:
        # what the process spent before this point (interpreter start-up, this module)
        ph = Phases(Meter(), STARTUP)
        ph.acc[STARTUP] = [time.monotonic() - spec["t0"], ph.last[1], 0.0, 1]
    try:
        asyncio.run(_floor(spec, ph))
    except FloorFailed as e:
        print(f"floor: {e}", file=sys.stderr)
        return 1
    if ph is not None:
        ph.switch(EXIT)
        print(json.dumps(report(ph)))
    return 0
