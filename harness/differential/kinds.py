"""The differential's topology kinds: one object per kind, holding everything a run needs
to know of its topology, and the spec a run draws (a kind over a recipe).

A kind is a subclass of `Kind` with a `name` of its own (what a trace file records); a
class that names itself is registered when it is defined, so traces of its runs replay
(`kind_named`). What a kind says:

- `graph(spec)`: its topology value (harness.topology), from the spec's recipe;
  `check(spec)`: which recipes (and poisoned sectors) it runs with;
- `machine`, `mode`: where the replication node the rules drive (rep) is, and its
  mode; `secondary_layer`: the layer of the secondary disk it replicates into (None:
  a primary's, which has none);
- `story`: the story class (the session opens it on `graph(spec)`), and `set_up` /
  `after_step`: its steps before the first operation (not part of a trace) and its
  care after each;
- `view_nodes` / `view_reads`: the guest views the read policy reads back
  (harness.differential.policy);
- `link_down`, `link_up`: the primary's NBD link, how it goes down (None: the kind has
  none to lose) and whether it is up; `forwarded`: the guest nodes whose writes go over
  it into the secondary disk;
- what the rules draw: `guest_node` (where guest I/O goes), `command_side` (which side
  a QMP command goes to), `starts`, `checkpoints`, `before_failover`.

The base class's defaults are the secondary-only kind's; each kind overrides what
differs. Adding a kind is one class here (and, for CI to run it, its specs and group in
harness.differential.specs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from hypothesis import strategies as st

from harness import faults, ops
from harness.faults import LinkDown
from harness.images import Recipe, format_size
from harness.model import Model
from harness.model.disks import view
from harness.model.replication import Stage
from harness.ops import PRIMARY, REP, SECONDARY
from harness.pair import PairStory
from harness.story import Story
from harness.topology import Graph, Mode, pair, standard
from harness.topology.pair import LOCAL, PQ
from harness.topology.standard import NodeSpec, many_nodes_recipe
from harness.units import SECTOR

S = TypeVar("S", bound=Story)
View = ops.Read | ops.PrimaryRead


@dataclass(frozen=True)
class TopologySpec:
    """Which topology a run builds: its kind, its recipe and (secondary-faults) the
    poisoned sector."""

    kind: Kind[Any]
    recipe: Recipe
    name: str = ""
    poison: int | None = None

    def __post_init__(self) -> None:
        self.kind.check(self)

    @property
    def label(self) -> str:
        return f"{self.kind.name}/{self.name or self.recipe.source}"

    def poison_page(self) -> tuple[int, int] | None:
        """The 4 KiB page around the poisoned sector: what other writes keep off."""
        if self.poison is None:
            return None
        start = self.poison - self.poison % 4096
        return (start, start + 4096)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "name": self.name, "poison": self.poison}


class Kind(Generic[S]):
    """A topology kind; the defaults are the secondary-only kind's (SecondaryKind)."""

    # what trace files call it: a subclass that names itself is registered
    name: ClassVar[str]
    machine: ClassVar[str] = SECONDARY
    mode: ClassVar[Mode] = Mode.SECONDARY
    secondary_layer: ClassVar[str | None] = "secondary"
    story: ClassVar[type[Story]] = Story
    view_nodes: ClassVar[tuple[str, ...]] = (REP,)
    link_down: ClassVar[LinkDown | None] = None
    # guest nodes whose writes the primary's replication node forwards to the secondary
    # disk (copy-before-write on the secondary while it runs)
    forwarded: ClassVar[frozenset[str]] = frozenset()
    # every kind by name
    registry: ClassVar[dict[str, Kind[Any]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            if cls.name in Kind.registry:
                raise ValueError(f"a topology kind named {cls.name!r} exists already")
            Kind.registry[cls.name] = cls()

    def __repr__(self) -> str:
        return f"<topology kind {self.name}>"

    # ---- the value

    def graph(self, spec: TopologySpec) -> Graph:
        raise NotImplementedError(f"{type(self).__name__} has no graph")

    def check(self, spec: TopologySpec) -> None:
        """Refuse (ValueError) a spec this kind does not run with."""
        if spec.poison is not None:
            raise ValueError("a poisoned sector belongs to (only) the secondary-faults kind")

    # ---- the story

    def set_up(self, story: S, spec: TopologySpec) -> None:
        """The kind's steps on a fresh story (`story.open` of `graph(spec)`) before the
        first operation: not part of a trace."""

    def after_step(self, story: S) -> None:
        """What follows each operation QEMU carried out (the model's view of it)."""

    # ---- the guest views, the primary's link

    def view_reads(self, story: S, link_up: bool) -> list[View]:
        """A whole read of each guest view that can be read now: each of `view_nodes`
        (its replication node's answer, whatever the model says it is) and, while the
        primary's link is up, the disk behind the export the primary writes to."""
        model = story.model
        out: list[View] = [
            ops.Read(0, model.nodes[name].file.size, node=name) for name in self.view_nodes
        ]
        export = model.export
        if export is not None and story.topo.export_io is not None and link_up:
            out.append(ops.PrimaryRead(0, export.size))
        return out

    def link_up(self, model: Model) -> bool:
        """Is the primary's NBD link up (always, where the kind has none to lose)?"""
        return True

    # ---- what the rules draw

    def guest_node(self, data: st.DataObject, model: Model, primary_vm: int = 1) -> str:
        """The node guest I/O goes through (nothing drawn where there is one)."""
        return REP

    def command_side(self, data: st.DataObject, model: Model) -> tuple[bool, str]:
        """(primary, machine) of a QMP command: rep's side (nothing drawn)."""
        return self.mode is Mode.PRIMARY, self.machine

    def starts(self) -> tuple[ops.Op, ...]:
        """Replication started at once (an example's first steps)."""
        return (ops.Start(primary=self.mode is Mode.PRIMARY, machine=self.machine),)

    def start(self, data: st.DataObject, model: Model) -> tuple[ops.Op, ...]:
        """A start drawn later: on the side command_side draws."""
        primary, m = self.command_side(data, model)
        return (ops.Start(primary=primary, machine=m),)

    def can_start(self, model: Model) -> bool:
        """May a start be drawn now (a refused one is worth seeing too)?"""
        return True

    def checkpoints(self) -> tuple[ops.Op, ...]:
        return (ops.Checkpoint(machine=self.machine),)

    def before_failover(self, data: st.DataObject, link_up: bool) -> tuple[ops.Op, ...]:
        """What goes before a failover of rep (nothing drawn where nothing may)."""
        return ()

    def allows(self, op_kind: str) -> bool:
        """May the rules draw operation kind `op_kind` (harness.differential.specs)
        here? Every kind but COLO's own (COLO_ONLY) by default."""
        return op_kind not in COLO_ONLY

    def can_fail_over(self, model: Model, dirty_only: bool) -> bool:
        """May a failover be drawn now: rep RUNNING (and, `dirty_only`, holding what the
        commit would copy)?"""
        node = model.nodes[REP]
        return node.stage is Stage.RUNNING and (not dirty_only or bool(node.dirty()))

    def interrupted_checkpoint(self, data: st.DataObject) -> tuple[ops.Op, ...]:
        """A checkpoint with a death in its middle (COLO_ONLY)."""
        raise NotImplementedError(f"{self.name} draws no interrupted checkpoint")

    def failover(self, data: st.DataObject, link_up: bool) -> tuple[ops.Op, ...]:
        """A failover of rep: what goes before it, stop with failover=True, optionally a
        status racing the commit, then the wait for the commit (Settle)."""
        primary, m = self.mode is Mode.PRIMARY, self.machine
        seq: tuple[ops.Op, ...] = (
            *self.before_failover(data, link_up),
            ops.Stop(primary=primary, failover=True, machine=m),
        )
        if data.draw(st.booleans(), label="status racing the commit"):
            seq += (ops.Status(machine=m),)
        return (*seq, ops.Settle(machine=m))


# Operation kinds only the COLO kinds draw (their steps are COLO's migration's).
COLO_ONLY = frozenset({"interrupted_checkpoint"})


class SecondaryKind(Kind[Story]):
    """secondary: the secondary-only topology (harness.topology.standard.secondary), rep
    exported for the checks' NBD reads; the primary's I/O through the NBD export of the
    secondary disk, a link that never goes down."""

    name = "secondary"

    def graph(self, spec: TopologySpec) -> Graph:
        return standard.secondary(spec.recipe, checks_over_nbd=True)


class FaultsKind(Kind[Story]):
    """secondary-faults: the secondary-only topology over a blkdebug filter on the
    secondary disk whose writes covering byte `poison` fail with EIO, so a failover
    commit that copies that sector fails (FAILOVER_FAILED). The runner keeps every other
    write that would reach the secondary disk off the poisoned page."""

    name = "secondary-faults"

    def graph(self, spec: TopologySpec) -> Graph:
        """The poisoned sector is a FailingWrites over the secondary disk: the model
        learns it from the value, QEMU gets the blkdebug node."""
        assert spec.poison is not None
        failing = faults.over_secondary(spec.poison // SECTOR, iotypes=("write", "write-zeroes"))
        return standard.secondary(spec.recipe, over_secondary=failing, checks_over_nbd=True)

    def check(self, spec: TopologySpec) -> None:
        if spec.poison is None:
            raise ValueError("a poisoned sector belongs to (only) the secondary-faults kind")

    def set_up(self, story: Story, spec: TopologySpec) -> None:
        """The write that arms the blkdebug rules.

        blkdebug's inject-error rules take effect only once their event (pwritev: a data
        write reaching the blkdebug node) has fired; a failover commit whose first
        request to the secondary disk is a write-zeroes would otherwise race its own
        data copies. This primary write (before start, so nothing is copied) rewrites
        the last sector of the secondary disk with the byte it already holds.
        """
        disk = story.model.export
        assert disk is not None
        end = disk.size
        pieces = view(disk.chain(), end - SECTOR, end)
        if len(pieces) != 1 or not 0 <= pieces[0][2] <= 255:
            raise ValueError(
                "the faults topology needs a uniform last sector on the secondary disk"
            )
        story.do(ops.PrimaryWrite(end - SECTOR, SECTOR, pieces[0][2]))


class PrimaryKind(Kind[Story]):
    """primary: the primary-only topology (harness.topology.standard.primary), whose
    NBD link to its child can go down (LinkDown: block-export-del on the daemon)."""

    name = "primary"
    machine = PRIMARY
    mode = Mode.PRIMARY
    secondary_layer = None
    link_down = LinkDown()

    def graph(self, spec: TopologySpec) -> Graph:
        return standard.primary(spec.recipe)

    def link_up(self, model: Model) -> bool:
        return model.nodes[REP].link_up


class PairKind(Kind[PairStory]):
    """pair: the full COLO pair (harness.topology.pair), the primary connected
    (replication0 over NBD hot-added to its quorum) as part of the set-up. The
    primary's guest I/O goes through its quorum colo-disk0, so it reaches the secondary
    through replication0 -> nbd0 -> the export (copy-before-write on the secondary);
    the secondary VM's I/O goes through rep. Its NBD link can go down (LinkDown on the
    secondary: block-export-del of the export). A checkpoint goes to both sides (as
    COLO does), a stop to either, a failover to the secondary, most often after its
    NBD export went."""

    name = "pair"
    story = PairStory
    link_down = LinkDown(machine=SECONDARY)
    forwarded = frozenset({PQ})

    def graph(self, spec: TopologySpec) -> Graph:
        return pair.pair(spec.recipe)

    def check(self, spec: TopologySpec) -> None:
        super().check(spec)
        if set(spec.recipe.names) != {"secondary", "hidden", "active", LOCAL}:
            raise ValueError(f"a pair recipe has the layers secondary, hidden, active and {LOCAL}")

    def set_up(self, story: PairStory, spec: TopologySpec) -> None:
        """COLO's set-up: replication0 over NBD, hot-added to the primary's quorum. The
        story's own checks after each step are off: the read policy reads the views."""
        story.auto_check = False
        story.connect()

    def after_step(self, story: PairStory) -> None:
        """A completed failover closed the inline active and hidden nodes."""
        story.after_failover()

    def view_reads(self, story: PairStory, link_up: bool) -> list[View]:
        """Both VMs' disks (PairStory.view_nodes: a dead machine's not)."""
        return [ops.Read(0, story.size, node=node) for node in story.view_nodes()]

    def link_up(self, model: Model) -> bool:
        export = model.export
        return export is not None and export.has_blk

    def guest_node(self, data: st.DataObject, model: Model, primary_vm: int = 1) -> str:
        """The primary VM's quorum (`primary_vm` chances in primary_vm + 1) or the
        secondary VM's node."""
        return data.draw(st.sampled_from((PQ,) * primary_vm + (REP,)), label="guest")

    def command_side(self, data: st.DataObject, model: Model) -> tuple[bool, str]:
        """Either side's (drawn)."""
        primary = data.draw(st.booleans(), label="primary side")
        return primary, PRIMARY if primary else SECONDARY

    def starts(self) -> tuple[ops.Op, ...]:
        """COLO's order: the secondary first, then the primary."""
        return (ops.Start(primary=False), ops.Start(primary=True, machine=PRIMARY))

    def checkpoints(self) -> tuple[ops.Op, ...]:
        """Both sides, as COLO checkpoints (the primary's does nothing)."""
        return (ops.Checkpoint(machine=SECONDARY), ops.Checkpoint(machine=PRIMARY))

    def before_failover(self, data: st.DataObject, link_up: bool) -> tuple[ops.Op, ...]:
        """Most often the NBD export goes first (COLO stops the NBD server first), else
        the primary stays connected."""
        if link_up and data.draw(st.sampled_from((True, True, False)), label="link down first"):
            return (LinkDown(machine=SECONDARY),)
        return ()


# The many-nodes topology's replication nodes, oldest first: "old" has no block backend
# on its secondary disk (no NBD export), so it never starts and (backup cancelled) never
# checkpoints; "rep", the newest, is the one the rules drive. The *_all commands walk
# newest first and stop at the first error, so rep runs, checkpoints and fails over while
# every command answers old's error: walked the other way round, rep would never start.
OLD = "old"
NODES = (NodeSpec(OLD, export=False), NodeSpec(REP))


def nodes_recipe(size: int | str = "64M", cluster: int | str = "64k") -> Recipe:
    """The many-nodes topology's images (harness.topology.many_nodes_recipe of NODES)."""
    return many_nodes_recipe(NODES, _size_text(size), _size_text(cluster))


def _size_text(v: int | str) -> str:
    return v if isinstance(v, str) else format_size(v)


class NodesKind(Kind[Story]):
    """many-nodes: two secondary replication nodes over two chains in one QEMU
    (harness.topology.standard.many_nodes of NODES): the older never starts, so the
    order in which the *_all commands walk the nodes shows. Guest I/O goes mostly to
    the newer node."""

    name = "many-nodes"
    secondary_layer = f"{REP}-sec"
    view_nodes = (REP, OLD)

    def graph(self, spec: TopologySpec) -> Graph:
        sec = spec.recipe.layer(f"{REP}-sec")
        return standard.many_nodes(
            NODES, size=_size_text(sec.size), cluster=_size_text(sec.cluster_size or "64k")
        )

    def check(self, spec: TopologySpec) -> None:
        super().check(spec)
        want = nodes_recipe()
        if set(spec.recipe.names) == set(want.names):
            sec = spec.recipe.layer(f"{REP}-sec")
            want = nodes_recipe(sec.size, sec.cluster_size or "64k")
        if spec.recipe.to_dict() != want.to_dict():
            raise ValueError("a many-nodes recipe is nodes_recipe(size, cluster)")

    def guest_node(self, data: st.DataObject, model: Model, primary_vm: int = 1) -> str:
        return data.draw(st.sampled_from((REP, REP, REP, OLD)), label="node")


SECONDARY_KIND = Kind.registry[SecondaryKind.name]
FAULTS_KIND = Kind.registry[FaultsKind.name]
PRIMARY_KIND = Kind.registry[PrimaryKind.name]
PAIR_KIND = Kind.registry[PairKind.name]
NODES_KIND = Kind.registry[NodesKind.name]


def kind_named(name: str) -> Kind[Any]:
    """The kind a trace names (ValueError: no such kind). Kinds in modules of their own
    (harness.differential.colo_kinds) are registered by the package's import."""
    try:
        return Kind.registry[name]
    except KeyError:
        raise ValueError(f"unknown topology kind {name!r}") from None
