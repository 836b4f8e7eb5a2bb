"""Throughput of the differential runner against real QEMU, on one worker.

    python benchmarks/differential.py [--ops N] [--seed S] [--qemu-dir DIR ...] [--no-ci]
                                      [--whole-views] [--alternate K]

Prints one JSON document with the load average before (`load`) and after (`load_after`)
and, per QEMU build:

- `lockstep`: a fixed random sequence of N operations (seeded RNG; the same kinds,
  weights and preconditions as the state machine, offsets biased to the same
  boundaries) applied to the model and to QEMU in lock-step through
  harness.differential.Session on the secondary-only topology (64 KiB clusters, 4 MiB
  disks, as the CI profile runs it): `ops_per_s` counts the operations (the rules)
  over the time they take with everything the policy does around them: the layer
  checks before checkpoints and the guest views it reads (`view_reads` of them; the
  policy module says which), not topology setup.
  `ops_and_view_reads_per_s` counts the view reads as operations too. When a failover
  ends replication, the session ends (final live and offline layer checks and whole
  views, untimed) and a fresh one starts; `sessions`, `setup_ms` and `end_ms` (means)
  say what that costs. `cpu_s` is the CPU time the operations took (user + system:
  this process, the QEMU, the harness's qemu-io NBD client) and `ops_per_cpu_s` the
  operations per CPU second. The harness and QEMU take turns, so on an idle machine
  the wall-clock rate is about this figure (a little under it); on a loaded one the
  wall-clock rate falls with the load average, this one much less (CPU time still
  grows with contention for caches and cores).
- `ci_profile`: the CI profile's runs (ci_groups(), seed 0) end to end, QEMU start
  and final checks included: `steps_per_s` and `ops_per_s` over the wall time, and
  per group (secondary, faults, primary, many-nodes, pair) its examples, steps,
  operations, guest-view reads and seconds. Operations do not count the view reads.

The process (and with it every QEMU and qemu-io it starts) is pinned to one CPU, as each
xdist worker is (harness/affinity.py; `pinned_cpu`); `--no-pin` leaves it free.

`--whole-views` runs both under the previous policy (every guest view read whole after
every operation that can change one).
`--alternate K` runs only the lock-step, K times under each policy in turn (targeted,
whole views, targeted, ...), and prints each run (with the load average as it began),
the medians and the ratio targeted / whole views.

Timings depend on the machine's load; run it on an otherwise idle machine, or compare
policies with --alternate in one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import ops
from harness.affinity import pin
from harness.builds import QemuBuild, find_build, known_builds
from harness.differential import rules
from harness.differential.kinds import TopologySpec
from harness.differential.runner import run_groups
from harness.differential.session import Session
from harness.differential.settings import Options
from harness.differential.specs import WEIGHTS, ci_groups, secondary_specs
from harness.differential.strategies import DELTAS, LENGTHS, PATTERNS, geometry
from harness.machine import MachineSet
from harness.model import profile_for
from harness.model.replication import Stage
from harness.probe import probe, replication_verdict

ROOT = Path(__file__).resolve().parent.parent


def _region(rng: random.Random, spec: TopologySpec, recent: list[int]) -> tuple[int, int]:
    g = geometry(spec)
    r = rng.random()
    if recent and r < 0.3:
        off = rng.choice(recent) + rng.choice(DELTAS)
    elif r < 0.8:
        off = rng.choice(g.units) * rng.randrange(9) + rng.choice(DELTAS)
    else:
        off = rng.randrange(g.window)
    length = rng.choice(LENGTHS) if rng.random() < 0.6 else rng.randrange(1, 256 * 1024)
    off, length = g.clip(off, length)
    recent.extend((off, off + length))
    del recent[:-8]
    return off, length


def _next_op(rng: random.Random, s: Session, recent: list[int]) -> list[ops.Op]:
    running = s.node.stage is Stage.RUNNING
    kinds = [
        k for k, w in WEIGHTS for _ in range(w) if k != "link_down" and (k != "failover" or running)
    ]
    kind = rng.choice(kinds)
    if kind in (
        "write",
        "write_zeroes",
        "read",
        "discard",
        "primary_write",
        "primary_write_zeroes",
        "primary_discard",
        "primary_read",
    ):
        off, n = _region(rng, s.spec, recent)
        pat = rng.choice(PATTERNS)
        io: dict[str, ops.Op] = {
            "write": ops.Write(off, n, pat),
            "write_zeroes": ops.WriteZeroes(off, n),
            "read": ops.Read(off, n),
            "discard": ops.Discard(off, n),
            "primary_write": ops.PrimaryWrite(off, n, pat),
            "primary_write_zeroes": ops.PrimaryWriteZeroes(off, n),
            "primary_discard": ops.PrimaryDiscard(off, n),
            "primary_read": ops.PrimaryRead(off, n),
        }
        return [io[kind]]
    control: dict[str, list[ops.Op]] = {
        "checkpoint": [ops.Checkpoint()],
        "failover": [ops.Stop(primary=False, failover=True), ops.Settle()],
        "status": [ops.Status()],
        "flush": [ops.Flush()],
        "stop": [ops.Stop(primary=False)],
        "start": [ops.Start(primary=False)],
        "start_other_mode": [ops.Start(primary=True)],
        "start_with_failover": [ops.Start(primary=False, failover=True)],
    }
    return control[kind]


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, every thread) process `pid` has used; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(s: Session) -> dict[str, float]:
    """CPU seconds so far: this process, each QEMU of the session, the harness's qemu-io
    NBD clients, the primary's and the guests' (by pid: a process started since counts
    from zero)."""
    out = {"harness": time.process_time()}
    for m in s.topo.machines:
        if m.alive():
            out[f"qemu:{m.pid}"] = _cpu_s(m.pid)
    for io in (s.topo.export_io, *s.topo.guests.values()):
        pid = getattr(io, "pid", None)
        if isinstance(pid, int):
            out[f"qemu-io:{pid}"] = _cpu_s(pid)
    return out


def _spent(before: dict[str, float], after: dict[str, float], into: dict[str, float]) -> None:
    for k, v in after.items():
        into[k.split(":")[0]] += v - before.get(k, 0.0)


def lockstep(build: QemuBuild, n_ops: int, seed: int, whole_views: bool = False) -> dict[str, Any]:
    found = probe(build)
    profile = profile_for(found.version_tuple)
    spec = next(sp for sp in secondary_specs() if sp.name == "secondary")
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="qrc-bench-"))
    done = 0
    op_time = 0.0
    setups: list[float] = []
    ends: list[float] = []
    kinds: dict[str, int] = {}
    view_reads = 0
    cpu = {"harness": 0.0, "qemu": 0.0, "qemu-io": 0.0}
    try:
        while done < n_ops:
            ex = work / f"session-{len(setups)}"
            with MachineSet(ex) as machines:
                t = time.perf_counter()
                s = Session(spec, build, profile, machines, ex, whole_views=whole_views)
                s.step(ops.Start(primary=False))
                setups.append(time.perf_counter() - t)
                setup_views = len(s.policy.steps)
                recent: list[int] = []
                while done < n_ops:
                    seq = _next_op(rng, s, recent)
                    c = _cpu(s)
                    t = time.perf_counter()
                    for op in seq:
                        s.step(op)
                    op_time += time.perf_counter() - t
                    _spent(c, _cpu(s), cpu)
                    done += len(seq)
                    for op in seq:
                        kinds[op.kind] = kinds.get(op.kind, 0) + 1
                    if s.node.stage is not Stage.RUNNING and rng.random() < 0.5:
                        break
                view_reads += len(s.policy.steps) - setup_views
                t = time.perf_counter()
                s.end()
                ends.append(time.perf_counter() - t)
            shutil.rmtree(ex, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu_s = sum(cpu.values())
    return {
        "qemu": found.version,
        "topology": spec.label,
        "policy": "whole views" if whole_views else "targeted",
        "ops": done,
        "seconds": round(op_time, 3),
        "ops_per_s": round(done / op_time, 1),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "ops_per_cpu_s": round(done / cpu_s, 1),
        "view_reads": view_reads,
        "ops_and_view_reads_per_s": round((done + view_reads) / op_time, 1),
        "sessions": len(setups),
        "setup_ms": round(1000 * sum(setups) / len(setups), 1),
        "end_ms": round(1000 * sum(ends) / len(ends), 1),
        "operations": dict(sorted(kinds.items())),
    }


def alternate(build: QemuBuild, n_ops: int, seed: int, k: int) -> dict[str, Any]:
    """`k` lock-step runs under each policy, alternately; medians and their ratio."""
    runs: dict[str, list[dict[str, Any]]] = {"targeted": [], "whole views": []}
    for _ in range(k):
        for whole in (False, True):
            load = os.getloadavg()[0]
            res = lockstep(build, n_ops, seed, whole)
            runs[res["policy"]].append(
                {
                    "load": round(load, 2),
                    "ops_per_s": res["ops_per_s"],
                    "ops_per_cpu_s": res["ops_per_cpu_s"],
                    "view_reads": res["view_reads"],
                }
            )
    out: dict[str, Any] = {"ops": n_ops, "runs": runs, "median": {}}
    for policy, rs in runs.items():
        out["median"][policy] = {
            key: statistics.median(r[key] for r in rs) for key in ("ops_per_s", "ops_per_cpu_s")
        }
    new, old = out["median"]["targeted"], out["median"]["whole views"]
    out["ratio"] = {key: round(new[key] / old[key], 2) for key in new}
    return out


class _WholeViews(Session):
    """A Session under the previous policy, for the state machine (rules.Session)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs, whole_views=True)


