"""Run pytest for `qrc run`, `qrc matrix` and `qrc bisect`, with a progress display.

pytest runs as a child process in the project's root (so the conftests, the
markers and `-o testpaths=cases` apply whatever the caller's directory), with
its whole output kept in REPORT_DIR/pytest.log.  The report plugin in the child
writes one JSON line per event to a pipe; this side draws the progress from
them, and reads the JSON report at the end for the closing summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from harness.builds import QemuBuild
from harness.errors import ReportPathError, RunnerError, UsageError
from harness.probe import Probe
from harness.report import records
from harness.tmp import reclaim
from harness.words import plural

ROOT = Path(__file__).resolve().parent.parent.parent

# Variables of an enclosing pytest-xdist run that must not leak into a fresh run.
_SCRUB = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "PYTEST_CURRENT_TEST",
)

PROGRESS_MODES = ("auto", "bar", "lines", "steps", "none")


def prepare_dir(path: Path, what: str) -> Path:
    """Create `path` and prove it writable; ReportPathError (one line) if not."""
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise ReportPathError(f"{what} {path}: cannot write there: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".qrc-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ReportPathError(f"{what} {path}: cannot write there: {e.strerror}") from None
    return path


def absolutize(args: Sequence[str], cwd: Path) -> list[str]:
    """Paths (and node ids) among pytest arguments made absolute: pytest runs elsewhere."""
    out = []
    for a in args:
        if a.startswith("-") or not a:
            out.append(a)
            continue
        path, sep, rest = a.partition("::")
        cand = cwd / path
        out.append(f"{cand.absolute()}{sep}{rest}" if path and cand.exists() else a)
    return out


@dataclass(frozen=True)
class RunResult:
    returncode: int  # pytest's
    doc: dict[str, Any] | None  # the JSON report, None if pytest wrote none
    wall: float
    report_dir: Path
    log: Path
    junit: Path
    json: Path
    artifacts: Path
    # Ctrl-C (SIGINT) ended the run: the reports hold the cases that finished
    interrupted: bool = False


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


# --- running pytest ---------------------------------------------------------------


def _usage_line(log: Path) -> str:
    """pytest's usage error, from its output: the 'error: ...' line, else the ERROR line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "pytest refused its arguments"
    for ln in lines:
        if ": error: " in ln:
            return ln.split(": error: ", 1)[1].strip()
    for ln in lines:
        if ln.startswith("ERROR: ") and not ln.startswith("ERROR: usage:"):
            return ln[len("ERROR: ") :].strip()
    return next((ln for ln in reversed(lines) if ln.strip()), "pytest refused its arguments")


def run_pytest(
    pytest_args: Sequence[str],
    report_dir: Path,
    progress: Progress,
    *,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """pytest with the report plugin's outputs in `report_dir`; its result and JSON report."""
    report_dir = prepare_dir(report_dir, "report directory")
    junit, jpath = report_dir / "junit.xml", report_dir / "report.json"
    artifacts, log = report_dir / "artifacts", report_dir / "pytest.log"
    shutil.rmtree(artifacts, ignore_errors=True)  # only this run's failures
    for stale in (jpath, junit):
        stale.unlink(missing_ok=True)
    child_env = {k: v for k, v in (os.environ if env is None else env).items() if k not in _SCRUB}
    rfd, wfd = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-o",
        "testpaths=cases",
        "-rA",
        f"--junitxml={junit}",
        f"--qrc-json={jpath}",
        f"--qrc-artifacts={artifacts}",
        f"--qrc-events-fd={wfd}",
        *pytest_args,
    ]
    t0 = time.monotonic()
    proc = _spawn_pytest(argv, log, child_env, rfd, wfd)
    rc, interrupted = _follow(proc, rfd, progress)
    wall = time.monotonic() - t0
    doc = _load_report(jpath)
    if interrupted:
        _prune_junit(junit)
        return RunResult(rc, doc, wall, report_dir, log, junit, jpath, artifacts, True)
    if rc == 4:
        raise UsageError(_usage_line(log))
    if doc is None and rc not in (0, 5):
        raise RunnerError(f"pytest exited with status {rc} without writing its report; see {log}")
    return RunResult(rc, doc, wall, report_dir, log, junit, jpath, artifacts)


def _spawn_pytest(
    argv: list[str], log: Path, env: dict[str, str], rfd: int, wfd: int
) -> subprocess.Popen[bytes]:
    """Start pytest, its output in `log` after its command line, the events pipe's write
    end `wfd` passed to it (and closed here); both ends closed if it cannot start."""
    try:
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            # pytest (its workers, their QEMUs) in a process group of its own: a Ctrl-C
            # reaches it once, from here, whether it came from a terminal or a kill -INT
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(wfd,),
                process_group=0,
            )
    except OSError as e:
        os.close(rfd)
        os.close(wfd)
        raise RunnerError(f"cannot start pytest ({sys.executable}): {e.strerror}") from None
    os.close(wfd)
    return proc


def _follow(proc: subprocess.Popen[bytes], rfd: int, progress: Progress) -> tuple[int, bool]:
    """Hand pytest's events (a JSON object a line on `rfd`) to `progress` until it exits:
    its exit status, and whether a Ctrl-C cut it short."""
    interrupted = False
    try:
        try:
            with os.fdopen(rfd, "r") as events:
                for line in events:
                    try:
                        progress.event(json.loads(line))
                    except (ValueError, KeyError, TypeError):
                        continue
            rc = proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            rc = _interrupt(proc)
    finally:
        # what its dead processes left in TMPDIR (a live one's files are never touched)
        reclaim(proc.pid)
    progress.event({"e": "end"})
    return rc, interrupted


def _load_report(jpath: Path) -> dict[str, Any] | None:
    """The run's JSON report, None if pytest wrote none (or an unreadable one)."""
    if not jpath.exists():
        return None
    try:
        return records.load(jpath)
    except (OSError, ValueError):
        return None


def _prune_junit(path: Path) -> None:
    """Drop the <testcase> elements pytest's JUnit writer leaves for the cases a Ctrl-C
    cut short (no name, no result): the file holds what ran, as the JSON report does."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return
    pruned = 0
    for suite in tree.getroot().iter("testsuite"):
        for case in suite.findall("testcase"):
            if case.get("name") is None:
                suite.remove(case)
                pruned += 1
    if pruned:
        tree.write(path, encoding="utf-8", xml_declaration=True)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(proc: subprocess.Popen[bytes], grace: float = 60) -> int:
    """Pass a Ctrl-C on to pytest's process group and wait for it to write its reports
    (a second Ctrl-C, or `grace` seconds, kills the group); pytest's exit status."""
    _signal_group(proc, signal.SIGINT)
    try:
        return proc.wait(grace)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        _signal_group(proc, signal.SIGKILL)
        return proc.wait()


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
    bad = [r for r in cases if r["outcome"] in records.BAD]
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
