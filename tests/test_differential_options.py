"""The differential runner's environment knobs, and the one private use of hypothesis
it keeps (harness.differential.settings.shrink_budget): these tests fail when a
hypothesis upgrade moves what it sets or stops honouring it (no QEMU needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine
from hypothesis.reporting import report

from harness.differential.settings import CI, NIGHTLY, Options, shrink_budget


def test_defaults() -> None:
    o = Options.from_env({})
    assert o == Options(profile=CI)
    assert o.resolved_seed() == 0


def test_every_knob() -> None:
    o = Options.from_env(
        {
            "QRC_DIFFERENTIAL_PROFILE": NIGHTLY,
            "QRC_DIFFERENTIAL_SEED": "0x10",
            "QRC_DIFFERENTIAL_EXAMPLES": "7",
            "QRC_DIFFERENTIAL_STEPS": "9",
            "QRC_DIFFERENTIAL_SHRINK_SECONDS": "4",
            "QRC_ARTIFACTS": "/tmp/a",
        }
    )
    assert o == Options(NIGHTLY, 16, 7, 9, Path("/tmp/a/differential"), 4)
    assert Options.from_env({"HYPOTHESIS_PROFILE": "qrc-differential-nightly"}).profile == NIGHTLY


@pytest.mark.parametrize(
    ("env", "text"),
    [
        (
            {"QRC_DIFFERENTIAL_PROFILE": "weekly"},
            "QRC_DIFFERENTIAL_PROFILE='weekly': known ci, nightly",
        ),
        (
            {"QRC_DIFFERENTIAL_SHRINK_SECONDS": "soon"},
            "QRC_DIFFERENTIAL_SHRINK_SECONDS='soon' is not an integer",
        ),
    ],
)
def test_bad_values_are_one_line(env: dict[str, str], text: str) -> None:
    with pytest.raises(ValueError) as e:
        Options.from_env(env)
    assert str(e.value) == text


# ---- shrink_budget: hypothesis' engine, reached into on purpose


def test_shrink_budget_sets_the_engines_names_and_puts_them_back() -> None:
    before = engine.MAX_SHRINKING_SECONDS
    assert isinstance(before, int)
    assert getattr(engine, "report") is report  # noqa: B009 (not in its exports)
    with shrink_budget(1):
        assert engine.MAX_SHRINKING_SECONDS == 1
        assert getattr(engine, "report") is not report  # noqa: B009
    assert before == engine.MAX_SHRINKING_SECONDS
    assert getattr(engine, "report") is report  # noqa: B009


def test_shrink_budget_stops_shrinking_in_our_words(capsys: pytest.CaptureFixture[str]) -> None:
    """A failure that takes some 800 tries to shrink, at 50 ms a try (as a QEMU run is
    slow), stops after about a second of shrinking, and says so in our words."""
    calls: list[int] = []

    @settings(database=None, deadline=None, derandomize=True, max_examples=100)
    @given(st.lists(st.integers(0, 10**6), min_size=20, max_size=20))
    def slow(xs: list[int]) -> None:
        calls.append(1)
        time.sleep(0.05)
        assert len(set(xs)) < 20

    with shrink_budget(1), pytest.raises(AssertionError):
        slow()
    out = capsys.readouterr().out
    assert "(shrinking stopped at its budget of 1 s)" in out, out
    assert "five minutes" not in out, out
    assert len(calls) < 100, len(calls)
