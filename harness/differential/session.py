"""One differential run on one fresh topology: the story (QEMU and the model of the same
value, harness.differential.kinds says which), the read policy around each operation
(harness.differential.policy), and what a trace records of it.

The state machine (harness.differential.rules) and the replayer
(harness.differential.replay) both go through `Session`, so a trace replays under the
policy that recorded it: the policy's reads are not part of a trace (`ViewPolicy.steps`),
a replay makes them again, the same ones (they depend on the operations alone). A trace
recorded under an earlier policy replays under this one, its divergence showing where
this policy first reads it: sooner where it reads more (a trace recorded when only the
pair's guest views were read back), later where it reads less (one recorded when every
view was read whole after every operation, whose divergence lay outside what this
policy reads after that operation).

At the end: the layers once more live, the whole views, then QEMU quits and every layer
is checked offline (qemu-img map and bytes: `Story.finish`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness import ops
from harness.builds import QemuBuild
from harness.differential.kinds import TopologySpec
from harness.differential.policy import OBSERVING, ViewPolicy
from harness.faults import Kill
from harness.machine import MachineSet
from harness.model import Model, Profile
from harness.model.replication import ReplicationNode
from harness.observe import Crashed, Observation
from harness.ops import REP
from harness.real import LiveTopology
from harness.verdicts import Step

T = TypeVar("T")


class Session:
    """A fresh topology (QEMU and model) for `spec`, run under the read policy."""

    def __init__(
        self,
        spec: TopologySpec,
        build: QemuBuild,
        profile: Profile,
        machines: MachineSet,
        workdir: Path,
        label: str = "",
        *,
        whole_views: bool = False,
    ) -> None:
        self.spec = spec
        self.build = build
        label = label or f"QEMU {build.label}, profile {profile.name}"
        label += f", topology {spec.label}"
        # where a failure happened (None: nowhere yet)
        self.where: str | None = None
        # QEMU died as the model predicted (a profile's known abort): nothing more to do
        self.crashed = False
        self.ended = False
        kind = spec.kind
        self.story = kind.story.open(kind.graph(spec), build, profile, machines, workdir, label)
        # the topology's own steps (its kind's set-up) come first: not part of a trace
        kind.set_up(self.story, spec)
        self.setup_steps = len(self.story.steps)
        # the operation being applied (its checks included); None between operations
        self.pending: ops.Op | None = None
        self.policy = ViewPolicy(self.story, spec.kind, whole_views=whole_views)

    @property
    def topo(self) -> LiveTopology:
        return self.story.topo

    @property
    def model(self) -> Model:
        return self.story.model

    @property
    def node(self) -> ReplicationNode:
        return self.model.nodes[REP]

    def link_up(self) -> bool:
        """Is the primary's NBD link up (always, where the kind has none to lose)?"""
        return self.spec.kind.link_up(self.model)

    def operations(self) -> list[Step]:
        """The steps a trace records: after the set-up, without the policy's reads."""
        return [
            st
            for i, st in enumerate(self.story.steps)
            if i >= self.setup_steps and i not in self.policy.steps
        ]

    # ---- running

    def step(self, op: ops.Op) -> Observation:
        """Apply `op` under the read policy (harness.differential.policy): the layers
        checked before a checkpoint, the guest views read whole before an operation that
        empties the active and hidden disks, and after an operation that can change a
        view what it could have changed plus the next sample."""
        policy = self.policy
        n = len(self.story.steps) - self.setup_steps - len(policy.steps) + 1
        self.pending = op
        if policy.checks_layers_before(op):
            self._at(f"layer allocation before operation {n}", policy.check_layers)
        if policy.empties(op):
            self._at(f"guest views before operation {n}", lambda: policy.read(policy.whole))
        policy.before(op)
        obs = self._at(f"operation {n}", lambda: self.story.do(op))
        self.pending = None
        if isinstance(obs, Crashed) and not isinstance(op, Kill):
            # the model predicted it (else story.do raised): the example ends here
            self.crashed = True
            return obs
        self.spec.kind.after_step(self.story)
        if not isinstance(op, OBSERVING):
            after = f"guest views after operation {n}"
            self._at(after, lambda: policy.read(lambda: policy.after(op)))
        return obs

    def end(self) -> None:
        """The final checks: layers live, the whole views, then (QEMU gone) layers
        offline."""
        self.ended = True
        policy = self.policy
        if not self.crashed:  # a dead QEMU has no live layers to ask about
            self._at("final layer allocation (live)", policy.check_layers)
            self._at("guest views at the end", lambda: policy.read(policy.whole))
        self._at("final layer check (offline)", self.story.finish)

    def _at(self, where: str, fn: Callable[[], T]) -> T:
        """`fn()`, as `where` (which stays if it raises: where the run failed)."""
        self.where = where
        out = fn()
        self.where = None
        return out

    def close(self) -> None:
        self.topo.close()
        self.topo.machines.shutdown_all()
