"""A QEMU process with its QMP connection, transcript and deadlines.

Every conformance case drives one or two real QEMU processes. This module owns
their life cycle so that no QEMU outlives its test and every failure explains
itself: QEMU connects to our QMP server socket in a private short-path
directory, every command has a deadline, every command and reply is kept in a
transcript, and a crash or hang becomes an exception of harness.verdicts' tree
(MachineDied, MachineHung: QEMU misbehaved; harness.machine_errors) that carries the
command line, the exit status or signal, and the tail of stderr.

A machine is in one `Runstate` at a time, as qemu.qmp's client is: IDLE, CONNECTING,
RUNNING, DISCONNECTED, then CLOSED from any of them. Its command line, spawning the
process and waiting for it are harness.process's; the QMP connection, harness.qmp's; the
text of a failure report, harness.machine_report's.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from qemu.qmp import QMPError

from harness.environment import check_answer, check_binaries
from harness.machine_errors import (
    MachineAborted,
    MachineDied,
    MachineError,
    MachineHung,
    QmpCommandFailed,
)
from harness.machine_report import (
    STDERR_TAIL_LINES,
    failure_report,
    stderr_tail,
    transcript_text,
)
from harness.observe import QmpResult
from harness.process import NO_MACHINE, Build, Child, Kind, build_env, qmp_command, spawn
from harness.qmp import QmpConnection
from harness.tmp import private_dir as short_private_dir
from harness.verdicts import describe_exit, signal_name

# harness.machine_errors' classes are raised here, and imported from here (as is Kind)
__all__ = [
    "Kind",
    "Machine",
    "MachineAborted",
    "MachineDied",
    "MachineError",
    "MachineHung",
    "MachineSet",
    "QmpCommandFailed",
    "Reuse",
    "Runstate",
]

# How long `quit` and the exit after it may take before SIGKILL.
QUIT_DEADLINE = 5.0
# How long a signal (SIGKILL, SIGSTOP) may take to act.
KILL_DEADLINE = 10.0


def private_dir() -> Path:
    """A 0700 directory with a short path: unix socket paths are limited to 107 bytes."""
    return short_private_dir("qrc-")


class Runstate(enum.Enum):
    """Where a machine is in its life; CLOSED can follow any other state."""

    IDLE = "idle"  # not launched yet
    CONNECTING = "connecting"  # QEMU spawned, not yet connected to our QMP socket
    RUNNING = "running"  # connected: commands go through
    # the connection is unusable (a command cut short or unanswered, the connection
    # lost); the process may still be there, and only signals reach it
    DISCONNECTED = "disconnected"
    CLOSED = "closed"  # shut down: connection, descriptors, socket directory released


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
        self.state = Runstate.IDLE
        self._conn = QmpConnection(name)
        self._child: Child | None = None  # from CONNECTING on
        self._stdout_fd: int | None = None  # QEMU's stdout, to read back (until CLOSED)
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
        argv = qmp_command(build, kind, sock, machine_type, args)
        m = cls(build, name, kind, argv, logdir, sockdir, timeout)
        try:
            m._start(sock)
        except BaseException:
            m._force_kill()
            m._release()
            raise
        return m

    def _start(self, sock: Path) -> None:
        self._conn.listen(str(sock))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._child = child = Child(spawn(self.argv, build_env(self.build), out, err))
        self.state = Runstate.CONNECTING
        self._stdout_fd = os.open(self.stdout_path, os.O_RDONLY | os.O_CLOEXEC)
        self._record({"event": "spawn", "argv": self.argv, "pid": child.pid})
        try:
            connected = self._conn.accept_unless_exited(child.pidfd, self.timeout)
            why = "QEMU exited before connecting to QMP"
        except TimeoutError:
            self._force_kill()
            raise self._hung(
                f"QEMU did not connect to QMP within {self.timeout} s", self.timeout
            ) from None
        except (QMPError, OSError, EOFError) as e:
            connected, why = False, f"QMP handshake failed ({e!r})"
        if not connected:
            self._await_exit()
            binary = self.build.system if self.kind == "system" else self.build.qsd
            check_binaries(self.argv[0], binary)  # gone during the run: not QEMU's doing
            raise self._died(f"{self.name}: {why}")
        self.state = Runstate.RUNNING

    def shutdown(self) -> None:
        """`quit`, wait with a deadline, SIGKILL as last resort; idempotent, never raises.
        A quit that went unanswered, or a process still there QUIT_DEADLINE after it, is
        kept in `quit_hung` (what a caller that judges the quit raises)."""
        if self.state is Runstate.CLOSED:
            return
        try:
            if self.state is Runstate.RUNNING and self.alive() and not self.stopped():
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

    def stopped(self) -> bool:
        """SIGSTOPped (a fault case's doing): it can answer nothing, not even `quit`."""
        return self._child is not None and self._child.stopped()

    def _release(self) -> None:
        """Close the connection and descriptors and remove the private directory: CLOSED."""
        if self.state is Runstate.CLOSED:
            return
        with contextlib.suppress(Exception):
            self._conn.close(KILL_DEADLINE)
        if self._child is not None:
            self._child.close()
        if self._stdout_fd is not None:
            os.close(self._stdout_fd)
            self._stdout_fd = None
        shutil.rmtree(self.sockdir, ignore_errors=True)
        self.state = Runstate.CLOSED

    def _force_kill(self) -> None:
        """SIGKILL and reap, if the process is still there (a process that SIGKILL
        cannot end, stuck in the kernel, is left after KILL_DEADLINE, recorded)."""
        if self._child is not None and not self._child.kill(KILL_DEADLINE):
            self._record({"event": f"still there {KILL_DEADLINE} s after SIGKILL"})

    def _await_exit(self) -> None:
        """After the connection broke: let QEMU finish dying, SIGKILL it if it does not."""
        if self._child is None:
            return
        try:
            self._child.wait(min(self.timeout, QUIT_DEADLINE))
        except subprocess.TimeoutExpired:
            self._record({"event": "connection lost but process alive: SIGKILL"})
            self._force_kill()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal (fault tests: SIGKILL, SIGSTOP, SIGABRT...). SIGSTOP returns once
        the process has stopped, so the caller knows what state QEMU is in."""
        if self._child is not None and self._child.alive():
            self._record({"event": f"sent {signal.Signals(sig).name}"})
            if not self._child.signal(sig, KILL_DEADLINE):
                raise self._hung(f"not stopped {KILL_DEADLINE} s after SIGSTOP", KILL_DEADLINE)

    def wait_exit(self, timeout: float) -> int:
        """The exit status (negative: signal) once QEMU exits; MachineHung if it does not."""
        try:
            return self._wait(timeout)
        except subprocess.TimeoutExpired:
            self._force_kill()
            raise self._hung(f"did not exit within {timeout} s; SIGKILLed", timeout) from None

    def _wait(self, timeout: float) -> int:
        assert self._child is not None
        return self._child.wait(timeout)

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    @property
    def pid(self) -> int:
        assert self._child is not None
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.returncode

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
            check_answer(str(err.get("desc")), self.logdir)  # a full disk is not QEMU's
            return QmpResult(False, None, err.get("class"), err.get("desc"))
        return QmpResult(True, reply.get("return"))

    def execute_ok(
        self, cmd: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """execute() for a command that must succeed; QmpCommandFailed otherwise."""
        res = self.execute(cmd, args, timeout)
        if not res.ok:
            what = f"{self.name}: {cmd} failed: {res.error_class}: {res.desc}"
            raise QmpCommandFailed(what, self.failure_report(), res)
        return res.value

    def hmp(self, cmdline: str, timeout: float | None = None) -> str:
        """An HMP command line through human-monitor-command; its text reply."""
        out = self.execute_ok("human-monitor-command", {"command-line": cmdline}, timeout)
        assert isinstance(out, str)
        check_answer(out, self.logdir)
        return out

    def events(self) -> list[dict[str, Any]]:
        """QMP events received so far (and not yet taken); they go into the transcript too."""
        if self.state is not Runstate.RUNNING:
            return []
        evs = self._conn.events()
        for ev in evs:
            self._record({"event": ev})
        return evs

    def _exchange(self, cmd: str, args: dict[str, Any], deadline: float) -> dict[str, Any]:
        if self.state is not Runstate.RUNNING:
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
            self.state = Runstate.DISCONNECTED
            self._force_kill()
            raise self._hung(
                f"{cmd}: no QMP reply within {deadline} s; SIGKILLed", deadline
            ) from None
        except (QMPError, OSError, EOFError) as e:
            entry["outcome"] = f"connection lost: {e!r}"
            self.state = Runstate.DISCONNECTED
            self._await_exit()
            raise self._died(f"{self.name}: QEMU died during {cmd}") from None
        except BaseException as e:
            # interrupted mid-command (Ctrl-C, a test's backstop timeout): the reply is
            # unread, so the connection is unusable; shutdown() goes straight to SIGKILL
            waited = time.perf_counter() - t
            entry["outcome"] = f"interrupted ({type(e).__name__}) after {waited:.3f} s"
            self.state = Runstate.DISCONNECTED
            raise
        entry["ms"] = round((time.perf_counter() - t) * 1000, 3)
        entry["reply"] = reply
        return reply

    def _died(self, message: str) -> MachineDied:
        """MachineDied (MachineAborted for SIGABRT) with this machine's exit state."""
        rc = self.returncode
        cls = MachineAborted if signal_name(rc) == "SIGABRT" else MachineDied
        report, tail = self.failure_report(), self.stderr_tail()
        return cls(f"{message} ({describe_exit(rc)})", report, rc, tail, self.name)

    def _hung(self, what: str, deadline: float) -> MachineHung:
        """MachineHung: `what` this machine did not do within `deadline` s."""
        return MachineHung(f"{self.name}: {what}", self.failure_report(), self.name, deadline)

    def _record(self, entry: dict[str, Any]) -> None:
        entry["t"] = time.monotonic() - self._t0
        self.transcript.append(entry)

    # ---- logs and reports

    def stdout_mark(self) -> int:
        """The current end of QEMU's stdout, for stdout_since() (0 once CLOSED)."""
        return 0 if self._stdout_fd is None else os.fstat(self._stdout_fd).st_size

    def stdout_since(self, mark: int) -> str:
        """What QEMU wrote to stdout after `mark` ("" once CLOSED)."""
        if self._stdout_fd is None:
            return ""
        size = os.fstat(self._stdout_fd).st_size
        return os.pread(self._stdout_fd, size - mark, mark).decode(errors="replace")

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        return stderr_tail(self.stderr_path, lines)

    def transcript_text(self, last: int | None = None) -> str:
        """The transcript, one JSON object per line (time in seconds since launch)."""
        return transcript_text(self.transcript if last is None else self.transcript[-last:])

    def failure_report(self) -> str:
        """Command line, exit status, stderr tail and transcript tail: what a failure needs."""
        head = (
            f"machine {self.name!r} ({self.kind}, {self.build.label}), pid "
            f"{self._child.pid if self._child else '-'}: {describe_exit(self.returncode)}"
        )
        return failure_report(head, self.argv, self.logdir, self.stderr_tail(), self.transcript)


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
