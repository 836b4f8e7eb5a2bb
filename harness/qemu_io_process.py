"""One interactive qemu-io kept open on pipes: the process, its prompt, its deadlines.

Spawning a qemu-io per request costs about 6 ms; a request on an open one under 1 ms.
So the harness keeps one open where it sends many: the NBD client of the primary's I/O
(harness.nbd_client) and the offline layer inspector (harness.layer_inspector); what a
command means and how its output is read is harness.qemu_io's (QemuIoSession).

qemu-io runs on pipes, not a pty: with stdin not a terminal it reads each command
with fgets instead of its readline, which would echo every typed character with a
redraw of the whole line (an echo quadratic in the command's length, all of it
read and matched here). It still prints its prompt, and flushes stdout, after
every command: the prompt marks the end of a command's output. stderr is merged
into the same pipe; stdout is flushed at every prompt, so a command's own
messages can only come out of order against each other, never against another
command's.

A qemu-io that dies or misses its deadline is a verdict (QemuIoDied, QemuIoTimeout:
QEMU misbehaved); one that cannot be started at all is not (QemuIoSpawnFailed).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from pexpect import EOF, TIMEOUT, ExceptionPexpect
from pexpect.fdpexpect import fdspawn

from harness.environment import check_binaries, from_os_error
from harness.process import Build, build_env, spawn, wait_process
from harness.qemu_io import QemuIoError, QemuIoSession
from harness.verdicts import QemuCrashed, QemuHung, signal_name

PROMPT = b"qemu-io> "
QUIT_DEADLINE = 2.0
_IO_ERROR = re.compile(r"^(?:read|write|discard) failed: ", re.MULTILINE)


class QemuIoDied(QemuIoError, QemuCrashed):
    """The qemu-io process exited while running a command (`returncode`: its exit state,
    negative for a signal; None if unknown)."""

    def __init__(
        self,
        message: str,
        command: str,
        output: str,
        process: str = "qemu-io",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message, command, output)
        self.machine = process
        self.returncode = returncode
        self.signal = signal_name(returncode)
        self.stderr_tail = output


class QemuIoTimeout(QemuIoError, QemuHung):
    """A command did not finish within its deadline; the process was killed."""

    def __init__(
        self,
        message: str,
        command: str,
        output: str,
        process: str = "qemu-io",
        deadline: float | None = None,
    ) -> None:
        super().__init__(message, command, output)
        self.machine = process
        self.deadline = deadline


class QemuIoSpawnFailed(QemuIoError):
    """qemu-io could not be (re)started: every attempt failed or the deadline passed."""


class _Child:
    """A qemu-io on pipes: the process, and pexpect reading its merged stdout/stderr."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], timeout: float) -> None:
        self.proc = spawn(
            argv, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.pid = self.proc.pid
        self.out = fdspawn(self.proc.stdout.fileno(), timeout=timeout, maxread=65536)
        # pexpect sleeps delayafterread (0.1 ms, more on a busy machine) after each read
        # it makes: a wait for nothing, the prompt is what we wait for
        self.out.delayafterread = None

    def send(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def expect(self, timeout: float) -> int:
        """0: the prompt; 1: end of output (the process is exiting); 2: the deadline."""
        return int(self.out.expect_exact([PROMPT, EOF, TIMEOUT], timeout=timeout))

    @property
    def before(self) -> bytes:
        got = self.out.before
        return got if isinstance(got, bytes) else b""

    def isalive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, reap, close the pipes; never raises."""
        with contextlib.suppress(OSError):
            if self.proc.poll() is None:
                self.proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            wait_process(self.proc, QUIT_DEADLINE)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()

    def exit_text(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait_process(self.proc, QUIT_DEADLINE)
        code = self.proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


class InteractiveQemuIo(QemuIoSession):
    """One interactive `qemu-io <image args>` on pipes, respawned if it dies."""

    # Respawn before the next command after a command that printed an I/O error.
    respawn_after_error = False

    def __init__(
        self,
        build: Build,
        image_args: Sequence[str],
        *,
        name: str = "qemu-io",
        timeout: float = 10.0,
        spawn_attempts: int = 3,
        spawn_deadline: float = 5.0,
        lazy: bool = False,
    ) -> None:
        self.build = build
        self.argv = [*build.command(build.io), *image_args]
        self.name = name
        self.timeout = timeout
        self.spawn_attempts = spawn_attempts
        self.spawn_deadline = spawn_deadline
        self.pids: list[int] = []
        self.spawns = 0
        self.startup_output = ""
        self._child: _Child | None = None
        self._suspect = False
        if not lazy:
            self._spawn()

    def _where(self) -> str:
        pid = self._child.pid if self._child is not None else "-"
        return f"{self.name} (pid {pid}: {' '.join(self.argv)})"

    # ---- process life cycle

    def _spawn(self) -> None:
        """Start qemu-io and wait for its prompt; bounded attempts within a deadline."""
        deadline = time.monotonic() + self.spawn_deadline
        failures: list[str] = []
        for attempt in range(self.spawn_attempts):
            if attempt and not self._before_retry(deadline):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                child = _Child(self.argv, build_env(self.build), remaining)
            except OSError as e:
                broken = from_os_error(e)  # no file descriptor left for its pipes...
                if broken is not None:
                    raise broken from None
                failures.append(f"attempt {attempt + 1}: {e}")
                continue
            self.pids.append(child.pid)
            i = child.expect(remaining)
            text = _text(child.before)
            if i == 0:
                self._child = child
                self._suspect = False
                self.spawns += 1
                self.startup_output = text
                return
            if i == 2:
                why = "no prompt before the deadline"
                child.kill()
            else:
                why = child.exit_text()
                child.kill()
            failures.append(f"attempt {attempt + 1}: {why}: {text.strip()!r}")
        check_binaries(self.argv[0], self.build.io)  # gone during the run: not qemu-io's doing
        raise QemuIoSpawnFailed(
            f"{self.name}: qemu-io did not start ({len(failures)} attempt(s), "
            f"{self.spawn_deadline} s)",
            " ".join(self.argv),
            "\n".join(failures),
        )

    def _before_retry(self, deadline: float) -> bool:
        """Wait for whatever a new attempt needs; False to give up. Default: retry at once."""
        return time.monotonic() < deadline

    def _ensure_running(self) -> None:
        if self._child is None or self._suspect or not self._child.isalive():
            if self._child is not None:
                self._child.kill()
                self._child = None
            self._spawn()

    def alive(self) -> bool:
        return self._child is not None and self._child.isalive()

    def abort(self) -> None:
        """SIGKILL the qemu-io, from any thread: a command waiting on it (in another
        thread) ends at once with QemuIoDied; close() still reaps it."""
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                child.proc.kill()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def close(self) -> None:
        """`quit` (lets an image file be closed cleanly), then SIGKILL; always leaves no process."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.isalive():
                child.send(b"quit\n")
                child.expect(QUIT_DEADLINE)
        except (OSError, ExceptionPexpect):
            pass
        finally:
            child.kill()

    def __enter__(self) -> InteractiveQemuIo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- one command

    def run(self, command: str) -> str:
        """One qemu-io command (aio_write, aio_flush, ...); its output up to the next prompt."""
        return self._run(command)

    def _run(self, command: str) -> str:
        if "\n" in command or "\r" in command:
            raise ValueError(f"one qemu-io command per line: {command!r}")
        self._ensure_running()
        child = self._child
        assert child is not None
        # if it is gone, the expect below sees the end of its output
        try:
            with contextlib.suppress(OSError):
                child.send(command.encode() + b"\n")
            i = child.expect(self.timeout)
        except BaseException:
            # interrupted (Ctrl-C, a test's backstop timeout, abort()): the command's
            # output is unread, so this qemu-io cannot serve another; it goes
            self._child = None
            child.kill()
            raise
        raw = child.before
        if i == 1:
            self._child = None
            why = child.exit_text()
            child.kill()
            raise QemuIoDied(
                f"{self._where()}: {why}",
                command,
                _text(raw),
                self.name,
                child.proc.returncode,
            )
        if i == 2:
            self._child = None
            child.kill()
            raise QemuIoTimeout(
                f"{self._where()}: no prompt within {self.timeout} s; killed",
                command,
                _text(raw),
                self.name,
                self.timeout,
            )
        out = _text(raw)
        if self.respawn_after_error and _IO_ERROR.search(out):
            self._suspect = True
        return out


def _text(raw: bytes | str | None) -> str:
    if raw is None or not isinstance(raw, bytes):
        return "" if raw is None else str(raw)
    return raw.decode(errors="replace").replace("\r\n", "\n")
