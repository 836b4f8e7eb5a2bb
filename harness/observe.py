"""Observation values: what one operation showed, from the model or from real QEMU.

Both sides produce the same types, so a comparison is a plain function of two
values, and a divergence can say exactly which bytes or which text differ.
Guest data is kept as run-length extents of single-byte patterns (that is all
qemu-io's `write -P` can produce), so a 1 TiB read costs what its extents cost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# A byte pattern 0..255, or None where QEMU does not define the content.
Pattern = int | None
# In data read from QEMU only: bytes not dumped, because the divergence report's budget
# was spent (harness.qemu_io). They differ from the pattern the model expected (a read
# verifies every expected byte before anything is dumped); what they are was not read.
NOT_DUMPED = -1
# (offset, length, pattern); a Data value covers its range with no gaps.
Extent = tuple[int, int, Pattern]
Data = tuple[Extent, ...]

EIO = "Input/output error"


def normalize(extents: Iterable[Extent]) -> Data:
    """Merge touching extents with the same pattern; drop empty ones."""
    out: list[Extent] = []
    for off, length, pat in extents:
        if length <= 0:
            continue
        if out:
            poff, plen, ppat = out[-1]
            if ppat == pat and poff + plen == off:
                out[-1] = (poff, plen + length, pat)
                continue
        out.append((off, length, pat))
    return tuple(out)


def data_from_bytes(offset: int, buf: bytes) -> Data:
    """Run-length encode bytes read at `offset`."""
    return tuple(
        (offset + m.start(), m.end() - m.start(), buf[m.start()]) for m in _RUNS.finditer(buf)
    )


_RUNS = re.compile(rb"(.)\1*", re.DOTALL)


def data_span(data: Data) -> tuple[int, int]:
    """(offset, length) covered by `data`."""
    if not data:
        return (0, 0)
    return (data[0][0], data[-1][0] + data[-1][1] - data[0][0])


def fmt_pattern(pat: Pattern) -> str:
    if pat == NOT_DUMPED:
        return "other bytes somewhere in it (not located)"
    return "undefined" if pat is None else f"0x{pat:02x}"


def fmt_data(data: Data, limit: int = 8) -> str:
    parts = [f"[{o:#x}+{n:#x}]={fmt_pattern(p)}" for o, n, p in data[:limit]]
    if len(data) > limit:
        parts.append(f"... ({len(data) - limit} more extents)")
    return " ".join(parts) if parts else "(empty)"


def data_differences(expected: Data, actual: Data, limit: int = 6) -> list[str]:
    """Ranges where `actual` differs from `expected`, the first one first (it starts at the
    first differing byte); undefined expected bytes match anything. Past `limit` ranges the
    rest are counted, not listed."""
    diffs: list[str] = []
    more = more_bytes = 0
    i = j = 0
    while i < len(expected) and j < len(actual):
        eo, el, ep = expected[i]
        ao, al, ap = actual[j]
        lo = max(eo, ao)
        hi = min(eo + el, ao + al)
        if lo < hi and ep is not None and ep != ap:
            if len(diffs) < limit:
                diffs.append(
                    f"[{lo:#x}+{hi - lo:#x}] expected {fmt_pattern(ep)}, QEMU has {fmt_pattern(ap)}"
                )
            else:
                more += 1
                more_bytes += hi - lo
        if eo + el <= ao + al:
            i += 1
        else:
            j += 1
    if more:
        diffs.append(f"... and {more} more differing ranges ({more_bytes} bytes)")
    if data_span(expected) != data_span(actual):
        diffs.append(f"span differs: expected {data_span(expected)}, QEMU {data_span(actual)}")
    return diffs


class Observation:
    """Base of every observation value."""

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class IoResult(Observation):
    """One guest or primary I/O request: success, or the errno text qemu-io printed.

    `data` is set for successful reads only. From real QEMU, a read's data is
    what was verified byte by byte (see qemu_io), never a one-byte sample.
    """

    ok: bool
    errno: str | None = None
    data: Data | None = None

    def describe(self) -> str:
        if not self.ok:
            return f"error: {self.errno}"
        if self.data is not None:
            return f"ok, data {fmt_data(self.data)}"
        return "ok"


IO_OK = IoResult(True)
IO_EIO = IoResult(False, EIO)


def data(*extents: Extent) -> IoResult:
    """A successful read of these (offset, length, pattern) extents: what cases state."""
    return IoResult(True, None, tuple(extents))


@dataclass(frozen=True, slots=True)
class QmpResult(Observation):
    """A QMP command's answer: its return value, or its error class and text."""

    ok: bool
    value: Any = None
    error_class: str | None = None
    desc: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"return {self.value!r}"
        return f"error {self.error_class}: {self.desc!r}"


