"""A QEMU process with its QMP connection, transcript and deadlines.

Every conformance case drives one or two real QEMU processes. This module owns
their life cycle so that no QEMU outlives its test and every failure explains
itself: QEMU connects to our QMP server socket in a private short-path
directory, every command has a deadline, every command and reply is kept in a
transcript, and a crash or hang becomes an exception of harness.verdicts' tree
(MachineDied, MachineHung: QEMU misbehaved) that carries the command line, the exit
status or signal, and the tail of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError
from qemu.qmp.message import Message

from harness.observe import QmpResult
from harness.tmp import private_dir as short_private_dir
from harness.verdicts import QemuAborted, QemuCrashed, QemuHung, describe_exit, signal_name

Kind = Literal["system", "qsd"]

# How long `quit` and the exit after it may take before SIGKILL.
QUIT_DEADLINE = 5.0
# How long a signal (SIGKILL, SIGSTOP) may take to act.
KILL_DEADLINE = 10.0
STDERR_TAIL_LINES = 30
TRANSCRIPT_TAIL = 10
# A report's transcript lines are cut at this length (query-named-block-nodes replies run
# to tens of kilobytes); the artifacts keep them whole.
TRANSCRIPT_LINE = 1000


class Build(Protocol):
    """What a launcher needs from a QEMU build (harness.builds.QemuBuild has it)."""

    @property
    def system(self) -> str | os.PathLike[str]: ...

    @property
    def io(self) -> str | os.PathLike[str]: ...

    @property
    def qsd(self) -> str | os.PathLike[str]: ...

    @property
    def label(self) -> str: ...

    def env(self) -> dict[str, str]: ...

    def command(self, binary: str | os.PathLike[str]) -> list[str]: ...

    def data_args(self) -> list[str]: ...


def build_env(build: Build) -> dict[str, str]:
    """The environment to run a build's binaries: ours plus what the build adds."""
    return {**os.environ, **build.env()}


class MachineError(AssertionError):
    """Something about a QEMU process ended the case; pytest shows it as a failure with
    this report. Its QEMU-misbehaving kinds (MachineDied, MachineHung) are also in
    harness.verdicts' tree; QmpCommandFailed is not (a command the harness needs)."""

    def __init__(self, message: str, report: str) -> None:
        # not super(): in MachineDied's and MachineHung's MRO the next class is a verdict
        AssertionError.__init__(self, f"{message}\n{report}")
        self.summary = message
        self.report = report

    @property
    def headline(self) -> str:
        return self.summary

    def __str__(self) -> str:
        return f"{self.summary}\n{self.report}"


class MachineDied(MachineError, QemuCrashed):
    """QEMU exited (crash, abort, signal) while we needed it."""

    def __init__(
        self,
        message: str,
        report: str,
        returncode: int | None,
        stderr_tail: str,
        machine: str = "QEMU",
    ) -> None:
        super().__init__(message, report)
        self.machine = machine
        self.returncode = returncode
        self.signal = signal_name(returncode)
        self.stderr_tail = stderr_tail


class MachineAborted(MachineDied, QemuAborted):
    """QEMU died on SIGABRT (an assertion, abort(), &error_abort) while we needed it."""


class MachineHung(MachineError, QemuHung):
    """A QMP command missed its deadline; the process was SIGKILLed."""

    def __init__(
        self, message: str, report: str, machine: str = "QEMU", deadline: float | None = None
    ) -> None:
        super().__init__(message, report)
        self.machine = machine
        self.deadline = deadline


class QmpCommandFailed(MachineError):
    """qmp_ok() got a QMP error where the caller required success: not in the verdicts'
    tree (the model has no say in the commands the harness needs), a plain failure."""

    def __init__(self, message: str, report: str, result: QmpResult) -> None:
        super().__init__(message, report)
        self.result = result


