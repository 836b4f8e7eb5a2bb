"""The standard topologies as values (harness.topology.values.Graph).

- secondary: one qemu-system holds the secondary disk (exported over NBD, which gives it
  the block backend start requires and the primary's path in), the hidden and active
  disks inline under the replication node (rep -> active -> hidden -> secondary);
  secondary_chain builds its recipe with other geometry (sizes, clusters, formats).
- primary: a qemu-system with the primary replication node over an NBD client of an
  export of the child disk by a daemon ("child").
- primary_local: rep (primary) over a local qcow2 child, as tests/unit/test-replication.c
  opens it.
- many_nodes: one qemu-system holding several replication nodes, each over its own disks.
- pair (harness.topology.pair): the full COLO pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.faults import CHILD, EjectAtEmpty, FailingWrites, Throttle
from harness.images import Recipe, load_recipe
from harness.images.recipe import CLUSTER_RANGE
from harness.ops import PRIMARY, REP, SECONDARY
from harness.topology.values import (
    HEADER,
    Export,
    Filter,
    Graph,
    Guest,
    Image,
    MachineSpec,
    Mode,
    NbdClient,
    Node,
    Quorum,
    Replication,
)

EXPORT = "secondary"  # the export name of the secondary disk
CHILD_EXPORT = "child"  # the export name of the primary's child (the primary topology)
NBD_CHILD = "nbd-child"  # the primary's NBD client node (the primary topology)
GUEST_EXPORT = "guest"  # a guest node's own NBD export (guest_over_nbd)


def recipe_of(recipe: Recipe | str) -> Recipe:
    return load_recipe(recipe) if isinstance(recipe, str) else recipe


def secondary_chain(
    size: int | str = "64M",
    cluster: int | str | None = "64k",
    *,
    active_cluster: int | str | None = None,
    hidden_cluster: int | str | None = None,
    active_size: int | str | None = None,
    hidden_size: int | str | None = None,
    active_format: str = "qcow2",
    hidden_format: str = "qcow2",
    secondary_format: str = "qcow2",
    secondary_contents: Iterable[tuple[int | str, int | str, int]] = (),
    description: str = "",
) -> Recipe:
    """The secondary/hidden/active chain with parametrised geometry.

    `cluster` is the secondary's and the default for the others; sizes
    that differ turn equal_lengths off (the start precondition cases).
    """

    def layer(fmt: str, sz: int | str | None, cl: int | str | None) -> dict[str, Any]:
        d: dict[str, Any] = {"format": fmt, "size": size if sz is None else sz}
        if fmt in CLUSTER_RANGE and cl is not None:
            d["cluster_size"] = cl
        return d

    sec = layer(secondary_format, None, cluster)
    sec["contents"] = [{"offset": o, "length": n, "pattern": p} for o, n, p in secondary_contents]
    hidden = layer(
        hidden_format, hidden_size, cluster if hidden_cluster is None else hidden_cluster
    )
    hidden["backing"] = "secondary"
    active = layer(
        active_format, active_size, cluster if active_cluster is None else active_cluster
    )
    active["backing"] = "hidden"
    sizes = {
        str(size),
        str(size if hidden_size is None else hidden_size),
        str(size if active_size is None else active_size),
    }
    args = f"size={size}, cluster={cluster}"
    for k, v in (
        ("active_cluster", active_cluster),
        ("hidden_cluster", hidden_cluster),
        ("active_size", active_size),
        ("hidden_size", hidden_size),
    ):
        if v is not None:
            args += f", {k}={v}"
    return Recipe.from_dict(
        {
            "description": description or f"secondary chain ({args})",
            "equal_lengths": len(sizes) == 1,
            "layers": {"secondary": sec, "hidden": hidden, "active": active},
        },
        source=f"<secondary_chain {args}>",
    )


def _backing(recipe: Recipe, layer: str, below: str | None) -> str | None:
    """`below` as `layer`'s backing node, unless the layer is raw (it takes none)."""
    return None if recipe.layer(layer).format == "raw" else below


