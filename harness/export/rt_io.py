"""qemu-io sessions, NBD reads and child processes for an exported test.

Part of the runtime `qrc export` copies into reproduce.py and the iotest: Python's
standard library only. A qemu-io session is one interactive qemu-io on pipes (its
prompt ends each command's output); the NBD reader is a minimal NBD client (fixed
newstyle handshake, structured replies, NBD_CMD_READ) for the reads a case made with
its own NBD requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import subprocess
import time
from typing import Any

PROMPT = b"qemu-io> "
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when this process dies (no QEMU outlives us)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


# every process started here, killed at the end whatever happens
CHILDREN: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, preexec_fn=_die_with_parent, start_new_session=True, **kw)
    CHILDREN.append(proc)
    return proc


def kill_children() -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    CHILDREN.clear()


def signal_name(status: int | None) -> str | None:
    if status is None or status >= 0:
        return None
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"


class SessionDied(Exception):
    """The qemu-io died (or did not answer) during a command."""


class QemuIo:
    """One interactive `qemu-io ARGS` on pipes, started on first use. `reconnect`: after
    a command that printed an I/O error the next one gets a new qemu-io (an NBD client
    whose server dropped it fails every later request without saying so)."""

    def __init__(self, argv: list[str], env: dict[str, str], reconnect: bool = False) -> None:
        self.argv, self.env, self.reconnect = argv, env, reconnect
        self.proc: subprocess.Popen[bytes] | None = None
        self._suspect = False

    def _read_prompt(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd, buf, end = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while not buf.endswith(PROMPT):
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SessionDied(f"no qemu-io prompt within {timeout:g} s: {buf!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise SessionDied(f"qemu-io exited: {buf.decode(errors='replace')!r}")
            buf += chunk
        return buf[: -len(PROMPT)].decode(errors="replace").replace("\r\n", "\n")

    def _start(self) -> None:
        for attempt in range(30):  # an NBD server's socket may still be on its way
            self.proc = spawn(
                self.argv,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                self._read_prompt(10)
                return
            except SessionDied:
                self.close()
                if attempt == 29:
                    raise
                time.sleep(0.05)

    def run(self, command: str, timeout: float = 10.0) -> str:
        """One command; the text it printed."""
        if self.proc is None or self._suspect or self.proc.poll() is not None:
            self.close()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # gone: the read says so
        try:
            out = self._read_prompt(timeout)
        except SessionDied:
            self.close()
            raise
        if self.reconnect and any(
            ln.startswith(("read failed: ", "write failed: ", "discard failed: "))
            for ln in out.split("\n")
        ):
            self._suspect = True
        return out

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(b"quit\n")
                proc.stdin.flush()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


# ---- NBD: the handshake and NBD_CMD_READ, nothing more

_IHAVEOPT = 0x49484156454F5054
_NBD_ERRNO = {1: errno.EPERM, 5: errno.EIO, 12: errno.ENOMEM, 22: errno.EINVAL}
_NBD_ERRNO.update({28: errno.ENOSPC, 75: errno.EOVERFLOW, 95: errno.ENOTSUP, 108: errno.ESHUTDOWN})


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"NBD connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


class NbdReader:
    """Reads of export `export` on the unix socket `path` over one NBD connection,
    opened on first use. `flags`: the request's (4, NBD_CMD_FLAG_DF: every byte read
    through the node, no holes)."""

    def __init__(self, path: str, export: str, flags: int) -> None:
        self.path, self.export, self.flags = path, export, flags
        self.sock: socket.socket | None = None
        self.handle = 0

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path)
        head = _recv(s, 18)
        if head[:8] != b"NBDMAGIC" or struct.unpack(">Q", head[8:16])[0] != _IHAVEOPT:
            raise EOFError("not a newstyle NBD server")
        (hflags,) = struct.unpack(">H", head[16:18])
        s.sendall(struct.pack(">IQII", 1 | (hflags & 2), _IHAVEOPT, 8, 0))  # STRUCTURED_REPLY
        _, _, rep, n = struct.unpack(">QIII", _recv(s, 20))
        _recv(s, n)
        if rep != 1:
            raise EOFError(f"structured replies refused ({rep:#x})")
        name = self.export.encode()
        s.sendall(struct.pack(">QII", _IHAVEOPT, 1, len(name)) + name)  # EXPORT_NAME
        _recv(s, 10 if hflags & 2 else 134)
        return s

    def read(self, offset: int, length: int) -> bytes | str:
        """The bytes, or the error text (strerror) the server answered."""
        try:
            if self.sock is None:
                self.sock = self._connect()
            return self._read(self.sock, offset, length)
        except (OSError, EOFError):
            self.close()
            raise

    def _read(self, s: socket.socket, offset: int, length: int) -> bytes | str:
        self.handle += 1
        s.sendall(struct.pack(">IHHQQI", 0x25609513, self.flags, 0, self.handle, offset, length))
        buf, err = bytearray(length), 0
        while True:
            (magic,) = struct.unpack(">I", _recv(s, 4))
            if magic == 0x67446698:  # simple reply
                e, _ = struct.unpack(">IQ", _recv(s, 12))
                if e:
                    return os.strerror(_NBD_ERRNO.get(e, errno.EINVAL))
                return _recv(s, length)
            flags, kind, _, n = struct.unpack(">HHQI", _recv(s, 16))
            payload = _recv(s, n)
            if kind == 1:  # offset data
                (at,) = struct.unpack(">Q", payload[:8])
                buf[at - offset : at - offset + n - 8] = payload[8:]
            elif kind in (0x8001, 0x8002):  # an error
                e = struct.unpack(">I", payload[:4])[0]
                err = err or _NBD_ERRNO.get(e, errno.EINVAL)
            # a hole (2) reads as the zeroes buf already holds
            if flags & 1:
                return os.strerror(err) if err else bytes(buf)

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))  # DISC
            s.close()
