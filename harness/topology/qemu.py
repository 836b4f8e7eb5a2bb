"""QEMU's interpreter of a topology value: launch the machines, build each graph with QMP
(and HMP drive_add where the value says so), open the guests' and the harness's own
NBD sessions; then the model from the same value (harness.model.build).

`open_topology` returns the running `Topology`; `add_late` creates a late node of the
value in QEMU and in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import graph as queries
from harness.builds import QemuBuild
from harness.colo_link import ColoLink
from harness.drive import drive_add
from harness.images import FROM_HEADER, Chain, build_chain
from harness.machine import Machine, MachineSet
from harness.model import Model, Profile
from harness.model import build as model_build
from harness.nbd_client import NbdClient as NbdSession
from harness.nbd_reader import NbdReader
from harness.observe import QMP_OK, Observation
from harness.process import NO_MACHINE
from harness.qemu_io import GuestIO, QemuIoSession
from harness.topology.values import (
    HEADER,
    Export,
    Filter,
    Graph,
    Image,
    NbdClient,
    Node,
    Null,
    Quorum,
    Replication,
)
from harness.topology.values import Machine as MachineValue


@dataclass(eq=False)
class Topology:
    """A topology value made real: its machines and the model of the same graph."""

    graph: Graph
    build: QemuBuild
    model: Model
    machines: MachineSet
    chain: Chain
    # guest I/O per node: HMP qemu-io (GuestIO) or another qemu-io session (an NBD client)
    guests: dict[str, QemuIoSession] = field(default_factory=dict)
    # the harness's own NBD client of the export the primary's writes reach
    export_io: NbdSession | None = None
    # model disk name -> (machine name, node name) of every opened layer: live checks
    layer_nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # guest node -> the harness's NBD reads of it for checks (Guest.check_export)
    checkers: dict[str, NbdReader] = field(default_factory=dict)
    # guest node -> the machine holding it
    guest_machine: dict[str, str] = field(default_factory=dict)
    # machine -> its NBD server's socket
    sockets: dict[str, str] = field(default_factory=dict)
    # machines killed, crashed or quit
    dead: set[str] = field(default_factory=set)
    # the COLO migration between two machines (Graph.colo)
    colo: ColoLink | None = None

    def machine(self, name: str) -> Machine:
        return self.machines[name]

    def close(self) -> None:
        """Close the harness's qemu-io NBD sessions and NBD reads (the machines are the
        MachineSet's)."""
        if self.export_io is not None:
            self.export_io.close()
            self.export_io = None
        for name, g in list(self.guests.items()):
            if isinstance(g, NbdSession):
                g.close()
                del self.guests[name]
        for reader in self.checkers.values():
            reader.close()
        self.checkers.clear()


def open_topology(
    graph: Graph, build: QemuBuild, profile: Profile, machines: MachineSet, workdir: Path
) -> Topology:
    """Build `graph` in QEMU (every node but the late ones), then its model."""
    chain = build_chain(build, graph.recipe, workdir / "images")
    builder = _Builder(graph, build, chain, {})
    for mg in graph.machines:
        qsd = mg.daemon and profile.qsd_closes_images_on_exit
        m = machines.launch(
            build,
            mg.name,
            kind="qsd" if qsd else "system",
            args=_args(graph, mg),
            machine_type=NO_MACHINE if mg.vm is None else mg.vm.machine_type,
        )
        for throttle in mg.throttles():
            for obj in throttle.objects():
                m.qmp_ok("object-add", **obj)
        for node in mg.nodes:
            if not _late(node) and not _inline(node):
                builder.create_ok(m, node)
    filenames = {
        n.layer: queries.node_filename(machines[mg.name], n.layer)
        for mg, n in graph.nodes()
        if isinstance(n, Image) and n.fault is not None and n.layer in builder.opened
    }
    model = model_build.build_model(graph, profile, filenames)
    topo = Topology(graph, build, model, machines, chain, sockets=builder.sockets)
    if graph.colo is not None:
        p, sec = machines[graph.colo.primary], machines[graph.colo.secondary]
        topo.colo = ColoLink(p, sec, profile.colo_needs_return_path)
    topo.layer_nodes = dict(builder.opened)
    for mg, n in graph.nodes():
        if isinstance(n, Export) and n.client and topo.export_io is None:
            topo.export_io = NbdSession(build, builder.sockets[mg.name], n.name)
    _open_guests(topo)
    return topo


def _args(graph: Graph, mg: MachineValue) -> tuple[str, ...]:
    """A guest's accelerator and memory; a COLO secondary waits for its migration; both
    sides of a COLO pair are a case's own (never pooled: a migration leaves QEMU in a
    state the pool does not undo)."""
    vm = () if mg.vm is None else mg.vm.args()
    if mg.incoming:
        return (*vm, "-incoming", "defer")
    if graph.colo is not None and mg.name in (graph.colo.primary, graph.colo.secondary):
        return (*vm, "-name", mg.name)
    return vm


def _late(node: Node) -> bool:
    return bool(getattr(node, "late", False))


def _inline(node: Node) -> bool:
    return isinstance(node, NbdClient) or (isinstance(node, Image) and node.inline)


