"""One differential run on one fresh topology: the topology kinds, the extra operations'
handlers, when layers are checked, and the trace of what happened.

The state machine (harness.differential.machine) and the replayer
(harness.differential.replay) both go through `Session`, so a trace replays
under the policy that recorded it (a trace recorded when only the pair's guest views
were read back replays with every kind's views: a divergence there shows sooner):

- every operation is applied to the model and to QEMU and compared (Story.do);
- after every operation that can change what a guest sees (all but reads, status and
  flush), once no failover commit runs (the model is settled), every guest view of the
  topology is read back whole, byte by byte, and compared (`Session.views`): on the
  secondary-only kinds the secondary VM's disk (rep) and the secondary disk as the
  primary sees it through the NBD export; on the primary kind the primary node's answer
  and the child through its export; on the two-node machine each node and rep's
  export; on the COLO pair both VMs' disks (PairStory.views). These reads are the
  policy's, not the trace's: a replay makes them again;
- just before every checkpoint (of the machine holding rep) each layer's own
  allocation is asked of the running QEMU and compared with the model
  (`check_layers_live`): the checkpoint
  empties the active and hidden disks, and with them the evidence (whether they
  were emptied shows at the next check);
- at the end, the layers once more live, then QEMU quits and every layer is
  checked offline (qemu-img map and bytes: `Story.finish`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import faults, ops
from harness.builds import QemuBuild
from harness.faults import CHILD
from harness.images import Recipe, format_size
from harness.machine import MachineSet
from harness.model import Model, Profile
from harness.model.disks import allocated_above, view
from harness.model.replication import Mode, ReplicationNode, Stage, commit_chunk
from harness.observe import Crashed, Observation
from harness.ops import PRIMARY, REP, SECONDARY
from harness.pair import PairStory, read_pieces
from harness.story import Story
from harness.topology import Graph, Topology, open_topology, standard
from harness.topology.pair import LOCAL
from harness.topology.pair import pair as pair_graph
from harness.topology.standard import NodeSpec, many_nodes_recipe
from harness.units import SECTOR
from harness.verdicts import Step

SECONDARY_KIND = "secondary"
FAULTS_KIND = "secondary-faults"
PRIMARY_KIND = "primary"
PAIR_KIND = "pair"
NODES_KIND = "many-nodes"
KINDS = (SECONDARY_KIND, FAULTS_KIND, PRIMARY_KIND, PAIR_KIND, NODES_KIND)

# The many-nodes topology's replication nodes, oldest first: "old" has no block backend
# on its secondary disk (no NBD export), so it never starts and (backup cancelled) never
# checkpoints; "rep", the newest, is the one the rules drive. The *_all commands walk
# newest first and stop at the first error, so rep runs, checkpoints and fails over while
# every command answers old's error: walked the other way round, rep would never start.
OLD = "old"
NODES = (NodeSpec(OLD, export=False), NodeSpec(REP))
# Operations that change nothing a guest sees: no guest views after them.
_OBSERVING = (ops.Read, ops.PrimaryRead, ops.Status, ops.Flush)


def nodes_recipe(size: int | str = "64M", cluster: int | str = "64k") -> Recipe:
    """The many-nodes topology's images (harness.topology.many_nodes_recipe of NODES)."""
    return many_nodes_recipe(NODES, _size_text(size), _size_text(cluster))


