"""The standard topologies, built twice from one description: in real QEMU and in the model.

Secondary-only: one qemu-system holds the secondary disk (exported over NBD,
which gives it the block backend start requires and the primary's path in),
the hidden and active disks and the replication node. Primary-only: a
qemu-system with the primary replication node over an NBD client of a
qemu-storage-daemon export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.builds import QemuBuild
from harness.drive import drive_add
from harness.images import FROM_HEADER, Chain, Recipe, build_chain, load_recipe
from harness.machine import Machine, MachineSet
from harness.model import Model, Profile
from harness.model.disks import Disk, write_layer
from harness.model.replication import Mode, ReplicationNode
from harness.nbd_client import NbdClient
from harness.ops import PRIMARY, REP, SECONDARY
from harness.qemu_io import GuestIO, QemuIoSession

EXPORT = "secondary"
CHILD_EXPORT = "child"


@dataclass(eq=False)
class Topology:
    """Real machines and the model of the same graph, plus where each model disk lives."""

    build: QemuBuild
    model: Model
    machines: MachineSet
    chain: Chain
    # guest I/O per node: HMP qemu-io (GuestIO) or another qemu-io session (an NBD client)
    guests: dict[str, QemuIoSession] = field(default_factory=dict)
    # the NBD client writing into the exported disk (the primary's path in)
    export_io: NbdClient | None = None
    # model disk name -> (machine name, node name) for live layer checks
    layer_nodes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def machine(self, name: str) -> Machine:
        return self.machines[name]

    def close(self) -> None:
        if self.export_io is not None:
            self.export_io.close()
            self.export_io = None


def disk_from_layer(chain: Chain, name: str) -> Disk:
    """A model disk with the recipe's geometry and initial contents."""
    layer = chain[name]
    disk = Disk(name, layer.size, layer.cluster_size or 1, layer.format)
    for e in chain.recipe.layer(name).contents:
        write_layer([disk], 0, e.offset, e.offset + e.length, e.pattern)
    return disk


def nbd_server(m: Machine) -> str:
    """nbd-server-start on a unix socket in the machine's private directory; its path."""
    sock = m.sock_path("nbd.sock")
    # Both 7.2 and 10.0 accept only the legacy SocketAddressLegacy form here.
    m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    return sock


def export_node(m: Machine, node: str, name: str, export_id: str = "export") -> None:
    """block-export-add: `node` writable over the machine's NBD server as `name`."""
    m.qmp_ok(
        "block-export-add",
        type="nbd",
        id=export_id,
        writable=True,
        name=name,
        **{"node-name": node},
    )


def open_secondary_disk(
    m: Machine,
    chain: Chain,
    objects: Sequence[Mapping[str, Any]] = (),
    secondary_filter: Mapping[str, Any] | None = None,
) -> str:
    """object-add `objects`, open the secondary disk and the filter over it if any: the
    node the export and the hidden disk's backing then use."""
    for obj in objects:
        m.qmp_ok("object-add", **obj)
    m.qmp_ok("blockdev-add", **chain.blockdev("secondary", backing=None))
    if secondary_filter is None:
        return "secondary"
    m.qmp_ok("blockdev-add", **secondary_filter)
    return str(secondary_filter["node-name"])


def layer_opts(chain: Chain, name: str, backing: Any) -> dict[str, Any]:
    """chain.blockdev(), also for raw layers (which take no backing option)."""
    if chain[name].format == "raw":
        return chain.blockdev(name, backing=None)
    return chain.blockdev(name, backing=backing)


