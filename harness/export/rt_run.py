"""The steps of an exported test, each checked: what a body calls (`r.step`, `r.qmp`,
`r.hmp_io`, `r.hmp_read`, `r.settle`, `r.offline`, ...).

Part of the runtime `qrc export` copies into reproduce.py and the iotest: Python's
standard library only. `Run` does the work; where QEMU's processes come from (our own,
or iotests' VM) is a `Machines` backend's; what a check that fails does is `differs`'s
(reproduce.py stops with the difference, the iotest logs what QEMU answered). With
`dry` nothing runs and every check logs its expected line: the iotest's reference
output (`.out`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from harness.export.rt_answers import IO, Answer, Expect, Gone, Hung, Reply, Text, Tool
from harness.export.rt_io import NbdReader, QemuIo, SessionDied
from harness.export.rt_read import (
    Command,
    io_request,
    nbd_answer,
    read_data,
    read_map,
    verify_layer,
)

_CORE = ("SIGABRT", "SIGQUIT", "SIGSEGV", "SIGBUS", "SIGFPE")


class CannotRun(Exception):
    """The test cannot run here (a binary missing, a set-up command refused): exit 2."""


class Difference(Exception):
    """QEMU did not do what the test expects."""

    def __init__(self, label: str, expect: Expect, got: Answer, got_text: str) -> None:
        super().__init__(label)
        self.label, self.expect, self.got, self.got_text = label, expect, got, got_text


class Machines:
    """Where QEMU processes come from: reproduce.py's own, or iotests' VM."""

    def launch(self, name: str, kind: str, args: list[str]) -> None:
        raise NotImplementedError

    def qmp(self, name: str, cmd: str, args: dict[str, Any], timeout: float) -> Answer:
        """The reply (Reply), or how QEMU failed to give one (Gone, Hung)."""
        raise NotImplementedError

    def stdout_mark(self, name: str) -> int:
        raise NotImplementedError

    def stdout_since(self, name: str, mark: int) -> str:
        raise NotImplementedError

    def kill(self, name: str, sig: str) -> Answer:
        raise NotImplementedError

    def quit(self, name: str) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def alone(path: str, fmt: str) -> str:
    """A filename that opens one layer without its backing chain."""
    spec: dict[str, Any] = {"driver": fmt, "file": {"driver": "file", "filename": path}}
    if fmt != "raw":
        spec["backing"] = None
    return "json:" + json.dumps(spec)


def _strings(v: Any, fn: Callable[[str], str]) -> Any:
    """`v` with `fn` applied to every string in it (lists and dicts walked)."""
    if isinstance(v, str):
        return fn(v)
    if isinstance(v, list):
        return [_strings(x, fn) for x in v]
    if isinstance(v, dict):
        return {k: _strings(x, fn) for k, x in v.items()}
    return v


def _body_line() -> str:
    """Where in the body the check that failed is (the line of `test` calling it)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "test":
        frame = frame.f_back  # type: ignore[assignment]
    return "the body" if frame is None else f"line {frame.f_lineno}"


