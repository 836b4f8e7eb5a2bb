"""Test-only cases for tests/test_verdicts.py: each fails on purpose, and the report
plugin must say why from the exception's fields (not collected by default: not named
test_*.py; run by path).

- a harness bug inside a real-side operation of a story: a plain failure, no divergence;
- QEMU SIGKILLed in the middle of a story: a crash naming SIGKILL;
- a harness bug inside a real-side operation of a differential run: a plain failure,
  no divergence, no trace and no `qrc replay` hint.
"""

from hypothesis import settings

from cases.conftest import _maker, machines, profile, secondary, topologies  # noqa: F401  (fixtures)
from harness.differential.runner import run_differential
from harness.differential.settings import settings_for
from harness.differential.specs import secondary_specs
from harness.ops import Checkpoint, Start, Status, Write
from tests.data.verdicts.injected import harness_bug, sigkill_before


def test_harness_bug_in_a_story(secondary, monkeypatch):  # noqa: F811
    harness_bug(monkeypatch, Status)
    s = secondary("secondary-1m")
    s.run(Start(primary=False), Write(0, 4096, 0x11))
    s.do(Status())


def test_qemu_killed_in_a_story(secondary, monkeypatch):  # noqa: F811
    sigkill_before(monkeypatch, Checkpoint)
    s = secondary("secondary-1m")
    s.run(Start(primary=False), Write(0, 4096, 0x11))
    s.do(Checkpoint())


def test_harness_bug_in_a_differential_run(qemu_build, profile, tmp_path, monkeypatch):  # noqa: F811
    harness_bug(monkeypatch, Status)
    build, found = qemu_build
    run_differential(
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