def _size_text(v: int | str) -> str:
    return v if isinstance(v, str) else format_size(v)


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
    - pair: the full COLO pair (harness.pair.build_pair), the primary connected
      (replication0 over NBD hot-added to its quorum) as part of the set-up. The
      primary's guest I/O goes through its quorum colo-disk0, so it reaches the
      secondary through replication0 -> nbd0 -> the export (copy-before-write on the
      secondary); the secondary VM's I/O goes through rep. Its NBD link can go down
      (LinkDown on the secondary: block-export-del of the export).
    - many-nodes: two secondary replication nodes over two chains in one QEMU
      (harness.topology.many_nodes of NODES): the older never starts, so the order in
      which the *_all commands walk the nodes shows.
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
        names = set(self.recipe.names)
        if self.kind == PAIR_KIND and names != {"secondary", "hidden", "active", LOCAL}:
            raise ValueError(f"a pair recipe has the layers secondary, hidden, active and {LOCAL}")
        if self.kind == NODES_KIND:
            want = nodes_recipe()
            if names == set(want.names):
                sec = self.recipe.layer(self.secondary_layer)
                want = nodes_recipe(sec.size, sec.cluster_size or "64k")
            if self.recipe.to_dict() != want.to_dict():
                raise ValueError("a many-nodes recipe is nodes_recipe(size, cluster)")

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

    @property
    def secondary_layer(self) -> str:
        """The layer of the secondary disk the rules' node (rep) replicates into."""
        return f"{REP}-sec" if self.kind == NODES_KIND else "secondary"

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
    start, end = commit_chunk(secondary, offset)
    return any(a for _, _, a in allocated_above(active, secondary, start, end))


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
        topo = open_topology(graph_of(spec), build, profile, machines, workdir)
        label = label or f"QEMU {build.label}, profile {profile.name}"
        if spec.kind == PAIR_KIND:
            self.story: Story = PairStory(topo, label, auto_check=False)
        else:
            self.story = Story(topo, label)
        self.story.label += f", topology {spec.label}"
        # where a failure happened (None: nowhere yet)
        self.where: str | None = None
        # QEMU died as the model predicted (a profile's known abort): nothing more to do
        self.crashed = False
        self.ended = False
        self.setup_steps = 0
        # indices (in story.steps) of the reads the policy made (the guest views after
        # each operation): not part of a trace, a replay makes them again
        self.policy_steps: set[int] = set()
        if spec.poison is not None:
            self.story.do(_arm_blkdebug(self.model))
        if isinstance(self.story, PairStory):
            # COLO's set-up: replication0 over NBD, hot-added to the primary's quorum
            self.story.connect()
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
        """Is the primary's NBD link (primary, pair) up?"""
        if self.spec.kind == PRIMARY_KIND:
            return self.node.link_up
        if self.spec.kind == PAIR_KIND:
            export = self.model.export
            return export is not None and export.has_blk
        return True

    def operations(self) -> list[Step]:
        """The steps a trace records: after the set-up, without the policy's reads."""
        return [
            st
            for i, st in enumerate(self.story.steps)
            if i >= self.setup_steps and i not in self.policy_steps
        ]

    # ---- running

    def step(self, op: ops.Op) -> Observation:
        """Apply `op` under the policy (layers checked before a checkpoint; every guest
        view read back whole after an operation that can change one)."""
        n = len(self.story.steps) - self.setup_steps - len(self.policy_steps) + 1
        self.pending = op
        if isinstance(op, ops.Checkpoint) and op.machine == self.spec.machine:
            self._checked(f"layer allocation before operation {n}", self.story.check_layers_live)
        self.where = f"operation {n}"
        obs = self.story.do(op)
        self.pending = None
        if isinstance(obs, Crashed):
            # the model predicted it (else story.do raised): the example ends here
            self.crashed = True
            self.where = None
            return obs
        if isinstance(self.story, PairStory):
            # a completed failover closed the inline active and hidden nodes
            self.story.after_failover()
        if not isinstance(op, _OBSERVING) and self.model.settled():
            first = len(self.story.steps)
            self.where = f"guest views after operation {n}"
            try:
                self.views()
            finally:
                self.policy_steps.update(range(first, len(self.story.steps)))
        self.where = None
        return obs

    def views(self) -> None:
        """Every guest view of the topology, whole and byte-exact, against the model:
        each replication node's read answer (whatever the model says it is, EIO
        included) and, while the primary's link is up, the disk behind the NBD export.
        Only once the model is settled (a failover commit in flight races the reads,
        and on 10.0 an HMP qemu-io drains it). The pair: both VMs' disks."""
        story = self.story
        if isinstance(story, PairStory):
            story.views()
            return
        nodes = (REP, OLD) if self.spec.kind == NODES_KIND else (REP,)
        for name in nodes:
            self._view(ops.Read(0, self.model.nodes[name].file.size, node=name))
        export = self.model.export
        if export is not None and self.topo.export_io is not None and self.link_up():
            self._view(ops.PrimaryRead(0, export.size))

    def _view(self, whole: ops.Read | ops.PrimaryRead) -> None:
        """Read `whole` in pieces cut along the model's extents (qemu-io verifies one
        pattern per command over the whole request)."""
        expected = self.model.apply(whole)  # reads change nothing
        for off, n in read_pieces(expected, whole.offset, whole.length):
            self.story.do(dataclasses.replace(whole, offset=off, length=n))

    def end(self) -> None:
        """The final checks: layers live, then (QEMU gone) layers offline."""
        self.ended = True
        if not self.crashed:  # a dead QEMU has no live layers to ask about
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


def graph_of(spec: TopologySpec) -> Graph:
    """The topology value of `spec` (the poisoned sector is a FailingWrites over the
    secondary disk: the model learns it from the value, QEMU gets the blkdebug node)."""
    if spec.kind == PRIMARY_KIND:
        return standard.primary(spec.recipe)
    if spec.kind == PAIR_KIND:
        return pair_graph(spec.recipe)
    if spec.kind == NODES_KIND:
        sec = spec.recipe.layer(spec.secondary_layer)
        return standard.many_nodes(
            NODES, size=_size_text(sec.size), cluster=_size_text(sec.cluster_size or "64k")
        )
    failing = None
    if spec.poison is not None:
        failing = faults.over_secondary(spec.poison // SECTOR, iotypes=("write", "write-zeroes"))
    return standard.secondary(spec.recipe, over_secondary=failing)


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


__all__ = [
    "CHILD",
    "FAULTS_KIND",
    "KINDS",
    "NODES",
    "NODES_KIND",
    "OLD",
    "PAIR_KIND",
    "PRIMARY_KIND",
    "SECONDARY_KIND",
    "Session",
    "TopologySpec",
    "commit_copies",
    "nodes_recipe",
]
