"""What `qrc run`, `qrc matrix` and `qrc bisect` show while pytest runs and when it ends:
the progress display drawn from the report plugin's events, the closing summary read
from the JSON report, and the line of a run a Ctrl-C cut short."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness.builds import QemuBuild
from harness.probe import Probe
from harness.report import records
from harness.words import plural

if TYPE_CHECKING:
    from harness.report.runner import RunResult

PROGRESS_MODES = ("auto", "bar", "lines", "steps", "none")

# --- progress display ---------------------------------------------------------

_SHORT = {
    "passed": "passed",
    "failed": "FAILED",
    "error": "ERROR",
    "skipped": "skipped",
    "xfailed": "xfailed",
    "xpassed": "XPASSED",
}


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class Progress:
    """Draws events: `bar` (one rewritten line, for terminals), `lines` (a line per
    case), `steps` (failures and every tenth of the run: CI logs), or `none`."""

    def __init__(self, out: TextIO, mode: str = "auto") -> None:
        if mode == "auto":
            mode = "bar" if out.isatty() else "steps"
        self.out = out
        self.mode = mode
        self.t0 = time.monotonic()
        self.total: int | None = None
        self.count = 0
        self.outcomes: Counter[str] = Counter()
        self.running: dict[str, float] = {}
        self.next_step = 0.1
        self.bar_shown = False

    def _head(self) -> str:
        if self.total:
            width = len(str(self.total))
            pct = 100 * self.count // self.total
            return f"[{self.count:>{width}}/{self.total} {pct:3d}% {_clock(self._elapsed())}]"
        return f"[{self.count} {_clock(self._elapsed())}]"

    def _elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _tally(self) -> str:
        order = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")
        return " ".join(f"{k} {self.outcomes[k]}" for k in order if self.outcomes[k])

    def _print(self, line: str) -> None:
        self._clear_bar()
        self.out.write(line + "\n")
        self.out.flush()

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.out.write("\r\x1b[K")
            self.bar_shown = False

    def _draw_bar(self) -> None:
        cols = shutil.get_terminal_size((100, 20)).columns
        now = next(reversed(self.running), None) if self.running else None
        text = f"{self._head()} {self._tally()}"
        if now:
            more = f" (+{len(self.running) - 1})" if len(self.running) > 1 else ""
            text += f"  running {now}{more}"
        self.out.write("\r\x1b[K" + text[: cols - 1])
        self.out.flush()
        self.bar_shown = True

    def event(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("e")
        if kind == "total":
            self.total = int(ev["n"])
        elif kind == "start":
            self.running[str(ev["id"])] = time.monotonic()
        elif kind == "done":
            self._done(ev)
        elif kind == "end":
            self._clear_bar()
            return
        if self.mode == "bar":
            self._draw_bar()

    def _done(self, ev: Mapping[str, Any]) -> None:
        nodeid, outcome = str(ev["nodeid"]), str(ev["outcome"])
        self.running.pop(nodeid, None)
        self.count += 1
        self.outcomes[outcome] += 1
        if self.mode == "none":
            return
        dur = f"{float(ev.get('duration') or 0):.2f}s"
        line = f"{self._head()} {_SHORT.get(outcome, outcome):8s}{nodeid} ({dur})"
        if outcome in records.BAD:
            msg = ev.get("message") or ""
            self._print(line + (f"\n      {msg}" if msg else ""))
        elif self.mode == "lines":
            self._print(line)
        elif self.mode == "steps" and self.total and self.count / self.total >= self.next_step:
            while self.count / self.total >= self.next_step:
                self.next_step += 0.1
            latest = next(reversed(self.running), "")
            now = f"  running {latest}" if latest else ""
            self._print(f"{self._head()} {self._tally()}{now}")


def interrupted_text(result: RunResult, total: int | None, kept: bool = True) -> str:
    """The closing line of an interrupted run: how far it got, what the cases that
    finished did, where the partial reports are."""
    cases = result.doc["cases"] if result.doc else []
    done = len(cases)
    far = f"{done} of {plural(total, 'case')}" if total else plural(done, "case")
    counts = Counter(str(r["outcome"]) for r in cases)
    order = ("failed", "error", "passed", "xfailed", "xpassed", "skipped")
    tally = ", ".join(f"{counts[k]} {k}" for k in order if counts[k]) or "none finished"
    if not kept:
        where = "no reports kept (no --report-dir)"
    elif result.doc is None:
        where = f"pytest wrote no report; its output: {_rel(result.log)}"
    else:
        where = f"partial reports in {_rel(result.report_dir)}/"
    return f"interrupted after {far}: {tally}; {where}"


# --- the closing summary --------------------------------------------------------------


def _grouped(recs: Iterable[Mapping[str, Any]]) -> list[tuple[int, str]]:
    counts = Counter(str(r.get("reason") or "(no reason given)") for r in recs)
    return sorted(((n, reason) for reason, n in counts.items()), key=lambda t: (-t[0], t[1]))


def _rel(path: Path | str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def builds_line(builds: Sequence[tuple[QemuBuild, Probe]]) -> str:
    return ", ".join(f"QEMU {p.version} ({b.system})" for b, p in builds)


def environment_line(broken: Sequence[Mapping[str, Any]]) -> str:
    """One line for the results the environment failed: how many, and why (the cause
    most of them name: which directory, how much was free)."""
    why, _ = Counter(str(r["environment"]) for r in broken).most_common(1)[0]
    n = len(broken)
    return f"environment broken, no verdict for {plural(n, 'result')} (not QEMU's doing): {why}"


def summary_text(
    result: RunResult,
    builds: Sequence[tuple[QemuBuild, Probe]],
    title: str = "qrc run",
    profile: str | None = None,
) -> str:
    doc = result.doc or records.document([], result.returncode, result.wall, [])
    cases = doc["cases"]
    s = doc["summary"]
    order = ("failed", "error", "passed", "xfailed", "xpassed", "skipped")
    parts = [f"{s[k]} {k}" for k in order if s[k]]
    lines = [
        f"== {title}: {', '.join(parts) or 'no cases'} in {result.wall:.1f} s "
        f"({plural(len(cases), 'result')}) ==",
        f"QEMU: {builds_line(builds) or 'none'}",
    ]
    if profile is not None:
        lines.append(f"judged by model profile {profile} (--profile), not each build's own")
    broken = records.environment_broken(cases)
    if broken:
        lines.append(environment_line(broken))
    bad = [r for r in cases if r["outcome"] in records.BAD and not r.get("environment")]
    if bad:
        lines.append(f"failed ({len(bad)}):")
        for r in bad:
            lines.append(f"  {r['outcome'].upper():6s} {r['nodeid']}")
            if r.get("message"):
                lines.append(f"         {str(r['message'])[:300]}")
            if r.get("artifacts"):
                lines.append(f"         artifacts: {_rel(r['artifacts'])}")
    for outcome, label in (
        ("xpassed", "unexpected passes"),
        ("xfailed", "expected failures"),
        ("skipped", "skipped"),
    ):
        group = [r for r in cases if r["outcome"] == outcome]
        if group:
            lines.append(f"{label} ({len(group)}), by reason:")
            lines += [f"  {n:4d}  {reason}" for n, reason in _grouped(group)]
    lines.append(
        f"reports: {_rel(result.junit)}, {_rel(result.json)}; pytest's output: {_rel(result.log)}"
    )
    return "\n".join(lines)
