"""The model's interpreter of a topology value (harness.topology.values): the model of the
graph the QEMU interpreter (harness.real.topology) builds from the same value.

Every recipe layer is a model disk (its image exists whether or not it is opened), with
the recipe's geometry and initial contents; the graph gives the backing links (through
filters), the BlockBackends (exports), the faults (Model.inject), the replication nodes,
the quorums and the NBD links. Late nodes are added by `add_late`. `secondary_model`
and `primary_model` build the standard graphs' models from bare geometry, for the
model's own unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.images import Recipe
from harness.model.disks import Disk, write_layer
from harness.model.profiles import Profile
from harness.model.quorum import QuorumNode
from harness.model.replication import ReplicationNode
from harness.model.system import Model
from harness.ops import PRIMARY, REP, SECONDARY
from harness.topology.values import (
    BackupJob,
    Export,
    Filter,
    Graph,
    Image,
    LogWrites,
    MachineSpec,
    Mode,
    NbdClient,
    Quorum,
    Replication,
)
from harness.units import MiB


def disk_of(recipe: Recipe, name: str, filename: str | None = None) -> Disk:
    """A model disk with the recipe layer's geometry and initial contents."""
    layer = recipe.layer(name)
    disk = Disk(name, layer.size, layer.cluster_size or 1, layer.format, filename=filename)
    for e in layer.contents:
        write_layer([disk], 0, e.offset, e.offset + e.length, e.pattern)
    return disk


def build_model(
    graph: Graph, profile: Profile, filenames: Mapping[str, str] | None = None
) -> Model:
    """The model of `graph`'s non-late nodes. `filenames`: QEMU's bs->filename of layers
    whose name QEMU's texts quote differently (a layer over a blkdebug file)."""
    model = Model(profile)
    names = filenames or {}
    for layer in graph.recipe.names:
        model.add_disk(disk_of(graph.recipe, layer, names.get(layer)))
    for m in graph.machines:
        model.machine(m.name)
    for _, node in graph.nodes():
        if isinstance(node, Image):
            _image(model, graph, node)
        elif isinstance(node, Filter):
            model.inject(node.fault)
    for m, node in graph.nodes():
        if isinstance(node, Export):
            disk = _disk_below(model, graph, node.node)
            if disk is not None:
                model.add_export(m.name, node.id, disk, path=node.path, client=node.client)
        elif isinstance(node, BackupJob | LogWrites):
            _user(model, graph, node)
    for m, node in graph.nodes():
        if not node.late:
            add_node(model, graph, m, node)
    if graph.colo is not None:
        model.drive_colo(graph.colo.primary, graph.colo.secondary)
    return model


def _image(model: Model, graph: Graph, node: Image) -> None:
    disk = model.disks[node.layer]
    if node.fault is not None:
        model.inject(node.fault)
    if node.backing is not None:
        below = _disk_below(model, graph, node.backing)
        if below is not None:
            model.link_backing(disk, below)
    # QEMU opens a backing node inline read-only unless told otherwise
    backing_inline = node.inline and any(
        isinstance(n, Image) and n.backing == node.layer for _, n in graph.nodes()
    )
    disk.read_only = backing_inline if node.read_only is None else node.read_only


def _disk_below(model: Model, graph: Graph, name: str) -> Disk | None:
    """The model disk a node name stands for: the image it reaches through filters, or a
    one-child quorum over one (a filter disk of its own, with the quorum's name)."""
    image = graph.image_below(name)
    if image is not None:
        return model.disks[image.layer]
    try:
        _, node = graph.find(name)
    except KeyError:  # HEADER: the image header's own backing file
        return None
    if not (isinstance(node, Quorum) and len(node.children) == 1):
        return None
    if name not in model.disks:
        child = _disk_below(model, graph, node.children[0])
        assert child is not None, f"{name}: its child is no image"
        model.add_disk(
            Disk(name, child.size, child.cluster, "quorum", backing=child, filter=True)
        ).read_only = node.read_only
    return model.disks[name]


def _user(model: Model, graph: Graph, node: BackupJob | LogWrites) -> None:
    """Another user of the disks: a block job's op blockers (on its target, and on the
    filter it puts above its source), or a blklogwrites log's permissions."""
    if isinstance(node, LogWrites):
        log = _disk_below(model, graph, node.log)
        assert log is not None, f"{node.name}: its log is no image"
        log.resize_holder = (f"node '{node.name}'", "log")
        return
    for name, blocked in ((node.source, node.filter), (node.target, node.target)):
        disk = _disk_below(model, graph, name)
        assert disk is not None, f"{node.id}: {name} is no image"
        disk.job = (blocked, "backup")


def add_late(model: Model, graph: Graph, name: str) -> None:
    """Add the late node `name` of `graph` to the model (it is now the newest)."""
    m, node = graph.find(name)
    add_node(model, graph, m, node)


def add_node(model: Model, graph: Graph, m: MachineSpec, node: object) -> None:
    """The model of one replication or quorum node (other nodes need none)."""
    if isinstance(node, Replication):
        _replication(model, graph, m, node)
    elif isinstance(node, Quorum):
        q = model.quorums.setdefault(node.name, QuorumNode(node.name, m.name))
        for child in node.children:
            q.add_child(model.nodes.get(child) or model.disks[child])


def _replication(model: Model, graph: Graph, m: MachineSpec, node: Replication) -> None:
    _, file = graph.find(node.file)
    link: NbdClient | None = file if isinstance(file, NbdClient) else None
    if link is not None:
        target = graph.image_below(graph.export_node(link))
        assert target is not None, f"{link.name}: its export serves no image"
        disk = model.disks[target.layer]
    else:
        image = graph.image_below(node.file)
        assert image is not None, f"{node.name}: its file is no image"
        disk = model.disks[image.layer]
    rep = model.add_node(
        m.name,
        ReplicationNode(
            node.name,
            node.mode,
            model.profile,
            disk,
            top_id=node.top_id if node.mode is Mode.SECONDARY else None,
            drive_id=node.drive_id,
        ),
    )
    if link is not None:
        model.connect(rep, link.machine, link.export_id)
        rep.reconnect_delay = link.reconnect_delay


# ---- the standard graphs' models without a recipe (the model's own unit tests)


def secondary_model(
    profile: Profile,
    size: int = 64 * MiB,
    cluster: int = 65536,
    *,
    active_cluster: int | None = None,
    hidden_cluster: int | None = None,
    secondary_cluster: int | None = None,
    top_valid: bool = True,
) -> Model:
    """Secondary-only topology: rep -> active -> hidden -> secondary (exported over NBD)."""
    m = Model(profile)
    sec = m.add_disk(Disk("secondary", size, secondary_cluster or cluster, has_blk=True))
    hidden = m.add_disk(Disk("hidden", size, hidden_cluster or cluster, backing=sec))
    hidden.read_only = True  # opened inline as the active disk's backing
    active = m.add_disk(Disk("active", size, active_cluster or cluster, backing=hidden))
    m.export = sec
    m.add_node(
        SECONDARY,
        ReplicationNode(REP, Mode.SECONDARY, profile, active, top_id=REP, top_valid=top_valid),
    )
    return m


def primary_model(profile: Profile, size: int = 64 * MiB, cluster: int = 65536) -> Model:
    """Primary-only topology: rep (primary) -> NBD client -> a storage daemon's disk."""
    m = Model(profile)
    child = m.add_disk(Disk("child", size, cluster, has_blk=True))
    m.add_node(PRIMARY, ReplicationNode(REP, Mode.PRIMARY, profile, child))
    return m
