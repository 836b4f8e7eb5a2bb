"""One differential run on one fresh topology: the topology kinds, the extra operations'
handlers, what is read and checked when (the policy), and the trace of what happened.

The state machine (harness.differential.rules) and the replayer
(harness.differential.replay) both go through `Session`, so a trace replays under the
policy that recorded it: the policy's reads are not part of a trace (`policy_steps`), a
replay makes them again, the same ones (they depend on the operations alone). A trace
recorded under an earlier policy replays under this one, its divergence showing where
this policy first reads it: sooner where it reads more (a trace recorded when only the
pair's guest views were read back), later where it reads less (one recorded when every
view was read whole after every operation, whose divergence lay outside what this
policy reads after that operation).

The guest views of a topology (`_view_reads`): on the secondary-only kinds the secondary
VM's disk (rep) and the secondary disk as the primary sees it through the NBD export
(while the primary's link is up); on the primary kind the primary node's answer and the
child through its export; on the two-node machine each node and rep's export; on the
COLO pair both VMs' disks (PairStory.view_nodes). Every read is byte-exact: each byte
the model defines is verified. On the secondary-only kinds each range is one NBD request
of the harness's own (Story.check_view, harness.nbd_reader), compared in Python: rep is
exported for it (the secondary VM's disk holds a BlockBackend on rep the whole run, as
a VM's would), and every byte of such a read goes through rep (NBD_CMD_FLAG_DF: QEMU's
NBD server would otherwise answer an unallocated range with a hole from block status,
without calling replication's read, which fails before start), except in a whole view
the model says reads as data: its head (one granule) goes through rep, the rest is
answered sparsely, holes where QEMU's block status finds nothing allocated in active,
hidden or secondary disk, everything else read through rep. A change QEMU made is
allocated somewhere below rep, so it is read through rep and compared; the head shows
whether rep answers with data at all. The primary's view is read through the export
the primary writes to, holes allowed (as the primary's qemu-io NBD client reads it).
Elsewhere qemu-io verifies the reads (harness.qemu_io), one request per pattern
(pair.read_pieces). The operations under test (the guest's and the primary's reads and
writes) go through qemu-io either way.

What is read when (`Session.step`, `Session.end`):

- every operation is applied to the model and to QEMU and compared (Story.do); the
  guest's and the primary's reads are compared like any operation;
- just before a checkpoint of the machine holding rep, each layer's own allocation is
  asked of the running QEMU and compared with the model (`check_layers_live`), unless
  it was since the last operation that could change it;
- WHOLE VIEWS (every byte of every view) just before a checkpoint or a failover (a stop
  with failover) of the running replication node: both empty the active and hidden
  disks, and with them what the views would still show; and at the end of the session
  (after the final live layer check, before the offline one);
- after any other operation that can change what a guest sees (all but reads, status
  and flush), once no failover commit runs (the model is settled: a commit in flight
  races the reads, and on 10.0 an HMP qemu-io drains it):
  - on every view, what the operation could have changed (`_changed`), rounded out to
    the granule: the largest cluster of any layer, at least 64 KiB (copy-before-write's
    cluster), so every cluster a write can allocate, copy before writing or commit.
    For a write, write-zeroes or discard (the guest's or the primary's) that is its
    range; for a checkpoint or a plain stop, what the active and hidden disks held just
    before it (what it empties, if it does); for a start that started a node, the same
    (a secondary's start empties them) and the first SAMPLE bytes of every view (its
    node's answers turn from EIO to data: the first read shows whether they did); for
    a settled failover commit, what they held before the failover (what it copies into
    the secondary disk); for anything else (a start that started nothing, the NBD link
    going down) nothing;
  - then one sample, of one view in turn: from where that view's last sample stopped,
    up to SAMPLE bytes and no further than the end of the extent the model shows there
    (one qemu-io request), wrapping at the end of the view.

Why a change the model does not predict is caught, and how late. A guest view is a
function of the layers under it; the model says, for each operation, which bytes of
which layers it changes, and the reads after the operation cover every view over those
bytes rounded out to whole clusters: whatever QEMU does there, the model predicted
something and it is compared at once (a value QEMU wrote that the model did not, or one
it failed to write).
A change QEMU makes anywhere else stays in the view it is in until some operation
changes those bytes again, and is read, at the latest:
- by that view's samples: each advances the view's cursor by SAMPLE bytes or to the end
  of an extent, so a view of S bytes holding E extents is swept by S / SAMPLE + E of its
  samples (a 4 MiB view holding one pattern: 16; with V views, one sample each V
  operations that read);
- by the next whole read: before the next checkpoint or failover of the running node,
  or at the end: within the rest of the example
  (the CI profile's have at most 20 steps, the pair's 12; the nightly profile's 50).
What a later operation overwrites first, on both sides, before any of these reads comes
is gone from the views (no read of a guest could show it any more); what such a change
left in the layers (an allocated cluster) the layer checks before each checkpoint and at
the end compare. A read of one view that the model says fails (EIO) or succeeds is
compared as such, so a node that started or stopped where the model did not shows at the
first read of its view, sample or range.

At the end: the layers once more live, the whole views, then QEMU quits and every layer
is checked offline (qemu-img map and bytes: `Story.finish`).

`Session(..., whole_views=True)` keeps the previous policy (every view read whole after
every operation that can change one): benchmarks/differential.py compares the two.
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
from harness.model.disks import view
from harness.model.replication import ReplicationNode, Stage
from harness.observe import Crashed, IoResult, Observation, OneOf
from harness.ops import PRIMARY, REP, SECONDARY
from harness.pair import PairStory, read_pieces
from harness.real import LiveTopology
from harness.story import Story
from harness.topology import Graph, standard
from harness.topology.pair import LOCAL
from harness.topology.pair import pair as pair_graph
from harness.topology.standard import NodeSpec, many_nodes_recipe
from harness.topology.values import Mode
from harness.units import SECTOR, KiB
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
# Operations that change data in a range: after them the views are read there.
_DATA = (
    ops.Write,
    ops.WriteZeroes,
    ops.Discard,
    ops.PrimaryWrite,
    ops.PrimaryWriteZeroes,
    ops.PrimaryDiscard,
)
# A data operation's range is rounded out to the largest cluster of the topology, and at
# least to the backup job's smallest (copy-before-write's granularity: 64 KiB).
MIN_GRANULE = 64 * KiB
# After each operation that can change a view, one view (each in turn) is also read over
# its next sample: from where its last one stopped, up to SAMPLE bytes, and no further than
# the end of the model's extent there. A 4 MiB view holding one pattern is swept in 16 of
# its samples; each costs what its bytes do (a read through rep transfers every byte).
SAMPLE = 256 * KiB


def _succeeds(expected: Observation) -> bool:
    """Does the model say this read succeeds (whichever way a race goes)?"""
    if isinstance(expected, OneOf):
        return all(_succeeds(alt) for alt in expected.allowed)
    return isinstance(expected, IoResult) and expected.ok


def _view_key(whole: ops.Read | ops.PrimaryRead) -> str:
    return f"{whole.kind}:{getattr(whole, 'node', '')}"


def _merged(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """`ranges` clipped to [0, size), sorted, touching or overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in ranges):
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


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
        *,
        whole_views: bool = False,
    ) -> None:
        self.spec = spec
        self.build = build
        label = label or f"QEMU {build.label}, profile {profile.name}"
        graph = graph_of(spec)
        if spec.kind == PAIR_KIND:
            pair = PairStory.open(graph, build, profile, machines, workdir, label)
            pair.auto_check = False
            self.story: Story = pair
        else:
            self.story = Story.open(graph, build, profile, machines, workdir, label)
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
        # the policy's state: every view read whole since the last operation that could
        # change one; where each view's sample goes next; what a rule is rounded out to
        self.fresh = False
        # the layers' live allocation checked since the last operation that could change it
        self.layers_fresh = False
        self.cursor: dict[str, int] = {}
        self.samples = 0
        # what the active and hidden disks held before the last checkpoint or stop, and
        # before the last failover (what its commit copies)
        self.dirty: list[tuple[int, int]] = []
        self.committed: list[tuple[int, int]] = []
        self.granule = max(MIN_GRANULE, *(d.cluster for d in self.model.disks.values()))
        # the old policy (every view whole after every operation that can change one):
        # for comparisons (benchmarks/differential.py --whole-views)
        self.whole_views = whole_views

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
        """Apply `op` under the policy (the module docstring): the layers checked before a
        checkpoint, the guest views read whole before an operation that empties the
        active and hidden disks, and after an operation that can change a view what it
        could have changed plus the next sample."""
        n = len(self.story.steps) - self.setup_steps - len(self.policy_steps) + 1
        self.pending = op
        if isinstance(op, ops.Checkpoint) and op.machine == self.spec.machine:
            self._layers(f"layer allocation before operation {n}")
        if self._empties(op):
            self._policy_reads(f"guest views before operation {n}", self._whole_views)
        if isinstance(op, (ops.Checkpoint, ops.Stop, ops.Start)):
            self.dirty = self._dirty()
            if isinstance(op, ops.Stop) and op.failover:
                self.committed = self.dirty
        stages = [node.stage for node in self.model.nodes.values()]
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
        if not isinstance(op, _OBSERVING):
            self.fresh = self.layers_fresh = False
            if self.model.settled():
                moved = stages != [node.stage for node in self.model.nodes.values()]
                self._policy_reads(
                    f"guest views after operation {n}", lambda: self._after(op, moved)
                )
        self.where = None
        return obs

    # ---- the guest views: what is read when

    def _empties(self, op: ops.Op) -> bool:
        """Is `op` a checkpoint or a failover of the running replication node (it empties
        the active and hidden disks, and with them what a view would still show)?"""
        if self.node.stage is not Stage.RUNNING or getattr(op, "machine", "") != self.spec.machine:
            return False
        return isinstance(op, ops.Checkpoint) or (isinstance(op, ops.Stop) and bool(op.failover))

    def _policy_reads(self, where: str, reads: Callable[[], None]) -> None:
        """Run `reads` as the policy's (recorded in policy_steps: no part of a trace)."""
        first = len(self.story.steps)
        self.where = where
        try:
            reads()
        finally:
            self.policy_steps.update(range(first, len(self.story.steps)))

    def _after(self, op: ops.Op, moved: bool) -> None:
        """The reads after `op` (the model settled; `moved`: it changed a replication
        node's stage): on every view what `op` could have changed (`_changed`), then the
        next sample of one view (`_sample`)."""
        changed = self._changed(op, moved)
        if changed is None:
            self._whole_views()
            return
        views = self._view_reads()
        for whole in views:
            self._read(whole, changed)
        if views:
            self._sample(views[self.samples % len(views)])
            self.samples += 1

    def _changed(self, op: ops.Op, moved: bool) -> list[tuple[int, int]] | None:
        """What the model says `op` could have changed in a view, rounded out to `granule`
        (every cluster a write can allocate, copy before writing or commit); None:
        anything.

        - a data operation (write, write-zeroes, discard; the guest's or the primary's):
          its range;
        - a start that started a node (`moved`; its answers turn from EIO to data):
          what the active and hidden disks held (a secondary's start empties them) and
          the head of every view (`_heads`);
        - a checkpoint, a plain stop: what the active and hidden disks held just before
          (`_dirty`: what it empties, if it does); a settled failover commit: what they
          held before the failover (what it copies into the secondary disk);
        - anything else (a start that started nothing, the NBD link going down): nothing.
        """
        if self.whole_views:
            return None
        if isinstance(op, _DATA):
            return self._rounded([(op.offset, op.offset + op.length)])
        if isinstance(op, ops.Start):
            return self._rounded(self.dirty) + self._heads() if moved else []
        if isinstance(op, ops.Stop) and op.failover:
            return []  # the commit runs: nothing is read until it settled
        if isinstance(op, ops.Checkpoint | ops.Stop):
            return self._rounded(self.dirty)
        if isinstance(op, ops.Settle):
            return self._rounded(self.committed)
        return []

    def _dirty(self) -> list[tuple[int, int]]:
        """What the active and hidden disks of every replication node hold (the model)."""
        return [r for node in self.model.nodes.values() for r in node.dirty()]

    def _heads(self) -> list[tuple[int, int]]:
        """The first SAMPLE bytes (a view clips them): after a start, every view shows at
        once whether its node answers with data or fails."""
        return [(0, SAMPLE)]

    def _rounded(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        g = self.granule
        return [(s - s % g, -(-e // g) * g) for s, e in ranges]

    def _sample(self, whole: ops.Read | ops.PrimaryRead) -> None:
        """The view's next sample: from where its last one stopped (wrapping at its end),
        up to SAMPLE bytes, no further than the end of the extent the model shows there
        (one qemu-io command)."""
        key = _view_key(whole)
        start = self.cursor.get(key, 0) % whole.length
        part = dataclasses.replace(whole, offset=start, length=min(SAMPLE, whole.length - start))
        off, n = read_pieces(self.model.apply(part), part.offset, part.length)[0]
        self.cursor[key] = (off + n) % whole.length
        self._read(whole, [(off, off + n)])

    def _whole_views(self) -> None:
        """Every guest view whole (unless read whole since the last operation that could
        change one): each replication node's read answer (whatever the model says it is,
        EIO included) and, while the primary's link is up, the disk behind the NBD
        export; the pair: both VMs' disks. Only once the model is settled (a failover
        commit in flight races the reads, and on 10.0 an HMP qemu-io drains it)."""
        if self.fresh or not self.model.settled():
            return
        for whole in self._view_reads():
            if (
                isinstance(whole, ops.Read)
                and self.story.real.checked_by_nbd(whole)
                and _succeeds(self.model.apply(whole))
            ):
                # every byte through the node over the head, the rest answered sparsely
                # (the module docstring: why this reads every change)
                head = dataclasses.replace(whole, length=min(self.granule, whole.length))
                self.story.check_view(head)
                self.story.check_view(whole, sparse=True)
                continue
            self._read(whole, [(0, whole.length)])
        self.fresh = True

    def _view_reads(self) -> list[ops.Read | ops.PrimaryRead]:
        """A whole read of each guest view of the topology that can be read now."""
        story = self.story
        if isinstance(story, PairStory):
            return [ops.Read(0, story.size, node=node) for node in story.view_nodes()]
        nodes = (REP, OLD) if self.spec.kind == NODES_KIND else (REP,)
        out: list[ops.Read | ops.PrimaryRead] = [
            ops.Read(0, self.model.nodes[name].file.size, node=name) for name in nodes
        ]
        export = self.model.export
        if export is not None and self.topo.export_io is not None and self.link_up():
            out.append(ops.PrimaryRead(0, export.size))
        return out

    def _read(self, whole: ops.Read | ops.PrimaryRead, ranges: list[tuple[int, int]]) -> None:
        """Read `ranges` of the view `whole` (merged, clipped to it): each in one NBD
        request of the harness's own where the view has an export (Story.check_view),
        else in pieces cut along the model's extents (qemu-io verifies one pattern per
        command)."""
        nbd = self.story.real.checked_by_nbd(whole)
        for start, end in _merged(ranges, whole.length):
            part = dataclasses.replace(whole, offset=start, length=end - start)
            if nbd:
                self.story.check_view(part)
                continue
            expected = self.model.apply(part)  # reads change nothing
            for off, n in read_pieces(expected, start, end - start):
                self.story.check_view(dataclasses.replace(part, offset=off, length=n))

    def end(self) -> None:
        """The final checks: layers live, the whole views, then (QEMU gone) layers
        offline."""
        self.ended = True
        if not self.crashed:  # a dead QEMU has no live layers to ask about
            self._layers("final layer allocation (live)")
            self._policy_reads("guest views at the end", self._whole_views)
            self.where = None
        self._checked("final layer check (offline)", self.story.finish)

    def _layers(self, where: str) -> None:
        """Each live layer's allocation against the model, unless checked since the last
        operation that could change it (and no failover commit runs)."""
        if self.layers_fresh and self.model.settled():
            return
        self._checked(where, self.story.check_layers_live)
        self.layers_fresh = True

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
    return standard.secondary(spec.recipe, over_secondary=failing, checks_over_nbd=True)


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
    "nodes_recipe",
]
