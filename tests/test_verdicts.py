"""One error tree (issue 12): QEMU misbehaving is a verdict of harness.verdicts, and a
harness bug is never one.

Without QEMU: which exceptions are in the tree, a verdict's text built from its fields,
and the report plugin's message and divergence read from those fields. With QEMU: an
AssertionError raised inside a real-side operation (tests/data/verdicts/injected.py) is
not a verdict, in a story and in a differential run (where it propagates: no trace, no
`qrc replay` hint); QEMU SIGKILLed mid-case is a crash naming SIGKILL, in a story and in
a differential run; and the same through pytest with the report plugin's JSON records
(tests/data/verdicts/case_verdicts.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from cases.conftest import _maker, machines, profile, secondary, topologies  # noqa: F401  (fixtures)
from harness.differential.results import DifferentialFailure, found
from harness.differential.runner import run_differential
from harness.differential.settings import settings_for
from harness.differential.specs import secondary_specs
from harness.layer_inspector import LayerCheckHung
from harness.machine import MachineAborted, MachineDied, MachineError, MachineHung, QmpCommandFailed
from harness.observe import QMP_OK, Crashed, QmpResult, data, status
from harness.ops import Checkpoint, Read, Start, Status, Write
from harness.poll import DeadlineExceeded
from harness.qemu_io import QemuIoError, UnexpectedOutput
from harness.qemu_io_process import QemuIoDied, QemuIoSpawnFailed, QemuIoTimeout
from harness.report.plugin import _headline
from harness.verdicts import (
    CommitStalled,
    Divergence,
    Evidence,
    LiveLayer,
    ModelDisagrees,
    ModelLayer,
    QemuAborted,
    QemuCrashed,
    QemuHung,
    QemuMisbehaved,
    Step,
)
from tests.data.verdicts.injected import BUG, harness_bug, sigkill_before

ROOT = Path(__file__).resolve().parents[1]
CASES = "tests/data/verdicts/case_verdicts.py"


def _excinfo(exc: BaseException) -> pytest.ExceptionInfo[BaseException]:
    try:
        raise exc
    except BaseException:
        return pytest.ExceptionInfo.from_current()


# ---- the tree (no QEMU)


@pytest.mark.parametrize(
    ("cls", "verdict"),
    [
        (Divergence, "divergence"),
        (QemuCrashed, "crash"),
        (QemuAborted, "abort"),
        (MachineDied, "crash"),
        (MachineAborted, "abort"),
        (QemuIoDied, "crash"),
        (QemuHung, "hang"),
        (CommitStalled, "hang"),
        (MachineHung, "hang"),
        (QemuIoTimeout, "hang"),
        (LayerCheckHung, "hang"),
        (DeadlineExceeded, "hang"),
    ],
)
def test_qemu_misbehaving_is_in_the_tree(cls: type[QemuMisbehaved], verdict: str) -> None:
    assert issubclass(cls, QemuMisbehaved) and issubclass(cls, AssertionError)
    assert cls.verdict == verdict


@pytest.mark.parametrize(
    "cls",
    [
        ModelDisagrees,
        QmpCommandFailed,
        MachineError,
        QemuIoError,
        UnexpectedOutput,
        QemuIoSpawnFailed,
    ],
)
def test_what_is_not_qemus_stays_out(cls: type[BaseException]) -> None:
    """ModelDisagrees (QEMU not asked), what the harness cannot read or drive: plain
    failures."""
    assert issubclass(cls, AssertionError) and not issubclass(cls, QemuMisbehaved)


def _evidence(label: str = "QEMU 7.2.22, profile 7.2") -> Evidence:
    return Evidence(
        label=label,
        steps=(
            Step(Start(primary=False), QMP_OK, QMP_OK),
            Step(Read(0, 4096), data((0, 4096, 0x11)), data((0, 4096, 0x22))),
        ),
        model_layers=(
            ModelLayer("secondary", ((0, 1 << 20, 0),), alloc_exact=False),
            ModelLayer("active", ((0, 4096, 0x11),)),
        ),
        live_layers=(LiveLayer("active", ((0, 0x10000),)), LiveLayer("hidden", unavailable="x")),
        gone=(("primary", "machine 'primary': killed by SIGKILL"),),
    )


def test_a_divergence_text_is_built_from_its_fields() -> None:
    ev = _evidence()
    exp, act = ev.steps[-1].expected, ev.steps[-1].actual
    d = Divergence(exp, act, ["[0x0+0x1000] expected 0x11, QEMU has 0x22"], evidence=ev)
    assert d.expected is exp and d.actual is act and d.evidence is ev
    assert str(d) == "\n".join(
        [
            "QEMU 7.2.22, profile 7.2",
            "model expected: ok, data [0x0+0x1000]=0x11",
            "QEMU did:       ok, data [0x0+0x1000]=0x22",
            "  [0x0+0x1000] expected 0x11, QEMU has 0x22",
            "operations:",
            f"    1. {Start(primary=False).describe()}",
            f" >  2. {Read(0, 4096).describe()}",
            "layer maps (model):",
            "    secondary  (allocation not predicted): [0x0+0x100000]=0x00",
            "    active    : [0x0+0x1000]=0x11",
            "layer allocation (QEMU, live):",
            "    active    : [0x0-0x10000)",
            "    hidden    : unavailable (x)",
            "machine primary:",
            "machine 'primary': killed by SIGKILL",
        ]
    ), str(d)
    layers = Divergence(check="offline layer check failed", details=["  active: a", "  hidden: b"])
    assert layers.headline == "offline layer check failed:\n  active: a\n  hidden: b"


def test_a_crash_names_its_signal() -> None:
    died = Crashed("SIGKILL", "")
    c = QemuCrashed("secondary", "SIGKILL", -9, "", expected=QMP_OK, actual=died)
    assert c.headline.splitlines() == [
        "QEMU secondary died (killed by SIGKILL) where the model does not allow it",
        "model expected: return {}",
        "QEMU did:       QEMU died (SIGKILL), stderr contains ''",
    ]
    tail = "qemu-system-x86_64: ../block.c:2121: bdrv_x: Assertion `x' failed."
    a = QemuAborted("secondary", "SIGABRT", -6, f"some line\n{tail}")
    assert a.assertion == tail
    assert (
        a.headline
        == f"QEMU secondary aborted (killed by SIGABRT: {tail}) where the model does not allow it"
    )


def test_the_plugin_reads_fields_not_text() -> None:
    """The message and divergence come from the verdict's headline, however its story's
    text reads (a label with 'operations:' in it no longer cuts the report short)."""
    ev = _evidence(label="operations:\noperations:")
    d = Divergence(QMP_OK, QmpResult(False, None, "GenericError", "no"), evidence=ev)
    message, divergence = _headline(_excinfo(d))
    want = "model expected: return {} QEMU did: error GenericError: 'no'"
    assert (message, divergence) == (f"Divergence: {want}", want)

    crash = QemuCrashed(
        "secondary", "SIGKILL", -9, expected=QMP_OK, actual=Crashed("SIGKILL"), evidence=ev
    )
    message, divergence = _headline(_excinfo(crash))
    assert message.startswith("QemuCrashed: QEMU secondary died (killed by SIGKILL)")
    assert divergence is not None and "SIGKILL" in divergence

    died = MachineDied(
        "secondary: QEMU died during x (killed by SIGKILL)", "REPORT", -9, "", "secondary"
    )
    assert _headline(_excinfo(died)) == (
        "MachineDied: secondary: QEMU died during x (killed by SIGKILL)",
        None,
    )
    disagrees = ModelDisagrees(status(None), status("x"), ev)
    message, divergence = _headline(_excinfo(disagrees))
    assert message.startswith("ModelDisagrees: the case states return") and divergence
    assert _headline(_excinfo(AssertionError(BUG))) == (f"AssertionError: {BUG}", None)


# ---- with QEMU: a story


@pytest.mark.needs_qemu
def test_a_harness_bug_in_a_story_is_not_a_verdict(secondary, monkeypatch):  # noqa: F811
    harness_bug(monkeypatch, Status)
    s = secondary("secondary-1m")
    s.run(Start(primary=False), Write(0, 4096, 0x11))
    with pytest.raises(AssertionError) as caught:
        s.do(Status())
    assert not isinstance(caught.value, QemuMisbehaved) and str(caught.value) == BUG
    assert _headline(caught) == (f"AssertionError: {BUG}", None)


@pytest.mark.needs_qemu
def test_qemu_killed_in_a_story_is_a_crash(secondary, monkeypatch):  # noqa: F811
    sigkill_before(monkeypatch, Checkpoint)
    s = secondary("secondary-1m")
    s.run(Start(primary=False), Write(0, 4096, 0x11))
    with pytest.raises(QemuCrashed) as caught:
        s.do(Checkpoint())
    crash = caught.value
    assert type(crash) is QemuCrashed and not isinstance(crash, Divergence)
    assert (crash.machine, crash.signal, crash.returncode) == ("secondary", "SIGKILL", -9)
    assert crash.expected == QMP_OK and crash.actual == Crashed("SIGKILL", crash.stderr_tail)
    ev = crash.evidence
    assert ev is not None and ev.steps[-1].op == Checkpoint() and len(ev.steps) == 3
    assert [m for m, _ in ev.gone] == ["secondary"] and not ev.live_layers
    assert {m.name for m in ev.model_layers} == {"secondary", "hidden", "active"}
    report = str(crash).splitlines()
    assert report[1] == "QEMU secondary died (killed by SIGKILL) where the model does not allow it"
    assert report[2] == "model expected: return {}"
    message, divergence = _headline(caught)
    assert message.startswith("QemuCrashed: QEMU secondary died (killed by SIGKILL)")
    assert divergence is not None


# ---- with QEMU: a differential run


def test_a_differential_failure_carries_its_verdict() -> None:
    """What the runner raises to hypothesis for QEMU's misbehaviour: the verdict, where,
    the trace; its text is today's report with the replay hint."""
    cause = QemuCrashed("secondary", "SIGKILL", -9, expected=QMP_OK, actual=Crashed("SIGKILL"))
    f = DifferentialFailure(cause, "operation 3", "secondary/x", 0, Path("/t/trace.json"))
    assert isinstance(f, QemuMisbehaved) and f.cause is cause and f.expected == QMP_OK
    assert f.headline == cause.headline and found(cause) == "CRASH (SIGKILL)"
    assert str(f).splitlines()[-3:] == [
        "failed at: operation 3 (topology secondary/x, seed 0)",
        "trace: /t/trace.json",
        "replay: qrc replay /t/trace.json [--qemu-dir DIR]",
    ]


