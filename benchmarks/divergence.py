"""How long a 256 MiB divergence takes to report (issue 15), as JSON.

The wrong model of tests/test_divergence_report.py (guest writes of 256 MiB store the
next pattern) against real QEMU: the seconds from the operation that diverges to the
Divergence in hand, for a live whole-disk read (HMP qemu-io) and for the offline layer
check (the layer inspector's qemu-io; QEMU's quit included), each the best of
--rounds, with the number of qemu-io commands each report ran. Before the locator the
offline report of a 128 MiB divergence took minutes. Target: under 5 s each.
Figures depend on the machine and its load; say so when quoting them.
Run: .venv/bin/python benchmarks/divergence.py [--qemu-dir DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
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
from harness.probe import probe  # noqa: E402
from harness.story import Story  # noqa: E402
from tests.test_divergence_report import (  # noqa: E402
    FIRST_RANGE,
    live_report,
    offline_report,
    secondary_story,
    wrong_model,
)


def once(build: Any, report: Callable[[Story], str]) -> tuple[float, int]:
    """Seconds to the report, and the qemu-io commands run meanwhile."""
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
            with wrong_model(mp):
                s = secondary_story(build, ms, Path(d))
                mp.setattr(qemu_io.QemuIoSession, "read", counting)
                t = time.perf_counter()
                text = report(s)
                took = time.perf_counter() - t
                s.topo.close()
        finally:
            mp.undo()
    if FIRST_RANGE not in text:
        raise SystemExit(f"the report does not name the first differing byte:\n{text}")
    return took, commands[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu-dir", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    build = find_build(args.qemu_dir, os.environ)
    out: dict[str, Any] = {"qemu": probe(build).version, "region_mib": 256}
    for name, report in (("live_read", live_report), ("offline_layers", offline_report)):
        runs = [once(build, report) for _ in range(args.rounds)]
        best = min(runs)
        out[f"{name}_s"] = round(best[0], 3)
        out[f"{name}_qemu_io_commands"] = best[1]
    out["target_s"] = 5
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
