"""How an exported test reads guest data and layers through qemu-io: each extent the model
defines verified with `read -P`, and where one does not read as expected, the bytes
there dumped (`read -v`) to say what QEMU has; qemu-io's `map` parsed.

Part of the runtime `qrc export` copies into reproduce.py and the iotest: Python's
standard library only. A `Command` runs one qemu-io command wherever it goes (HMP
`qemu-io NODE "..."`, an interactive qemu-io) and answers its text (`Text`), or how the
process failed to give it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from harness.export.rt_answers import IO, Answer, Expect, Io, Ranges, Text, quiet_output

Command = Callable[[str], Answer]

_MAP = re.compile(
    r"^.*\((0x[0-9a-f]+)\) bytes\s+(allocated|not allocated) at offset .*\((0x[0-9a-f]+)\)"
)
# a request up to this size with many extents to verify is dumped once instead
DUMP_LIMIT = 1 << 20


def parse_map(out: str) -> list[tuple[int, int]]:
    """qemu-io `map`: the allocated [start, end) ranges, touching ones merged."""
    ranges: list[tuple[int, int]] = []
    for line in out.strip().splitlines():
        m = _MAP.match(line)
        if m is None:
            raise ValueError(f"unexpected map line {line!r}")
        length, offset = int(m[1], 16), int(m[3], 16)
        if m[2] == "allocated":
            if ranges and ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], offset + length)
            else:
                ranges.append((offset, offset + length))
    return ranges


def read_map(run: Command) -> Answer:
    got = run("map")
    if not isinstance(got, Text):
        return got
    try:
        return Ranges(parse_map(got.text))
    except ValueError:
        return got


def io_answer(out: str, verb: str, offset: int, length: int) -> Answer:
    """qemu-io's text for one request: done, its error, or unexpected text."""
    lines = [ln for ln in quiet_output(out).split("\n") if ln]
    if len(lines) == 1 and lines[0].startswith(f"{verb} failed: "):
        return Io(False, lines[0].split(": ", 1)[1])
    done = "wrote" if verb == "write" else verb
    if lines == [f"{done} {length}/{length} bytes at offset {offset}"]:
        return Io(True)
    if verb == "flush" and not lines:
        return Io(True)
    return Text(out)


def io_request(run: Command, command: str) -> Answer:
    """A write, write -z, discard or flush: done, or its error."""
    words = command.split()
    got = run(command)
    if not isinstance(got, Text):
        return got
    if words[0] == "flush":
        return io_answer(got.text, "flush", 0, 0)
    return io_answer(got.text, words[0], int(words[-2], 0), int(words[-1], 0))


def first_difference(buf: bytes, start: int, extents: Any) -> str | None:
    """Where `buf` (read at `start`) differs from the defined extents, None if nowhere."""
    for off, n, pat in extents:
        if pat is None:
            continue
        piece = buf[off - start : off - start + n]
        if piece.count(pat) != n:
            bad = next(i for i, b in enumerate(piece) if b != pat)
            return (
                f"[{off:#x}+{n:#x}] should read 0x{pat:02x}; at {off + bad:#x} it reads "
                f"{piece[bad : bad + 16].hex(' ')}"
            )
    return None


def dump_bytes(run: Command, off: int, n: int) -> bytes | Answer:
    """The bytes of a request (`read -v`), or how it failed."""
    got = run(f"read -v {off} {n}")
    if not isinstance(got, Text):
        return got
    lines = [ln for ln in quiet_output(got.text).split("\n") if ln]
    if len(lines) == 1 and lines[0].startswith("read failed: "):
        return Io(False, lines[0].split(": ", 1)[1])
    rows = [ln.split(":  ", 1)[1][:48].split() for ln in lines[:-1] if ":  " in ln]
    return bytes(int(h, 16) for row in rows for h in row)


def verify_data(run: Command, off: int, n: int, data: Any) -> Answer:
    """One read request, [off, +n), checked against `data`'s defined extents."""
    defined = [e for e in data if e[2] is not None]
    if not defined:
        got = io_request(run, f"read {off} {n}")
        return Io(True, None, data) if isinstance(got, Io) and got.ok else got
    if len(defined) > 16 and n <= DUMP_LIMIT:
        whole = dump_bytes(run, off, n)
        if isinstance(whole, bytes):
            return Io(True, None, data, first_difference(whole, off, defined) or "")
        return whole
    for o, k, pat in defined:
        got = run(f"read -P {pat} -s {o - off} -l {k} {off} {n}")
        if not isinstance(got, Text):
            return got
        failed = f"Pattern verification failed at offset {o}, {k} bytes\n"
        mismatch = got.text.startswith(failed)
        answer = io_answer(got.text[len(failed) :] if mismatch else got.text, "read", off, n)
        if not (isinstance(answer, Io) and answer.ok):
            return answer
        if mismatch:
            window = dump_bytes(run, o, min(k, 256))
            why = f"[{o:#x}+{k:#x}] should read 0x{pat:02x}"
            if isinstance(window, bytes):
                why = first_difference(window, o, [(o, len(window), pat)]) or (
                    why + " (its first 256 bytes do; a difference further in)"
                )
            return Io(True, None, data, why)
    return Io(True, None, data)


def read_data(run: Command, off: int, n: int, expect: Expect) -> Answer:
    """A read checked against each data the expectation allows in turn (reads change
    nothing): the first that verifies, else what differs from the first."""
    wanted = [a.data for a in expect.alternatives() if isinstance(a, IO) and a.data]
    if not wanted:
        return io_request(run, f"read {off} {n}")
    first: Answer | None = None
    for data in wanted:
        got = verify_data(run, off, n, data)
        if not isinstance(got, Io) or not got.ok or not got.why:
            return got
        first = first or got
    assert first is not None
    return first


def verify_layer(run: Command, extents: Any) -> Answer:
    """Each extent a request of its own (a layer's data, offline)."""
    for off, n, pat in extents:
        got = verify_data(run, off, n, [(off, n, pat)])
        if not isinstance(got, Io) or not got.ok:
            return got
        if got.why:
            return Io(True, None, extents, got.why)
    return Io(True, None, extents)


def nbd_answer(got: bytes | str, offset: int, expect: Expect) -> Answer:
    """An NBD read's answer (its bytes, or its error text) against what is allowed."""
    if isinstance(got, str):
        return Io(False, got)
    wanted = [a.data for a in expect.alternatives() if isinstance(a, IO) and a.data]
    whys = [first_difference(got, offset, d) for d in wanted]
    for k, data in enumerate(wanted):
        if whys[k] is None:
            return Io(True, None, data)
    return Io(True, None, wanted[0] if wanted else None, (whys[0] if whys else "") or "")
