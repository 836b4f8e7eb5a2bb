"""qemu-io commands and strict parsing of their output, over any transport.

Guest I/O is observed through qemu-io, whose output is text meant for people.
A conformance verdict can only be as exact as that parsing, so it is strict:
a result needs the positive line that matches the request (or the one error
line), and anything else raises UnexpectedOutput quoting the whole text, so no
output is lost or attributed to the wrong request.

Reads are byte-exact. qemu-io's `-P` checks one pattern over a range and its
failure message does not say which byte differs, so a read verifies each
defined extent of the expected data with `read -P PAT -s REL -l LEN OFF TOTAL`
(same request, one sub-range checked) and only when one fails (or nothing is
expected) dumps the request with `read -v` and parses the hex dump.

A divergence report costs seconds whatever its size. A mismatching request up to
DUMP_LIMIT is dumped whole; a bigger one is located with bounded work: a galloping
search of `read -P` probes (each reading only the bytes it checks) finds the first
byte that differs, a short dump shows what is there, and a second search finds where
that run ends. A Budget caps how many differing ranges are located this way; past it,
each failing extent is checked in at most a few chunks, and what differs there is
reported as NOT_DUMPED (counted, never dumped). The probes are requests of their own,
made after the whole request was seen to differ (a read changes nothing in the filter).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.environment import check_answer
from harness.observe import IO_OK, NOT_DUMPED, Data, Extent, IoResult, data_from_bytes, normalize

if TYPE_CHECKING:
    from harness.machine import Machine

# Requests up to this size are dumped whole (`read -v` prints 16 bytes per line, about
# 75 bytes of text per 16 bytes of data); larger mismatches are located (Budget).
DUMP_LIMIT = 1 << 20
# Where a located difference starts, this many bytes are dumped to see what is there.
DUMP_WINDOW = 256
# The galloping search's first probe; each next one checks four times as much.
PROBE_FIRST = 4096
# Differing ranges located byte-exactly per Budget (a dump of a small request is one).
LOCATE_RANGES = 4
# Past the located ranges: chunk probes per Budget, each telling whether a chunk differs
# (at most CHUNKS_PER_EXTENT per failing extent); past those, a failing extent is
# reported NOT_DUMPED whole.
COUNT_PROBES = 64
CHUNKS_PER_EXTENT = 16
# More defined extents than this (in a request that fits DUMP_LIMIT): dump at once.
MAX_VERIFY_EXTENTS = 16
# qemu-io refuses longer requests without -n.
MAX_REQUEST = 2147483136

_STATS = re.compile(r"[\d.]+ (?:bytes|[KMGTPE]iB), 1 ops; .* \(.* ops/sec\)")
_DUMP = re.compile(r"([0-9a-f]{8,}):  ((?:[0-9a-f]{2} ){1,16}) [0-9A-Za-z.]{1,16}")
_NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")


class QemuIoError(AssertionError):
    """qemu-io did something the harness cannot interpret; a test failure, not a result.

    Not in harness.verdicts' tree (the harness cannot read it, which says nothing about
    the filter); its kinds that are QEMU's are (harness.qemu_io_process's QemuIoDied and
    QemuIoTimeout)."""

    def __init__(self, message: str, command: str, output: str) -> None:
        # not super(): in QemuIoDied's and QemuIoTimeout's MRO the next class is a verdict
        AssertionError.__init__(self, f"{message}\ncommand: {command}\noutput:\n{_quote(output)}")
        self.summary = message
        self.command = command
        self.output = output

    @property
    def headline(self) -> str:
        return self.summary


class UnexpectedOutput(QemuIoError):
    """The output lacks the line that says how the request ended, or has extra text."""


def _quote(output: str) -> str:
    if not output:
        return "  (no output)"
    return "\n".join(f"  | {ln!r}" for ln in output.split("\n"))


def _lines(output: str) -> list[str]:
    """Output lines without line ends (a pty adds \\r)."""
    text = output.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_request(offset: int, length: int) -> None:
    if offset < 0 or length < 0 or length > MAX_REQUEST:
        raise ValueError(f"bad qemu-io request: offset {offset}, length {length}")


def check_node_name(node: str) -> str:
    """QEMU node names are [A-Za-z][A-Za-z0-9_.-]*; anything else could break quoting."""
    if not _NODE_NAME.fullmatch(node):
        raise ValueError(f"not a QEMU node name: {node!r}")
    return node


def parse_dump(lines: list[str], offset: int, length: int) -> bytes:
    """The bytes of a `read -v offset length` hex dump, every line checked."""
    if len(lines) != (length + 15) // 16:
        raise ValueError(f"{len(lines)} dump lines for {length} bytes")
    chunks = []
    for i, line in enumerate(lines):
        m = _DUMP.fullmatch(line)
        want = min(16, length - 16 * i)
        if not m or int(m[1], 16) != offset + 16 * i:
            raise ValueError(f"bad dump line {i}: {line!r}")
        chunk = bytes.fromhex(m[2])
        if len(chunk) != want:
            raise ValueError(f"dump line {i} has {len(chunk)} bytes, expected {want}")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Budget:
    """What one divergence report may spend: byte-exactly located ranges, chunk probes.

    One read's by default; the offline layer check shares one across a layer's extents."""

    ranges: int = LOCATE_RANGES
    probes: int = COUNT_PROBES


class QemuIoSession(ABC):
    """The qemu-io commands the harness uses, independent of how they reach qemu-io."""

    @abstractmethod
    def _run(self, command: str) -> str:
        """Run one qemu-io command; exactly the text it printed."""

    def _where(self) -> str:
        """Which qemu-io this is, for error messages."""
        return type(self).__name__

    def _dirs(self) -> tuple[Path, ...]:
        """The directories of the images this qemu-io serves, when it knows them."""
        return ()

    def _error_line(self, lines: list[str], verb: str) -> IoResult | None:
        """`<verb> failed: <strerror>` as the only line: the request's error, unless it
        is the environment's (harness.environment: EnvironmentBroken)."""
        err = _error_line(lines, verb)
        if err is not None and err.errno is not None:
            check_answer(err.errno, *self._dirs())
        return err

    # ---- requests

    def write(self, offset: int, length: int, pattern: int) -> IoResult:
        _check_request(offset, length)
        if not 0 <= pattern <= 255:
            raise ValueError(f"pattern {pattern} is not a byte")
        cmd = f"write -P {pattern} {offset} {length}"
        return self._simple(cmd, "wrote", "write", offset, length)

    def write_zeroes(self, offset: int, length: int) -> IoResult:
        _check_request(offset, length)
        return self._simple(f"write -z {offset} {length}", "wrote", "write", offset, length)

    def discard(self, offset: int, length: int) -> IoResult:
        _check_request(offset, length)
        return self._simple(f"discard {offset} {length}", "discard", "discard", offset, length)

    def flush(self) -> IoResult:
        """qemu-io's flush prints nothing, even when the flush fails (both 7.2 and 10.0)."""
        out = self._run("flush")
        if _lines(out):
            raise self._unexpected("flush printed text", "flush", out)
        return IO_OK

    def read(
        self, offset: int, length: int, expect: Data | None = None, budget: Budget | None = None
    ) -> IoResult:
        """Read and report the bytes byte-exactly; `expect` (if given) makes it cheap.

        A mismatch (or no expectation) in a request bigger than DUMP_LIMIT is located
        within `budget` (default: a fresh Budget), so its report may hold NOT_DUMPED."""
        _check_request(offset, length)
        budget = Budget() if budget is None else budget
        if expect is None:
            if length <= DUMP_LIMIT:
                return self._dump_all(offset, length)
            return self._locate(offset, length, ((offset, length, None),), [], budget)
        _check_cover(expect, offset, length)
        defined = [(o - offset, n, p) for o, n, p in expect if p is not None]
        if not defined:
            return self._plain_read(offset, length, expect)
        if len(defined) > MAX_VERIFY_EXTENTS and length <= DUMP_LIMIT:
            return self._dump_all(offset, length)
        failed: list[tuple[int, int, int]] = []
        for rel, n, pat in defined:
            ok = self._verify(offset, length, pat, rel, n)
            if isinstance(ok, IoResult):
                return ok
            if not ok:
                failed.append((rel, n, pat))
        if not failed:
            return IoResult(True, None, normalize(expect))
        if length <= DUMP_LIMIT and budget.ranges > 0:
            budget.ranges -= 1
            return self._dump_all(offset, length)
        return self._locate(offset, length, expect, failed, budget)

    # ---- reads, the parts

    def _plain_read(self, offset: int, length: int, expect: Data) -> IoResult:
        res = self._simple(f"read {offset} {length}", "read", "read", offset, length)
        return IoResult(True, None, normalize(expect)) if res.ok else res

    def _verify(self, offset: int, length: int, pat: int, rel: int, n: int) -> bool | IoResult:
        """Does [rel, rel+n) of the request read `pat`? An IoResult if the read failed."""
        cmd = f"read -P {pat} -s {rel} -l {n} {offset} {length}"
        out = self._run(cmd)
        lines = _lines(out)
        err = self._error_line(lines, "read")
        if err is not None:
            return err
        verified = True
        if lines and lines[0] == f"Pattern verification failed at offset {offset + rel}, {n} bytes":
            verified = False
            lines = lines[1:]
        if not _positive(lines, "read", offset, length):
            raise self._unexpected("no read result line matching the request", cmd, out)
        return verified

    def _dump(self, offset: int, length: int) -> bytes | IoResult:
        cmd = f"read -v {offset} {length}"
        out = self._run(cmd)
        lines = _lines(out)
        err = self._error_line(lines, "read")
        if err is not None:
            return err
        if len(lines) < 2 or not _positive(lines[-2:], "read", offset, length):
            raise self._unexpected("no read result line matching the request", cmd, out)
        try:
            return parse_dump(lines[:-2], offset, length)
        except ValueError as e:
            raise self._unexpected(f"malformed hex dump: {e}", cmd, out) from None

    def _dump_all(self, offset: int, length: int) -> IoResult:
        """The whole request's bytes (in DUMP_LIMIT pieces if it is bigger)."""
        parts: list[bytes] = []
        for off in range(offset, offset + length, DUMP_LIMIT) if length else [offset]:
            got = self._dump(off, min(DUMP_LIMIT, offset + length - off))
            if isinstance(got, IoResult):
                return got
            parts.append(got)
        return IoResult(True, None, data_from_bytes(offset, b"".join(parts)))

    def _locate(
        self,
        offset: int,
        length: int,
        expect: Data,
        failed: list[tuple[int, int, int]],
        budget: Budget,
    ) -> IoResult:
        """`expect`, with each failing extent (`failed`: offsets relative to the request;
        with `expect` all undefined and no `failed`, the whole request) replaced by what
        the bounded search finds there."""
        todo = [(offset + rel, n, pat) for rel, n, pat in failed]
        if not failed:
            todo = [(o, n, -1) for o, n, _ in expect]  # nothing expected: describe it all
        found: dict[int, list[Extent]] = {}
        for lo, n, pat in todo:
            got = self._locate_extent(lo, lo + n, pat, budget)
            if isinstance(got, IoResult):
                return got
            found[lo] = got
        out: list[Extent] = []
        for o, n, p in expect:
            if not failed:
                out.extend(found[o])
                continue
            # a failing extent is one of `expect`'s own extents, whole
            out.extend(found.get(o, [(o, n, p)]))
        return IoResult(True, None, normalize(out))

    def _locate_extent(self, lo: int, hi: int, pat: int, budget: Budget) -> list[Extent] | IoResult:
        """[lo, hi), which was seen not to read `pat` (-1: no pattern was expected), as
        extents: located runs while `budget.ranges` lasts, then chunks checked with at most
        CHUNKS_PER_EXTENT probes (NOT_DUMPED where they differ)."""
        out: list[Extent] = []
        pos = lo
        while pos < hi:
            if pat >= 0:
                same = self._run_length(pos, hi, pat)
                if isinstance(same, IoResult):
                    return same
                out.append((pos, same, pat))
                pos += same
                if pos >= hi:
                    break
            if budget.ranges <= 0:
                return out + self._chunks(pos, hi, pat, budget)
            budget.ranges -= 1
            window = self._dump(pos, min(DUMP_WINDOW, hi - pos))
            if isinstance(window, IoResult):
                return window
            if window.count(window[0]) == len(window):
                # one byte value: how far its run goes
                run = self._run_length(pos, hi, window[0])
                if isinstance(run, IoResult):
                    return run
                run = max(run, 1)  # (it was there a moment ago)
                out.append((pos, run, window[0]))
                pos += run
            else:
                out.extend(data_from_bytes(pos, window))
                pos += len(window)
        if pat >= 0 and all(p == pat for _, _, p in out):
            # it differed a moment ago and reads right now: say so, never "equal"
            return [(lo, hi - lo, NOT_DUMPED)]
        return out

    def _chunks(self, lo: int, hi: int, pat: int, budget: Budget) -> list[Extent]:
        """[lo, hi) in at most CHUNKS_PER_EXTENT chunks (budget allowing), each `pat` or
        NOT_DUMPED; with no pattern or no probes left, NOT_DUMPED whole."""
        n = min(CHUNKS_PER_EXTENT, budget.probes)
        if pat < 0 or n <= 1:
            return [(lo, hi - lo, NOT_DUMPED)]
        size = max(512, -(-(hi - lo) // n + 511) & ~511)
        out: list[Extent] = []
        for start in range(lo, hi, size):
            m = min(size, hi - start)
            budget.probes -= 1
            ok = self._verify(start, m, pat, 0, m)
            if isinstance(ok, IoResult):
                return [(lo, hi - lo, NOT_DUMPED)]  # the chunk's read failed: not located
            out.append((start, m, pat if ok else NOT_DUMPED))
        if all(p == pat for _, _, p in out):
            return [(lo, hi - lo, NOT_DUMPED)]  # differed a moment ago: never "equal"
        return out

    def _run_length(self, lo: int, hi: int, pat: int) -> int | IoResult:
        """How many bytes from `lo` (up to `hi`) read `pat`: a galloping search of
        `read -P` probes, each reading only the bytes it checks (at most about 2x the
        run's length in all, and 2 log2 of it probes)."""
        good = 0  # [lo, lo + good) reads pat
        step = PROBE_FIRST
        bad = hi - lo + 1  # lo + bad - 1 is a byte known to differ, or hi
        while good < hi - lo:
            m = min(step, hi - lo - good)
            ok = self._verify(lo + good, m, pat, 0, m)
            if isinstance(ok, IoResult):
                return ok
            if not ok:
                bad = good + m
                break
            good += m
            step *= 4
        else:
            return good
        # the first differing byte is in [lo + good, lo + bad)
        while bad - good > 1:
            mid = (good + bad) // 2
            ok = self._verify(lo + good, mid - good, pat, 0, mid - good)
            if isinstance(ok, IoResult):
                return ok
            if ok:
                good = mid
            else:
                bad = mid
        return good

    def _simple(self, cmd: str, ok_verb: str, err_verb: str, offset: int, length: int) -> IoResult:
        out = self._run(cmd)
        lines = _lines(out)
        err = self._error_line(lines, err_verb)
        if err is not None:
            return err
        if _positive(lines, ok_verb, offset, length):
            return IO_OK
        raise self._unexpected(f"no '{ok_verb}' line matching the request", cmd, out)

    def _unexpected(self, what: str, cmd: str, out: str) -> UnexpectedOutput:
        return UnexpectedOutput(f"{self._where()}: {what}", cmd, out)


def _error_line(lines: list[str], verb: str) -> IoResult | None:
    """`<verb> failed: <strerror>` as the only line: the request's error."""
    prefix = f"{verb} failed: "
    if len(lines) == 1 and lines[0].startswith(prefix) and len(lines[0]) > len(prefix):
        return IoResult(False, lines[0][len(prefix) :])
    return None


def _positive(lines: list[str], verb: str, offset: int, length: int) -> bool:
    """Exactly `<verb> L/L bytes at offset O` and the statistics line."""
    return (
        len(lines) == 2
        and lines[0] == f"{verb} {length}/{length} bytes at offset {offset}"
        and _STATS.fullmatch(lines[1]) is not None
    )


def _check_cover(expect: Data, offset: int, length: int) -> None:
    pos = offset
    for o, n, _ in expect:
        if o != pos or n <= 0:
            raise ValueError(f"expected data must cover [{offset}, +{length}) without gaps")
        pos += n
    if pos != offset + length:
        raise ValueError(f"expected data must cover [{offset}, +{length}) exactly")


def _hmp_quote(text: str) -> str:
    """A double-quoted HMP string argument."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class GuestIO(QemuIoSession):
    """Guest I/O on a node through HMP `qemu-io`, whose text goes to QEMU's stdout.

    The QMP reply is empty and the text is complete when it arrives; if a result
    line is missing the parser fails loudly rather than guess.
    """

    def __init__(self, machine: Machine, node: str, timeout: float | None = None) -> None:
        self.machine = machine
        self.node = check_node_name(node)
        self.timeout = timeout

    def _where(self) -> str:
        return f"HMP qemu-io on node {self.node!r} of machine {self.machine.name!r}"

    def _dirs(self) -> tuple[Path, ...]:
        return (self.machine.logdir,)

    def _run(self, command: str) -> str:
        mark = self.machine.stdout_mark()
        reply = self.machine.hmp(f"qemu-io {self.node} {_hmp_quote(command)}", self.timeout)
        out = self.machine.stdout_since(mark)
        if reply:
            raise UnexpectedOutput(f"{self._where()}: HMP answered {reply.strip()!r}", command, out)
        return out
