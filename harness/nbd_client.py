"""A long-lived interactive qemu-io, and the NBD client built on it.

The primary's writes reach the secondary disk only through its NBD export, so
the harness needs a fast NBD client: one qemu-io kept open on a pty (spawning
one per request costs about 6 ms; a request on an open one under 1 ms). The
same class opens image files offline. qemu-io echoes each command through its
own readline with cursor escapes; the echo is checked and stripped, so only
the command's own output reaches the parser.

An NBD server that drops us is not announced by qemu-io: later requests just
fail with EIO. So after any I/O error an NbdClient treats the connection as
broken and opens a new one before the next command; the failing command's
result is still reported as observed, never retried.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import pexpect

from harness.machine import Build, build_env, die_with_parent
from harness.qemu_io import QemuIoError, QemuIoSession, UnexpectedOutput

PROMPT = b"qemu-io> "
QUIT_DEADLINE = 2.0
_IO_ERROR = re.compile(r"^(?:read|write|discard) failed: ", re.MULTILINE)


class QemuIoDied(QemuIoError):
    """The qemu-io process exited while running a command."""


class QemuIoTimeout(QemuIoError):
    """A command did not finish within its deadline; the process was killed."""


class QemuIoSpawnFailed(QemuIoError):
    """qemu-io could not be (re)started: every attempt failed or the deadline passed."""


class InteractiveQemuIo(QemuIoSession):
    """One interactive `qemu-io <image args>` on a pty, respawned if it dies."""

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
        self.argv = [str(build.io), *image_args]
        self.name = name
        self.timeout = timeout
        self.spawn_attempts = spawn_attempts
        self.spawn_deadline = spawn_deadline
        self.pids: list[int] = []
        self.spawns = 0
        self.startup_output = ""
        self._child: pexpect.spawn[bytes] | None = None
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
            child: pexpect.spawn[bytes] = pexpect.spawn(
                self.argv[0],
                self.argv[1:],
                env=build_env(self.build),
                timeout=remaining,
                maxread=65536,
                preexec_fn=die_with_parent(os.getpid()),
                encoding=None,
            )
            child.delaybeforesend = None
            # pexpect sleeps 0.1 ms after every read by default (~0.2 ms per read in
            # practice, several reads per command): a tenth of a primary write's time
            child.delayafterread = None
            # ptyprocess sleeps 0.1 s in close() by default; we reap the child ourselves.
            ptyproc = cast(Any, child).ptyproc  # not in the stubs
            ptyproc.delayafterclose = ptyproc.delayafterterminate = 0
            if child.pid is not None:
                self.pids.append(child.pid)
            i = child.expect_exact([PROMPT, pexpect.EOF, pexpect.TIMEOUT], timeout=remaining)
            text = _text(child.before)
            if i == 0:
                self._child = child
                self._suspect = False
                self.spawns += 1
                self.startup_output = text
                return
            _kill(child)
            why = "no prompt before the deadline" if i == 2 else _exit_text(child)
            failures.append(f"attempt {attempt + 1}: {why}: {text.strip()!r}")
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
                _kill(self._child)
                self._child = None
            self._spawn()

    def alive(self) -> bool:
        return self._child is not None and self._child.isalive()

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
                child.expect_exact([pexpect.EOF, pexpect.TIMEOUT], timeout=QUIT_DEADLINE)
        except (OSError, pexpect.ExceptionPexpect):
            pass
        finally:
            _kill(child)

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

    def _run(self, command: str) -> str:
        if "\n" in command or "\r" in command:
            raise ValueError(f"one qemu-io command per line: {command!r}")
        self._ensure_running()
        child = self._child
        assert child is not None
        child.send(command.encode() + b"\n")
        i = child.expect_exact([PROMPT, pexpect.EOF, pexpect.TIMEOUT], timeout=self.timeout)
        raw = child.before or b""
        if i == 1:
            self._child = None
            _kill(child)
            raise QemuIoDied(f"{self._where()}: {_exit_text(child)}", command, _text(raw))
        if i == 2:
            self._child = None
            _kill(child)
            raise QemuIoTimeout(
                f"{self._where()}: no prompt within {self.timeout} s; killed",
                command,
                _text(raw),
            )
        out = self._strip_echo(command, raw)
        if self.respawn_after_error and _IO_ERROR.search(out):
            self._suspect = True
        return out

    def _strip_echo(self, command: str, raw: bytes) -> str:
        """The output after qemu-io's echo of `command`; the echo must be exactly what
        readline draws for it, so no stray text can hide in front of it."""
        echo = readline_echo(command)
        if not raw.startswith(echo):
            raise UnexpectedOutput(
                f"{self._where()}: the echo is not that of the command", command, _text(raw)
            )
        out = _text(raw[len(echo) :])
        if "\x1b" in out:
            raise UnexpectedOutput(f"{self._where()}: escape codes in output", command, out)
        return out


def readline_echo(command: str) -> bytes:
    """What QEMU's readline prints while `command` is typed and entered: after each
    character, cursor-left over the old line, the whole line, erase to end of line."""
    parts = [b"\x1b[D" * i + command[: i + 1].encode() + b"\x1b[K" for i in range(len(command))]
    return b"".join(parts) + b"\r\n"


def _text(raw: bytes | str | None) -> str:
    if raw is None or not isinstance(raw, bytes):
        return "" if raw is None else str(raw)
    return raw.decode(errors="replace").replace("\r\n", "\n")


def _kill(child: pexpect.spawn[bytes]) -> None:
    """SIGKILL, reap, close the pty."""
    try:
        if child.isalive():
            child.kill(signal.SIGKILL)
            child.wait()
    except (OSError, pexpect.ExceptionPexpect):
        pass
    with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
        child.close(force=True)


def _exit_text(child: pexpect.spawn[bytes]) -> str:
    try:
        if child.isalive():
            return "still running"
    except (OSError, pexpect.ExceptionPexpect):
        pass
    if child.signalstatus is not None:
        return f"killed by {signal.Signals(child.signalstatus).name}"
    return f"exited with status {child.exitstatus}"


class NbdClient(InteractiveQemuIo):
    """Primary I/O into an NBD export over a unix socket; reconnects after a drop."""

    respawn_after_error = True

    def __init__(
        self,
        build: Build,
        socket_path: str,
        export: str,
        *,
        timeout: float = 10.0,
        spawn_attempts: int = 3,
        spawn_deadline: float = 5.0,
    ) -> None:
        self.socket_path = socket_path
        self.export = export
        uri = f"nbd+unix:///{quote(export, safe='')}?socket={quote(socket_path, safe='/')}"
        super().__init__(
            build,
            ["-f", "raw", uri],
            name=f"NBD client of {export!r}",
            timeout=timeout,
            spawn_attempts=spawn_attempts,
            spawn_deadline=spawn_deadline,
            # Many topologies never send a primary write: connect on first use.
            lazy=True,
        )

    @property
    def reconnects(self) -> int:
        return max(0, self.spawns - 1)

    def _before_retry(self, deadline: float) -> bool:
        """Poll (with the deadline) until the server's socket exists again."""
        delay = 0.001
        while time.monotonic() < deadline:
            if os.path.exists(self.socket_path):
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return False