# ---- spawning: a child that dies with us

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when the spawning thread dies, even if it died already."""

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_setpriv: list[str] | None = None


def pdeathsig_wrapper() -> list[str]:
    """`setpriv --pdeathsig KILL --` when util-linux's setpriv can do it, else [].

    A preexec_fn makes subprocess fork the whole Python process (page tables, then
    copy-on-write faults in the parent); exec'ing setpriv from a vfork is cheaper and
    sets the same parent-death signal before it execs QEMU (the pid stays QEMU's).
    """
    global _setpriv
    if _setpriv is None:
        path = shutil.which("setpriv")
        ok = (
            path is not None
            and subprocess.run(
                [path, "--pdeathsig", "KILL", "--", "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
            ).returncode
            == 0
        )
        _setpriv = [path, "--pdeathsig", "KILL", "--"] if ok and path else []
    return _setpriv


def spawn(
    argv: Sequence[str],
    env: dict[str, str],
    stdout: Any,
    stderr: Any,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a helper process in its own session that cannot outlive this Python process."""
    wrapper = pdeathsig_wrapper()
    return subprocess.Popen(
        [*wrapper, *argv],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        preexec_fn=None if wrapper else die_with_parent(os.getpid()),
        close_fds=True,
    )


# qemu-system's machine type when no guest runs
NO_MACHINE = "none"
# binary -> the -accel arguments it takes (asked once per process)
_lean_accel: dict[str, tuple[str, ...]] = {}
LEAN_ACCEL = ("-accel", "tcg,tb-size=1")


def lean_accel(build: Build) -> tuple[str, ...]:
    """`-accel tcg,tb-size=1` when the build accepts it, else nothing.

    -M none runs no guest code, and a 1 MiB TCG buffer instead of the default 1 GiB
    takes about a quarter off QEMU's start-up CPU (mapping and splitting it is not
    free). Builds without TCG, or older than the tb-size property (5.0), are asked
    once: a short QMP session that only quits tells whether the option is taken.
    """
    key = os.fspath(build.system)
    if key not in _lean_accel:
        _lean_accel[key] = LEAN_ACCEL if _quits(build, LEAN_ACCEL) else ()
    return _lean_accel[key]


# binary -> whether it runs a guest under KVM here (asked once per process)
_kvm: dict[str, bool] = {}


def kvm_usable(build: Build) -> bool:
    """Can `build` run a guest under KVM on this machine: /dev/kvm opens read-write and
    the build starts with `-accel kvm` (which opens it and creates a VM). Asked once a
    binary."""
    key = os.fspath(build.system)
    if key not in _kvm:
        _kvm[key] = os.access("/dev/kvm", os.R_OK | os.W_OK) and _quits(build, ("-accel", "kvm"))
    return _kvm[key]


def _quits(build: Build, accel: Sequence[str]) -> bool:
    """Does qemu-system -M none with `accel` start and quit cleanly (a short QMP session
    on stdio)?"""
    argv = [*build.command(build.system), "-M", NO_MACHINE, "-nodefaults", "-display", "none"]
    argv += ["-S", *accel, "-qmp", "stdio"]
    script = b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    try:
        return (
            subprocess.run(
                argv,
                input=script,
                env=build_env(build),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # the real launch reports what is wrong with the binary


def wait_process(proc: subprocess.Popen[bytes], timeout: float, pidfd: int = -1) -> int:
    """Popen.wait(timeout) without its polling sleeps (0.5 ms, doubling up to 50 ms: a
    process that exits just after a sleep began is seen late): a pidfd (`pidfd`, else one
    opened here) becomes readable the moment the process exits.
    subprocess.TimeoutExpired if it does not."""
    if proc.returncode is not None:
        return proc.returncode
    own = pidfd < 0
    if own:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return proc.wait(timeout)
    try:
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        if not p.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        if own:
            os.close(pidfd)
    return proc.wait()


def private_dir() -> Path:
    """A 0700 directory with a short path: unix socket paths are limited to 107 bytes."""
    return short_private_dir("qrc-")


class _QuietClient(QMPClient):
    """QMPClient without its eager pretty-printing: the base class's message hooks format
    every message (json.dumps, indent=2) for a debug log record even when debug logging
    is off, 0.3 ms of a 1.6 kB reply. With debug logging on they log as before.

    The hooks are the ones qemu.qmp's AsyncProtocol documents for subclasses, but their
    names are private: pyproject.toml pins the qemu.qmp releases checked, and
    tests/test_qmp_client.py fails if an upgrade stops calling them."""

    def _cb_outbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_outbound(msg)
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_inbound(msg)
        return msg


_T = TypeVar("_T")


class QmpConnection:
    """One QMP connection, driven synchronously: qemu.qmp's QMPClient, through its public
    coroutines, on an event loop of this connection's own (so two machines may be driven
    from two threads)."""

    def __init__(self, nickname: str) -> None:
        self.client = _QuietClient(nickname)
        self._loop = asyncio.new_event_loop()

    def _run(self, aw: Awaitable[_T], timeout: float | None) -> _T:
        """Run `aw` to its end; TimeoutError (and `aw` cancelled) after `timeout` s."""
        return self._loop.run_until_complete(asyncio.wait_for(aw, timeout))

    def listen(self, path: str) -> None:
        """Listen on the unix socket `path` (QEMU connects to it)."""
        self._run(self.client.start_server(path), None)

    def accept_unless_exited(self, pidfd: int, timeout: float) -> bool:
        """Accept QEMU's connection and negotiate; False if the process (its `pidfd`)
        exited before connecting. TimeoutError after `timeout` s."""
        return self._run(self._accept_race(pidfd), timeout)

    async def _accept_race(self, pidfd: int) -> bool:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        accepting = asyncio.ensure_future(self.client.accept())
        try:
            await asyncio.wait({accepting, exited}, return_when=asyncio.FIRST_COMPLETED)
            if accepting.done():
                accepting.result()
                return True
            return False
        finally:
            loop.remove_reader(pidfd)
            if not accepting.done():
                accepting.cancel()
                with contextlib.suppress(BaseException):
                    await accepting

    def command(self, cmd: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Run one command; QEMU's reply, {"return": ...} or {"error": {...}}.
        TimeoutError after `timeout` s; QMPError, OSError or EOFError if the connection
        broke."""
        msg = QMPClient.make_execute_msg(cmd, args or None)
        try:
            value = self._run(self.client.execute_msg(msg), timeout)
        except ExecuteError as e:
            return {"error": e.received["error"]}
        return {"return": value}

    def events(self) -> list[dict[str, Any]]:
        """The events received so far (and not yet taken), after letting the loop read
        what QEMU sent since the last command."""
        evs = self.client.events.clear()
        if not evs:
            self._run(asyncio.sleep(0), None)
            evs = self.client.events.clear()
        return [dict(ev) for ev in evs]

    def close(self) -> None:
        """Disconnect (re-raising what broke the connection, if anything) and close the
        loop."""
        try:
            self._run(self.client.disconnect(), KILL_DEADLINE)
        finally:
            self._loop.close()


class Machine:
    """One QEMU process (qemu-system or qemu-storage-daemon) driven over QMP."""

    def __init__(
        self,
        build: Build,
        name: str,
        kind: Kind,
        argv: list[str],
        logdir: Path,
        sockdir: Path,
        timeout: float,
    ) -> None:
        self.build = build
        self.name = name
        self.kind = kind
        self.argv = argv
        self.logdir = logdir
        self.sockdir = sockdir
        self.timeout = timeout
        self.stdout_path = logdir / "stdout.log"
        self.stderr_path = logdir / "stderr.log"
        self.transcript: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._closed = False
        self._connected = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._conn: QmpConnection | None = None
        self._stdout_fd = -1
        # shutdown(): the quit QEMU did not answer or did not exit after (a hang)
        self.quit_hung: MachineHung | None = None

    # ---- life cycle

    @classmethod
    def launch(
        cls,
        build: Build,
        workdir: Path,
        name: str,
        kind: Kind = "system",
        args: Sequence[str] = (),
        timeout: float = 10.0,
        machine_type: str = NO_MACHINE,
    ) -> Machine:
        """Spawn QEMU, wait (with a deadline) until it connects to our QMP socket.

        `machine_type`: qemu-system's -M; "none" (no guest, the lean TCG buffer) unless
        a case needs a guest with a vCPU, whose -accel and -m are then in `args`."""
        logdir = workdir / name
        logdir.mkdir(parents=True, exist_ok=True)
        sockdir = private_dir()
        sock = sockdir / "qmp.sock"
        if kind == "system":
            argv = [*build.command(build.system), "-M", machine_type, "-nodefaults"]
            argv += ["-display", "none", "-S", *build.data_args()]
            if machine_type == NO_MACHINE:
                argv += list(lean_accel(build))
            argv += ["-qmp", f"unix:{sock}"]
        else:
            argv = [*build.command(build.qsd), "--chardev", f"socket,id=qmp0,path={sock}"]
            argv += ["--monitor", "chardev=qmp0"]
        argv += list(args)
        m = cls(build, name, kind, argv, logdir, sockdir, timeout)
        try:
            m._start(sock)
        except BaseException:
            m._force_kill()
            m._release()
            raise
        return m

    def _start(self, sock: Path) -> None:
        self._conn = QmpConnection(self.name)
        self._conn.listen(str(sock))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._proc = spawn(self.argv, build_env(self.build), out, err)
        self._stdout_fd = os.open(self.stdout_path, os.O_RDONLY | os.O_CLOEXEC)
        self._pidfd = os.pidfd_open(self._proc.pid)
        self._record({"event": "spawn", "argv": self.argv, "pid": self._proc.pid})
        try:
            connected = self._conn.accept_unless_exited(self._pidfd, self.timeout)
        except TimeoutError:
            self._force_kill()
            raise MachineHung(
                f"{self.name}: QEMU did not connect to QMP within {self.timeout} s",
                self.failure_report(),
                self.name,
                self.timeout,
            ) from None
        except (QMPError, OSError, EOFError) as e:
            self._await_exit()
            raise self._died(f"{self.name}: QMP handshake failed ({e!r})") from None
        if not connected:
            self._await_exit()
            raise self._died(f"{self.name}: QEMU exited before connecting to QMP")
        self._connected = True

    def shutdown(self) -> None:
        """`quit`, wait with a deadline, SIGKILL as last resort; idempotent, never raises.
        A quit that went unanswered, or a process still there QUIT_DEADLINE after it, is
        kept in `quit_hung` (what a caller that judges the quit raises)."""
        if self._closed:
            return
        try:
            if self._connected and self.alive() and not self._stopped():
                with contextlib.suppress(MachineError):
                    try:
                        self._exchange("quit", {}, min(self.timeout, QUIT_DEADLINE))
                        self._wait(QUIT_DEADLINE)
                    except MachineHung as e:
                        self.quit_hung = e
                    except subprocess.TimeoutExpired:
                        self._force_kill()
                        self.quit_hung = MachineHung(
                            f"{self.name}: still running {QUIT_DEADLINE} s after quit; SIGKILLed",
                            self.failure_report(),
                            self.name,
                            QUIT_DEADLINE,
                        )
        finally:
            self._force_kill()
            self._release()

    def _stopped(self) -> bool:
        """SIGSTOPped (a fault test's doing): it cannot answer `quit`, so do not wait for it."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                st = f.read()
        except OSError:
            return False
        return st[st.rindex(")") + 2] in "Tt"

    def _release(self) -> None:
        """Close the connection and descriptors and remove the private directory."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._connected = False
        for fd in (self._pidfd, self._stdout_fd):
            if fd >= 0:
                os.close(fd)
        self._pidfd = self._stdout_fd = -1
        shutil.rmtree(self.sockdir, ignore_errors=True)
        self._closed = True

    def _force_kill(self) -> None:
        """SIGKILL and reap, if the process is still there (a process that SIGKILL
        cannot end, stuck in the kernel, is left after KILL_DEADLINE, recorded)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            try:
                self._wait(KILL_DEADLINE)
            except subprocess.TimeoutExpired:
                self._record({"event": f"still there {KILL_DEADLINE} s after SIGKILL"})

    def _await_exit(self) -> None:
        """After the connection broke: let QEMU finish dying, SIGKILL it if it does not."""
        if self._proc is None:
            return
        try:
            self._wait(min(self.timeout, QUIT_DEADLINE))
        except subprocess.TimeoutExpired:
            self._record({"event": "connection lost but process alive: SIGKILL"})
            self._force_kill()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal (fault tests: SIGKILL, SIGSTOP, SIGABRT...). SIGSTOP returns once
        the process has stopped, so the caller knows what state QEMU is in."""
        if self._proc is not None and self._proc.poll() is None:
            self._record({"event": f"sent {signal.Signals(sig).name}"})
            self._proc.send_signal(sig)
            if sig == signal.SIGSTOP:
                # Until stopped (or dead); WNOWAIT leaves the status for Popen.
                flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG
                end = time.monotonic() + KILL_DEADLINE
                while os.waitid(os.P_PID, self._proc.pid, flags) is None:
                    if time.monotonic() >= end:
                        raise MachineHung(
                            f"{self.name}: not stopped {KILL_DEADLINE} s after SIGSTOP",
                            self.failure_report(),
                            self.name,
                            KILL_DEADLINE,
                        )
                    time.sleep(0.001)

    def wait_exit(self, timeout: float) -> int:
        """The exit status (negative: signal) once QEMU exits; MachineHung if it does not."""
        try:
            return self._wait(timeout)
        except subprocess.TimeoutExpired:
            self._force_kill()
            raise MachineHung(
                f"{self.name}: did not exit within {timeout} s; SIGKILLed",
                self.failure_report(),
                self.name,
                timeout,
            ) from None

    def _wait(self, timeout: float) -> int:
        """wait_process on this machine's own pidfd (while it has one)."""
        assert self._proc is not None
        return wait_process(self._proc, timeout, self._pidfd)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def sock_path(self, name: str) -> str:
        """A path for another unix socket (NBD...) in this machine's private short directory."""
        return str(self.sockdir / name)

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # ---- QMP

    def qmp(self, cmd: str, /, **args: Any) -> QmpResult:
        """Run a QMP command; a QMP error is a value, a crash or hang an exception.

        Arguments with dashes: `m.qmp("blockdev-del", **{"node-name": "x"})`.
        """
        return self.execute(cmd, args)

    def qmp_ok(self, cmd: str, /, **args: Any) -> Any:
        """Run a QMP command that must succeed; its return value."""
        return self.execute_ok(cmd, args)

    def execute(
        self, cmd: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> QmpResult:
        """qmp() with the arguments as a dict and an explicit deadline (default: the machine's)."""
        reply = self._exchange(cmd, dict(args or {}), self.timeout if timeout is None else timeout)
        if "error" in reply:
            err = reply["error"]
            return QmpResult(False, None, err.get("class"), err.get("desc"))
        return QmpResult(True, reply.get("return"))

    def execute_ok(
        self, cmd: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """execute() for a command that must succeed; QmpCommandFailed otherwise."""
        res = self.execute(cmd, args, timeout)
        if not res.ok:
            raise QmpCommandFailed(
                f"{self.name}: {cmd} failed: {res.error_class}: {res.desc}",
                self.failure_report(),
                res,
            )
        return res.value

    def hmp(self, cmdline: str, timeout: float | None = None) -> str:
        """An HMP command line through human-monitor-command; its text reply."""
        out = self.execute_ok("human-monitor-command", {"command-line": cmdline}, timeout)
        assert isinstance(out, str)
        return out

    def events(self) -> list[dict[str, Any]]:
        """QMP events received so far (and not yet taken); they go into the transcript too."""
        if self._conn is None or not self._connected:
            return []
        evs = self._conn.events()
        for ev in evs:
            self._record({"event": ev})
        return evs

    def _exchange(self, cmd: str, args: dict[str, Any], deadline: float) -> dict[str, Any]:
        if self._conn is None or not self._connected or self._closed:
            raise self._died(f"{self.name}: {cmd}: the machine is not running")
        entry: dict[str, Any] = {"t": time.monotonic() - self._t0, "cmd": cmd}
        if args:
            entry["args"] = args
        self.transcript.append(entry)
        t = time.perf_counter()
        try:
            reply = self._conn.command(cmd, args, deadline)
        except TimeoutError:
            entry["outcome"] = f"no reply within {deadline} s"
            self._connected = False
            self._force_kill()
            raise MachineHung(
                f"{self.name}: {cmd}: no QMP reply within {deadline} s; SIGKILLed",
                self.failure_report(),
                self.name,
                deadline,
            ) from None
        except (QMPError, OSError, EOFError) as e:
            entry["outcome"] = f"connection lost: {e!r}"
            self._connected = False
            self._await_exit()
            raise self._died(f"{self.name}: QEMU died during {cmd}") from None
        except BaseException as e:
            # interrupted mid-command (Ctrl-C, a test's backstop timeout): the reply is
            # unread, so the connection is unusable; shutdown() goes straight to SIGKILL
            waited = time.perf_counter() - t
            entry["outcome"] = f"interrupted ({type(e).__name__}) after {waited:.3f} s"
            self._connected = False
            raise
        entry["ms"] = round((time.perf_counter() - t) * 1000, 3)
        entry["reply"] = reply
        return reply

    def _died(self, message: str) -> MachineDied:
        """MachineDied (MachineAborted for SIGABRT) with this machine's exit state."""
        rc = self.returncode
        cls = MachineAborted if signal_name(rc) == "SIGABRT" else MachineDied
        return cls(
            f"{message} ({describe_exit(rc)})",
            self.failure_report(),
            rc,
            self.stderr_tail(),
            self.name,
        )

    def _record(self, entry: dict[str, Any]) -> None:
        entry["t"] = time.monotonic() - self._t0
        self.transcript.append(entry)

    # ---- logs and reports

    def stdout_mark(self) -> int:
        """The current end of QEMU's stdout, for stdout_since()."""
        return os.fstat(self._stdout_fd).st_size

    def stdout_since(self, mark: int) -> str:
        """What QEMU wrote to stdout after `mark`."""
        size = os.fstat(self._stdout_fd).st_size
        return os.pread(self._stdout_fd, size - mark, mark).decode(errors="replace")

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def transcript_text(self, last: int | None = None) -> str:
        """The transcript, one JSON object per line (time in seconds since launch)."""
        entries = self.transcript if last is None else self.transcript[-last:]
        return "\n".join(json.dumps(e, default=str) for e in entries)

    def failure_report(self) -> str:
        """Command line, exit status, stderr tail and transcript tail: what a failure needs."""
        lines = [
            f"machine {self.name!r} ({self.kind}, {self.build.label}), pid "
            f"{self._proc.pid if self._proc else '-'}: {describe_exit(self.returncode)}",
            "command line: " + " ".join(self.argv),
            f"logs: {self.logdir}",
        ]
        tail = self.stderr_tail()
        lines.append("stderr (tail):" if tail else "stderr: (empty)")
        lines += [f"  {ln}" for ln in tail.splitlines()]
        lines.append(f"QMP transcript (last {TRANSCRIPT_TAIL}, long lines cut):")
        for ln in self.transcript_text(TRANSCRIPT_TAIL).splitlines():
            cut = f"... ({len(ln)} characters)" if len(ln) > TRANSCRIPT_LINE else ""
            lines.append(f"  {ln[: TRANSCRIPT_LINE - 40] if cut else ln}{cut}")
        return "\n".join(lines)


class Reuse(Protocol):
    """Where a MachineSet gets QEMUs that serve several cases (harness.pool.Pool)."""

    def take(
        self,
        build: Build,
        workdir: Path,
        name: str,
        kind: Kind,
        args: Sequence[str],
        timeout: float,
    ) -> Machine | None: ...

    def give_back(self, m: Machine) -> bool: ...


class MachineSet:
    """The machines of one test: leaving the block shuts every one down, SIGKILL last.
    With a `pool`, a machine may come from it and go back to it (harness.pool)."""

    def __init__(self, workdir: Path, pool: Reuse | None = None) -> None:
        self.workdir = workdir
        self.machines: dict[str, Machine] = {}
        self.pids: list[int] = []
        self.pool = pool

    def launch(
        self,
        build: Build,
        name: str,
        kind: Kind = "system",
        args: Sequence[str] = (),
        timeout: float = 10.0,
        machine_type: str = NO_MACHINE,
    ) -> Machine:
        """A machine of this set (Machine.launch); only a machine without a guest may
        come from the pool."""
        if name in self.machines:
            raise ValueError(f"machine {name!r} already launched in this set")
        m = (
            None
            if self.pool is None or machine_type != NO_MACHINE
            else self.pool.take(build, self.workdir, name, kind, args, timeout)
        )
        if m is None:
            m = Machine.launch(build, self.workdir, name, kind, args, timeout, machine_type)
        self.machines[name] = m
        self.pids.append(m.pid)
        return m

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def __iter__(self) -> Iterator[Machine]:
        return iter(list(self.machines.values()))

    def shutdown_all(self, graceful: bool = True) -> None:
        """Shut every machine down (`graceful`: `quit` first, else SIGKILL at once); an
        interrupt still kills the rest before propagating."""
        pending: BaseException | None = None
        for m in self:
            try:
                if not graceful:
                    m._force_kill()
                elif self.pool is not None and self.pool.give_back(m):
                    continue
                m.shutdown()
            except BaseException as e:  # KeyboardInterrupt included: kill, go on
                m._force_kill()
                m._release()
                pending = pending or e
        if pending is not None:
            raise pending

    def failure_report(self) -> str:
        return "\n\n".join(m.failure_report() for m in self)

    def __enter__(self) -> MachineSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Interrupted: the user wants out now, and no state needs to survive.
        self.shutdown_all(graceful=not isinstance(exc, KeyboardInterrupt))