def ci_profile(build: QemuBuild, whole_views: bool = False) -> dict[str, Any]:
    found = probe(build)
    work = Path(tempfile.mkdtemp(prefix="qrc-bench-ci-"))
    saved = vars(rules)["Session"]
    if whole_views:
        vars(rules)["Session"] = _WholeViews
    try:
        t = time.perf_counter()
        results = run_groups(
            build,
            found.version,
            profile_for(found.version_tuple),
            work,
            ci_groups(),
            options=Options(),
            stop_at_failure=False,
        )
        wall = time.perf_counter() - t
    finally:
        vars(rules)["Session"] = saved
        shutil.rmtree(work, ignore_errors=True)
    steps = sum(r.steps for r in results)
    n_ops = sum(r.ops for r in results)
    return {
        "qemu": found.version,
        "policy": "whole views" if whole_views else "targeted",
        "examples": sum(r.examples for r in results),
        "steps": steps,
        "ops": n_ops,
        "seconds": round(wall, 2),
        "steps_per_s": round(steps / wall, 1),
        "ops_per_s": round(n_ops / wall, 1),
        "view_reads": sum(r.view_reads for r in results),
        "divergences": sum(1 for r in results if r.failure is not None),
        "groups": {
            r.group: {
                "examples": r.examples,
                "steps": r.steps,
                "ops": r.ops,
                "view_reads": r.view_reads,
                "seconds": round(r.wall_s, 2),
            }
            for r in results
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--qemu-dir", action="append", default=[])
    ap.add_argument("--no-ci", action="store_true", help="skip the CI-profile run")
    ap.add_argument(
        "--whole-views",
        action="store_true",
        help="the previous policy: every guest view read whole after every operation that "
        "can change one",
    )
    ap.add_argument(
        "--alternate",
        type=int,
        default=0,
        metavar="K",
        help="instead: K lock-step runs under each policy, alternately (targeted, whole "
        "views, targeted, ...), with their medians and the ratio",
    )
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="leave this process (and its QEMU, qemu-io) free to run on every CPU; by "
        "default it is pinned to one, as each xdist worker is (harness/affinity.py)",
    )
    args = ap.parse_args()
    cpu = None if args.no_pin else pin(0)
    builds = (
        [find_build(d, os.environ) for d in args.qemu_dir] if args.qemu_dir else known_builds(ROOT)
    )
    out: dict[str, Any] = {
        "ops": args.ops,
        "seed": args.seed,
        "load": os.getloadavg()[0],
        "pinned_cpu": cpu,
        "builds": {},
    }
    for b in builds:
        verdict = replication_verdict(probe(b))
        if verdict is not None:
            out["builds"][b.label] = {"skipped": verdict}
            continue
        if args.alternate:
            out["builds"][b.label] = alternate(b, args.ops, args.seed, args.alternate)
            continue
        entry: dict[str, Any] = {"lockstep": lockstep(b, args.ops, args.seed, args.whole_views)}
        if not args.no_ci:
            entry["ci_profile"] = ci_profile(b, args.whole_views)
        out["builds"][b.label] = entry
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
