"""The differential state machine: random operations on real QEMU and the model in lock-step.

`DifferentialStateMachine` is a hypothesis `RuleBasedStateMachine`. Its @initialize rule
`setup` draws the example's topology spec and whether replication starts at once; the
Session (the topology in QEMU and in the model) is built at the first step, so an
example hypothesis ends before any step costs no QEMU. Its one @rule, `step`, draws an
operation kind from a weighted list (specs.WEIGHTS and the group's changes) filtered by
preconditions from the model's state (`allowed`), and applies it through
`Session.step`: QEMU's answer against the model's, the layers before checkpoints, every
guest view after an operation that can change one. The teardown runs the final layer
checks.

One rule drawing from a weighted list, not a rule per operation with its @precondition:
hypothesis switches a random part of a machine's rules off per example ("swarm"
testing), which with the few, expensive examples a QEMU run affords leaves too many
without checkpoints, failovers or link loss; and each group's weights say what its
topology is about. Measured with a rule per operation kind (preconditions `allowed`)
in the CI profile at seed 0: the secondary group never failed over, the faults group
never saw a failed commit, the primary group never lost its link, and 3 of the 14 model
variants of tests/test_variants.py survived (all 14 are caught with the weights).

Where guest I/O and QMP commands go is the topology's kind's (harness.differential.kinds):
on the COLO pair guest I/O goes through the primary VM's quorum or the secondary VM's
node, and the QMP commands to either side: a checkpoint to both (as COLO does), a stop
to one, a failover to the secondary, most often after its NBD export went (LinkDown).
On the two-node machine guest I/O goes mostly to the newer node.

QEMU misbehaving (harness.verdicts) fails the example as a DifferentialFailure;
hypothesis shrinks it, and every failing run writes its trace file (the last: the
shrunk example's), named in the failure. Anything else raised (a harness bug) ends the
run as the error it is, with no trace and no replay hint.

hypothesis makes each example's machine with no arguments: `state_machine_for` binds
the class to one run, in a subclass of its own: the run's RunConfig and RunResult as
class attributes, `setup` as the @initialize rule drawing from the run's specs, the
run's seed with hypothesis.seed.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

from hypothesis import note, seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from harness import ops
from harness.builds import QemuBuild
from harness.differential.kinds import TopologySpec
from harness.differential.results import DifferentialFailure, RunResult, found
from harness.differential.session import Session
from harness.differential.specs import OP_KINDS, weighted_kinds
from harness.differential.strategies import Geometry, Requests, geometry, patterns
from harness.differential.trace import session_trace
from harness.machine import MachineSet
from harness.model import Profile
from harness.model.replication import Stage
from harness.verdicts import QemuMisbehaved


@dataclass(frozen=True)
class RunConfig:
    """What one run of the state machine is bound to."""

    build: QemuBuild
    qemu: str  # the version, for traces and messages
    profile: Profile
    specs: tuple[TopologySpec, ...]
    workdir: Path
    trace_dir: Path
    seed: int
    group: str = "differential"
    # the group's (specs.Group): weights that differ from WEIGHTS, and its choices
    weights: tuple[tuple[str, int], ...] = ()
    start_first: bool = False
    failover_dirty: bool = False


@functools.lru_cache(maxsize=64)
def _indices(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


# A step picks kinds[(i + STRIDE * step) % len(kinds)] for a drawn i: uniform i gives
# the weighted choice, and hypothesis' simplest examples (i = 0 throughout, which it
# always tries first) walk through every kind instead of repeating the first.
STRIDE = 7


def _avoid_for_guest(session: Session) -> bool:
    """A guest write reaches the (poisoned) secondary disk unless the stage is NONE (EIO)
    or RUNNING (it goes to the active disk)."""
    stage = session.node.stage
    return session.spec.poison is not None and stage not in (Stage.NONE, Stage.RUNNING)


class DifferentialStateMachine(RuleBasedStateMachine):
    """One example: a topology spec, a Session built at the first step, then steps."""

    # the run this class is bound to, and what it found so far (state_machine_for)
    config: ClassVar[RunConfig]
    result: ClassVar[RunResult]

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
        self.requests = Requests()
        self.steps = 0

    # ---- plumbing

    @property
    def s(self) -> Session:
        """The example's session, built at its first step."""
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
        cfg, res = self.config, self.result
        self.failed = True
        res.failing_runs += 1
        if res.first_failure_s is None:
            res.first_failure_s = time.perf_counter() - res.t0
        s = self.s
        name = f"trace-{cfg.qemu}-{cfg.group}-seed{cfg.seed}.json"
        report = f"{type(failure).__name__}: {failure}"
        trace = session_trace(s, cfg.qemu, cfg.seed, report)
        res.trace = trace.write(cfg.trace_dir / name)
        res.found = found(failure)
        return DifferentialFailure(failure, s.where or "?", s.spec.label, cfg.seed, res.trace)

    def _do(self, *seq: ops.Op) -> None:
        res = self.result
        for op in seq:
            views = len(self.s.policy.steps)
            try:
                self._guard(functools.partial(self.s.step, op))
            finally:
                res.view_reads += len(self.s.policy.steps) - views
            res.ops += 1
            res.kinds[op.kind] += 1
            if isinstance(op, ops.Stop) and self.s.node.stage is Stage.FAILOVER_FAILED:
                res.kinds["failover_failed"] += 1

    # ---- setup and teardown

    def setup(self, spec: TopologySpec, start: bool) -> None:
        """The @initialize rule (state_machine_for gives it the run's strategies): the
        example's topology spec, and whether replication starts at once."""
        self.spec = spec
        self.start_first = start
        self.geo = geometry(spec)

    def _open(self) -> None:
        cfg, spec = self.config, self.spec
        assert spec is not None
        self.result.examples += 1
        self.exdir = cfg.workdir / f"example-{self.result.examples}"
        self.machines = MachineSet(self.exdir)
        self.session = Session(
            spec,
            cfg.build,
            cfg.profile,
            self.machines,
            self.exdir,
            f"QEMU {cfg.qemu}, profile {cfg.profile.name}",
        )
        if self.start_first:
            self._do(*spec.kind.starts())

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

    def allowed(self, kind: str) -> bool:
        """The preconditions of operation `kind`, from the model's state."""
        s = self.s
        topology = s.spec.kind
        if not topology.allows(kind):
            return False
        if kind.startswith("primary_"):
            return s.topo.export_io is not None and s.link_up()
        if kind == "failover":
            return topology.can_fail_over(s.model, self.config.failover_dirty)
        if kind == "interrupted_checkpoint":
            return topology.can_fail_over(s.model, False)
        if kind == "start":
            return topology.can_start(s.model)
        if kind == "link_down":
            return s.spec.kind.link_down is not None and s.link_up()
        return True

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        if self.session is not None and self.session.crashed:
            return  # QEMU died where the model said it would: the example is over
        self.result.steps += 1
        changes = self.config.weights
        node, poison = self.s.node, self.s.spec.poison
        if node.stage is Stage.NONE:
            # before start the commands' refusals are what there is to see
            changes += (("status", 4), ("checkpoint", 2))
        elif poison is not None and node.commit_copies(poison):
            # a failover now fails its commit: what the faults topology is for
            changes += (("failover", 10),)
        kinds = weighted_kinds(tuple(k for k in OP_KINDS if self.allowed(k)), changes)
        i = data.draw(_indices(len(kinds)), label="op index")
        kind = kinds[(i + STRIDE * self.steps) % len(kinds)]
        self.steps += 1
        note(f"step {self.steps}: {kind}")
        getattr(self, f"op_{kind}")(data)

    # ---- the replication node's guest I/O (the kind's guest_node: which node)

    def _region(self, data: st.DataObject, avoid: bool, cbw: bool = False) -> tuple[int, int]:
        """Where a request goes (strategies.Requests.region)."""
        running = self.s.node.stage is Stage.RUNNING
        return self.requests.region(data, self.g, avoid, cbw, running)

    def op_write(self, data: st.DataObject) -> None:
        kind = self.s.spec.kind
        node = kind.guest_node(data, self.s.model, 2)
        off, n = self._region(data, _avoid_for_guest(self.s), cbw=node in kind.forwarded)
        self._do(ops.Write(off, n, data.draw(patterns(), label="pattern"), node=node))

    def op_write_zeroes(self, data: st.DataObject) -> None:
        kind = self.s.spec.kind
        node = kind.guest_node(data, self.s.model, 2)
        off, n = self._region(data, _avoid_for_guest(self.s), cbw=node in kind.forwarded)
        self._do(ops.WriteZeroes(off, n, node=node))

    def op_read(self, data: st.DataObject) -> None:
        node = self.s.spec.kind.guest_node(data, self.s.model)
        self._do(ops.Read(*self._region(data, False), node=node))

    def op_discard(self, data: st.DataObject) -> None:
        node = self.s.spec.kind.guest_node(data, self.s.model)
        self._do(ops.Discard(*self._region(data, False), node=node))

    def op_flush(self, data: st.DataObject) -> None:
        self._do(ops.Flush(node=self.s.spec.kind.guest_node(data, self.s.model)))

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

    def op_status(self, data: st.DataObject) -> None:
        self._do(ops.Status(machine=self.s.spec.kind.command_side(data, self.s.model)[1]))

    def op_checkpoint(self, data: st.DataObject) -> None:
        """The kind's checkpoints (the pair's: both sides, as COLO checkpoints)."""
        self._do(*self.s.spec.kind.checkpoints())
        self.requests.rearmed = self.s.node.stage is Stage.RUNNING

    def op_start(self, data: st.DataObject) -> None:
        """The kind's start (a Xen hook on the side it draws; the COLO kinds' migration)."""
        self._do(*self.s.spec.kind.start(data, self.s.model))

    def op_start_other_mode(self, data: st.DataObject) -> None:
        primary, m = self.s.spec.kind.command_side(data, self.s.model)
        self._do(ops.Start(primary=not primary, machine=m))

    def op_start_with_failover(self, data: st.DataObject) -> None:
        """Refused by the QMP handler whatever the stage."""
        primary, m = self.s.spec.kind.command_side(data, self.s.model)
        failover = data.draw(st.booleans(), label="failover")
        self._do(ops.Start(primary=primary, failover=failover, machine=m))

    def op_stop(self, data: st.DataObject) -> None:
        """A plain stop (pair: of either side; the primary's ends its forwarding)."""
        primary, m = self.s.spec.kind.command_side(data, self.s.model)
        self._do(ops.Stop(primary=primary, machine=m))

    def op_failover(self, data: st.DataObject) -> None:
        """Where the kind allows it (rep RUNNING; the COLO kinds: both sides in COLO):
        the kind's failover (Kind.failover: what goes before it, the stop with failover,
        the wait for the commit; the COLO kinds: a side takes over from its dead peer)."""
        self._do(*self.s.spec.kind.failover(data, self.s.link_up()))

    def op_interrupted_checkpoint(self, data: st.DataObject) -> None:
        """The COLO kinds: a checkpoint with a side SIGKILLed in its middle."""
        self._do(*self.s.spec.kind.interrupted_checkpoint(data))

    def op_link_down(self, data: st.DataObject) -> None:
        """The kind's link going down (primary: block-export-del hard on the storage
        daemon; pair: of the secondary's export, the primary's NBD client cut off)."""
        link_down = self.s.spec.kind.link_down
        assert link_down is not None  # allowed() says
        self._do(link_down)


def state_machine_for(config: RunConfig, result: RunResult) -> type[DifferentialStateMachine]:
    """DifferentialStateMachine bound to one run, in a subclass named after the group
    (hypothesis prints it): `config` and `result` as class attributes, `setup` as the
    @initialize rule over the run's specs, seeded with `config.seed` (hypothesis.seed).

    `setup`'s strategies are its arguments, not draws inside it from `config`: the same
    choices, but hypothesis' generation at a fixed seed depends on how the draws nest,
    and the CI groups' runs (and which model variants each seed catches) stay as they
    were."""
    starts = st.just(True) if config.start_first else st.sampled_from((True, True, True, False))
    spec = st.sampled_from(config.specs)
    setup = initialize(spec=spec, start=starts)(DifferentialStateMachine.setup)
    attrs = {"config": config, "result": result, "setup": setup}
    bound = type(f"Differential_{config.group}", (DifferentialStateMachine,), attrs)
    return cast(type[DifferentialStateMachine], seed(config.seed)(bound))
