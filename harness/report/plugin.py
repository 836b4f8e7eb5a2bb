"""pytest plugin (registered by the root conftest.py): JSON report, artifacts, progress events.

Options (all off unless given; `qrc run` gives them):
  --qrc-json PATH         one record per case and QEMU build (harness.report.records)
  --qrc-artifacts DIR     a directory per failed case (harness.report.artifacts)
  --qrc-events-fd FD      progress events, one JSON object per line, for `qrc run`'s display

Under pytest-xdist the work is split: each worker tags its cases' reports
(QEMU version, markers, failure summary, artifacts path) through
`user_properties`, which xdist ships to the controller with the reports, and
writes artifacts while the failed case's fixtures (its QEMUs) still exist; the
controller alone assembles the records, writes the JSON and emits events.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, TextIO

import pytest

from harness.environment import from_failure
from harness.errors import EnvironmentBroken, ReportPathError
from harness.report import records
from harness.report.runner import prepare_dir

JSON_KEY = pytest.StashKey["Recorder"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qrc-report", "qrc reports")
    group.addoption(
        "--qrc-json", metavar="PATH", default=None, help="write a JSON report (one record per case)"
    )
    group.addoption(
        "--qrc-artifacts",
        metavar="DIR",
        default=None,
        help="write a directory of artifacts (QMP transcripts, trace, layer maps) per failed case",
    )
    group.addoption("--qrc-events-fd", type=int, default=None, help=argparse.SUPPRESS)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _check_writable(directory: Path, option: str) -> None:
    """runner.prepare_dir's check, as pytest's one-line usage error."""
    try:
        prepare_dir(directory, option)
    except ReportPathError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_configure(config: pytest.Config) -> None:
    json_path = config.getoption("qrc_json")
    artifacts = config.getoption("qrc_artifacts")
    events_fd = config.getoption("qrc_events_fd")
    if _is_worker(config):
        return
    if json_path:
        _check_writable(Path(json_path).absolute().parent, "--qrc-json")
    if artifacts:
        _check_writable(Path(artifacts).absolute(), "--qrc-artifacts")
    if json_path or events_fd is not None:
        rec = Recorder(Path(json_path).absolute() if json_path else None, events_fd, config)
        config.stash[JSON_KEY] = rec
        config.pluginmanager.register(rec, "qrc-recorder")


# --- worker side (or the only process, without xdist) -------------------------


def _build_of(item: pytest.Item) -> tuple[str, str] | None:
    """(version, label) of the QEMU build the case is parametrised with."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    param = callspec.params.get("qemu_build")
    if not (isinstance(param, tuple) and len(param) == 2):
        return None
    build, found = param
    return str(getattr(found, "version", "")), str(getattr(build, "label", ""))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    story = sys.modules.get("harness.story")
    if story is not None:
        story.forget_stories()
    build = _build_of(item)
    version, label = build if build else (None, None)
    markers = sorted({m.name for m in item.iter_markers()} - {"parametrize", "usefixtures"})
    item.user_properties += [
        ("case", records.case_key(item.nodeid, version)),
        ("qemu_version", version),
        ("qemu_build", label),
        ("markers", ",".join(markers)),
    ]


def _headline(excinfo: pytest.ExceptionInfo[BaseException] | None) -> tuple[str, str | None]:
    """(message, divergence) for a failure, from the exception's fields.

    QEMU misbehaving (harness.verdicts: a divergence, a crash, a hang) and a story's
    ModelDisagrees: the verdict's headline; when a story found it (it has the story's
    evidence), that is also the divergence (what differed). Anything else, a harness or
    case failure: the exception's first line, and no divergence."""
    if excinfo is None:
        return "", None
    exc = excinfo.value
    name = type(exc).__name__
    verdicts = sys.modules.get("harness.verdicts")
    if verdicts is not None and isinstance(exc, (verdicts.QemuMisbehaved, verdicts.ModelDisagrees)):
        what = exc.one_line()[:500]
        return f"{name}: {what}", what if exc.evidence is not None else None
    lines = str(exc).strip().splitlines()
    return f"{name}: {' '.join(lines[0].split()) if lines else ''}"[:500], None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    xfailed = report.skipped and hasattr(report, "wasxfail")
    if not (report.failed or xfailed) or (call.excinfo is None and xfailed):
        return report
    props: list[tuple[str, object]] = []
    message, divergence = _headline(call.excinfo)
    hang = _hang(item, call.excinfo)
    if hang is not None:
        message, report.longrepr = hang[0], f"{hang[1]}\n\n{report.longreprtext}"
    broken = None if call.excinfo is None else _environment(item, call.excinfo.value)
    if broken is not None:  # a full disk, no file descriptors...: no verdict, even an xfail's
        message, divergence = f"EnvironmentBroken: {broken}", None
        props.append(("environment", str(broken)))
    elif xfailed:
        return report
    if message:
        props.append(("message", message))
    if divergence:
        props.append(("divergence", divergence))
    base = item.config.getoption("qrc_artifacts")
    if base and report.failed:
        props.append(("artifacts", _write_artifacts(item, report, Path(base))))
    item.user_properties += props
    report.user_properties += props
    return report


