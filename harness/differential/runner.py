"""Running the differential state machine: one run over a set of topology specs at one
seed (`run_differential`), and the groups of the CI configuration, each run again with
the next seed while it is short of its steps, their attempts merged into one result
(`run_groups`). A divergence is shrunk by hypothesis (within settings.shrink_budget)
and traced, and comes back as the result's failure, not raised."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from hypothesis import settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from harness.builds import QemuBuild
from harness.differential.kinds import TopologySpec
from harness.differential.results import DifferentialFailure, RunResult
from harness.differential.rules import RunConfig, state_machine_for
from harness.differential.settings import CI, SHRINK_SECONDS, Options, shrink_budget
from harness.differential.specs import Group
from harness.model import Profile


def run_differential(
    build: QemuBuild,
    qemu: str,
    profile: Profile,
    specs: Sequence[TopologySpec],
    workdir: Path,
    *,
    hyp_settings: settings,
    seed: int,
    trace_dir: Path | None = None,
    group: str = "differential",
    shrink_seconds: int = SHRINK_SECONDS[CI],
    weights: tuple[tuple[str, int], ...] = (),
    start_first: bool = False,
    failover_dirty: bool = False,
) -> RunResult:
    """Run the state machine over `specs`; a divergence is shrunk and traced, not raised."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        build=build,
        qemu=qemu,
        profile=profile,
        specs=tuple(specs),
        workdir=workdir,
        trace_dir=trace_dir or workdir / "traces",
        seed=seed,
        group=group,
        weights=weights,
        start_first=start_first,
        failover_dirty=failover_dirty,
    )
    result = RunResult(group=group, qemu=qemu, seed=seed)
    try:
        with shrink_budget(shrink_seconds):
            run_state_machine_as_test(state_machine_for(config, result), settings=hyp_settings)
    except DifferentialFailure as e:
        result.failure = "\n".join([str(e), *getattr(e, "__notes__", ())])
    except Flaky as e:
        # a failure that did not happen again when hypothesis re-ran the example: QEMU's
        # (a divergence, a crash...) is reported; the harness's own is raised as it is
        if not all(isinstance(x, DifferentialFailure) for x in getattr(e, "exceptions", ())):
            raise
        result.failure = (
            f"a divergence that did not reproduce when re-run (timing in QEMU or in the "
            f"harness?): {e}\ntrace of the last failing run: {result.trace}"
        )
    result.wall_s = time.perf_counter() - result.t0
    if result.failure is None:
        result.trace = None
    return result


def group_settings(group: Group, options: Options) -> settings:
    """The hypothesis settings of `group`'s runs: the profile's, resized as `options`
    ask; in the CI profile, the group's own examples (and steps) unless asked."""
    hs = options.settings()
    examples = options.examples
    if examples is None and options.profile == CI:
        examples = group.examples
    if examples is not None:
        hs = settings(hs, max_examples=examples)
    if group.steps is not None and options.steps is None and options.profile == CI:
        hs = settings(hs, stateful_step_count=group.steps)
    return hs


def run_group(
    build: QemuBuild,
    qemu: str,
    profile: Profile,
    workdir: Path,
    group: Group,
    *,
    options: Options,
    trace_dir: Path | None = None,
) -> RunResult:
    """One group's runs as one result. In the CI profile a group that ran fewer than its
    `min_steps` steps (hypothesis sometimes ends examples early) runs again with the
    next seed, at most 3 times."""
    hs = group_settings(group, options)
    seed0 = options.resolved_seed()
    total: RunResult | None = None
    for attempt in range(3):
        res = run_differential(
            build,
            qemu,
            profile,
            group.specs(),
            workdir / f"{group.name}-{attempt}",
            hyp_settings=hs,
            seed=seed0 + attempt,
            trace_dir=trace_dir,
            group=group.name,
            shrink_seconds=options.shrink_limit(),
            weights=group.weights,
            start_first=group.start_first,
            failover_dirty=group.failover_dirty,
        )
        total = res if total is None else merge(total, res)
        if res.failure is not None or options.profile != CI or total.steps >= group.min_steps:
            break
    assert total is not None
    return total


def run_groups(
    build: QemuBuild,
    qemu: str,
    profile: Profile,
    workdir: Path,
    groups: Sequence[Group],
    *,
    options: Options,
    trace_dir: Path | None = None,
    stop_at_failure: bool = True,
) -> list[RunResult]:
    """Each group in turn (the CI configuration is `specs.ci_groups()`), one result per
    group (`run_group`), all from one seed (nightly draws it once); after a failure, no
    more unless not `stop_at_failure`."""
    options = dataclasses.replace(options, seed=options.resolved_seed())
    out: list[RunResult] = []
    for group in groups:
        res = run_group(build, qemu, profile, workdir, group, options=options, trace_dir=trace_dir)
        out.append(res)
        if res.failure is not None and stop_at_failure:
            break
    return out


def merge(a: RunResult, b: RunResult) -> RunResult:
    """Two runs of one group as one result (b's failure, if any, is the result's)."""
    first = b.first_failure_s
    if first is not None:
        first += a.wall_s
    return RunResult(
        group=a.group,
        qemu=a.qemu,
        seed=b.seed if b.failure is not None else a.seed,
        examples=a.examples + b.examples,
        steps=a.steps + b.steps,
        ops=a.ops + b.ops,
        view_reads=a.view_reads + b.view_reads,
        kinds=a.kinds + b.kinds,
        wall_s=a.wall_s + b.wall_s,
        failure=b.failure,
        trace=b.trace,
        found=b.found,
        failing_runs=a.failing_runs + b.failing_runs,
        first_failure_s=first,
    )
