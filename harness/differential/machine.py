"""The differential state machine: random operations on real QEMU and the model in lock-step.

A hypothesis `RuleBasedStateMachine` owns a fresh Session (topology in QEMU and
in the model) per example, built at its first step. Each step draws one
operation kind from a weighted list (guest write/read/write-zeroes/discard/
flush, the primary's NBD write/read/write-zeroes/discard, checkpoint, start,
stop, failover, status, NBD link loss) filtered by preconditions from the
model's state (only fail over while RUNNING, only use the primary's link while
it is up, keep writes that reach a poisoned secondary disk off the poisoned
page), and applies it through `Session.step`, which compares QEMU's answer with
the model's, checks the layers before checkpoints and, after an operation that can
change what a guest sees, reads every guest view of the topology back whole (each
topology's disks are 4 MiB: specs.DISK_SIZE); the teardown runs the final live and offline
layer checks.

On the COLO pair (kind pair) guest I/O goes through the primary VM's quorum (it
reaches the secondary through replication0 and NBD) or the secondary VM's node,
and the QMP commands go to either side: a checkpoint to both (as COLO does), a
stop to one (the primary's is the primary-side stop), a failover to the
secondary, most often after its NBD export went (LinkDown). On the two-node
machine (kind many-nodes) guest I/O goes mostly to the newer node, sometimes to
the older one that never starts.

QEMU misbehaving (a divergence, a crash, a hang: harness.verdicts) fails the
example; hypothesis shrinks it, and every failing run (so last of all the shrunk
example's final run) writes its trace file, whose path the failure message gives.
Anything else raised (a harness bug) is not QEMU's: it ends the run as the error it
is, with no trace and no replay hint.

Profiles (hypothesis settings: harness.differential.settings): `ci` (fixed seed,
bounded: the suite's time budget) and `nightly` (long). `run_differential` runs one
state machine over a set of topology specs; `run_groups` runs groups of them
(harness.differential.specs: `ci_groups` are the CI test's, per QEMU version).
"""

from __future__ import annotations

import functools
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

from harness import ops
from harness.builds import QemuBuild
from harness.differential.ops import LinkDown
from harness.differential.session import (
    NODES_KIND,
    OLD,
    PAIR_KIND,
    PRIMARY_KIND,
    Session,
    TopologySpec,
    commit_copies,
)
from harness.differential.settings import CI, SHRINK_SECONDS, Options, shrink_budget
from harness.differential.specs import KINDS, WEIGHTS, Group
from harness.differential.strategies import (
    DELTAS,
    Geometry,
    geometry,
    lengths,
    offsets,
    patterns,
)
from harness.differential.trace import session_trace
from harness.machine import MachineSet
from harness.model import Profile
from harness.model.disks import allocated_above
from harness.model.replication import Mode, ReplicationNode, Stage
from harness.ops import PRIMARY, REP, SECONDARY
from harness.topology.pair import PQ
from harness.verdicts import QemuCrashed, QemuMisbehaved
from harness.words import plural

# ---- running


class DifferentialFailure(QemuMisbehaved):
    """QEMU misbehaved during a random run: `cause` (the verdict: a divergence, a crash,
    a hang), where it happened, and the trace that replays it."""

    def __init__(
        self, cause: QemuMisbehaved, where: str, topology: str, seed: int, trace: Path
    ) -> None:
        self.cause = cause
        self.where = where
        self.topology = topology
        self.seed = seed
        self.trace = trace
        self.expected, self.actual, self.details = cause.expected, cause.actual, cause.details
        self.evidence = cause.evidence
        super().__init__(cause.headline)

    @property
    def headline(self) -> str:
        return self.cause.headline

    def __str__(self) -> str:
        return (
            f"{self.cause}\n"
            f"failed at: {self.where} (topology {self.topology}, seed {self.seed})\n"
            f"trace: {self.trace}\n"
            f"replay: qrc replay {self.trace} [--qemu-dir DIR]"
        )


