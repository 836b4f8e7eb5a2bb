"""A topology as a value: the machines, their nodes in creation order, exports, NBD links,
quorums and faults of a graph, as plain typed data.

Two interpreters read the same value: harness.real.topology issues the QMP commands
and opens the guest and NBD sessions; the model package's build.py builds the model.
Neither adds anything the value does not say, so the two cannot be told different
stories. The recipe stays the source of image geometry and initial contents. The values
answer the questions both interpreters ask (a node's `late` and `inline`,
`Graph.export_node`), and import nothing of either.

Nodes are named as QEMU names them (node-name); an `Image` is a recipe layer's format
node (its file node is LAYER-file). `inline` nodes are opened inside their parent's
options (the replication node's active -> hidden chain, an NBD client), the others by
their own blockdev-add at their place in the machine's list. `late` nodes are created
only when a case asks (`harness.story.Story.add_late`): a primary node connected after
start, a quorum put above a node between two starts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.faults import EXPORT_ID, EjectAtEmpty, FailingWrites, Throttle
from harness.images import Recipe

# Image.backing: the image header's own backing file (no backing option at all).
HEADER = "<header>"


class Mode(enum.IntEnum):
    """A replication node's mode (QEMU's ReplicationMode): the numbers appear in QEMU's
    mode-mismatch message."""

    PRIMARY = 0
    SECONDARY = 1


class _Placed:
    """Where a node is created: `inline` inside its parent's options, `late` only when a
    case asks (a node class that can be either says so with a field of that name)."""

    @property
    def late(self) -> bool:
        return False

    @property
    def inline(self) -> bool:
        return False


@dataclass(frozen=True)
class Image(_Placed):
    """A recipe layer's format node; `backing`: a node name, None (backing null), HEADER.
    `read_only`: its read-only option (None: QEMU's default, read-only for a backing node
    opened inline, else read-write)."""

    layer: str
    backing: str | None = None
    # a blkdebug as its file (FailingWrites.under, EjectAtEmpty)
    fault: FailingWrites | EjectAtEmpty | None = None
    inline: bool = False
    read_only: bool | None = None

    @property
    def name(self) -> str:
        return self.layer


@dataclass(frozen=True)
class Filter(_Placed):
    """A filter node over `fault.target`: a blkdebug (FailingWrites) or a throttle."""

    fault: FailingWrites | Throttle

    @property
    def name(self) -> str:
        return self.fault.node


@dataclass(frozen=True)
class NbdClient(_Placed):
    """An NBD client node (inline in its parent) of export `export` of `machine`;
    `reconnect_delay`: its reconnect-delay option in seconds (0: QEMU's default, none)."""

    name: str
    machine: str
    export: str
    export_id: str = EXPORT_ID
    reconnect_delay: int = 0

    @property
    def inline(self) -> bool:
        return True


@dataclass(frozen=True)
class Replication(_Placed):
    """A `replication` node over `file`; `drive_id`: opened by HMP drive_add as that
    BlockBackend; `options`: further blockdev-add options (key, value)."""

    name: str
    mode: Mode
    file: str
    top_id: str | None = None
    drive_id: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    late: bool = False


@dataclass(frozen=True)
class Quorum(_Placed):
    """A quorum node (vote-threshold 1, read-pattern fifo) over `children`, opened
    read-only when `read_only`."""

    name: str
    children: tuple[str, ...]
    late: bool = False
    read_only: bool = False


@dataclass(frozen=True)
class Null(_Placed):
    """A null-co node unrelated to replication, a BlockBackend when `drive_id` is set."""

    name: str
    drive_id: str | None = None


@dataclass(frozen=True)
class Export(_Placed):
    """A writable NBD export of `node` named `name` (the machine's NBD server starts with
    its first export). `client`: the harness opens its own NBD client of it, the path of
    PrimaryWrite/PrimaryRead; `path`: it is the export the primary's writes reach."""

    node: str
    name: str
    id: str = EXPORT_ID
    client: bool = False
    path: bool = False
    writable: bool = True


@dataclass(frozen=True)
class BackupJob(_Placed):
    """A user's block job (blockdev-backup sync=none, job id `id`) from `source` into
    `target`, its filter named `filter` (filter-node-name): it runs until cancelled,
    and puts its op blockers on the nodes it uses."""

    id: str
    source: str
    target: str
    filter: str

    @property
    def name(self) -> str:
        return self.id


@dataclass(frozen=True)
class LogWrites(_Placed):
    """A blklogwrites node `name` logging the writes to `file` into `log`: its `log` child
    takes write and resize on `log` and shares neither (a format's metadata child), and
    its open writes the log's superblock into the first sector of `log`."""

    name: str
    file: str
    log: str


Node = Image | Filter | NbdClient | Replication | Quorum | Null | Export | BackupJob | LogWrites


@dataclass(frozen=True)
class Guest:
    """Guest I/O named `node`: HMP qemu-io on `through` (a root above it: default the
    node itself), or a qemu-io NBD client of the export named `export`.
    `check_export`: an export of the node the harness's checks read it through
    (harness.nbd_reader: one request a range, every byte through the node)."""

    node: str
    through: str | None = None
    export: str | None = None
    check_export: str | None = None


@dataclass(frozen=True)
class Vm:
    """A guest with a vCPU (-M `machine_type` -accel `accel` -m `memory`) where a machine
    otherwise runs none (-M none): no disk device, no boot device; the firmware runs."""

    machine_type: str = "pc"
    accel: str = "tcg"
    memory: str = "64M"

    def args(self) -> tuple[str, ...]:
        return ("-accel", self.accel, "-m", self.memory)


@dataclass(frozen=True)
class MachineSpec:
    """One QEMU process and its graph. `daemon`: it only serves images (a
    qemu-storage-daemon where the release closes its images on exit); `incoming`: it
    waits for a migration (`-incoming defer`), as a COLO secondary does; `vm`: it runs
    a guest with a vCPU (default: -M none)."""

    name: str
    nodes: tuple[Node, ...]
    daemon: bool = False
    incoming: bool = False
    vm: Vm | None = None

    def throttles(self) -> list[Throttle]:
        return [
            n.fault for n in self.nodes if isinstance(n, Filter) and isinstance(n.fault, Throttle)
        ]


@dataclass(frozen=True)
class ColoMigration:
    """COLO's migration from `primary` to `secondary` drives their replication nodes
    (the model's colo.py says how): ColoStart, ColoCheckpoint and LostHeartbeat are its
    steps."""

    primary: str
    secondary: str


@dataclass(frozen=True)
class Graph:
    """The whole topology: images, machines (in launch order), guests, and the COLO
    migration between two of the machines, if COLO drives them."""

    recipe: Recipe
    machines: tuple[MachineSpec, ...]
    guests: tuple[Guest, ...] = field(default=())
    colo: ColoMigration | None = None

    def machine(self, name: str) -> MachineSpec:
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(f"no machine {name!r} in this topology")

    def nodes(self) -> Iterator[tuple[MachineSpec, Node]]:
        for m in self.machines:
            for n in m.nodes:
                yield m, n

    def find(self, name: str) -> tuple[MachineSpec, Node]:
        """The machine and node named `name` (an export by its id)."""
        for m, n in self.nodes():
            if (n.id if isinstance(n, Export) else n.name) == name:
                return m, n
        raise KeyError(f"no node {name!r} in this topology")

    def export_node(self, link: NbdClient) -> str:
        """The node the export an NBD client node connects to serves."""
        for n in self.machine(link.machine).nodes:
            if isinstance(n, Export) and n.name == link.export:
                return n.node
        raise KeyError(f"{link.machine} exports no {link.export!r}")

    def image_below(self, name: str) -> Image | None:
        """The image a node name reaches through filters (None: not an image)."""
        try:
            _, n = self.find(name)
        except KeyError:
            return None
        while isinstance(n, Filter):
            _, n = self.find(n.fault.target)
        return n if isinstance(n, Image) else None

    def inline_images(self, name: str) -> tuple[str, ...]:
        """The layers of the images opened inline under the node `name`, top first (a
        secondary replication node's active and hidden disks)."""
        _, node = self.find(name)
        out: list[str] = []
        below = node.file if isinstance(node, Replication) else None
        while below is not None:
            _, n = self.find(below)
            if not (isinstance(n, Image) and n.inline):
                break
            out.append(n.layer)
            below = n.backing if n.backing != HEADER else None
        return tuple(out)

    def describe(self) -> str:
        """A readable listing of the graph (what a test prints)."""
        lines = [f"images: {self.recipe.source}"]
        for m in self.machines:
            vm = f" ({m.vm.machine_type}, {m.vm.accel})" if m.vm is not None else ""
            lines.append(f"{m.name}{' (daemon)' if m.daemon else ''}{vm}:")
            lines += [f"  {n!r}" for n in m.nodes]
        lines += [f"guest {g!r}" for g in self.guests]
        if self.colo is not None:
            lines.append(repr(self.colo))
        return "\n".join(lines)