def _open_guests(topo: Topology) -> None:
    """A qemu-io session per guest: through its root if that node exists by now."""
    g = topo.graph
    for guest in g.guests:
        mg, _ = g.find(guest.node)
        topo.guest_machine[guest.node] = mg.name
        if guest.export is not None:
            if not isinstance(topo.guests.get(guest.node), NbdSession):
                sock = topo.sockets[mg.name]
                topo.guests[guest.node] = NbdSession(topo.build, sock, guest.export)
            continue
        if guest.check_export is not None and guest.node not in topo.checkers:
            sock = topo.sockets[mg.name]
            topo.checkers[guest.node] = NbdReader(sock, guest.check_export)
        through = guest.through or guest.node
        _, node = g.find(through)
        if _late(node) and (through not in _created(topo, mg.name)):
            through = guest.node
        topo.guests[guest.node] = GuestIO(topo.machine(mg.name), through)


def _created(topo: Topology, machine: str) -> set[str]:
    return queries.node_names(topo.machine(machine))


def create_late(topo: Topology, name: str) -> Observation:
    """Create the late node `name` in QEMU: QEMU's answer (the model is not told)."""
    mg, node = topo.graph.find(name)
    builder = _Builder(topo.graph, topo.build, topo.chain, topo.sockets)
    answer = builder.create(topo.machine(mg.name), node)
    if answer == QMP_OK:
        topo.layer_nodes.update(builder.opened)
        _open_guests(topo)
    return answer


def add_late(topo: Topology, name: str) -> None:
    """Create the late node `name` of the topology's value in QEMU and in the model."""
    answer = create_late(topo, name)
    assert answer == QMP_OK, f"creating {name}: {answer.describe()}"
    model_build.add_late(topo.model, topo.graph, name)


@dataclass
class _Builder:
    """Issues one machine's commands for the nodes of a value."""

    graph: Graph
    build: QemuBuild
    chain: Chain
    sockets: dict[str, str]
    # layer -> (machine, node) of every image opened
    opened: dict[str, tuple[str, str]] = field(default_factory=dict)

    def create_ok(self, m: Machine, node: Node) -> None:
        answer = self.create(m, node)
        assert answer == QMP_OK, f"{m.name}: creating {node!r}: {answer.describe()}"

    def create(self, m: Machine, node: Node) -> Observation:
        """The QMP (or HMP) command creating `node` on `m`: QEMU's answer."""
        if isinstance(node, Export):
            if m.name not in self.sockets:
                self.sockets[m.name] = _nbd_server(m)
            return m.qmp(
                "block-export-add",
                type="nbd",
                id=node.id,
                writable=True,
                name=node.name,
                **{"node-name": node.node},
            )
        if isinstance(node, Null) and node.drive_id is not None:
            return _hmp_ok(drive_add(m, {"id": node.drive_id, "driver": "null-co"}))
        opts = self.options(m.name, node)
        if isinstance(node, Replication) and node.drive_id is not None:
            return _hmp_ok(drive_add(m, {"id": node.drive_id, **opts}))
        return m.qmp("blockdev-add", **opts)

    def options(self, machine: str, node: Node) -> dict[str, Any]:
        """blockdev-add options of `node`, its inline children nested."""
        if isinstance(node, Image):
            return self._image(machine, node)
        if isinstance(node, Filter):
            return node.fault.options(node.fault.target)
        if isinstance(node, NbdClient):
            return {
                "driver": "nbd",
                "node-name": node.name,
                "server": {"type": "unix", "path": self.sockets[node.machine]},
                "export": node.export,
            }
        if isinstance(node, Replication):
            opts: dict[str, Any] = {
                "driver": "replication",
                "node-name": node.name,
                "mode": node.mode.name.lower(),
            }
            if node.top_id is not None:
                opts["top-id"] = node.top_id
            opts["file"] = self._ref(machine, node.file)
            opts.update(node.options)
            return opts
        if isinstance(node, Quorum):
            return {
                "driver": "quorum",
                "node-name": node.name,
                "vote-threshold": 1,
                "read-pattern": "fifo",
                "children": list(node.children),
            }
        if isinstance(node, Null):
            return {"driver": "null-co", "node-name": node.name}
        raise TypeError(f"no options for {node!r}")

    def _ref(self, machine: str, name: str) -> Any:
        """An inline node's options, else its name."""
        _, node = self.graph.find(name)
        return self.options(machine, node) if _inline(node) else name

    def _image(self, machine: str, node: Image) -> dict[str, Any]:
        if node.backing == HEADER:
            opts = self.chain.blockdev(node.layer, backing=FROM_HEADER)
        elif node.backing is None:
            opts = self.chain.blockdev(node.layer, backing=None)
        else:
            opts = self.chain.blockdev(node.layer, backing=self._ref(machine, node.backing))
        if node.fault is not None:
            opts["file"] = node.fault.options(opts["file"])
        self.opened[node.layer] = (machine, node.layer)
        return opts


def _nbd_server(m: Machine) -> str:
    """nbd-server-start on a unix socket in the machine's private directory; its path."""
    sock = m.sock_path("nbd.sock")
    # Every release from 5.2 accepts the legacy SocketAddressLegacy form here.
    m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    return sock


def _hmp_ok(answer: str) -> Observation:
    if answer == "OK":
        return QMP_OK
    raise AssertionError(f"drive_add refused: {answer}")
