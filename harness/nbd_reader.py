"""The harness's own NBD reads of a view, for the differential's checks.

A guest view read back by qemu-io costs a request per pattern (qemu-io verifies one
pattern per command) and a trip through a qemu-io process: most of what the
differential runner spent. This reads a range in one NBD_CMD_READ over its own
connection to the same export, and compares the bytes here, exactly, against the
extents the model expects. It speaks the NBD protocol's fixed newstyle handshake
(NBD_OPT_STRUCTURED_REPLY, NBD_OPT_EXPORT_NAME) and read requests only: the server's
side is the same (QEMU's NBD server reading the exported node through its
BlockBackend, holes sent as such) as for the qemu-io NBD client, whose requests stay
the operations under test.

An NBD error reply is the request's answer, with the errno QEMU's NBD client would
turn it into (`nbd_errno_to_system_errno`), as the text qemu-io prints
(strerror). Anything else (no server, a connection that breaks, a reply that is not
one, the deadline) raises NbdReaderError: the caller reads the way it did before.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from harness.observe import Data, IoResult, data_from_bytes, normalize

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_EXPORT_NAME = 1
OPT_STRUCTURED_REPLY = 8
OPTION_REPLY_MAGIC = 0x3E889045565A9
REP_ACK = 1
CMD_FLAG_DF = 1 << 2
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_ERROR = 1 << 15 | 1
REPLY_TYPE_ERROR_OFFSET = 1 << 15 | 2
CMD_READ = 0
CMD_DISC = 2
MAX_READ = 32 << 20  # the NBD server's NBD_MAX_BUFFER_SIZE

# NBD error codes -> the errno QEMU's NBD client returns (nbd_errno_to_system_errno)
_NBD_ERRNO = {
    1: errno.EPERM,
    5: errno.EIO,
    12: errno.ENOMEM,
    22: errno.EINVAL,
    28: errno.ENOSPC,
    75: errno.EOVERFLOW,
    95: errno.ENOTSUP,
    108: errno.ESHUTDOWN,
}


# a read's reply chunk: (offset, its data) or (offset, the length of a hole)
Chunk = tuple[int, bytearray | int]


class NbdReaderError(Exception):
    """The reader could not read (no reply that is an answer): not QEMU's answer."""


class NbdReader:
    """One NBD connection to export `export` on the unix socket `path`, opened on first
    use; requests with a deadline of `timeout` s each.

    `sparse`: the server may answer a hole where the exported node's block status says
    the range reads as zeroes, without reading it. Not for a replication node: QEMU's
    NBD server answers an unallocated range with a hole even where
    replication_co_readv would fail the read (before start, 7.2 to 11.1: the block
    status looks through the filter). Otherwise (NBD_CMD_FLAG_DF) every byte is read
    through the node, as a guest's request is."""

    def __init__(self, path: str, export: str, timeout: float = 10.0, sparse: bool = False) -> None:
        self.path = path
        self.export = export
        self.timeout = timeout
        self.flags = 0 if sparse else CMD_FLAG_DF
        self.size: int | None = None
        self._sock: socket.socket | None = None
        self._handle = 0

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.path)
            head = _recv(s, 18)
            if head[:8] != NBDMAGIC or struct.unpack(">Q", head[8:16])[0] != IHAVEOPT:
                raise NbdReaderError(f"{self.path}: not a newstyle NBD server")
            (hflags,) = struct.unpack(">H", head[16:18])
            if not hflags & FLAG_FIXED_NEWSTYLE:
                raise NbdReaderError(f"{self.path}: no fixed newstyle handshake")
            cflags = FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES)
            s.sendall(struct.pack(">IQII", cflags, IHAVEOPT, OPT_STRUCTURED_REPLY, 0))
            magic, opt, rep, n = struct.unpack(">QIII", _recv(s, 20))
            _recv(s, n)
            if magic != OPTION_REPLY_MAGIC or opt != OPT_STRUCTURED_REPLY or rep != REP_ACK:
                raise NbdReaderError(f"{self.path}: structured replies refused ({rep:#x})")
            name = self.export.encode()
            s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, len(name)) + name)
            info = _recv(s, 10 if hflags & FLAG_NO_ZEROES else 134)
            self.size = struct.unpack(">Q", info[:8])[0]
        except BaseException:
            s.close()
            raise
        return s

    def read(
        self, offset: int, length: int, expect: Data | None, sparse: bool | None = None
    ) -> IoResult:
        """Read [offset, +length): the bytes, compared with `expect` (extents covering
        the range; pattern None: any byte), or the error the server answered. `sparse`:
        this request's (default: the reader's)."""
        if not 0 < length <= MAX_READ:
            raise NbdReaderError(f"read of {length} bytes: not one NBD request")
        try:
            flags = self.flags if sparse is None else (0 if sparse else CMD_FLAG_DF)
            got = self._request(offset, length, flags)
        except (OSError, EOFError) as e:
            self.close()
            raise NbdReaderError(f"{self.path} ({self.export}): {e!r}") from None
        if isinstance(got, int):
            return IoResult(False, os.strerror(got))
        return IoResult(True, None, _observed(offset, length, got, expect))

    def _request(self, offset: int, length: int, flags: int) -> list[Chunk] | int:
        """The read's chunks (offset, data; or offset, hole length), or its errno."""
        s = self._sock
        if s is None:
            s = self._sock = self._connect()
        self._handle += 1
        deadline = time.monotonic() + self.timeout
        s.settimeout(self.timeout)
        s.sendall(
            struct.pack(">IHHQQI", REQUEST_MAGIC, flags, CMD_READ, self._handle, offset, length)
        )
        chunks: list[Chunk] = []
        err = 0
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            (magic,) = struct.unpack(">I", _recv(s, 4))
            if magic == SIMPLE_REPLY_MAGIC:
                e, handle = struct.unpack(">IQ", _recv(s, 12))
                self._check(handle)
                if e:
                    return _NBD_ERRNO.get(e, errno.EINVAL)
                return [(offset, _recv(s, length))]
            if magic != STRUCTURED_REPLY_MAGIC:
                raise EOFError(f"not an NBD reply: magic {magic:#x}")
            flags, kind, handle, n = struct.unpack(">HHQI", _recv(s, 16))
            self._check(handle)
            if kind == REPLY_TYPE_OFFSET_DATA:
                (at,) = struct.unpack(">Q", _recv(s, 8))
                chunks.append((at, _recv(s, n - 8)))
            elif kind == REPLY_TYPE_OFFSET_HOLE:
                at, size = struct.unpack(">QI", _recv(s, 12))
                chunks.append((at, size))
            elif kind in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET):
                payload = _recv(s, n)
                err = err or _NBD_ERRNO.get(struct.unpack(">I", payload[:4])[0], errno.EINVAL)
            elif kind == REPLY_TYPE_NONE:
                _recv(s, n)
            else:
                raise EOFError(f"unexpected reply chunk type {kind}")
            if flags & REPLY_FLAG_DONE:
                return err or chunks

    def _check(self, handle: int) -> None:
        if handle != self._handle:
            raise EOFError(f"a reply to request {handle}, not {self._handle}")

    def close(self) -> None:
        """Disconnect (NBD_CMD_DISC, best effort); the next read connects again."""
        s, self._sock = self._sock, None
        if s is None:
            return
        try:
            s.settimeout(0.5)
            s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        finally:
            s.close()


