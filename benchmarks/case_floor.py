"""The floor of one conformance case, side by side with the harness (issue 13, item 1).

The floor (benchmarks/floor.py) does the steps of cases/test_smoke.py::test_secondary_life
with nothing but qemu.qmp, qemu-img and one-shot qemu-io, and checks every answer as the
case's model would: no model, no pytest, no harness import.

In the same sitting it runs the harness on the same case as whole processes, alternated
with the floor (floor, harness, floor-n, reuse-n, harness-n, fresh-n, floor, ...;
`--arms`), and prints each arm's CPU and wall (medians, min, max) and the ratios per
round. CPU is the whole process tree's (os.wait4: the arm's python and every QEMU,
qemu-img and qemu-io it waited for, pooled QEMUs included: they quit before pytest
exits); wall is time.perf_counter from spawn to exit. Every child runs with a TMPDIR of
this run's own, so concurrent pytest runs of others share no pytest-of-USER directory
with it. Arms:

- `floor`, `harness`: one case, one process each. `harness` is `python -m pytest -p
  no:cacheprovider -q CASE [--qemu-dir DIR] -n 0`. This is what `pytest CASE` costs,
  and about 85 % of the harness's extra over the floor here is pytest's and the
  interpreter's start-up and exit (plugins, conftests, harness imports, the terminal
  summary, module teardown): a fixed cost of the process, paid once per pytest process
  (once per xdist worker), not once per case.
- `floor-n`, `harness-n`: N cases (`--cases`, default 20) in one process: the floor's
  loop of N cases in one script, each case in a QEMU of its own (the floor as defined
  above: it launches and quits QEMU, as the case does); pytest running the case N times
  (benchmarks/case_repeat.py, QRC_REPEAT=N), with the harness's QEMU pool (harness.pool:
  a QEMU torn down and proved pristine serves the next case). This is the per-case cost
  of a real run, where a worker runs hundreds of cases and its start-up is amortised;
  N = 20 is far below what a run gives a worker (the catalogue on one build is about
  240 cases per worker at -n 2), so it still charges each case a twentieth of pytest's
  start-up.
- `reuse-n`: the floor doing N cases in one QEMU (between cases it deletes the graph:
  nbd-server-stop, blockdev-del rep and secondary, and does not quit): the like-for-like
  floor of the pool, which tells what the harness's own machinery costs once neither
  side pays a launch per case. `harness-n / reuse-n` is that ratio.
- `fresh-n`: `harness-n` with `--fresh-qemu` (a QEMU launched and quit per case).
- `pyc`, `xdist`, `plain` (not run by default): `harness` with a warm bytecode cache in a
  private directory (PYTHONDONTWRITEBYTECODE is set on these machines); with `-n auto`,
  as `qrc run` starts it; the floor without the harness's two QEMU cost options (below).

"Per-case overhead" is therefore stated three ways, all printed: the single-case ratio
(`harness / floor`: start-up included, what one `pytest CASE` costs), the amortised ratio
(`harness-n / floor-n` and `harness-n / reuse-n`: N cases each side, one process each
side), and the marginal case, (N-case run - 1-case run) / (N - 1) round by round, for
the harness against the floor (start-up and exit cancel out: what one more case costs).
The harness's per-case advantage over the floor here is real work it does not do: the
floor makes its three images with three `qemu-img create` and checks them with one-shot
`qemu-io` processes, as the issue defines it; the harness copies template images and
checks layers through one long-lived qemu-io per worker.

Then it runs `--phase-runs` rounds of: the floor with its phase marks, the harness with
the opt-in timing hook (benchmarks/case_floor_hook.py), and the harness without it (what
the hook costs). It prints where one case's CPU and wall go, phase by phase (launch,
images, graph, operations, layer checks, teardown, pytest's start-up, collection and
session end, the interpreter's exit), next to the floor's phases.

By default the floor starts QEMU with the same two cost options the harness uses
(`-accel tcg,tb-size=1`, `cache.no-flush` on the file nodes); the `plain` arm and
`--plain-floor` (for the phase runs) use the bare command line and default caching.
Figures depend on the machine and its load (the load average is printed with them);
quote ratios measured in one sitting.

`--phase-cases K` makes each phase run do K cases (the floor's loop, the harness's
repeat) and divides each phase by K: where the time of one case goes once start-up is
shared, next to the single-case table (K = 1).

Run: .venv/bin/python benchmarks/case_floor.py [--qemu-dir DIR] [-n RUNS] [--cases N]
       [--phase-runs K] [--phase-cases K] [--arms floor,harness,floor-n,reuse-n,harness-n,
       fresh-n,pyc,xdist,plain] [--plain-floor] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from floor import floor_child, floor_spec
from meter import EXIT, run_child

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CASE = "cases/test_smoke.py::test_secondary_life"


def floor_argv(
    build: Any, plain: bool, phases: bool, cases: int = 1, reuse: bool = False
) -> list[str]:
    spec = floor_spec(build, plain, phases, cases, reuse)
    return [sys.executable, str(Path(__file__).resolve()), "--floor-child", json.dumps(spec)]


def pytest_argv(qemu_dir: str | None, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", CASE]
    if qemu_dir is not None:
        argv += ["--qemu-dir", qemu_dir]
    return argv + list(extra)


ARMS = {
    "floor": "the floor: qemu.qmp + qemu-img + one-shot qemu-io, no model, no pytest",
    "plain": "the floor with the bare QEMU command line (no tb-size=1, no cache.no-flush)",
    "harness": "the harness: pytest -n 0, one process",
    "pyc": "the harness, -n 0, with a warm bytecode cache (PYTHONPYCACHEPREFIX, private)",
    "xdist": "the harness: pytest -n auto (a controller and its workers)",
    "floor-n": "the floor, N cases in one script, each in a QEMU of its own (launch, quit)",
    "reuse-n": "the floor, N cases in one script and one QEMU (graph deleted between cases)",
    "harness-n": "the harness: pytest -n 0, N cases in one process (the QEMU pool: default)",
    "fresh-n": "the harness: pytest -n 0 --fresh-qemu, N cases in one process",
}
N_ARMS = ("floor-n", "reuse-n", "harness-n", "fresh-n")
PYTEST_ARMS = ("harness", "pyc", "xdist", "harness-n", "fresh-n")
# (numerator, denominator): the ratios printed, when both arms ran
RATIOS = (
    ("harness", "floor"),
    ("pyc", "floor"),
    ("xdist", "floor"),
    ("plain", "floor"),
    ("harness-n", "floor-n"),
    ("harness-n", "reuse-n"),
    ("fresh-n", "floor-n"),
    ("reuse-n", "floor-n"),
)


def arm_argv(arm: str, build: Any, qemu_dir: str | None, cases: int = 1) -> list[str]:
    if arm in ("floor", "plain"):
        return floor_argv(build, plain=arm == "plain", phases=False)
    if arm in ("floor-n", "reuse-n"):
        return floor_argv(build, plain=False, phases=False, cases=cases, reuse=arm == "reuse-n")
    if arm in ("harness", "pyc"):
        return pytest_argv(qemu_dir, "-n", "0")
    if arm == "harness-n":
        return pytest_argv(qemu_dir, "-n", "0", "-p", "case_repeat")
    if arm == "fresh-n":
        return pytest_argv(qemu_dir, "-n", "0", "-p", "case_repeat", "--fresh-qemu")
    if arm == "xdist":
        return pytest_argv(qemu_dir, "-n", "auto")
    raise SystemExit(f"case_floor: unknown arm {arm!r} (known: {', '.join(ARMS)})")


def arm_env(arm: str, pycache: Path, cases: int = 1) -> dict[str, str]:
    """The environment as it is; for "pyc", bytecode written to and read from `pycache`
    (this run's own directory: nothing is written into the checkout); for the harness's
    N-case arms, benchmarks/case_repeat.py on the path and QRC_REPEAT=N."""
    env = {**os.environ}
    if arm == "pyc":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if arm in ("harness-n", "fresh-n"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
        env["QRC_REPEAT"] = str(cases)
    return env


def check_ok(arm: str, r: dict[str, Any], cases: int = 1) -> None:
    n = cases if arm in N_ARMS else 1
    passed = f"{n} passed" in r["stdout"] if arm in PYTEST_ARMS else True
    if r["rc"] != 0 or not passed:
        sys.exit(
            f"case_floor: the {arm} run failed (exit {r['rc']}):\n{r['stdout'][-2000:]}"
            f"\n{r['stderr'][-2000:]}"
        )


def stats(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------
# The per-phase breakdown

# Phase label prefix -> group (first match); the floor's phases share the group names.
GROUPS = (
    ("python", "start-up: python, pytest import / the floor's imports"),
    ("pytest: start-up", "start-up: plugins, conftests, harness imports, configure"),
    ("pytest: collection", "pytest: collection"),
    ("pytest: run loop", "pytest: per case (protocol, fixtures, case body)"),
    ("pytest: per-case", "pytest: per case (protocol, fixtures, case body)"),
    ("pytest: fixture", "pytest: per case (protocol, fixtures, case body)"),
    ("pytest: case body", "pytest: per case (protocol, fixtures, case body)"),
    ("pytest:", "pytest: session end (summary, unconfigure)"),
    ("images", "images"),
    ("launch", "launch"),
    ("graph", "graph"),
    ("operations", "operations"),
    ("live layer checks", "live layer checks"),
    ("quit", "teardown: NBD client, QEMU quit or graph deleted"),
    ("teardown", "teardown: NBD client, QEMU quit or graph deleted"),
    ("offline", "teardown: offline layer checks"),
    ("exit", "exit: atexit handlers, interpreter finalization"),
)
GROUP_ORDER = [*dict.fromkeys(g for _, g in GROUPS), "other"]


def _group(label: str) -> str:
    for prefix, group in GROUPS:
        if label.startswith(prefix):
            return group
    return "other"


def phase_runs(
    build: Any, qemu_dir: str | None, k: int, plain: bool, cases: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, float]]]:
    """k rounds of (floor with its phase marks, harness with the hook, harness without
    it), each process doing `cases` cases: the phase tables, each with an exit row (what
    the process spent after its last mark), and the hook's cost per round (hooked minus
    plain, whole process)."""
    harness, floor, overhead = [], [], []
    env = {**os.environ}
    hook_env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")])),
    }
    repeat = ("-p", "case_repeat") if cases > 1 else ()
    if cases > 1:
        env = {**hook_env, "QRC_REPEAT": str(cases)}
        hook_env = env
    for _ in range(k):
        r = run_child(floor_argv(build, plain, phases=True, cases=cases), env, ROOT)
        check_ok("floor", r)
        got = json.loads(r["stdout"].splitlines()[-1])
        floor.append(_close(got, r))
        with tempfile.TemporaryDirectory(prefix="case-floor-phases-") as d:
            out = Path(d) / "phases.json"
            r = run_child(
                pytest_argv(qemu_dir, "-n", "0", "-p", "case_floor_hook", *repeat),
                {**hook_env, "QRC_PHASES_OUT": str(out)},
                ROOT,
            )
            check_ok("harness-n" if repeat else "harness", r, cases)
            harness.append(_close(json.loads(out.read_text()), r))
        r2 = run_child(pytest_argv(qemu_dir, "-n", "0", *repeat), env, ROOT)
        check_ok("harness-n" if repeat else "harness", r2, cases)
        overhead.append({m: r[m] - r2[m] for m in ("cpu", "wall")})
    return floor, harness, overhead


def _close(got: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """Add what the process spent outside its marks (after the last one) as exit time."""
    phases = got["phases"]
    cpu = sum(p["cpu"] for p in phases.values())
    wall = sum(p["wall"] for p in phases.values())
    rest = phases.setdefault(EXIT, {"wall": 0.0, "cpu": 0.0, "cpu_own": 0.0, "cpu_children": 0.0})
    cal = got.get("calibration", {"wall": 0.0, "cpu": 0.0})
    rest["wall"] += max(0.0, r["wall"] - wall - cal["wall"])
    rest["cpu"] += max(0.0, r["cpu"] - cpu - cal["cpu"])
    got["total"] = {"wall": r["wall"], "cpu": r["cpu"]}
    return got


def _median_phases(runs: list[dict[str, Any]], per: int = 1) -> dict[str, dict[str, float]]:
    """Each phase's median over the runs, divided by `per` (the cases of a run)."""
    labels: list[str] = []
    for r in runs:
        labels += [k for k in r["phases"] if k not in labels]
    out = {}
    for label in labels:
        rows = [r["phases"].get(label, {"wall": 0.0, "cpu": 0.0}) for r in runs]
        out[label] = {
            "cpu": statistics.median(x["cpu"] for x in rows) / per,
            "wall": statistics.median(x["wall"] for x in rows) / per,
        }
    return out


