"""What an exported test expects, and what QEMU answered: values and their comparison.

Part of the runtime that `qrc export` copies into reproduce.py and the iotest: Python's
standard library only, no import of the harness (the files must run where qrc is not).
A body states each answer with these constructors (`RET`, `ERR`, `DIED`, `IO_OK`,
`DATA`, ...); `matches` says whether QEMU's answer is one of them and `render` how a
line of the test's log shows it ("$TMP"/"$SOCK" placeholders kept, so the log is the
same on every machine).
"""

from __future__ import annotations

import json
import re
from typing import Any

# one extent of guest data: (offset, length, byte pattern or None where undefined)
Extent = tuple[int, int, Any]

# the qtest accelerator's own log lines, which iotests' VM logs with QEMU's stderr
_QTEST = re.compile(r"\[[IRS] \d+\.\d+\] ")
_STATS = re.compile(r"[\d.]+ (?:bytes|[KMGTPE]iB), \d+ ops; .*\(.* ops/sec\)")


def quiet_output(text: str) -> str:
    """qemu-io's text without its timing lines (they differ on every run)."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(ln for ln in lines if not _STATS.fullmatch(ln.strip()))


def fmt_data(extents: Any) -> str:
    parts = []
    for off, n, pat in list(extents)[:8]:
        what = "undefined" if pat is None else f"0x{pat:02x}"
        parts.append(f"[{off:#x}+{n:#x}]={what}")
    if len(extents) > 8:
        parts.append(f"... ({len(extents) - 8} more extents)")
    return " ".join(parts) or "(empty)"


def fmt_ranges(ranges: Any) -> str:
    return " ".join(f"[{s:#x}-{e:#x})" for s, e in ranges) or "(nothing)"


def _anonymous(text: str) -> str:
    """QEMU's texts with its automatic node names (#block123) as #blockN."""
    return re.sub(r"#block\d+", "#blockN", text)