def _recv(s: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        if k == 0:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        got += k
    return buf


def _observed(offset: int, length: int, chunks: list[Chunk], expect: Data | None) -> Data:
    """What was read, as extents: `expect` where every byte it defines was read (its
    undefined bytes stay undefined), the bytes themselves wherever one differs. A hole
    reads as zeroes; bytes no chunk covered read as what a hole would (the server
    answered DONE without them: not a reply QEMU sends)."""
    got = _extents(offset, length, chunks)
    if expect is None:
        return normalize(_bytes_of(got, offset, offset + length))
    out: list[tuple[int, int, int | None]] = []
    i = 0
    for off, n, pat in expect:
        end = off + n
        if pat is None:
            out.append((off, n, None))
        else:
            while got[i][0][0] + got[i][0][1] <= off:
                i += 1
            j, same = i, True
            while same and j < len(got) and got[j][0][0] < end:
                (o, k, p), buf = got[j]
                a, b = max(o, off), min(o + k, end)
                same = p == pat if buf is None else buf.count(pat, a - o, b - o) == b - a
                j += 1
            if same:
                out.append((off, n, pat))
            else:
                out.extend(_bytes_of(got, off, end))
    return normalize(out)


def _extents(
    offset: int, length: int, chunks: list[Chunk]
) -> list[tuple[tuple[int, int, int | None], bytearray | None]]:
    """The chunks in order as extents: a hole (off, n, 0); data (off, n, None) with its
    bytes. Gaps read as holes."""
    out: list[tuple[tuple[int, int, int | None], bytearray | None]] = []
    pos = offset
    for at, c in sorted(chunks, key=lambda ch: ch[0]):
        if at > pos:
            out.append(((pos, at - pos, 0), None))
        if isinstance(c, int):
            out.append(((at, c, 0), None))
            pos = at + c
        else:
            out.append(((at, len(c), None), c))
            pos = at + len(c)
    if pos < offset + length:
        out.append(((pos, offset + length - pos, 0), None))
    return out


def _bytes_of(
    got: list[tuple[tuple[int, int, int | None], bytearray | None]], start: int, end: int
) -> list[tuple[int, int, int | None]]:
    """The extents actually read over [start, end)."""
    out: list[tuple[int, int, int | None]] = []
    for (o, k, p), buf in got:
        a, b = max(o, start), min(o + k, end)
        if a >= b:
            continue
        if buf is None:
            out.append((a, b - a, p))
        else:
            out.extend(data_from_bytes(a, bytes(buf[a - o : b - o])))
    return out
