"""reproduce.py's own QEMU processes: the binaries, a QMP client over a unix socket, and
`main` (exit 0: QEMU did what the test expects; 1: the first difference; 2: cannot run).

Part of the runtime `qrc export` copies into reproduce.py: Python's standard library
only. The binaries come from iotests' variables (QEMU_PROG, QEMU_IMG_PROG,
QEMU_IO_PROG, QSD_PROG) or PATH; REPRO_LAUNCHER is put before each of them (a
prefix's own dynamic loader: "LOADER --library-path DIRS") and REPRO_QEMU_ARGS after
qemu-system's (such a prefix's "-L DIR"); QEMU_MODULE_DIR is QEMU's own.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from harness.export.rt_answers import Answer, Gone, Hung, Reply
from harness.export.rt_io import kill_children, signal_name, spawn
from harness.export.rt_run import CannotRun, Difference, Machines, Run, send

_VARS = {
    "qemu-system-x86_64": "QEMU_PROG",
    "qemu-img": "QEMU_IMG_PROG",
    "qemu-io": "QEMU_IO_PROG",
    "qemu-storage-daemon": "QSD_PROG",
}


def binary(name: str) -> list[str]:
    """How to run `name`: REPRO_LAUNCHER, then iotests' variable's path or PATH's."""
    path = os.environ.get(_VARS[name]) or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise CannotRun(f"no {name}: set {_VARS[name]} or put it on PATH")
    return [*shlex.split(os.environ.get("REPRO_LAUNCHER", "")), path]


class _Qmp:
    """One QMP connection: QEMU connects to our socket; a JSON object a line."""

    def __init__(self, server: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        end = time.monotonic() + 10
        while not select.select([server], [], [], 0.05)[0]:
            if proc.poll() is not None or time.monotonic() > end:
                raise CannotRun("QEMU did not connect to its QMP socket (see its stderr)")
        self.sock, _ = server.accept()
        self.buf = b""
        self.events: list[dict[str, Any]] = []
        self.receive(10)  # the greeting
        self.command("qmp_capabilities", {}, 10)

    def receive(self, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def command(self, cmd: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        end = time.monotonic() + timeout
        while True:
            reply = self.receive(max(0.0, end - time.monotonic()))
            if "event" in reply:
                self.events.append(reply)
            elif "return" in reply or "error" in reply:
                return reply


class _Machine:
    def __init__(self, argv: list[str], sockdir: str, logdir: str, name: str) -> None:
        self.stdout = os.path.join(logdir, f"{name}.stdout")
        self.stderr = os.path.join(logdir, f"{name}.stderr")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.path.join(sockdir, "qmp.sock"))
        server.listen(1)
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            self.qmp = _Qmp(server, self.proc)
        finally:
            server.close()

    def gone(self) -> Gone:
        try:
            status: int | None = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(10)
        with open(self.stderr, errors="replace") as f:
            return Gone(signal_name(status), status, f.read())


class LocalMachines(Machines):
    """QEMU processes of our own, each with its QMP socket in $SOCK/NAME."""

    def __init__(self, sock: str, logdir: str) -> None:
        self.sock, self.logdir = sock, logdir
        self.machines: dict[str, _Machine] = {}

    def launch(self, name: str, kind: str, args: list[str]) -> None:
        sockdir = os.path.join(self.sock, name)
        qmp = os.path.join(sockdir, "qmp.sock")
        if kind == "system":
            argv = [*binary("qemu-system-x86_64"), "-M", "none", "-nodefaults", "-display"]
            argv += ["none", "-S", *shlex.split(os.environ.get("REPRO_QEMU_ARGS", ""))]
            argv += ["-qmp", f"unix:{qmp}", *args]
        else:
            argv = [*binary("qemu-storage-daemon"), "--chardev", f"socket,id=qmp0,path={qmp}"]
            argv += ["--monitor", "chardev=qmp0", *args]
        self.machines[name] = _Machine(argv, sockdir, self.logdir, name)

    def qmp(self, name: str, cmd: str, args: dict[str, Any], timeout: float) -> Answer:
        m = self.machines[name]
        try:
            return Reply(m.qmp.command(cmd, args, timeout))
        except TimeoutError:
            m.proc.kill()
            return Hung(f"{name}: no reply to {cmd} within {timeout:g} s")
        except (OSError, EOFError, ValueError):
            return m.gone()

    def stdout_mark(self, name: str) -> int:
        return os.path.getsize(self.machines[name].stdout)

    def stdout_since(self, name: str, mark: int) -> str:
        with open(self.machines[name].stdout, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def kill(self, name: str, sig: str) -> Answer:
        m = self.machines[name]
        send(m.proc.pid, sig)
        return m.gone()

    def quit(self, name: str) -> Answer:
        m = self.machines[name]
        got = self.qmp(name, "quit", {}, 5)
        if not isinstance(got, Reply):
            return got
        gone = m.gone()
        return Reply({"return": {}}) if gone.status == 0 else gone

    def close(self) -> None:
        for name, m in self.machines.items():
            if m.proc.poll() is None:
                self.quit(name)
            m.qmp.sock.close()
        kill_children()


def main(body: Callable[[Run], None], doc: str) -> int:
    """Run `body` in a private directory removed at the end, whatever happens."""
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(doc)
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):  # ended from outside: clean up all the same
        signal.signal(sig, lambda *_: sys.exit(2))
    base = tempfile.gettempdir()
    base = base if len(base) <= 60 else "/tmp"  # unix socket paths: at most 107 bytes
    top = tempfile.mkdtemp(prefix="repro-", dir=base)
    try:
        tmp, sock = os.path.join(top, "t"), os.path.join(top, "s")
        os.mkdir(tmp)
        os.mkdir(sock)
        machines = LocalMachines(sock, top)
        env = dict(os.environ)
        run = Run(tmp, sock, machines, binary("qemu-img"), binary("qemu-io"), env)
        t0 = time.monotonic()
        try:
            body(run)
        finally:
            run.finish()
        print(f"PASS: QEMU did what the test expects ({time.monotonic() - t0:.1f} s)")
        return 0
    except Difference as d:
        print(f"\nFAIL at {d.label}\n  expected: {d.expect.render()}\n  got:      {d.got_text}")
        return 1
    except CannotRun as e:
        print(f"\nCANNOT RUN: {e}")
        return 2
    except KeyboardInterrupt:
        print("\nCANNOT RUN: interrupted")
        return 2
    except Exception:
        traceback.print_exc()
        print("\nCANNOT RUN: the test itself failed (above)")
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):  # the clean-up is not cut short
            signal.signal(sig, signal.SIG_IGN)
        kill_children()
        shutil.rmtree(top, ignore_errors=True)