def found(cause: QemuMisbehaved) -> str:
    """What a run found, for its summary: 'DIVERGENCE', 'CRASH (SIGKILL)', 'HANG'."""
    what = cause.verdict.upper()
    if isinstance(cause, QemuCrashed) and cause.signal is not None:
        what += f" ({cause.signal})"
    return what


@dataclass
class RunStats:
    t0: float = field(default_factory=time.perf_counter)
    examples: int = 0
    steps: int = 0
    ops: int = 0
    # the reads of the guest views the policy made after the operations
    view_reads: int = 0
    failing_runs: int = 0
    first_failure_s: float | None = None
    trace: Path | None = None
    # what the last failing run found (found())
    found: str = "DIVERGENCE"
    # operations by kind, plus "failover_failed" (failover commits that failed)
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class RunResult:
    """What one run found. `failure` is None when QEMU always agreed with the model."""

    group: str
    qemu: str
    seed: int
    examples: int
    steps: int
    ops: int
    wall_s: float
    failure: str | None = None
    trace: Path | None = None
    first_failure_s: float | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    view_reads: int = 0
    # what the failure was (found()): 'DIVERGENCE', 'CRASH (SIGKILL)', 'HANG'...
    found: str = "DIVERGENCE"

    def summary(self) -> str:
        head = (
            f"differential {self.group} on QEMU {self.qemu}: "
            f"{plural(self.examples, 'example')}, {plural(self.steps, 'step')} "
            f"({plural(self.ops, 'operation')}, {plural(self.view_reads, 'guest-view read')}) "
            f"in {self.wall_s:.1f} s, seed {self.seed}"
        )
        if self.failure is None:
            return head + ": no divergence"
        return head + f": {self.found} (first found after {self.first_failure_s:.2f} s)"


@dataclass
class RunConfig:
    build: QemuBuild
    qemu: str  # the version, for traces and messages
    profile: Profile
    specs: tuple[TopologySpec, ...]
    workdir: Path
    trace_dir: Path
    seed: int
    group: str = "differential"
    weights: tuple[tuple[str, int], ...] = ()
    start_first: bool = False
    failover_dirty: bool = False


@functools.lru_cache(maxsize=256)
def _kinds(allowed: tuple[str, ...], changes: tuple[tuple[str, int], ...] = ()) -> tuple[str, ...]:
    """The allowed operation kinds, each repeated by its weight (`changes` overrides
    WEIGHTS)."""
    weights = dict(WEIGHTS)
    weights.update(changes)
    return tuple(k for k, _ in WEIGHTS if k in allowed for _ in range(weights[k]))


