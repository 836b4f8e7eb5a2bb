"""The differential runner's environment knobs (no QEMU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.differential.machine import CI, NIGHTLY, Options


def test_defaults() -> None:
    o = Options.from_env({})
    assert o == Options(profile=CI)
    assert o.resolved_seed() == 0


def test_every_knob() -> None:
    o = Options.from_env({
        "QRC_DIFFERENTIAL_PROFILE": NIGHTLY,
        "QRC_DIFFERENTIAL_SEED": "0x10",
        "QRC_DIFFERENTIAL_EXAMPLES": "7",
        "QRC_DIFFERENTIAL_STEPS": "9",
        "QRC_DIFFERENTIAL_SHRINK_SECONDS": "4",
        "QRC_ARTIFACTS": "/tmp/a",
    })
    assert o == Options(NIGHTLY, 16, 7, 9, Path("/tmp/a/differential"), 4)
    assert Options.from_env({"HYPOTHESIS_PROFILE": "qrc-differential-nightly"}).profile == NIGHTLY


@pytest.mark.parametrize(("env", "text"), [
    ({"QRC_DIFFERENTIAL_PROFILE": "weekly"},
     "QRC_DIFFERENTIAL_PROFILE='weekly': known ci, nightly"),
    ({"QRC_DIFFERENTIAL_SHRINK_SECONDS": "soon"},
     "QRC_DIFFERENTIAL_SHRINK_SECONDS='soon' is not an integer"),
])
def test_bad_values_are_one_line(env: dict[str, str], text: str) -> None:
    with pytest.raises(ValueError) as e:
        Options.from_env(env)
    assert str(e.value) == text
