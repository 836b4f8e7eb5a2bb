"""What a COLO case costs next to the same story on the Xen hooks, measured in one sitting.

    python benchmarks/colo_case.py [--rounds K] [--qemu-dir DIR] [--no-pin]

One story, told both ways on the same pair of QEMUs' graph (harness.topology.pair) with
fresh QEMUs (no pool: a COLO pair is never pooled), every step compared with the model
and followed by the pair's check (both views whole, every live layer), then quit and
the offline check:

- colo (harness.colo_story): the primary's replication node hot-added, the migration
  with x-colo (COLO starts both nodes), a primary write, a COLO checkpoint, a secondary
  write, a checkpoint, a primary and a secondary write, the secondary taking over
  (SIGKILL of the primary, nbd-server-stop, x-colo-lost-heartbeat, the commit), a
  write on the survivor;
- xen (harness.pair): the same with xen-set-replication and xen-colo-do-checkpoint on
  both sides, and the failover as xen-set-replication enable=false failover=true.

The two run in turn, K rounds (colo, xen, colo, xen, ...); each run's wall time and CPU
time (this process and every child it reaped: both QEMUs, qemu-io, qemu-img) are
printed as JSON with the medians, the ratios colo / xen and the load average before and
after. The process (and every QEMU it starts) is pinned to one CPU, as an xdist worker
is (harness/affinity.py), unless --no-pin.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.affinity import pin
from harness.builds import find_build
from harness.colo_story import ColoStory
from harness.faults import Kill
from harness.judge import judging_profile
from harness.machine import MachineSet
from harness.ops import PRIMARY
from harness.pair import PairStory
from harness.probe import probe
from harness.topology.pair import pair
from harness.units import KiB


def colo_story(s: ColoStory) -> None:
    s.migrate()
    _writes_and_checkpoints(s, s.colo_checkpoint)
    s.secondary_takes_over()
    s.do(s.swrite(0, 64 * KiB, 0x66))
    s.finish()


def xen_story(s: PairStory) -> None:
    s.start()
    _writes_and_checkpoints(s, s.checkpoint)
    s.do(Kill(PRIMARY, signal.Signals.SIGKILL.name))
    s.failover()
    s.do(s.swrite(0, 64 * KiB, 0x66))
    s.finish()


def _writes_and_checkpoints(s: PairStory, checkpoint: Any) -> None:
    s.do(s.pwrite(0, 64 * KiB, 0x22))
    checkpoint()
    s.do(s.swrite(64 * KiB, 64 * KiB, 0x33))
    checkpoint()
    s.do(s.pwrite(128 * KiB, 64 * KiB, 0x44))
    s.do(s.swrite(192 * KiB, 64 * KiB, 0x55))


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run(path: str, build: Any, profile: Any, workdir: Path) -> tuple[float, float, int]:
    """One story: (wall s, CPU s, steps)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0, c0 = time.perf_counter(), _cpu()
    with MachineSet(workdir) as machines:
        if path == "colo":
            story: PairStory = ColoStory.open(pair(colo=True), build, profile, machines, workdir)
            colo_story(story)  # type: ignore[arg-type]
        else:
            story = PairStory.open(pair(), build, profile, machines, workdir)
            xen_story(story)
    return time.perf_counter() - t0, _cpu() - c0, len(story.steps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--qemu-dir", default=None)
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    pinned = None if args.no_pin else pin(0)
    build = find_build(args.qemu_dir, os.environ)
    found = probe(build)
    profile = judging_profile(None, found.version_tuple)
    load = os.getloadavg()
    runs: dict[str, list[tuple[float, float, int]]] = {"colo": [], "xen": []}
    with tempfile.TemporaryDirectory(prefix="colo-case-") as tmp:
        for i in range(args.rounds + 1):  # the first round warms up
            for path in ("colo", "xen"):
                got = run(path, build, profile, Path(tmp) / f"{path}-{i}")
                if i:
                    runs[path].append(got)
    med = {
        p: {
            "wall_s": statistics.median(w for w, _, _ in r),
            "cpu_s": statistics.median(c for _, c, _ in r),
            "steps": r[0][2],
        }
        for p, r in runs.items()
    }
    print(
        json.dumps(
            {
                "qemu": found.version,
                "profile": profile.name,
                "pinned_cpu": pinned,
                "rounds": args.rounds,
                "load": load,
                "load_after": os.getloadavg(),
                "runs": {p: [[round(w, 4), round(c, 4)] for w, c, _ in r] for p, r in runs.items()},
                "median": med,
                "colo_over_xen": {
                    "wall": round(med["colo"]["wall_s"] / med["xen"]["wall_s"], 3),
                    "cpu": round(med["colo"]["cpu_s"] / med["xen"]["cpu_s"], 3),
                },
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