def _run(qemu_build, profile, tmp_path):  # noqa: F811
    build, found = qemu_build
    return run_differential(
        build,
        found.version,
        profile,
        secondary_specs()[:1],
        tmp_path,
        hyp_settings=settings(settings_for("ci"), max_examples=2, stateful_step_count=6),
        seed=0,
        trace_dir=tmp_path / "traces",
        shrink_seconds=1,
        weights=(("status", 40),),
    )


@pytest.mark.needs_qemu
def test_a_harness_bug_in_a_differential_run_propagates(
    qemu_build,
    profile,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    harness_bug(monkeypatch, Status)
    with pytest.raises(AssertionError) as caught:
        _run(qemu_build, profile, tmp_path)
    assert not isinstance(caught.value, QemuMisbehaved) and str(caught.value) == BUG
    assert not (tmp_path / "traces").exists()  # no trace, so no replay hint


@pytest.mark.needs_qemu
def test_qemu_killed_in_a_differential_run_is_a_crash(
    qemu_build,
    profile,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    sigkill_before(monkeypatch, Status)
    res = _run(qemu_build, profile, tmp_path)
    assert res.failure is not None and res.found == "CRASH (SIGKILL)", res.summary()
    assert res.summary().endswith(")") and ": CRASH (SIGKILL) (first found after" in res.summary()
    assert (
        "QEMU secondary died (killed by SIGKILL) where the model does not allow it" in res.failure
    )
    assert f"replay: qrc replay {res.trace}" in res.failure
    trace = json.loads(Path(str(res.trace)).read_text())
    assert trace["divergence"]["report"].startswith("QemuCrashed: ")
    assert trace["observed"][-1]["crashed"]["signal"] == "SIGKILL"


# ---- through pytest: the report plugin's records


@pytest.mark.needs_qemu
@pytest.mark.timeout(180)
def test_the_report_says_crash_or_plain_failure_never_divergence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-p",
            "no:randomly",
            CASES,
            f"--qrc-json={tmp_path}/report.json",
            f"--qrc-artifacts={tmp_path}/artifacts",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    cases = json.loads((tmp_path / "report.json").read_text())["cases"]
    by = {rec["case"].rsplit("::", 1)[1]: rec for rec in cases}
    assert {rec["outcome"] for rec in cases} == {"failed"} and len(by) == 3, by
    for name in ("test_harness_bug_in_a_story", "test_harness_bug_in_a_differential_run"):
        rec = by[name]
        assert rec["message"] == f"AssertionError: {BUG}", rec
        assert rec["divergence"] is None, rec
    killed = by["test_qemu_killed_in_a_story"]
    assert killed["message"].startswith(
        "QemuCrashed: QEMU secondary died (killed by SIGKILL) where the model does not allow it"
    ), killed
    assert "QEMU died (SIGKILL)" in killed["divergence"]
    assert "qrc replay" not in r.stdout and "DIVERGENCE" not in r.stdout