def _by_group(ph: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, v in ph.items():
        g = out.setdefault(_group(label), {"cpu": 0.0, "wall": 0.0})
        g["cpu"] += v["cpu"]
        g["wall"] += v["wall"]
    return out


# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qemu-dir", help="QEMU build (default: the one on PATH)")
    ap.add_argument("-n", "--runs", type=int, default=7, help="rounds of the A/B runs")
    ap.add_argument("--phase-runs", type=int, default=5, help="rounds of the phase runs")
    ap.add_argument(
        "--arms",
        default="floor,harness,floor-n,reuse-n,harness-n,fresh-n",
        help=f"comma-separated, a floor first ({', '.join(ARMS)})",
    )
    ap.add_argument(
        "--cases", type=int, default=20, help="N, the cases of the -n arms (one process)"
    )
    ap.add_argument(
        "--phase-cases",
        type=int,
        default=1,
        help="cases per phase run (the table is then per case: each phase divided by it)",
    )
    ap.add_argument(
        "--plain-floor",
        action="store_true",
        help="the phase runs' floor without tb-size=1 and cache.no-flush",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    ap.add_argument("--floor-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_child is not None:
        spec = json.loads(args.floor_child)
        spec["t0"] = float(os.environ.get("QRC_PHASES_T0", time.monotonic()))
        return floor_child(spec)
    if args.runs < 1 or args.phase_runs < 0 or args.warmup < 0:
        ap.error("-n must be at least 1, --phase-runs and --warmup at least 0")
    if args.cases < 2 or args.phase_cases < 1:
        ap.error("--cases must be at least 2, --phase-cases at least 1")

    sys.path.insert(0, str(ROOT))
    from harness.builds import find_build
    from harness.probe import probe

    build = find_build(args.qemu_dir, os.environ)
    version = probe(build).version
    arms = args.arms.split(",")
    for arm in arms:
        arm_argv(arm, build, args.qemu_dir)  # unknown arms end here
    if arms[0] not in ("floor", "plain"):
        ap.error("the first arm must be a floor (floor or plain)")
    load = {"start": loadavg()}
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    # Every child's TMPDIR: this run's own (pytest's pytest-of-USER included), so that
    # other pytest runs on the machine neither race with ours nor share its clean-ups.
    tmp = Path(tempfile.mkdtemp(prefix="case-floor-", dir="/tmp"))
    os.environ["TMPDIR"] = str(tmp)
    try:
        for i in range(args.warmup + args.runs):
            for arm in arms:
                r = run_child(
                    arm_argv(arm, build, args.qemu_dir, args.cases),
                    arm_env(arm, tmp / "pyc", args.cases),
                    ROOT,
                )
                check_ok(arm, r, args.cases)
                if i >= args.warmup:
                    runs[arm].append({k: r[k] for k in ("wall", "cpu", "cpu_user", "cpu_sys")})
        load["after_ab"] = loadavg()
        floor_phases, harness_phases, overhead = phase_runs(
            build, args.qemu_dir, args.phase_runs, args.plain_floor, args.phase_cases
        )
        load["end"] = loadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result: dict[str, Any] = {
        "case": CASE,
        "qemu": version,
        "qemu_dir": args.qemu_dir or "PATH",
        "cores": os.cpu_count(),
        "load": load,
        "runs": args.runs,
        "cases": args.cases,
        "arms": {
            a: {
                "what": ARMS[a],
                "argv": _shown(arm_argv(a, build, args.qemu_dir, args.cases)),
                "cpu": stats([r["cpu"] for r in runs[a]]),
                "wall": stats([r["wall"] for r in runs[a]]),
                "raw": runs[a],
            }
            for a in arms
        },
        "ratios": {},
        "differences": {},
    }
    for a, base in RATIOS:
        if a not in runs or base not in runs:
            continue
        per = {
            m: [x[m] / f[m] for x, f in zip(runs[a], runs[base], strict=True)]
            for m in ("cpu", "wall")
        }
        result["ratios"][f"{a}/{base}"] = {
            m: {
                **stats(per[m]),
                "of_medians": result["arms"][a][m]["median"] / result["arms"][base][m]["median"],
            }
            for m in per
        }
    result["per_case"] = _per_case(runs, args.cases)
    for a, b in (("xdist", "harness"), ("harness", "pyc")):
        if a in runs and b in runs:
            result["differences"][f"{a}-{b}"] = {
                m: stats([x[m] - y[m] for x, y in zip(runs[a], runs[b], strict=True)])
                for m in ("cpu", "wall")
            }
    if args.phase_runs:
        result["phases"] = _phase_summary(floor_phases, harness_phases, args.phase_cases)
        result["phases"]["hook_overhead"] = {
            m: stats([o[m] for o in overhead]) for m in ("cpu", "wall")
        }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
    return 0


def _per_case(runs: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """What one case costs in the N-case arms: each arm's run divided by N (start-up and
    exit amortised over N), and the marginal case: (N-case run - 1-case run) / (N - 1),
    round by round, for the harness against the floor (start-up and exit left out)."""
    out: dict[str, Any] = {}
    for a in N_ARMS:
        if a in runs:
            out[a] = {m: stats([r[m] / n for r in runs[a]]) for m in ("cpu", "wall")}
    pairs = (("harness-n", "harness"), ("floor-n", "floor"))
    if all(a in runs and b in runs for a, b in pairs):
        marginal = {}
        for m in ("cpu", "wall"):
            h = [
                (x[m] - y[m]) / (n - 1)
                for x, y in zip(runs["harness-n"], runs["harness"], strict=True)
            ]
            f = [
                (x[m] - y[m]) / (n - 1) for x, y in zip(runs["floor-n"], runs["floor"], strict=True)
            ]
            marginal[m] = {
                "harness": stats(h),
                "floor": stats(f),
                "ratio": stats([x / y for x, y in zip(h, f, strict=True)]),
            }
        out["marginal"] = marginal
    return out


def _phase_summary(
    floor: list[dict[str, Any]], harness: list[dict[str, Any]], cases: int = 1
) -> dict[str, Any]:
    hp, fp = _median_phases(harness, cases), _median_phases(floor, cases)
    items = [c for r in harness for c in r.get("cases", [])]
    return {
        "runs": len(harness),
        "cases": cases,
        "harness": hp,
        "floor": fp,
        "harness_groups": _by_group(hp),
        "floor_groups": _by_group(fp),
        "harness_total": {
            m: statistics.median(r["total"][m] for r in harness) for m in ("cpu", "wall")
        },
        "floor_total": {
            m: statistics.median(r["total"][m] for r in floor) for m in ("cpu", "wall")
        },
        # pytest's setup + call + teardown of the item, with its reports
        "harness_case_in_process": {
            m: statistics.median(c[m] for c in items) for m in ("cpu", "wall")
        },
        "not_timed": sorted({n for r in harness for n in r.get("not_timed", [])}),
        "harness_meter": {
            "samples": statistics.median(r["samples"] for r in harness),
            "sample_cpu_ms": 1e3 * statistics.median(r["sample_cpu"] for r in harness),
        },
    }


def _shown(argv: list[str]) -> str:
    if "--floor-child" in argv:
        argv = [*argv[: argv.index("--floor-child")], "--floor-child", "SPEC"]
    return " ".join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)


def _ms(x: float) -> str:
    return f"{1e3 * x:7.0f}"


def print_tables(r: dict[str, Any]) -> None:
    p: Callable[..., None] = print
    load = r["load"]
    p(f"case_floor: {r['case']}, QEMU {r['qemu']} ({r['qemu_dir']}), {r['cores']} cores")
    p(
        f"load average (1/5/15 min): start {load['start']}, after the A/B runs "
        f"{load['after_ab']}, end {load['end']}"
    )
    p(f"\nwhole processes, {r['runs']} rounds alternated; seconds, median [min-max]")
    p(f"  {'arm':9s} {'CPU':>21s} {'wall':>21s}  what (N = {r['cases']})")
    for a, v in r["arms"].items():
        c, w = v["cpu"], v["wall"]
        p(
            f"  {a:9s} {c['median']:6.3f} [{c['min']:.3f}-{c['max']:.3f}] "
            f"{w['median']:6.3f} [{w['min']:.3f}-{w['max']:.3f}]  {v['what']}"
        )
    p("\nratios per round: median [min-max] (ratio of the medians)")
    for name, v in r["ratios"].items():
        c, w = v["cpu"], v["wall"]
        p(
            f"  {name:19s} CPU {c['median']:5.2f} [{c['min']:.2f}-{c['max']:.2f}] "
            f"({c['of_medians']:.2f})   wall {w['median']:5.2f} [{w['min']:.2f}-{w['max']:.2f}] "
            f"({w['of_medians']:.2f})"
        )
    pc = r.get("per_case", {})
    if pc:
        p(f"\none case, milliseconds, median [min-max]: an N-case run / N (N = {r['cases']})")
        for a in N_ARMS:
            if a in pc:
                c, w = pc[a]["cpu"], pc[a]["wall"]
                p(
                    f"  {a:9s} CPU {_ms(c['median'])} [{_ms(c['min']).strip()}-"
                    f"{_ms(c['max']).strip()}]  wall {_ms(w['median'])} "
                    f"[{_ms(w['min']).strip()}-{_ms(w['max']).strip()}]"
                )
    if "marginal" in pc:
        p("  the marginal case, (N-case run - 1-case run) / (N - 1), round by round:")
        for m in ("cpu", "wall"):
            v = pc["marginal"][m]
            h, f, q = v["harness"], v["floor"], v["ratio"]
            p(
                f"    {m:4s} harness {_ms(h['median'])} ms, floor {_ms(f['median'])} ms, "
                f"harness/floor {q['median']:.2f} [{q['min']:.2f}-{q['max']:.2f}]"
            )
    for name, v in r["differences"].items():
        c, w = v["cpu"], v["wall"]
        p(
            f"  {name:14s} CPU {c['median']:+.3f} s [{c['min']:+.3f} {c['max']:+.3f}]   "
            f"wall {w['median']:+.3f} s [{w['min']:+.3f} {w['max']:+.3f}]  (difference per round)"
        )
    p("\ncommands:")
    for a, v in r["arms"].items():
        extra = {"pyc": "  (bytecode cache on)", "harness-n": "  (QRC_REPEAT=N)"}
        extra["fresh-n"] = extra["harness-n"]
        p(f"  {a:9s} {v['argv']}{extra.get(a, '')}")
    if "phases" not in r:
        return
    ph = r["phases"]
    ht, ft, case = ph["harness_total"], ph["floor_total"], ph["harness_case_in_process"]
    m = ph["harness_meter"]
    ho = ph["hook_overhead"]
    per = ph.get("cases", 1)
    each = f", {per} cases a process, each phase / {per}" if per > 1 else ""
    p(f"\none case by phase, milliseconds: medians of {ph['runs']} rounds{each}")
    p(
        f"  harness: pytest -n 0 with the timing hook, whole process CPU {ht['cpu']:.3f} s, "
        f"wall {ht['wall']:.3f} s; the hook's {m['samples']:.0f} samples cost "
        f"~{m['sample_cpu_ms']:.2f} ms CPU each;"
    )
    p(
        f"    a hooked run against a plain one in the same round: CPU "
        f"{1e3 * ho['cpu']['median']:+.0f} [{1e3 * ho['cpu']['min']:+.0f} "
        f"{1e3 * ho['cpu']['max']:+.0f}], wall {1e3 * ho['wall']['median']:+.0f} "
        f"[{1e3 * ho['wall']['min']:+.0f} {1e3 * ho['wall']['max']:+.0f}]"
    )
    p(
        f"    the case in-process (pytest's setup, call and teardown of the item): CPU "
        f"{1e3 * case['cpu']:.0f}, wall {1e3 * case['wall']:.0f}"
    )
    p(f"  floor: with its phase marks, CPU {ft['cpu']:.3f} s, wall {ft['wall']:.3f} s")
    if ph["not_timed"]:
        p(f"  not timed (the harness has no such name now): {', '.join(ph['not_timed'])}")
    hg, fg = ph["harness_groups"], ph["floor_groups"]
    p(
        f"  {'group':58s} {'harness CPU':>11s} {'wall':>7s} {'floor CPU':>9s} {'wall':>7s}"
        f" {'CPU over':>8s}"
    )
    zero = {"cpu": 0.0, "wall": 0.0}
    for g in GROUP_ORDER:
        if g not in hg and g not in fg:
            continue
        h, f = hg.get(g, zero), fg.get(g, zero)
        p(
            f"  {g:58s} {_ms(h['cpu']):>11s} {_ms(h['wall'])} {_ms(f['cpu']):>9s} "
            f"{_ms(f['wall'])} {_ms(h['cpu'] - f['cpu']):>8s}"
        )
    hc, hw = (sum(v[k] for v in hg.values()) for k in ("cpu", "wall"))
    fc, fw = (sum(v[k] for v in fg.values()) for k in ("cpu", "wall"))
    p(
        f"  {'sum of the medians':58s} {_ms(hc):>11s} {_ms(hw)} {_ms(fc):>9s} {_ms(fw)} "
        f"{_ms(hc - fc):>8s}"
    )
    p("\n  harness phases, exclusive (a phase's own time, not the phases inside it)")
    for label, v in sorted(ph["harness"].items(), key=lambda kv: -kv[1]["cpu"]):
        p(f"  {label:72s} {_ms(v['cpu'])} {_ms(v['wall'])}")
    p("\n  floor phases")
    for label, v in sorted(ph["floor"].items(), key=lambda kv: -kv[1]["cpu"]):
        p(f"  {label:72s} {_ms(v['cpu'])} {_ms(v['wall'])}")


if __name__ == "__main__":
    sys.exit(main())
