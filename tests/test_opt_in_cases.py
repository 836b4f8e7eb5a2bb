"""The colo_vcpu cases (a flaky QEMU hang of their own) stay out of a run unless it asks
for them: `-m` naming the marker, their file named, or QRC_COLO_VCPU=1 (conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli_helpers import ROOT

FILE = "cases/test_colo_vcpu.py"


def _collected(args: list[str], env: dict[str, str]) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q"]
    proc = subprocess.run(
        [*argv, "--collect-only", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


@pytest.mark.parametrize(
    ("args", "env", "runs"),
    [
        (["cases", "-k", "vcpu or capabilities"], {}, False),
        (["cases", "-m", "colo_vcpu"], {}, True),
        (["cases", "-m", "colo_vcpu or quick", "-k", "vcpu or capabilities"], {}, True),
        ([FILE], {}, True),
        ([f"{FILE}::test_checkpoints_with_a_vcpu"], {}, True),
        (["cases", "-k", "vcpu or capabilities"], {"QRC_COLO_VCPU": "1"}, True),
        (["cases", "-k", "vcpu or capabilities"], {"QRC_COLO_VCPU": "0"}, False),
    ],
    ids=["default", "marker", "marker-expr", "file", "node", "env", "env-off"],
)
def test_colo_vcpu_only_when_asked(args: list[str], env: dict[str, str], runs: bool) -> None:
    base = {k: v for k, v in os.environ.items() if k != "QRC_COLO_VCPU"}
    got = _collected(args, {**base, **env})
    vcpu = [ln for ln in got if ln.startswith(FILE)]
    assert bool(vcpu) == runs, got
    if "-k" in args and "colo_vcpu" not in args:
        # the rest of the selection is untouched
        assert any("test_capabilities_the_release_needs" in ln for ln in got), got