QMP_OK = QmpResult(True, {})


def qmp_error(desc: str, error_class: str = "GenericError") -> QmpResult:
    return QmpResult(False, None, error_class, desc)


def status(desc: str | None) -> QmpResult:
    """A query-xen-replication-status return value."""
    if desc is None:
        return QmpResult(True, {"error": False})
    return QmpResult(True, {"error": True, "desc": desc})


@dataclass(frozen=True, slots=True)
class Crashed(Observation):
    """QEMU died while handling the operation (abort, assertion, signal)."""

    signal: str | None
    stderr_contains: str = ""

    def describe(self) -> str:
        return f"QEMU died ({self.signal or 'exit'}), stderr contains {self.stderr_contains!r}"


@dataclass(frozen=True, slots=True)
class OneOf(Observation):
    """The model's answer where QEMU's depends on timing: any of these is right."""

    allowed: tuple[Observation, ...]

    def describe(self) -> str:
        return "one of: " + " | ".join(a.describe() for a in self.allowed)


@dataclass(frozen=True, slots=True)
class Difference:
    """Why an observation did not match the expectation, in readable lines."""

    expected: Observation
    actual: Observation
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"model expected: {self.expected.describe()}",
            f"QEMU did:       {self.actual.describe()}",
        ]
        lines += [f"  {d}" for d in self.details]
        return "\n".join(lines)


def compare(expected: Observation, actual: Observation) -> Difference | None:
    """None when `actual` is an allowed outcome of `expected`, else the difference."""
    if isinstance(expected, OneOf):
        for alt in expected.allowed:
            if compare(alt, actual) is None:
                return None
        return Difference(expected, actual, ["no allowed outcome matched"])
    if isinstance(expected, IoResult) and isinstance(actual, IoResult):
        return _compare_io(expected, actual)
    if isinstance(expected, Crashed) and isinstance(actual, Crashed):
        if expected.signal not in (None, actual.signal):
            return Difference(
                expected, actual, [f"signal {actual.signal}, expected {expected.signal}"]
            )
        if expected.stderr_contains not in actual.stderr_contains:
            return Difference(expected, actual, ["stderr lacks the expected text"])
        return None
    if expected == actual:
        return None
    return Difference(expected, actual, [])


def _compare_io(expected: IoResult, actual: IoResult) -> Difference | None:
    if expected.ok != actual.ok or expected.errno != actual.errno:
        return Difference(expected, actual, [])
    if expected.data is None and actual.data is None:
        return None
    if expected.data is None or actual.data is None:
        return Difference(expected, actual, ["one side has data, the other none"])
    diffs = data_differences(expected.data, actual.data)
    return Difference(expected, actual, diffs) if diffs else None


def defined_extents(data: Sequence[Extent]) -> list[Extent]:
    """The extents whose content is defined, for the real side to verify."""
    return [e for e in data if e[2] is not None]


@dataclass(frozen=True, slots=True)
class ColoSideState:
    """One side of a COLO pair after a step: query-colo-status's mode, last-mode and
    reason, whether its VM runs (query-status), its VM's STOP and RESUME events during
    the step, in order, and the reason of the COLO_EXIT event it emitted (None: none;
    its order among the others races COLO's thread, so it stands apart)."""

    machine: str
    mode: str
    last_mode: str
    reason: str
    running: bool
    runs: tuple[str, ...] = ()
    exit: str | None = None

    def describe(self) -> str:
        run = "running" if self.running else "stopped"
        ev = " ".join(self.runs) or "none"
        ex = f", COLO_EXIT {self.exit}" if self.exit is not None else ""
        return (
            f"{self.machine}: mode {self.mode} (last {self.last_mode}, reason {self.reason}),"
            f" VM {run} (events: {ev}){ex}"
        )


@dataclass(frozen=True, slots=True)
class ColoState(Observation):
    """What a COLO step showed on each living side of the pair."""

    sides: tuple[ColoSideState, ...]

    def describe(self) -> str:
        return "COLO: " + "; ".join(s.describe() for s in self.sides)
