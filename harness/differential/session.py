"""One differential run on one fresh topology: the topology kinds, the extra operations'
handlers, when layers are checked, and the trace of what happened.

The state machine (harness.differential.machine) and the replayer
(harness.differential.replay) both go through `Session`, so a trace replays
under exactly the policy that recorded it:

- every operation is applied to the model and to QEMU and compared (Story.do);
- just before every checkpoint each layer's own allocation is asked of the
  running QEMU and compared with the model (`check_layers_live`): the checkpoint
  empties the active and hidden disks, and with them the evidence (whether they
  were emptied shows at the next check);
- at the end, the layers once more live, then QEMU quits and every layer is
  checked offline (qemu-img map and bytes: `Story.finish`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ops, topology
from harness.builds import QemuBuild
from harness.differential.ops import CHILD, LinkDown
from harness.images import Recipe
from harness.machine import MachineSet
from harness.model import Model, Profile
from harness.model.disks import allocated_above, view
from harness.model.replication import Mode, ReplicationNode, Stage
from harness.observe import QMP_OK, Observation
from harness.ops import PRIMARY, REP, SECONDARY
from harness.story import Story
from harness.topology import Topology

SECONDARY_KIND = "secondary"
FAULTS_KIND = "secondary-faults"
PRIMARY_KIND = "primary"
KINDS = (SECONDARY_KIND, FAULTS_KIND, PRIMARY_KIND)

SECTOR = 512
# The failover commit's copy granularity: clamp(secondary cluster, 4 KiB, 64 KiB).
MIRROR_GRANULARITY_MIN = 4096
MIRROR_GRANULARITY_MAX = 65536


@dataclass(frozen=True)
class TopologySpec:
    """Which topology a run builds: its kind, its recipe and (faults) the poisoned sector.

    - secondary: the secondary-only topology (harness.topology.secondary).
    - secondary-faults: the same over a blkdebug filter on the secondary disk whose
      writes covering byte `poison` fail with EIO, so a failover commit that copies
      that sector fails (FAILOVER_FAILED). The runner keeps every other write that
      would reach the secondary disk off the poisoned page.
    - primary: the primary-only topology (harness.topology.primary), whose NBD link
      to its child can go down (LinkDown).
    """

    kind: str
    recipe: Recipe
    name: str = ""
    poison: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown topology kind {self.kind!r}; known: {', '.join(KINDS)}")
        if (self.kind == FAULTS_KIND) != (self.poison is not None):
            raise ValueError("a poisoned sector belongs to (only) the secondary-faults kind")

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name or self.recipe.source}"

    @property
    def machine(self) -> str:
        """The machine holding the replication node."""
        return PRIMARY if self.kind == PRIMARY_KIND else SECONDARY

    @property
    def mode(self) -> Mode:
        return Mode.PRIMARY if self.kind == PRIMARY_KIND else Mode.SECONDARY

    def poison_page(self) -> tuple[int, int] | None:
        """The 4 KiB page around the poisoned sector: what other writes keep off."""
        if self.poison is None:
            return None
        start = self.poison - self.poison % 4096
        return (start, start + 4096)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "poison": self.poison}


def commit_copies(node: ReplicationNode, offset: int) -> bool:
    """Does a failover commit starting now copy the chunk holding byte `offset`?

    The commit (a mirror of active into the secondary disk) copies the chunks of
    clamp(secondary cluster, 4 KiB, 64 KiB) that hold anything allocated in the
    active or the hidden disk (docs/qemu-sources.md, section 3).
    """
    active, secondary = node.active, node.secondary
    if node.stage is not Stage.RUNNING or active is None or secondary is None:
        return False
    g = min(max(MIRROR_GRANULARITY_MIN, secondary.cluster), MIRROR_GRANULARITY_MAX)
    start = offset - offset % g
    return any(a for _, _, a in allocated_above(active, secondary, start, start + g))


class Session:
    """A fresh topology (QEMU and model) for `spec`, run under the differential policy."""

    def __init__(
        self,
        spec: TopologySpec,
        build: QemuBuild,
        profile: Profile,
        machines: MachineSet,
        workdir: Path,
        label: str = "",
    ) -> None:
        self.spec = spec
        self.build = build
        topo = _build(spec, build, profile, machines, workdir)
        self.story = Story(topo, label or f"QEMU {build.label}, profile {profile.name}")
        self.story.label += f", topology {spec.label}"
        _install(self.story, spec)
        # where a failure happened (None: nowhere yet)
        self.where: str | None = None
        self.ended = False
        self.setup_steps = 0
        if spec.poison is not None:
            self.story.do(_arm_blkdebug(self.model))
        # steps before this are the topology's own (not part of a trace)
        self.setup_steps = len(self.story.steps)
        # the operation being applied (its checks included); None between operations
        self.pending: ops.Op | None = None

    @property
    def topo(self) -> Topology:
        return self.story.topo

    @property
    def model(self) -> Model:
        return self.story.model

    @property
    def node(self) -> ReplicationNode:
        return self.model.nodes[REP]

    def link_up(self) -> bool:
        return self.spec.kind != PRIMARY_KIND or self.node.link_up

    # ---- running

    def step(self, op: ops.Op) -> Observation:
        """Apply `op` under the policy (layers checked before a checkpoint)."""
        n = len(self.story.steps) - self.setup_steps + 1
        self.pending = op
        if isinstance(op, ops.Checkpoint):
            self._checked(f"layer allocation before operation {n}", self.story.check_layers_live)
        self.where = f"operation {n}"
        obs = self.story.do(op)
        self.where = None
        self.pending = None
        return obs

    def end(self) -> None:
        """The final checks: layers live, then (QEMU gone) layers offline."""
        self.ended = True
        self._checked("final layer allocation (live)", self.story.check_layers_live)
        self._checked("final layer check (offline)", self.story.finish)

    def _checked(self, where: str, fn: Callable[[], None]) -> None:
        self.where = where
        fn()
        self.where = None

    def close(self) -> None:
        self.topo.close()
        self.topo.machines.shutdown_all()


# ---- building


def _build(
    spec: TopologySpec, build: QemuBuild, profile: Profile, machines: MachineSet, workdir: Path
) -> Topology:
    if spec.kind == PRIMARY_KIND:
        return topology.primary(build, profile, machines, workdir, spec.recipe)
    flt = None
    if spec.poison is not None:
        flt = topology.blkdebug_over_secondary(
            spec.poison // SECTOR, iotypes=("write", "write-zeroes")
        )
    return topology.secondary(build, profile, machines, workdir, spec.recipe, secondary_filter=flt)


def _arm_blkdebug(model: Model) -> ops.Op:
    """The write that arms the blkdebug rules of the faults topology.

    blkdebug's inject-error rules take effect only once their event (pwritev: a data
    write reaching the blkdebug node) has fired; a failover commit whose first request
    to the secondary disk is a write-zeroes would otherwise race its own data copies.
    This primary write (before start, so nothing is copied) rewrites the last sector
    of the secondary disk with the byte it already holds.
    """
    disk = model.export
    assert disk is not None
    end = disk.size
    pieces = view(disk.chain(), end - SECTOR, end)
    if len(pieces) != 1 or not 0 <= pieces[0][2] <= 255:
        raise ValueError("the faults topology needs a uniform last sector on the secondary disk")
    return ops.PrimaryWrite(end - SECTOR, SECTOR, pieces[0][2])


def _install(story: Story, spec: TopologySpec) -> None:
    """Teach this story's model and real side the differential-only operations and facts."""
    model, real, topo = story.model, story.real, story.topo
    dispatch: dict[type[ops.Op], Callable[[Any], Observation]] = model._dispatch
    real_dispatch: dict[type[ops.Op], Callable[[Any, Observation], Observation]] = (
        real._dispatch
    )

    def model_link_down(op: LinkDown) -> Observation:
        for node in model.machine(PRIMARY).nodes:
            node.link_up = False
        return QMP_OK

    def real_link_down(op: LinkDown, expected: Observation) -> Observation:
        return topo.machine(op.machine).qmp("block-export-del", id=op.export, mode=op.mode)

    dispatch[LinkDown] = model_link_down
    real_dispatch[LinkDown] = real_link_down

    poison = spec.poison
    if poison is not None:
        plain_stop = dispatch[ops.Stop]

        def stop(op: ops.Stop) -> Observation:
            # The blkdebug rule is a fact of the topology: the commit fails iff it
            # copies the poisoned sector.
            if op.failover and op.machine == SECONDARY:
                for node in model.machine(SECONDARY).nodes:
                    node.commit_fails = commit_copies(node, poison)
            return plain_stop(op)

        dispatch[ops.Stop] = stop


__all__ = [
    "CHILD",
    "FAULTS_KIND",
    "KINDS",
    "PRIMARY_KIND",
    "SECONDARY_KIND",
    "Session",
    "TopologySpec",
    "commit_copies",
]