class Answer:
    """What QEMU did: a QMP reply, the text of a qemu-io command, a death, a read."""

    kind = ""

    def render(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class Reply(Answer):
    """A QMP reply: {"return": ...} or {"error": {"class": ..., "desc": ...}}."""

    kind = "reply"

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply

    def render(self) -> str:
        if "error" in self.reply:
            err = self.reply["error"]
            return json.dumps({"error": {"class": err.get("class"), "desc": err.get("desc")}})
        return json.dumps({"return": self.reply.get("return")}, sort_keys=True)


class Gone(Answer):
    """The process died (`signal`: its name, None for an exit; `stderr`: what it said)."""

    kind = "died"

    def __init__(self, signal: str | None, status: int | None, stderr: str) -> None:
        self.signal = signal
        self.status = status
        self.stderr = stderr

    def render(self) -> str:
        how = self.signal or f"exit status {self.status}"
        said = [ln for ln in self.stderr.splitlines() if ln.strip() and not _QTEST.match(ln)]
        tail = said[-3:]
        return f"QEMU died ({how}); its stderr ends: {' | '.join(tail) or '(nothing)'}"


class Hung(Answer):
    kind = "hung"

    def __init__(self, what: str) -> None:
        self.what = what

    def render(self) -> str:
        return f"no answer: {self.what}"


class Io(Answer):
    """A guest request: done (with the data verified, for a read), or its error."""

    kind = "io"

    def __init__(self, ok: bool, errno: str | None = None, data: Any = None, why: str = ""):
        self.ok = ok
        self.errno = errno
        self.data = data
        self.why = why  # a read that did not verify: what was found

    def render(self) -> str:
        if not self.ok:
            return f"error: {self.errno}"
        if self.why:
            return f"ok, but {self.why}"
        return "ok" if self.data is None else f"ok, data {fmt_data(self.data)}"


class Text(Answer):
    """The text a command printed (qemu-io's, without timing lines; HMP's reply)."""

    kind = "text"

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return json.dumps(self.text)


class Ranges(Answer):
    """A layer's allocated ranges (qemu-io map)."""

    kind = "ranges"

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = ranges

    def render(self) -> str:
        return f"allocated {fmt_ranges(self.ranges)}"


class Tool(Answer):
    """A tool's exit status and output (stdout, stderr)."""

    kind = "tool"

    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def render(self) -> str:
        return f"exit {self.status}, stdout {json.dumps(self.out)}, stderr {json.dumps(self.err)}"


# ---- what a body states


class Expect:
    """An answer the test expects; `render` is how the log shows it when it is met."""

    def matches(self, got: Answer) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def render(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def alternatives(self) -> list[Expect]:
        return [self]


class RET(Expect):
    """This return value, exactly."""

    def __init__(self, value: Any = None) -> None:
        self.value = {} if value is None else value

    def matches(self, got: Answer) -> bool:
        return (
            isinstance(got, Reply) and "return" in got.reply and got.reply["return"] == self.value
        )

    def render(self) -> str:
        return Reply({"return": self.value}).render()


class ANY_RETURN(Expect):
    """Any return value (a query the case read for itself; not compared here)."""

    def matches(self, got: Answer) -> bool:
        return isinstance(got, Reply) and "return" in got.reply

    def render(self) -> str:
        return "a return value (not compared)"


class ERR(Expect):
    """This error class and text."""

    def __init__(self, cls: str, desc: str) -> None:
        self.cls, self.desc = cls, desc

    def matches(self, got: Answer) -> bool:
        err = got.reply.get("error") if isinstance(got, Reply) else None
        if not isinstance(err, dict) or err.get("class") != self.cls:
            return False
        return _anonymous(str(err.get("desc"))) == _anonymous(self.desc)

    def render(self) -> str:
        return Reply({"error": {"class": self.cls, "desc": self.desc}}).render()


class DIED(Expect):
    """QEMU dies: by `signal` (None: any death), its stderr containing `stderr`."""

    def __init__(self, signal: str | None, stderr: str = "") -> None:
        self.signal, self.stderr = signal, stderr

    def matches(self, got: Answer) -> bool:
        return (
            isinstance(got, Gone)
            and self.signal in (None, got.signal)
            and self.stderr in got.stderr
        )

    def render(self) -> str:
        said = f", its stderr containing {json.dumps(self.stderr)}" if self.stderr else ""
        return f"QEMU dies ({self.signal or 'any way'}){said}"


class ANSWERS(Expect):
    """Any reply at all: QEMU lives on (where it died when the case failed)."""

    def matches(self, got: Answer) -> bool:
        return isinstance(got, Reply)

    def render(self) -> str:
        return "an answer (QEMU lives on)"


class NOT(Expect):
    """Anything but `answer` (what QEMU answered when the case failed; `why`: the case's
    own assertion, which this file cannot state otherwise)."""

    def __init__(self, answer: Expect, why: str) -> None:
        self.answer, self.why = answer, why

    def matches(self, got: Answer) -> bool:
        return not self.answer.matches(got)

    def render(self) -> str:
        return f"not {self.answer.render()} (the case asserts: {self.why})"


class ONE_OF(Expect):
    """Any of these (QEMU's answer depends on timing)."""

    def __init__(self, *alts: Expect) -> None:
        self.alts = alts

    def matches(self, got: Answer) -> bool:
        return any(a.matches(got) for a in self.alts)

    def render(self) -> str:
        return "one of: " + " | ".join(a.render() for a in self.alts)

    def alternatives(self) -> list[Expect]:
        return [x for a in self.alts for x in a.alternatives()]


class IO(Expect):
    """A request done (`data`: for a read, the extents it must read), or failed with
    `errno` (qemu-io's strerror text)."""

    def __init__(self, ok: bool = True, errno: str | None = None, data: Any = None) -> None:
        self.ok, self.errno = ok, errno
        self.data = None if data is None else tuple(tuple(e) for e in data)

    def matches(self, got: Answer) -> bool:
        if not isinstance(got, Io) or got.ok != self.ok or got.errno != self.errno:
            return False
        return not got.why and (self.data is None or got.data == self.data)

    def render(self) -> str:
        return Io(self.ok, self.errno, self.data).render()


IO_OK = IO()


def IO_ERROR(errno: str) -> IO:
    return IO(False, errno)


def DATA(*extents: Extent) -> IO:
    return IO(True, None, extents)


class OUTPUT(Expect):
    """This text (qemu-io's timing lines aside; HMP's reply)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def matches(self, got: Answer) -> bool:
        return isinstance(got, Text) and quiet_output(got.text) == quiet_output(self.text)

    def render(self) -> str:
        return Text(quiet_output(self.text)).render()


class ALLOCATED(Expect):
    """A layer's own allocation: these [start, end) ranges."""

    def __init__(self, *ranges: tuple[int, int]) -> None:
        self.ranges = [tuple(r) for r in ranges]

    def matches(self, got: Answer) -> bool:
        return isinstance(got, Ranges) and [tuple(r) for r in got.ranges] == self.ranges

    def render(self) -> str:
        return Ranges(self.ranges).render()  # type: ignore[arg-type]


class EXITS(Expect):
    """A tool's exit status and output."""

    def __init__(self, status: int, out: str = "", err: str = "") -> None:
        self.status, self.out, self.err = status, out, err

    def matches(self, got: Answer) -> bool:
        return isinstance(got, Tool) and (got.status, quiet_output(got.out), got.err) == (
            self.status,
            quiet_output(self.out),
            self.err,
        )

    def render(self) -> str:
        return Tool(self.status, quiet_output(self.out), self.err).render()


SETTLED = RET("settled")
