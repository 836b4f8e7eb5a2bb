"""The export's recorder: a pytest plugin (`-p harness.export.recorder`, loaded by `qrc
export` only) that writes down, in the order it happened, every interaction of one case
with QEMU, and per story step what the model expected.

It wraps the harness's own entry points (harness.export.hooks installs the wrappers):
each QMP exchange of a Machine (HMP's stdout text with it), each launch, signal and
quit; each qemu-io session's command; each NBD read of the harness's own; the images a
recipe built; the tools a case ran itself. Around them it keeps a context: a story
step (Story._real, Story.check_view, harness.pair.act: the events of the step are its
operation, and the step's record carries the model's answer), a set-up (Story.open,
open_live, add_late), a live layer check, a story's finish, or nothing (the case's own
calls). What the harness does only to report (evidence, artifacts) and its offline
inspector's commands are not recorded.

The recording (JSON, at QRC_EXPORT_RECORDING) is read by harness.export.plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV = "QRC_EXPORT_RECORDING"


class Recording:
    """Events in order, the context stack, and names for the objects they involve."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any] | None] = []  # None: not recorded (reporting)
        self.names: dict[int, str] = {}
        self.keep: list[object] = []  # what the names point at stays alive (no id reuse)
        self.on = False
        self.threads: set[str] = set()
        self.case: dict[str, Any] = {}

    def name(self, obj: object, prefix: str) -> str:
        key = id(obj)
        if key not in self.names:
            self.keep.append(obj)
            self.names[key] = (
                f"{prefix}{sum(v.startswith(prefix) for v in self.names.values()) + 1}"
            )
        return self.names[key]

    @property
    def quiet(self) -> bool:
        return not self.on or any(c is None for c in self.stack)

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Record `event` (unless reporting), tagged with the innermost context."""
        if self.quiet:
            return event
        if threading.current_thread() is not threading.main_thread():
            self.threads.add(threading.current_thread().name)
        ctx = self.stack[-1] if self.stack else None
        if ctx is not None:
            event["ctx"] = ctx
        self.events.append(event)
        return event

    @contextlib.contextmanager
    def context(self, ctx: dict[str, Any] | None) -> Iterator[None]:
        self.stack.append(ctx)
        try:
            yield
        finally:
            self.stack.pop()


REC = Recording()


# ---- observations as JSON


def observation(obs: Any) -> dict[str, Any]:
    from harness.observe import ColoState, Crashed, IoResult, OneOf, QmpResult

    if isinstance(obs, QmpResult):
        return {
            "t": "qmp",
            "ok": obs.ok,
            "value": obs.value,
            "class": obs.error_class,
            "desc": obs.desc,
        }
    if isinstance(obs, IoResult):
        data = None if obs.data is None else [list(e) for e in obs.data]
        return {"t": "io", "ok": obs.ok, "errno": obs.errno, "data": data}
    if isinstance(obs, Crashed):
        return {"t": "crashed", "signal": obs.signal, "stderr": obs.stderr_contains}
    if isinstance(obs, OneOf):
        return {"t": "oneof", "alts": [observation(a) for a in obs.allowed]}
    if isinstance(obs, ColoState):
        return {"t": "colo", "describe": obs.describe()}
    return {"t": "other", "describe": str(obs)}


def plain(v: Any) -> Any:
    """A value as JSON can hold it (what an assertion compared)."""
    from harness.observe import Observation

    if isinstance(v, Observation):
        return observation(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    return repr(v)


# ---- pytest hooks


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(ENV):
        from harness.export import hooks

        hooks.install(REC)


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(ENV):
        from harness.export import hooks

        hooks.rebind(REC)  # case modules imported their names of wrapped functions
        REC.case["selected"] = [i.nodeid for i in session.items]
        builds = getattr(session.config, "_qrc_builds", None) or []
        if builds:
            REC.case["build"] = _build(*builds[0])


def _build(build: Any, probe: Any) -> dict[str, Any]:
    return {
        "version": str(getattr(probe, "version", "")),
        "paths": [str(p) for p in build.binaries().values()],
        "launcher": list(build.launcher),
        "data_dir": build.data_dir,
        "module_dir": build.module_dir,
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    REC.on = True
    REC.case.update(
        nodeid=item.nodeid,
        markers=sorted({m.name for m in item.iter_markers()}),
        doc=(getattr(item, "obj", None).__doc__ or "") if hasattr(item, "obj") else "",
    )
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "setup":
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        tmp = funcargs.get("tmp_path")
        REC.case["tmp_path"] = str(tmp) if isinstance(tmp, Path) else None
        profile = funcargs.get("profile")
        REC.case["profile"] = getattr(profile, "name", None)
    if call.when == "setup" and report.outcome == "passed":
        return report
    if call.when in ("setup", "call"):
        exc = call.excinfo.value if call.excinfo is not None else None
        REC.events.append(_call_end(report, exc))
        REC.on = False
    return report


def _call_end(report: pytest.TestReport, exc: BaseException | None) -> dict[str, Any]:
    from harness.machine import MachineDied
    from harness.verdicts import ModelDisagrees, QemuMisbehaved

    kind = None
    if exc is not None:
        if isinstance(exc, ModelDisagrees):
            kind = "model-disagrees"
        elif isinstance(exc, MachineDied):
            kind = "died"
        elif isinstance(exc, QemuMisbehaved):
            kind = "verdict"
        elif isinstance(exc, AssertionError):
            kind = "assertion"
        elif isinstance(exc, (pytest.skip.Exception, pytest.xfail.Exception)):
            kind = "skip"
        else:
            kind = "error"
    text = "" if exc is None else str(exc).strip()
    return {
        "e": "call-end",
        "when": report.when,
        "outcome": report.outcome,
        "xfail": getattr(report, "wasxfail", None),
        "skip": report.longrepr[2]
        if report.skipped and isinstance(report.longrepr, tuple)
        else None,
        "kind": kind,
        "exc": None if exc is None else type(exc).__name__,
        "message": "\n".join(text.splitlines()[:6])[:2000],
        "compare": REC.case.pop("compare", None),
    }


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> None:
    """A failed `assert left == right` of the case: what it wanted (`right`)."""
    if REC.on and op == "==":
        REC.case["compare"] = {"left": plain(left), "right": plain(right)}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    doc = {
        "case": REC.case,
        "events": REC.events,
        "threads": sorted(REC.threads),
        "tmpdir": os.environ.get("TMPDIR"),
    }
    Path(path).write_text(json.dumps(doc, indent=1, default=repr))
