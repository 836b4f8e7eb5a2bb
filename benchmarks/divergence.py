"""How long a 256 MiB divergence takes to report (issue 15), as JSON.

The wrong model of tests/test_divergence_report.py (guest writes of 256 MiB store the
next pattern) against real QEMU: the seconds from the operation that diverges to the
Divergence in hand, for a live whole-disk read (HMP qemu-io) and for the offline layer
check (the layer inspector's qemu-io; QEMU's quit included), each the best of --rounds,
with the qemu-io commands it ran; beside each, the same operation with the correct
model (it passes), and the difference: what the report itself costs. Most of a
diverging live read is its ordinary verification (each expected extent is checked in a
whole-request read of 512 MiB). Before the locator the offline report of a 128 MiB
divergence took minutes. Target: under 5 s each.
Figures depend on the machine and its load; say so when quoting them.
Run: .venv/bin/python benchmarks/divergence.py [--qemu-dir DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from harness import qemu_io  # noqa: E402
from harness.builds import find_build  # noqa: E402
from harness.machine import MachineSet  # noqa: E402
from harness.ops import Read  # noqa: E402
from harness.probe import probe  # noqa: E402
from harness.story import Story  # noqa: E402
from tests.test_divergence_report import (  # noqa: E402
    FIRST_RANGE,
    MiB,
    live_report,
    offline_report,
    secondary_story,
    wrong_model,
)


def _live(s: Story, wrong: bool) -> str:
    if wrong:
        return live_report(s)
    s.do(Read(0, 512 * MiB))
    return ""


def _offline(s: Story, wrong: bool) -> str:
    if wrong:
        return offline_report(s)
    s.finish()
    return ""


def once(build: Any, op: Callable[[Story, bool], str], wrong: bool) -> tuple[float, int]:
    """Seconds the operation took (to the Divergence in hand, with the wrong model), and
    the qemu-io commands it ran."""
    commands = [0]
    run = qemu_io.QemuIoSession.read

    def counting(self: qemu_io.QemuIoSession, *a: Any, **k: Any) -> Any:
        inner = type(self)._run

        def counted(command: str) -> str:
            commands[0] += 1
            return inner(self, command)

        self._run = counted  # type: ignore[method-assign]
        try:
            return run(self, *a, **k)
        finally:
            del self._run

    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory(prefix="qrcbench-") as d, MachineSet(Path(d)) as ms:
        try:
            with wrong_model(mp) if wrong else contextlib.nullcontext():
                s = secondary_story(build, ms, Path(d))
                mp.setattr(qemu_io.QemuIoSession, "read", counting)
                t = time.perf_counter()
                text = op(s, wrong)
                took = time.perf_counter() - t
                s.topo.close()
        finally:
            mp.undo()
    if wrong and FIRST_RANGE not in text:
        raise SystemExit(f"the report does not name the first differing byte:\n{text}")
    return took, commands[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu-dir", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    build = find_build(args.qemu_dir, os.environ)
    out: dict[str, Any] = {"qemu": probe(build).version, "region_mib": 256}
    for name, op in (("live_read", _live), ("offline_layers", _offline)):
        for wrong, kind in ((True, "diverging"), (False, "passing")):
            took, commands = min(once(build, op, wrong) for _ in range(args.rounds))
            out[f"{name}_{kind}_s"] = round(took, 3)
            out[f"{name}_{kind}_qemu_io_commands"] = commands
        extra = out[f"{name}_diverging_s"] - out[f"{name}_passing_s"]
        out[f"{name}_report_overhead_s"] = round(extra, 3)
    out["target_s"] = 5
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