def secondary(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    recipe: Recipe | str = "secondary",
    *,
    top_id: str = REP,
    export: bool = True,
    extra_rep_options: Mapping[str, Any] | None = None,
    secondary_filter: Mapping[str, Any] | None = None,
    active_backing: bool = True,
    hidden_backing: bool = True,
    drive_id: str | None = None,
    top_valid: bool | None = None,
    objects: Sequence[Mapping[str, Any]] = (),
) -> Topology:
    """rep (secondary) -> active -> hidden -> secondary, the secondary disk exported over NBD.

    `secondary_filter`: blockdev-add options of a filter node (blkdebug, throttle) over the
    secondary disk's format node "secondary"; the export and the hidden disk's backing then
    use the filter, so every write reaching the secondary disk passes through it.
    `objects`: object-add arguments run first (a throttle group).

    Graphs start must refuse: `active_backing`/`hidden_backing` false open that layer with
    backing null (a raw layer never has one; a hidden disk nothing points at is not
    opened at all); `export` false leaves the secondary disk without a BlockBackend.
    `drive_id`: open rep with HMP drive_add as BlockBackend `drive_id` (the schema-less
    path). `top_valid` defaults to what this graph makes of `top_id`: valid when it
    names rep itself or rep's BlockBackend.
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    chain = build_chain(build, rec, workdir / "images")
    m = machines.launch(build, SECONDARY)
    sec_node = open_secondary_disk(m, chain, objects, secondary_filter)
    topo = Topology(build, Model(profile), machines, chain)
    sec = topo.model.add_disk(disk_from_layer(chain, "secondary"))
    hidden = topo.model.add_disk(disk_from_layer(chain, "hidden"))
    active = topo.model.add_disk(disk_from_layer(chain, "active"))
    hidden_opts = layer_opts(chain, "hidden", sec_node if hidden_backing else None)
    active_opts = layer_opts(chain, "active", hidden_opts if active_backing else None)
    if hidden_opts.get("backing") is not None:
        hidden.backing = sec
    if active_opts.get("backing") is not None:
        active.backing = hidden
    if export:
        sock = nbd_server(m)
        export_node(m, sec_node, EXPORT)
        sec.has_blk = True
        topo.model.export = sec
        topo.export_io = NbdClient(build, sock, EXPORT)
    opts: dict[str, Any] = {
        "driver": "replication",
        "node-name": REP,
        "mode": "secondary",
        "top-id": top_id,
        "file": active_opts,
    }
    opts.update(extra_rep_options or {})
    if drive_id is None:
        m.qmp_ok("blockdev-add", **opts)
    else:
        answer = drive_add(m, {"id": drive_id, **opts})
        assert answer == "OK", f"drive_add refused the replication node: {answer}"
    if top_valid is None:
        top_valid = top_id in (REP, drive_id)
    topo.model.add_node(
        SECONDARY,
        ReplicationNode(REP, Mode.SECONDARY, profile, active, top_id=top_id, top_valid=top_valid),
    )
    topo.guests[REP] = GuestIO(m, REP)
    topo.layer_nodes = {n: (SECONDARY, n) for n in ("active", "hidden", "secondary")}
    if active.backing is None:
        # the hidden disk is left out of rep's graph: it is not opened at all
        del topo.layer_nodes["hidden"]
    return topo


def primary(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    recipe: Recipe | str = "primary-child",
) -> Topology:
    """rep (primary) -> NBD client -> qemu-storage-daemon export of the child disk.

    A daemon that does not close its nodes on exit (before 6.0) would lose the child's
    qcow2 metadata at quit, so there the child is hosted by a second emulator instead.
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    chain = build_chain(build, rec, workdir / "images")
    (layer_name,) = rec.names
    daemon = machines.launch(
        build, "child", kind="qsd" if profile.qsd_closes_images_on_exit else "system"
    )
    daemon.qmp_ok("blockdev-add", **chain.blockdev(layer_name, backing=None))
    sock = nbd_server(daemon)
    export_node(daemon, layer_name, CHILD_EXPORT)
    m = machines.launch(build, PRIMARY)
    rep: dict[str, Any] = {
        "driver": "replication",
        "node-name": REP,
        "mode": "primary",
        "file": {
            "driver": "nbd",
            "node-name": "nbd-child",
            "server": {"type": "unix", "path": sock},
            "export": CHILD_EXPORT,
        },
    }
    m.qmp_ok("blockdev-add", **rep)
    topo = Topology(build, Model(profile), machines, chain)
    child = topo.model.add_disk(disk_from_layer(chain, layer_name))
    child.has_blk = True
    topo.model.export = child
    topo.model.add_node(PRIMARY, ReplicationNode(REP, Mode.PRIMARY, profile, child))
    topo.guests[REP] = GuestIO(m, REP)
    topo.export_io = NbdClient(build, sock, CHILD_EXPORT)
    topo.layer_nodes = {layer_name: ("child", layer_name)}
    return topo


def primary_local(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    *,
    drive_id: str | None = None,
    size: str = "64M",
) -> Topology:
    """rep (primary) over a local qcow2 child (as tests/unit/test-replication.c opens it),
    by blockdev-add or, with `drive_id`, by HMP drive_add. The child has no export."""
    rec = Recipe.from_dict(
        {"layers": {"child": {"size": size, "cluster_size": "64k"}}},
        source=f"<primary's local child, {size}>",
    )
    chain = build_chain(build, rec, workdir / "images")
    m = machines.launch(build, PRIMARY)
    opts: dict[str, Any] = {
        "driver": "replication",
        "node-name": REP,
        "mode": "primary",
        "file": chain.blockdev("child", backing=FROM_HEADER),
    }
    if drive_id is None:
        m.qmp_ok("blockdev-add", **opts)
    else:
        answer = drive_add(m, {"id": drive_id, **opts})
        assert answer == "OK", f"drive_add refused the replication node: {answer}"
    topo = Topology(build, Model(profile), machines, chain)
    child = topo.model.add_disk(disk_from_layer(chain, "child"))
    child.has_blk = drive_id is not None
    topo.model.add_node(PRIMARY, ReplicationNode(REP, Mode.PRIMARY, profile, child))
    topo.guests[REP] = GuestIO(m, REP)
    topo.layer_nodes = {"child": (PRIMARY, "child")}
    return topo


# ---- several replication nodes in one QEMU