def _hmp_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Run:
    """The steps of one test, in the order the case made them. `step(text)` names what
    the checks after it belong to."""

    def __init__(
        self,
        tmp: str,
        sock: str,
        machines: Machines,
        img: list[str],
        io: list[str],
        env: dict[str, str],
        dry: bool = False,
    ) -> None:
        self.tmp, self.sock, self.machines = tmp, sock, machines
        self.img, self.io, self.env, self.dry = img, io, env, dry
        self.sessions: dict[str, QemuIo] = {}
        self.readers: dict[str, NbdReader] = {}
        self.gone: set[str] = set()
        self.label = "set-up"

    # ---- placeholders: "$TMP" and "$SOCK" stand for this run's directories

    def sub(self, v: Any) -> Any:
        return _strings(v, lambda s: s.replace("$TMP", self.tmp).replace("$SOCK", self.sock))

    def unsub(self, text: str) -> str:
        return text.replace(self.tmp, "$TMP").replace(self.sock, "$SOCK")

    def placeheld(self, got: Answer) -> Answer:
        """`got` with this run's directories as placeholders, as the body states answers."""
        for k, v in list(vars(got).items()):
            setattr(got, k, _strings(v, self.unsub))
        return got

    # ---- checks

    def step(self, label: str) -> None:
        self.label = label

    def check(self, expect: Expect, act: Callable[[], Answer], what: str = "") -> None:
        label = f"{self.label}{what}"
        if self.dry:
            self.passed(label, expect)
            return
        got = self.placeheld(act())
        if expect.matches(got):
            self.passed(label, expect)
        else:
            self.differs(label, expect, got)

    def passed(self, label: str, expect: Expect) -> None:
        print(f"ok    {label}", flush=True)

    def differs(self, label: str, expect: Expect, got: Answer) -> None:
        raise Difference(f"{label} ({_body_line()})", expect, got, got.render())

    # ---- set-up: images, machines, what the case built before its steps

    def dirs(self, *paths: str) -> None:
        for p in paths:
            os.makedirs(self.sub(p), exist_ok=True)

    def _tool(self, argv: list[str]) -> Tool:
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        return Tool(p.returncode, p.stdout, p.stderr)

    def image(
        self,
        path: str,
        fmt: str,
        size: int,
        cluster_size: int | None = None,
        backing: tuple[str, str] | None = None,
        contents: Any = (),
    ) -> None:
        """qemu-img create, then one qemu-io write per extent of its contents."""
        if self.dry:
            return
        path = self.sub(path)
        argv = [*self.img, "create", "-q", "-f", fmt]
        if cluster_size is not None:
            argv += ["-o", f"cluster_size={cluster_size}"]
        if backing is not None:
            argv += ["-b", backing[0], "-F", backing[1]]
        got = self._tool([*argv, path, str(size)])
        if contents and got.status == 0:
            writes = [a for off, n, pat in contents for a in ("-c", f"write -P {pat} {off} {n}")]
            got = self._tool([*self.io, "-f", fmt, *writes, path])
            if got.status == 0 and got.out.count("wrote ") != len(contents):
                got.status = -1
        if got.status != 0:
            raise CannotRun(f"building {self.unsub(path)}: {got.render()}")

    def launch(self, name: str, kind: str = "system", args: tuple[str, ...] = ()) -> None:
        if not self.dry:
            os.makedirs(os.path.join(self.sock, name), exist_ok=True)
            self.machines.launch(name, kind, self.sub(list(args)))

    def setup(self, machine: str, cmd: str, args: dict[str, Any] | None = None) -> None:
        """A set-up command: it must succeed, or this build cannot run the test."""
        if self.dry:
            return
        got = self._qmp(machine, cmd, args or {})
        if not (isinstance(got, Reply) and "return" in got.reply):
            raise CannotRun(f"set-up: {machine}: {cmd}: {self.unsub(got.render())}")

    def setup_hmp(self, machine: str, cmdline: str, reply: str = "") -> None:
        if self.dry:
            return
        got = self._hmp(machine, cmdline)
        if not (isinstance(got, Text) and got.text.strip() == reply.strip()):
            raise CannotRun(f"set-up: {machine}: HMP {cmdline}: {self.unsub(got.render())}")

    # ---- QMP and HMP

    def _qmp(self, machine: str, cmd: str, args: dict[str, Any], timeout: float = 10) -> Answer:
        if machine in self.gone:
            return Gone(None, None, "(the machine is gone)")
        got = self.machines.qmp(machine, cmd, self.sub(args), timeout)
        if isinstance(got, (Gone, Hung)):
            self.gone.add(machine)
        return got

    def _hmp(self, machine: str, cmdline: str) -> Answer:
        """An HMP command: its reply and what QEMU printed on stdout meanwhile."""
        if machine in self.gone:
            return Gone(None, None, "(the machine is gone)")
        mark = self.machines.stdout_mark(machine)
        got = self._qmp(machine, "human-monitor-command", {"command-line": cmdline})
        if not (isinstance(got, Reply) and "return" in got.reply):
            return got
        return Text(str(got.reply["return"]) + self.machines.stdout_since(machine, mark))

    def qmp(self, machine: str, cmd: str, args: dict[str, Any], expect: Expect) -> None:
        self.check(expect, lambda: self._qmp(machine, cmd, args))

    def hmp(self, machine: str, cmdline: str, expect: Expect) -> None:
        self.check(expect, lambda: self._hmp(machine, cmdline))

    # ---- guest I/O: HMP qemu-io on a node, a qemu-io session, an NBD reader

    def _hmp_io(self, machine: str, node: str) -> Command:
        return lambda command: self._hmp(machine, f"qemu-io {node} {_hmp_quote(command)}")

    def _session(self, name: str) -> Command:
        return lambda command: self._in(self.sessions[name], command)

    @staticmethod
    def _in(session: QemuIo, command: str) -> Answer:
        try:
            return Text(session.run(command))
        except SessionDied as e:
            return Gone(None, None, f"qemu-io: {e}")

    def hmp_io(self, machine: str, node: str, command: str, expect: Expect) -> None:
        self.check(expect, lambda: io_request(self._hmp_io(machine, node), command))

    def session_io(self, session: str, command: str, expect: Expect) -> None:
        self.check(expect, lambda: io_request(self._session(session), command))

    def hmp_read(self, machine: str, node: str, offset: int, length: int, expect: Expect) -> None:
        run = self._hmp_io(machine, node)
        self.check(expect, lambda: read_data(run, offset, length, expect))

    def session_read(self, session: str, offset: int, length: int, expect: Expect) -> None:
        run = self._session(session)
        self.check(expect, lambda: read_data(run, offset, length, expect))

    def nbd_read(self, reader: str, offset: int, length: int, expect: Expect) -> None:
        def act() -> Answer:
            try:
                got = self.readers[reader].read(offset, length)
            except (OSError, EOFError) as e:
                return Text(f"NBD read failed: {e!r}")
            return nbd_answer(got, offset, expect)

        self.check(expect, act)

    # ---- sessions and readers the case opened

    def open_session(self, name: str, args: list[str], reconnect: bool = False) -> None:
        if not self.dry:
            self.sessions[name] = QemuIo([*self.io, *self.sub(args)], self.env, reconnect)

    def close_session(self, name: str) -> None:
        if not self.dry and name in self.sessions:
            self.sessions.pop(name).close()

    def session_cmd(self, session: str, command: str, expect: Expect) -> None:
        self.check(expect, lambda: self._session(session)(command))

    def open_reader(self, name: str, path: str, export: str, flags: int) -> None:
        if not self.dry:
            self.readers[name] = NbdReader(self.sub(path), export, flags)

    def close_reader(self, name: str) -> None:
        if not self.dry and name in self.readers:
            self.readers.pop(name).close()

    def tool(self, tool: str, args: list[str], expect: Expect) -> None:
        argv = {"qemu-img": self.img, "qemu-io": self.io}[tool]
        self.check(expect, lambda: self._tool([*argv, *self.sub(args)]))

    # ---- steps that wait: the failover commit, a signal, quit

    def settle(self, machine: str, expect: Expect, deadline: float = 30) -> None:
        """Poll the graph until the failover commit (an internal block job with a
        `source` edge) is gone."""

        def act() -> Answer:
            end, pause = time.monotonic() + deadline, 0.001
            while True:
                got = self._qmp(machine, "x-debug-query-block-graph", {})
                if not (isinstance(got, Reply) and "return" in got.reply):
                    return got
                graph = got.reply["return"]
                jobs = {n["id"] for n in graph["nodes"] if n["type"] == "block-job"}
                if not any(e["parent"] in jobs and e["name"] == "source" for e in graph["edges"]):
                    return Reply({"return": "settled"})
                if time.monotonic() > end:
                    return Hung(f"the failover commit still runs after {deadline:g} s")
                time.sleep(pause)
                pause = min(2 * pause, 0.05)

        self.check(expect, act)

    def kill(self, machine: str, sig: str, expect: Expect) -> None:
        def act() -> Answer:
            self.gone.add(machine)
            return self.machines.kill(machine, sig)

        self.check(expect, act)

    def reopen(self, machine: str, options: list[dict[str, Any]], expect: Expect) -> None:
        """blockdev-reopen (x-blockdev-reopen, one node at a time, before QEMU 6.1)."""

        def act() -> Answer:
            got = self._qmp(machine, "blockdev-reopen", {"options": options})
            err = got.reply.get("error", {}) if isinstance(got, Reply) else {}
            if err.get("class") != "CommandNotFound":
                return got
            for opts in options:
                got = self._qmp(machine, "x-blockdev-reopen", opts)
            return got

        self.check(expect, act)

    def quit(self, machine: str, expect: Expect | None = None) -> None:
        """QMP quit and the exit; checked (exit status 0) when `expect` is given."""
        if self.dry or machine in self.gone:
            if self.dry and expect is not None:
                self.check(expect, lambda: Hung("dry"))
            return
        self.gone.add(machine)
        if expect is not None:
            self.check(expect, lambda: self.machines.quit(machine))
        else:
            self.machines.quit(machine)

    # ---- layer checks

    def allocation(self, machine: str, node: str, expect: Expect) -> None:
        """A layer's own allocation, asked of the running QEMU (HMP qemu-io map)."""
        self.check(expect, lambda: read_map(self._hmp_io(machine, node)), f": {node}")

    def offline(self, path: str, fmt: str, allocated: Expect | None, data: Expect | None) -> None:
        """One layer's file after QEMU quit, opened alone: its allocation, its bytes."""
        session = QemuIo([*self.io, "-r", alone(self.sub(path), fmt)], self.env)
        name = path.rsplit("/", 1)[-1]
        run: Command = lambda command: self._in(session, command)  # noqa: E731
        try:
            if allocated is not None:
                self.check(allocated, lambda: read_map(run), f": {name}'s allocation")
            if isinstance(data, IO) and data.data:
                extents = data.data
                self.check(data, lambda: verify_layer(run, extents), f": {name}'s data")
        finally:
            session.close()

    def finish(self) -> None:
        """Close what is left: sessions, readers, machines (quit, then SIGKILL)."""
        for name in list(self.sessions):
            self.close_session(name)
        for name in list(self.readers):
            self.close_reader(name)
        if not self.dry:
            self.machines.close()


def core_limit(pid: int, sig: str) -> None:
    """No core file from a signal the test sends (it would land in QEMU's directory)."""
    if sig in _CORE:
        import resource

        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))


def send(pid: int, sig: str) -> None:
    core_limit(pid, sig)
    os.kill(pid, signal.Signals[sig])