@functools.lru_cache(maxsize=64)
def _indices(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


# A step picks kinds[(i + STRIDE * step) % len(kinds)] for a drawn i: uniform i gives
# the weighted choice, and hypothesis' simplest examples (i = 0 throughout, which it
# always tries first) walk through every kind instead of repeating the first.
STRIDE = 7


def _has_dirty(node: ReplicationNode) -> bool:
    """Does the active or hidden disk hold anything a failover commit would copy?"""
    if node.active is None or node.secondary is None:
        return False
    size = node.secondary.size
    return any(a for _, _, a in allocated_above(node.active, node.secondary, 0, size))


def _avoid_for_guest(session: Session) -> bool:
    """A guest write reaches the (poisoned) secondary disk unless the stage is NONE (EIO)
    or RUNNING (it goes to the active disk)."""
    return session.spec.poison is not None and session.node.stage not in (
        Stage.NONE,
        Stage.RUNNING,
    )


def machine_class(cfg: RunConfig, stats: RunStats) -> type[RuleBasedStateMachine]:
    """A RuleBasedStateMachine class bound to one build, profile and set of specs."""

    class DifferentialMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.session: Session | None = None
            self.machines: MachineSet | None = None
            self.exdir: Path | None = None
            self.geo: Geometry | None = None
            self.spec: TopologySpec | None = None
            self.start_first = False
            self.failed = False
            # the harness failed (not QEMU): no final checks, the example's files kept
            self.broken = False
            # ends of recent requests: later ones start there often
            self.recent: list[int] = []
            # starts of recent writes that copied before writing (RUNNING), and whether
            # a checkpoint came since the last one
            self.copied: list[int] = []
            self.rearmed = False
            self.steps = 0

        # ---- plumbing

        @property
        def s(self) -> Session:
            """The example's session, built at its first step: an example hypothesis
            ends before any step (it does that) costs no QEMU."""
            if self.session is None:
                self._open()
            assert self.session is not None
            return self.session

        @property
        def g(self) -> Geometry:
            assert self.geo is not None
            return self.geo

        def _guard(self, fn: Callable[[], object]) -> None:
            """Run `fn`; QEMU misbehaving (a verdict) fails the example as a
            DifferentialFailure with its trace. Anything else (a harness bug, an
            interrupt) is not QEMU's: it propagates as it is, with no trace and no
            final checks of the example."""
            failure: QemuMisbehaved | None = None
            try:
                fn()
            except QemuMisbehaved as e:  # Divergence, crashes, hangs
                failure = e
            except BaseException:
                self.broken = True
                raise
            if failure is not None:
                # raised outside the except block, always from this line: hypothesis
                # sees one kind of failure however the misbehaviour showed
                raise self._fail(failure)

        def _fail(self, failure: QemuMisbehaved) -> DifferentialFailure:
            self.failed = True
            stats.failing_runs += 1
            if stats.first_failure_s is None:
                stats.first_failure_s = time.perf_counter() - stats.t0
            s = self.s
            name = f"trace-{cfg.qemu}-{cfg.group}-seed{cfg.seed}.json"
            report = f"{type(failure).__name__}: {failure}"
            trace = session_trace(s, cfg.qemu, cfg.seed, report)
            stats.trace = trace.write(cfg.trace_dir / name)
            stats.found = found(failure)
            return DifferentialFailure(failure, s.where or "?", s.spec.label, cfg.seed, stats.trace)

        def _do(self, *seq: ops.Op) -> None:
            for op in seq:
                views = len(self.s.policy_steps)
                try:
                    self._guard(functools.partial(self.s.step, op))
                finally:
                    stats.view_reads += len(self.s.policy_steps) - views
                stats.ops += 1
                stats.kinds[op.kind] += 1
                if isinstance(op, ops.Stop) and self.s.node.stage is Stage.FAILOVER_FAILED:
                    stats.kinds["failover_failed"] += 1

        # ---- setup and teardown

        @initialize(
            spec=st.sampled_from(cfg.specs),
            start=st.just(True) if cfg.start_first else st.sampled_from((True, True, True, False)),
        )
        def setup(self, spec: TopologySpec, start: bool) -> None:
            self.spec = spec
            self.start_first = start
            self.geo = geometry(spec)

        def _open(self) -> None:
            spec = self.spec
            assert spec is not None
            stats.examples += 1
            self.exdir = cfg.workdir / f"example-{stats.examples}"
            self.machines = MachineSet(self.exdir)
            self.session = Session(
                spec,
                cfg.build,
                cfg.profile,
                self.machines,
                self.exdir,
                f"QEMU {cfg.qemu}, profile {cfg.profile.name}",
            )
            if self.start_first and spec.kind == PAIR_KIND:
                # COLO's order: the secondary first, then the primary
                self._do(ops.Start(primary=False), ops.Start(primary=True, machine=PRIMARY))
            elif self.start_first:
                self._do(ops.Start(primary=spec.mode is Mode.PRIMARY, machine=spec.machine))

        def teardown(self) -> None:
            try:
                if self.session is not None and not (self.failed or self.broken):
                    self._guard(self.session.end)
            finally:
                if self.session is not None:
                    self.session.topo.close()
                if self.machines is not None:
                    self.machines.shutdown_all()
                if self.exdir is not None and not (self.failed or self.broken):
                    shutil.rmtree(self.exdir, ignore_errors=True)

        # ---- the step
        #
        # One rule draws the operation from a weighted list, filtered by the
        # preconditions (from the model's state): hypothesis' own choice among many
        # rules switches a random half of them off per example ("swarm" testing),
        # which with the few, expensive examples a QEMU run affords leaves too many
        # examples without checkpoints, failovers or link loss.

        def _allowed(self, kind: str) -> bool:
            s = self.s
            if kind.startswith("primary_"):
                return s.topo.export_io is not None and s.link_up()
            if kind == "failover":
                if s.node.stage is not Stage.RUNNING:
                    return False
                return not cfg.failover_dirty or _has_dirty(s.node)
            if kind == "link_down":
                return s.spec.kind in (PRIMARY_KIND, PAIR_KIND) and s.link_up()
            return True

        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            if self.session is not None and self.session.crashed:
                return  # QEMU died where the model said it would: the example is over
            stats.steps += 1
            changes = cfg.weights
            node, poison = self.s.node, self.s.spec.poison
            if node.stage is Stage.NONE:
                # before start the commands' refusals are what there is to see
                changes += (("status", 4), ("checkpoint", 2))
            elif poison is not None and commit_copies(node, poison):
                # a failover now fails its commit: what the faults topology is for
                changes += (("failover", 10),)
            kinds = _kinds(tuple(k for k in KINDS if self._allowed(k)), changes)
            i = data.draw(_indices(len(kinds)), label="op index")
            kind = kinds[(i + STRIDE * self.steps) % len(kinds)]
            self.steps += 1
            note(f"step {self.steps}: {kind}")
            getattr(self, f"op_{kind}")(data)

        # ---- requests: where

        def _region(self, data: st.DataObject, avoid: bool, cbw: bool = False) -> tuple[int, int]:
            """Offset and length: near an interesting boundary, anywhere in the window,
            at the end of the disk, or (a third of the time, once there are some) at or
            next to a recent request, so that requests meet.

            `cbw`: the request is a write reaching the secondary disk (copy-before-write
            while RUNNING). The first such write after a checkpoint goes, half the time,
            where one before the checkpoint went: the checkpoint must have re-armed the
            copy of that cluster."""
            g = self.g
            pool: tuple[int, ...] = ()
            if cbw and self.rearmed and self.copied:
                self.rearmed = False
                if data.draw(st.booleans(), label="where one copied before the checkpoint"):
                    pool = tuple(self.copied)
            if (
                not pool
                and self.recent
                and data.draw(st.sampled_from((False, False, True)), label="again")
            ):
                pool = tuple(self.recent)
            if pool:
                base = data.draw(st.sampled_from(pool), label="recent")
                off = base + data.draw(st.sampled_from(DELTAS), label="delta")
            else:
                off = data.draw(offsets(g), label="offset")
            length = data.draw(lengths(g), label="length")
            off, length = g.clip(off, length, avoid)
            for p in (off, off + length):
                if p not in self.recent:
                    self.recent.append(p)
            del self.recent[:-8]
            if cbw and self.s.node.stage is Stage.RUNNING:
                self.copied.append(off)
                del self.copied[:-8]
            return off, length

        # ---- the replication node's guest I/O (pair: either VM's; many-nodes: mostly
        # rep's, sometimes the old node's)

        def _guest(self, data: st.DataObject, primary_vm: int = 1) -> str:
            """The node guest I/O goes through. Pair: the primary VM's quorum (`primary_vm`
            chances in primary_vm + 1) or the secondary VM's node; nothing is drawn for
            the single-node kinds."""
            kind = self.s.spec.kind
            if kind == PAIR_KIND:
                choices = (PQ,) * primary_vm + (REP,)
                return data.draw(st.sampled_from(choices), label="guest")
            if kind == NODES_KIND:
                return data.draw(st.sampled_from((REP, REP, REP, OLD)), label="node")
            return REP

        def op_write(self, data: st.DataObject) -> None:
            node = self._guest(data, 2)
            off, n = self._region(data, _avoid_for_guest(self.s), cbw=node == PQ)
            self._do(ops.Write(off, n, data.draw(patterns(), label="pattern"), node=node))

        def op_write_zeroes(self, data: st.DataObject) -> None:
            node = self._guest(data, 2)
            off, n = self._region(data, _avoid_for_guest(self.s), cbw=node == PQ)
            self._do(ops.WriteZeroes(off, n, node=node))

        def op_read(self, data: st.DataObject) -> None:
            node = self._guest(data)
            self._do(ops.Read(*self._region(data, False), node=node))

        def op_discard(self, data: st.DataObject) -> None:
            node = self._guest(data)
            self._do(ops.Discard(*self._region(data, False), node=node))

        def op_flush(self, data: st.DataObject) -> None:
            self._do(ops.Flush(node=self._guest(data)))

        # ---- the primary's I/O through the NBD export (kept off a poisoned page)

        def op_primary_write(self, data: st.DataObject) -> None:
            off, n = self._region(data, True, cbw=True)
            self._do(ops.PrimaryWrite(off, n, data.draw(patterns(), label="pattern")))

        def op_primary_write_zeroes(self, data: st.DataObject) -> None:
            self._do(ops.PrimaryWriteZeroes(*self._region(data, True, cbw=True)))

        def op_primary_discard(self, data: st.DataObject) -> None:
            self._do(ops.PrimaryDiscard(*self._region(data, True)))

        def op_primary_read(self, data: st.DataObject) -> None:
            self._do(ops.PrimaryRead(*self._region(data, False)))

        # ---- replication control (QMP)

        def _mine(self, data: st.DataObject) -> tuple[bool, str]:
            """(primary, machine) of the command: the topology's own; on the pair, either
            side's (drawn)."""
            spec = self.s.spec
            if spec.kind == PAIR_KIND:
                primary = data.draw(st.booleans(), label="primary side")
                return primary, PRIMARY if primary else SECONDARY
            return spec.mode is Mode.PRIMARY, spec.machine

        def op_status(self, data: st.DataObject) -> None:
            self._do(ops.Status(machine=self._mine(data)[1]))

        def op_checkpoint(self, data: st.DataObject) -> None:
            """Pair: both sides, as COLO checkpoints (the primary's does nothing)."""
            spec = self.s.spec
            self._do(ops.Checkpoint(machine=spec.machine))
            if spec.kind == PAIR_KIND:
                self._do(ops.Checkpoint(machine=PRIMARY))
            self.rearmed = self.s.node.stage is Stage.RUNNING

        def op_start(self, data: st.DataObject) -> None:
            primary, m = self._mine(data)
            self._do(ops.Start(primary=primary, machine=m))

        def op_start_other_mode(self, data: st.DataObject) -> None:
            primary, m = self._mine(data)
            self._do(ops.Start(primary=not primary, machine=m))

        def op_start_with_failover(self, data: st.DataObject) -> None:
            """Refused by the QMP handler whatever the stage."""
            primary, m = self._mine(data)
            failover = data.draw(st.booleans(), label="failover")
            self._do(ops.Start(primary=primary, failover=failover, machine=m))

        def op_stop(self, data: st.DataObject) -> None:
            """A plain stop (pair: of either side; the primary's ends its forwarding)."""
            primary, m = self._mine(data)
            self._do(ops.Stop(primary=primary, machine=m))

        def op_failover(self, data: st.DataObject) -> None:
            """Only while RUNNING: stop with failover=True, optionally a status racing the
            commit, then wait for the commit to finish (Settle). Pair: the secondary's
            failover, most often after its NBD export went (COLO stops the NBD server
            first), else with the primary still connected."""
            spec = self.s.spec
            primary, m = spec.mode is Mode.PRIMARY, spec.machine
            if (
                spec.kind == PAIR_KIND
                and self.s.link_up()
                and data.draw(st.sampled_from((True, True, False)), label="link down first")
            ):
                self._do(LinkDown(machine=SECONDARY))
            self._do(ops.Stop(primary=primary, failover=True, machine=m))
            if data.draw(st.booleans(), label="status racing the commit"):
                self._do(ops.Status(machine=m))
            self._do(ops.Settle(machine=m))

        def op_link_down(self, data: st.DataObject) -> None:
            """Primary topology: block-export-del (hard) on the storage daemon; pair: of
            the secondary's export (the primary's NBD client is cut off)."""
            if self.s.spec.kind == PAIR_KIND:
                self._do(LinkDown(machine=SECONDARY))
            else:
                self._do(LinkDown())

    DifferentialMachine.__name__ = f"Differential_{cfg.group}"
    DifferentialMachine.__qualname__ = DifferentialMachine.__name__
    return DifferentialMachine


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
    cfg = RunConfig(
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
    stats = RunStats()
    cls = machine_class(cfg, stats)
    # hypothesis.seed() for a state machine: run_state_machine_as_test copies it
    cls._hypothesis_internal_use_seed = seed
    failure: str | None = None
    try:
        with shrink_budget(shrink_seconds):
            run_state_machine_as_test(cls, settings=hyp_settings)
    except DifferentialFailure as e:
        failure = str(e)
        notes = getattr(e, "__notes__", None)
        if notes:
            failure += "\n" + "\n".join(notes)
    except Flaky as e:
        # a failure that did not happen again when hypothesis re-ran the example: QEMU's
        # (a divergence, a crash...) is reported; the harness's own is raised as it is
        if not all(isinstance(x, DifferentialFailure) for x in getattr(e, "exceptions", ())):
            raise
        failure = (
            f"a divergence that did not reproduce when re-run (timing in QEMU or in the "
            f"harness?): {e}\ntrace of the last failing run: {stats.trace}"
        )
    return RunResult(
        group=group,
        qemu=qemu,
        seed=seed,
        examples=stats.examples,
        steps=stats.steps,
        ops=stats.ops,
        wall_s=time.perf_counter() - stats.t0,
        failure=failure,
        trace=stats.trace if failure is not None else None,
        first_failure_s=stats.first_failure_s,
        kinds=dict(stats.kinds),
        view_reads=stats.view_reads,
        found=stats.found,
    )


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
    """Each group in turn (the CI configuration is `ci_groups()`); one result per group.

    In the CI profile a group that ran fewer than its `min_steps` steps (hypothesis
    sometimes ends examples early) runs again with the next seed, at most 3 times.
    """
    out: list[RunResult] = []
    base = options.settings()
    seed0 = options.resolved_seed()
    for grp in groups:
        examples = options.examples
        if examples is None and options.profile == CI:
            examples = grp.examples
        hs = settings(base, max_examples=examples) if examples is not None else base
        if grp.steps is not None and options.steps is None and options.profile == CI:
            hs = settings(hs, stateful_step_count=grp.steps)
        total: RunResult | None = None
        for attempt in range(3):
            res = run_differential(
                build,
                qemu,
                profile,
                grp.specs(),
                workdir / f"{grp.name}-{attempt}",
                hyp_settings=hs,
                seed=seed0 + attempt,
                trace_dir=trace_dir,
                group=grp.name,
                shrink_seconds=options.shrink_limit(),
                weights=grp.weights,
                start_first=grp.start_first,
                failover_dirty=grp.failover_dirty,
            )
            total = res if total is None else _merge(total, res)
            if res.failure is not None or options.profile != CI:
                break
            if total.steps >= grp.min_steps:
                break
        assert total is not None
        out.append(total)
        if total.failure is not None and stop_at_failure:
            break
    return out


def _merge(a: RunResult, b: RunResult) -> RunResult:
    """Two runs of one group as one result (b's failure, if any, is the result's)."""
    kinds = Counter(a.kinds)
    kinds.update(b.kinds)
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
        wall_s=a.wall_s + b.wall_s,
        failure=b.failure,
        trace=b.trace,
        first_failure_s=first,
        kinds=dict(kinds),
        view_reads=a.view_reads + b.view_reads,
        found=b.found,
    )
