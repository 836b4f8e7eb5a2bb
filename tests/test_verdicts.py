"""One error tree (issue 12): QEMU misbehaving is a verdict of harness.verdicts, and a
harness bug is never one.

Without QEMU: which exceptions are in the tree, a verdict's text built from its fields,
and the report plugin's message and divergence read from those fields. With QEMU: an
AssertionError raised inside a real-side operation of a story
(tests/data/verdicts/injected.py) is not a verdict; QEMU SIGKILLed mid-story is a crash
naming SIGKILL.
"""

from __future__ import annotations

import pytest

from cases.conftest import _maker, machines, profile, secondary, topologies  # noqa: F401  (fixtures)
from harness.layers import LayerCheckHung
from harness.machine import MachineAborted, MachineDied, MachineError, MachineHung, QmpCommandFailed
from harness.nbd_client import QemuIoDied, QemuIoSpawnFailed, QemuIoTimeout
from harness.observe import QMP_OK, Crashed, QmpResult, data, status
from harness.ops import Checkpoint, Read, Start, Status, Write
from harness.poll import DeadlineExceeded
from harness.qemu_io import QemuIoError, UnexpectedOutput
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