def secondary(
    recipe: Recipe | str = "secondary",
    *,
    top_id: str = REP,
    export: bool = True,
    options: Mapping[str, Any] | None = None,
    over_secondary: FailingWrites | Throttle | Quorum | None = None,
    active_backing: bool = True,
    hidden_backing: bool = True,
    drive_id: str | None = None,
    extra: Sequence[Node] = (),
    guest_through: str | None = None,
    checks_over_nbd: bool = False,
    read_only: Mapping[str, bool] | None = None,
    layer_faults: Mapping[str, FailingWrites | EjectAtEmpty] | None = None,
    export_writable: bool = True,
) -> Graph:
    """rep (secondary) -> active -> hidden -> secondary, the secondary disk exported.

    `over_secondary`: a filter over the secondary disk (a blkdebug or a throttle); the
    export and the hidden disk's backing then use it, so every write reaching the
    secondary disk passes through it. Graphs start must refuse: `active_backing` /
    `hidden_backing` false open that layer with backing null (a raw layer never has one;
    a hidden disk nothing points at is not opened at all); `export` false leaves the
    secondary disk without a BlockBackend. `drive_id`: rep is opened by HMP drive_add as
    that BlockBackend. `options`: further options of rep. `extra`: nodes created after
    rep (a quorum above it, an unrelated node); `guest_through`: the root above rep its
    guest I/O goes through (a quorum above rep does not share WRITE); `checks_over_nbd`:
    rep is also exported (name GUEST_EXPORT, as a VM's disk holds a BlockBackend on it
    for the whole run) and the harness's checks read the guest's view through it, one
    NBD request a range (harness.nbd_reader), instead of HMP qemu-io, one request a
    pattern and a QMP command QEMU reads a byte at a time (the differential's reads).
    `over_secondary` may also be a one-child quorum over the secondary disk (its node
    name is what the export and the hidden disk's backing use). `read_only`: layer ->
    its read-only option; `layer_faults`: layer -> a blkdebug as its file;
    `export_writable` false: the export is read-only (a read-only secondary disk's).
    """
    rec = recipe_of(recipe)
    ro = read_only or {}
    under = layer_faults or {}

    def image(layer: str, backing: str | None = None, inline: bool = False) -> Image:
        return Image(layer, backing, under.get(layer), inline, ro.get(layer))

    nodes: list[Node] = [image("secondary")]
    sec_node = "secondary"
    if isinstance(over_secondary, Quorum):
        nodes.append(over_secondary)
        sec_node = over_secondary.name
    elif over_secondary is not None:
        nodes.append(Filter(over_secondary))
        sec_node = over_secondary.node
    if export:
        nodes.append(Export(sec_node, EXPORT, client=True, path=True, writable=export_writable))
    active_below = _backing(rec, "active", "hidden" if active_backing else None)
    if active_below is not None:
        hidden_below = _backing(rec, "hidden", sec_node if hidden_backing else None)
        nodes.append(image("hidden", hidden_below, inline=True))
    nodes.append(image("active", active_below, inline=True))
    nodes.append(
        Replication(
            REP,
            Mode.SECONDARY,
            "active",
            top_id=top_id,
            drive_id=drive_id,
            options=tuple((options or {}).items()),
        )
    )
    nodes += extra
    guest = Guest(REP, through=guest_through)
    if checks_over_nbd:
        nodes.append(Export(REP, GUEST_EXPORT, GUEST_EXPORT))
        guest = Guest(REP, through=guest_through, check_export=GUEST_EXPORT)
    return Graph(rec, (MachineSpec(SECONDARY, tuple(nodes)),), (guest,))


def primary(recipe: Recipe | str = "primary-child", *, reconnect_delay: int = 0) -> Graph:
    """rep (primary) -> NBD client -> an export of the child disk by a daemon; the NBD
    client with `reconnect_delay` (s) when set."""
    rec = recipe_of(recipe)
    (layer,) = rec.names
    child = MachineSpec(
        CHILD, (Image(layer), Export(layer, CHILD_EXPORT, client=True, path=True)), daemon=True
    )
    nbd = NbdClient(NBD_CHILD, CHILD, CHILD_EXPORT, reconnect_delay=reconnect_delay)
    prim = MachineSpec(PRIMARY, (nbd, Replication(REP, Mode.PRIMARY, NBD_CHILD)))
    return Graph(rec, (child, prim), (Guest(REP),))