@dataclass(frozen=True)
class NodeSpec:
    """One replication node of a many-node machine and its own disks.

    A secondary node NAME gets layers NAME-sec <- NAME-hid <- NAME-act, its
    secondary disk exported over NBD under the export name NAME (unless
    `export` is false: then it has no block backend and start refuses it).
    A primary node gets one layer NAME-child as its file (the primary's child
    as a local image, as tests/unit/test-replication.c does). `late`: the
    images are built and opened, but the replication node is created only by
    add_node(), so it is newer than every node built before.
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


def many_nodes(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    specs: Sequence[NodeSpec],
    *,
    size: str = "64M",
    cluster: str = "64k",
) -> Topology:
    """One qemu-system ("secondary") holding several replication nodes, created in the
    order of `specs` (so the last is the newest, the first one *_all commands visit).

    Each node's guest I/O goes through its own GuestIO (ops' `node=NAME`). The
    model's `export` (PrimaryWrite) is the first exported secondary disk.
    """
    if len({sp.name for sp in specs}) != len(specs) or not specs:
        raise ValueError("many_nodes needs at least one spec and distinct node names")
    chain = build_chain(build, many_nodes_recipe(specs, size, cluster), workdir / "images")
    m = machines.launch(build, SECONDARY)
    topo = Topology(build, Model(profile), machines, chain)
    topo.model.machine(SECONDARY)
    sock = nbd_server(m) if any(sp.export and sp.mode is Mode.SECONDARY for sp in specs) else ""
    for sp in specs:
        if sp.mode is Mode.PRIMARY:
            topo.model.add_disk(disk_from_layer(chain, sp.layers()[0]))
            continue
        sec_name, hid_name, act_name = sp.layers()
        m.qmp_ok("blockdev-add", **chain.blockdev(sec_name, backing=None))
        sec = topo.model.add_disk(disk_from_layer(chain, sec_name))
        hid = topo.model.add_disk(disk_from_layer(chain, hid_name))
        act = topo.model.add_disk(disk_from_layer(chain, act_name))
        hid.backing, act.backing = sec, hid
        if sp.export:
            export_node(m, sec_name, sp.name, export_id=f"export-{sp.name}")
            sec.has_blk = True
            if topo.export_io is None:
                topo.model.export = sec
                topo.export_io = NbdClient(build, sock, sp.name)
        topo.layer_nodes[sec_name] = (SECONDARY, sec_name)
    for sp in specs:
        if not sp.late:
            add_node(topo, sp)
    return topo


def add_node(topo: Topology, spec: NodeSpec) -> ReplicationNode:
    """Create `spec`'s replication node now (in QEMU and the model): it is the newest."""
    m = topo.machine(SECONDARY)
    opts: dict[str, Any] = {"driver": "replication", "node-name": spec.name}
    if spec.mode is Mode.PRIMARY:
        (child,) = spec.layers()
        opts.update(mode="primary", file=topo.chain.blockdev(child, backing=None))
        file = topo.model.disks[child]
        topo.layer_nodes[child] = (SECONDARY, child)
    else:
        sec, hid, act = spec.layers()
        opts.update(
            mode="secondary",
            **{"top-id": spec.name},
            file=topo.chain.blockdev(act, backing=topo.chain.blockdev(hid, backing=sec)),
        )
        file = topo.model.disks[act]
        topo.layer_nodes[hid] = (SECONDARY, hid)
        topo.layer_nodes[act] = (SECONDARY, act)
    m.qmp_ok("blockdev-add", **opts)
    node = topo.model.add_node(
        SECONDARY,
        ReplicationNode(
            spec.name,
            spec.mode,
            topo.model.profile,
            file,
            top_id=spec.name if spec.mode is Mode.SECONDARY else None,
        ),
    )
    topo.guests[spec.name] = GuestIO(m, spec.name)
    return node


# ---- fault injection under the replication node


def blkdebug_over_secondary(
    sector: int | None = None,
    *,
    iotypes: Sequence[str] = ("write",),
    errno: int = 5,
    node_name: str = "secondary-dbg",
    image: str = "secondary",
) -> dict[str, Any]:
    """blockdev-add options of a blkdebug filter for `secondary(..., secondary_filter=...)`.

    Every request of one of `iotypes` ("write", "write-zeroes", ...) that reaches the
    secondary disk and covers `sector` (any sector if None) fails with `errno` (5: EIO).
    Guest writes of a running secondary go to the active disk and never reach it, so
    the first writer is the failover commit: the commit fails (FAILOVER_FAILED) exactly
    when it copies that sector, i.e. when the sector's commit chunk is allocated in the
    active or hidden disk. Primary writes over NBD and writes after the failover do reach
    it: a case keeps them off `sector` or expects their EIO.

    blkdebug arms its rules only when their event fires, here "pwritev": a data write
    reaching the blkdebug node. A commit whose request for `sector` is a write-zeroes
    (the chunk reads as zeros: e.g. the hidden disk got a zero cluster from
    copy-before-write) fails only if an earlier data write armed the rules, and the
    commit's own data copies race it: arm them first with a harmless data write (the
    differential runner rewrites the last sector with the byte it holds).
    """
    rules: list[dict[str, Any]] = []
    for iotype in iotypes:
        rule: dict[str, Any] = {"event": "pwritev", "iotype": iotype, "errno": errno, "once": False}
        if sector is not None:
            rule["sector"] = sector
        rules.append(rule)
    return {"driver": "blkdebug", "node-name": node_name, "image": image, "inject-error": rules}