def _environment(item: pytest.Item, exc: BaseException) -> EnvironmentBroken | None:
    """The environment's failure behind the case's (harness.environment.from_failure),
    asked of the filesystem of the case's directory (tmp_path, if it has one)."""
    if isinstance(exc, (pytest.skip.Exception, pytest.xfail.Exception)):
        return None  # the case's own word: it did not run, or not on
    where = getattr(item, "funcargs", {}).get("tmp_path")
    return from_failure(exc, *([where] if isinstance(where, Path) else []))


_PYTEST_FRAME = re.compile(r"[/\\](?:_pytest|pluggy|pytest_timeout\.py)")


def _hang(
    item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException] | None
) -> tuple[str, str] | None:
    """For a case stopped by the per-case backstop (pytest-timeout's `timeout`, in
    pyproject.toml): its message ("hang: ...") and a report that carries its machines'
    QMP transcripts, stderr and exit states. None for any other failure."""
    if excinfo is None or not excinfo.errisinstance(pytest.fail.Exception):
        return None
    text = str(excinfo.value)
    if not (text.startswith("Timeout (>") and "pytest-timeout" in text):
        return None
    limit = text[len("Timeout (>") :].split("s)", 1)[0]
    where = ""
    ours = [e for e in excinfo.traceback if not _PYTEST_FRAME.search(str(e.path))]
    if ours:  # the frame the alarm interrupted, under pytest's and pytest-timeout's own
        last = ours[-1]
        where = f"; stopped in {last.name} ({Path(str(last.path)).name}:{last.lineno + 1})"
    message = f"hang: no result within the {limit} s per-case backstop{where}"
    lines = [message, "the case's QEMU machines, with their QMP transcripts:"]
    machine = sys.modules.get("harness.machine")
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    sets = [v for v in funcargs.values() if machine and isinstance(v, machine.MachineSet)]
    machines = [m for s in sets for m in s]
    lines += [m.failure_report() for m in machines] or ["  (none)"]
    return message, "\n".join(lines)


def _write_artifacts(item: pytest.Item, report: pytest.TestReport, base: Path) -> str:
    from harness.report.artifacts import write_case_artifacts

    machine = sys.modules.get("harness.machine")
    story = sys.modules.get("harness.story")
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    sets = [v for v in funcargs.values() if machine and isinstance(v, machine.MachineSet)]
    stories = story.stories() if story is not None else []
    try:
        where = write_case_artifacts(
            base.absolute(), item.nodeid, f"[{report.when}]\n{report.longreprtext}", stories, sets
        )
    except OSError as e:
        return f"(not written: {e})"
    return str(where)


# --- controller side ---------------------------------------------------------


class Recorder:
    """Assembles records from phase reports; writes the JSON and the progress events."""

    def __init__(self, json_path: Path | None, events_fd: int | None, config: pytest.Config):
        self.json_path = json_path
        self.config = config
        self.t0 = time.monotonic()
        self.pending: dict[str, dict[str, Any]] = {}
        self.done: list[dict[str, Any]] = []
        self.total: int | None = None
        self.events: TextIO | None = None
        if events_fd is not None:
            try:
                self.events = os.fdopen(events_fd, "w", buffering=1, closefd=True)
            except OSError as e:
                raise pytest.UsageError(f"--qrc-events-fd {events_fd}: {e.strerror}") from None

    def emit(self, **event: Any) -> None:
        if self.events is None:
            return
        try:
            self.events.write(json.dumps(event) + "\n")
        except (OSError, ValueError):  # the reader went away: run on without a display
            self.events = None

    def _set_total(self, n: int) -> None:
        if self.total is None:
            self.total = n
            self.emit(e="total", n=n)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.config.pluginmanager.has_plugin("dsession"):
            self._set_total(len(session.items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self._set_total(len(ids))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            rec = records.collect_error(report)
            self.done.append(rec)
            self.emit(e="done", **rec)

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.emit(e="start", id=nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = self.pending.setdefault(report.nodeid, records.new_record(report.nodeid))
        records.update(rec, report)
        if report.when not in ("setup", "call", "teardown"):
            self._finish(report.nodeid)  # a crashed worker: no logfinish follows

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self._finish(nodeid)

    def _finish(self, nodeid: str) -> None:
        rec = self.pending.pop(nodeid, None)
        if rec is None:
            return
        if rec["outcome"] is None:
            rec["outcome"] = "error"
            rec["message"] = rec["message"] or "the case ended without a result"
        self.done.append(rec)
        self.emit(e="done", **rec)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            # Ctrl-C: the reports hold the cases that finished; one cut short is no result
            self.pending.clear()
        for nodeid in list(self.pending):
            self._finish(nodeid)
        wall = time.monotonic() - self.t0
        if self.json_path is not None:
            doc = records.document(
                self.done, int(exitstatus), wall, list(self.config.invocation_params.args)
            )
            records.write_json(self.json_path, doc)
        self.emit(e="end", exitstatus=int(exitstatus), duration=round(wall, 3))
        if self.events is not None:
            self.events.close()
            self.events = None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.json_path is not None:
            terminalreporter.write_line(f"qrc JSON report: {self.json_path}")