def primary_local(*, drive_id: str | None = None, size: str = "64M") -> Graph:
    """rep (primary) over a local qcow2 child, by blockdev-add or (`drive_id`) HMP
    drive_add. The child has no export."""
    rec = Recipe.from_dict(
        {"layers": {"child": {"size": size, "cluster_size": "64k"}}},
        source=f"<primary's local child, {size}>",
    )
    nodes = (
        Image("child", HEADER, inline=True),
        Replication(REP, Mode.PRIMARY, "child", drive_id=drive_id),
    )
    return Graph(rec, (MachineSpec(PRIMARY, nodes),), (Guest(REP),))


# ---- several replication nodes in one QEMU


@dataclass(frozen=True)
class NodeSpec:
    """One replication node of a many-node machine and its own disks.

    A secondary node NAME gets layers NAME-sec <- NAME-hid <- NAME-act, its secondary
    disk exported over NBD under the export name NAME (unless `export` is false: then it
    has no block backend and start refuses it). A primary node gets one layer NAME-child
    as its file (the primary's child as a local image, as tests/unit/test-replication.c
    does). `late`: the node is created only by add_late(), so it is newer than every node
    built before.
    """

    name: str
    mode: Mode = Mode.SECONDARY
    export: bool = True
    late: bool = False

    def layers(self) -> tuple[str, ...]:
        if self.mode is Mode.PRIMARY:
            return (f"{self.name}-child",)
        return (f"{self.name}-sec", f"{self.name}-hid", f"{self.name}-act")


def many_nodes_recipe(specs: Sequence[NodeSpec], size: str = "64M", cluster: str = "64k") -> Recipe:
    layers: dict[str, Any] = {}
    for sp in specs:
        if sp.mode is Mode.PRIMARY:
            layers[f"{sp.name}-child"] = {"size": size, "cluster_size": cluster}
            continue
        sec, hid, act = sp.layers()
        layers[sec] = {"size": size, "cluster_size": cluster}
        layers[hid] = {"size": size, "cluster_size": cluster, "backing": sec}
        layers[act] = {"size": size, "cluster_size": cluster, "backing": hid}
    names = ", ".join(f"{sp.name} ({sp.mode.name.lower()})" for sp in specs)
    return Recipe.from_dict(
        {"description": f"replication nodes {names}", "layers": layers},
        source=f"<many_nodes {names}>",
    )


def many_nodes(specs: Sequence[NodeSpec], *, size: str = "64M", cluster: str = "64k") -> Graph:
    """One qemu-system ("secondary") holding several replication nodes, created in the
    order of `specs` (so the last is the newest, the first one *_all commands visit).
    The path of the primary's I/O (PrimaryWrite) is the first exported secondary disk."""
    if len({sp.name for sp in specs}) != len(specs) or not specs:
        raise ValueError("many_nodes needs at least one spec and distinct node names")
    disks: list[Node] = []
    reps: list[Node] = []
    first = True
    for sp in specs:
        if sp.mode is Mode.PRIMARY:
            (child,) = sp.layers()
            reps += [
                Image(child, inline=True),
                Replication(sp.name, Mode.PRIMARY, child, late=sp.late),
            ]
            continue
        sec, hid, act = sp.layers()
        disks.append(Image(sec))
        if sp.export:
            disks.append(Export(sec, sp.name, f"export-{sp.name}", client=first, path=first))
            first = False
        reps += [
            Image(hid, sec, inline=True),
            Image(act, hid, inline=True),
            Replication(sp.name, Mode.SECONDARY, act, top_id=sp.name, late=sp.late),
        ]
    return Graph(
        many_nodes_recipe(specs, size, cluster),
        (MachineSpec(SECONDARY, tuple(disks + reps)),),
        tuple(Guest(sp.name) for sp in specs),
    )
