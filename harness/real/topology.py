"""QEMU's interpreter of a topology value: launch the machines, build each graph with QMP
(and HMP drive_add where the value says so), open the guests' and the harness's own
NBD sessions. The model's interpreter of the same value is harness.model.build; a story
(harness.story.Story.open) puts the two side by side.

`open_live` returns the running `LiveTopology`; what happens to it later (a late node
created, a machine gone, a failover that closed the active and hidden disks) are its own
methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import graph as queries
from harness.builds import QemuBuild
from harness.colo_link import ColoLink
from harness.drive import drive_add
from harness.images import FROM_HEADER, Chain, build_chain
from harness.machine import Machine, MachineSet
from harness.model.profiles import Profile
from harness.nbd_client import NbdSession
from harness.nbd_reader import NbdReader
from harness.observe import QMP_OK, Observation
from harness.process import NO_MACHINE
from harness.qemu_io import GuestIO, QemuIoSession
from harness.topology.values import (
    HEADER,
    BackupJob,
    Export,
    Filter,
    Graph,
    Image,
    LogWrites,
    MachineSpec,
    NbdClient,
    Node,
    Null,
    Quorum,
    Replication,
)


class LiveTopology:
    """A topology value made real: its machines, images and the harness's sessions of
    them. It changes only through its own methods."""

    def __init__(self, graph: Graph, build: QemuBuild, machines: MachineSet, chain: Chain) -> None:
        self.graph = graph
        self.build = build
        self.machines = machines
        self._chain = chain
        # guest I/O per node: HMP qemu-io (GuestIO) or another qemu-io session (an NBD client)
        self._guests: dict[str, QemuIoSession] = {}
        # the harness's own NBD client of the export the primary's writes reach
        self._export_io: NbdSession | None = None
        # model disk name -> (machine name, node name) of every opened layer: live checks
        self._layer_nodes: dict[str, tuple[str, str]] = {}
        # guest node -> the harness's NBD reads of it for checks (Guest.check_export)
        self._checkers: dict[str, NbdReader] = {}
        # guest node -> the machine holding it
        self._guest_machine: dict[str, str] = {}
        # machine -> its NBD server's socket
        self._sockets: dict[str, str] = {}
        # machines killed, crashed or quit
        self._gone: set[str] = set()
        # QEMU's bs->filename of layers QEMU's texts name differently (over a blkdebug)
        self._filenames: dict[str, str] = {}
        # the COLO migration between two machines (Graph.colo)
        self.colo: ColoLink | None = None

    # ---- what it is now

    @property
    def chain(self) -> Chain:
        """The images still worth checking offline (a dead machine's are not)."""
        return self._chain

    @property
    def guests(self) -> Mapping[str, QemuIoSession]:
        return self._guests

    @property
    def export_io(self) -> NbdSession | None:
        return self._export_io

    @property
    def layer_nodes(self) -> Mapping[str, tuple[str, str]]:
        """Model disk name -> (machine, node) of every layer QEMU can be asked about live."""
        return self._layer_nodes

    @property
    def checkers(self) -> Mapping[str, NbdReader]:
        return self._checkers

    @property
    def sockets(self) -> Mapping[str, str]:
        return self._sockets

    @property
    def gone(self) -> frozenset[str]:
        """The machines killed, crashed or quit."""
        return frozenset(self._gone)

    def machine(self, name: str) -> Machine:
        return self.machines[name]

    def filenames(self) -> dict[str, str]:
        """QEMU's bs->filename of the layers its texts quote differently from their name
        (a layer over a blkdebug file), as they were opened: for the model's texts."""
        return dict(self._filenames)

    # ---- what happens to it

    def create_late(self, name: str) -> Observation:
        """Create the late node `name` in QEMU: QEMU's answer (the model is not told)."""
        mg, node = self.graph.find(name)
        builder = _Builder(self.graph, self.build, self._chain, self._sockets)
        answer = builder.create(self.machine(mg.name), node)
        if answer == QMP_OK:
            self._layer_nodes.update(builder.opened)
            self._open_guests()
        return answer

    def machine_gone(self, name: str, images_kept: bool) -> None:
        """`name` is gone: its layers are no longer asked live, its sessions closed. A
        machine that died (not quit) leaves images the model cannot predict (its qcow2
        metadata caches died with it): they are no longer checked."""
        self._gone.add(name)
        self._layer_nodes = {k: v for k, v in self._layer_nodes.items() if v[0] != name}
        if not images_kept:
            gone = {
                n.layer for m, n in self.graph.nodes() if isinstance(n, Image) and m.name == name
            }
            self._chain = dataclasses.replace(
                self._chain,
                layers={k: v for k, v in self._chain.layers.items() if k not in gone},
            )
        for k in [k for k in self._checkers if self._guest_machine.get(k) == name]:
            self._checkers.pop(k).close()
        for k in [k for k in self._guests if self._guest_machine.get(k) == name]:
            g = self._guests.pop(k)
            if isinstance(g, NbdSession):
                g.close()

    def export_gone(self) -> None:
        """The export the primary's writes reach is gone: the harness's client closed."""
        if self._export_io is not None:
            self._export_io.close()
            self._export_io = None

    def export_back(self, export_id: str, server: bool) -> Observation:
        """The export `export_id` as the value made it, again (`server`: the machine's
        NBD server first, on the same socket): QEMU's answer."""
        mg, node = self.graph.find(export_id)
        m = self.machine(mg.name)
        queries.export_gone(m, export_id)
        if server:
            answer = m.qmp(
                "nbd-server-start", addr={"type": "unix", "data": {"path": self._sockets[mg.name]}}
            )
            if answer != QMP_OK:
                return answer
        return _Builder(self.graph, self.build, self._chain, self._sockets).create(m, node)

    def after_failover(self, node: str) -> None:
        """A completed failover of the replication node `node` closed its inline active
        and hidden disks (unreferenced): only the offline check still sees them."""
        for layer in self.graph.inline_images(node):
            self._layer_nodes.pop(layer, None)

    def close(self) -> None:
        """Close the harness's qemu-io NBD sessions and NBD reads (the machines are the
        MachineSet's)."""
        self.export_gone()
        for name, g in list(self._guests.items()):
            if isinstance(g, NbdSession):
                g.close()
                del self._guests[name]
        for reader in self._checkers.values():
            reader.close()
        self._checkers.clear()

    # ---- opening

    def _open(self, profile: Profile) -> None:
        builder = _Builder(self.graph, self.build, self._chain, self._sockets)
        for mg in self.graph.machines:
            qsd = mg.daemon and profile.qsd_closes_images_on_exit
            m = self.machines.launch(
                self.build,
                mg.name,
                kind="qsd" if qsd else "system",
                args=_args(self.graph, mg),
                machine_type=NO_MACHINE if mg.vm is None else mg.vm.machine_type,
            )
            for throttle in mg.throttles():
                for obj in throttle.objects():
                    m.qmp_ok("object-add", **obj)
            for node in mg.nodes:
                if not node.late and not node.inline:
                    builder.create_ok(m, node)
        if self.graph.colo is not None:
            p, sec = self.machine(self.graph.colo.primary), self.machine(self.graph.colo.secondary)
            self.colo = ColoLink(p, sec, profile.colo_needs_return_path)
        self._layer_nodes = dict(builder.opened)
        self._filenames = {
            n.layer: queries.node_filename(self.machine(mg.name), n.layer)
            for mg, n in self.graph.nodes()
            if isinstance(n, Image) and n.fault is not None and n.layer in builder.opened
        }
        for mg, n in self.graph.nodes():
            if isinstance(n, Export) and n.client and self._export_io is None:
                self._export_io = NbdSession(self.build, self._sockets[mg.name], n.name)
        self._open_guests()

    def _open_guests(self) -> None:
        """A qemu-io session per guest: through its root if that node exists by now."""
        g = self.graph
        for guest in g.guests:
            mg, _ = g.find(guest.node)
            self._guest_machine[guest.node] = mg.name
            if guest.export is not None:
                if not isinstance(self._guests.get(guest.node), NbdSession):
                    sock = self._sockets[mg.name]
                    self._guests[guest.node] = NbdSession(self.build, sock, guest.export)
                continue
            if guest.check_export is not None and guest.node not in self._checkers:
                sock = self._sockets[mg.name]
                self._checkers[guest.node] = NbdReader(sock, guest.check_export)
            through = guest.through or guest.node
            _, node = g.find(through)
            if node.late and through not in queries.node_names(self.machine(mg.name)):
                through = guest.node
            self._guests[guest.node] = GuestIO(self.machine(mg.name), through)


def _args(graph: Graph, mg: MachineSpec) -> tuple[str, ...]:
    """A guest's accelerator and memory; a COLO secondary waits for its migration; both
    sides of a COLO pair are a case's own (never pooled: a migration leaves QEMU in a
    state the pool does not undo)."""
    vm = () if mg.vm is None else mg.vm.args()
    if mg.incoming:
        return (*vm, "-incoming", "defer")
    if graph.colo is not None and mg.name in (graph.colo.primary, graph.colo.secondary):
        return (*vm, "-name", mg.name)
    return vm


def open_live(
    graph: Graph, build: QemuBuild, profile: Profile, machines: MachineSet, workdir: Path
) -> LiveTopology:
    """Build `graph` in QEMU (every node but the late ones) and open its sessions.
    `profile`: whether the release's storage daemon closes its images on exit (a daemon
    machine is a qemu-storage-daemon then, else a qemu-system)."""
    chain = build_chain(build, graph.recipe, workdir / "images")
    live = LiveTopology(graph, build, machines, chain)
    live._open(profile)
    return live


@dataclass
class _Builder:
    """Issues one machine's commands for the nodes of a value."""

    graph: Graph
    build: QemuBuild
    chain: Chain
    sockets: dict[str, str]  # the live topology's: a server started is added to it
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
                writable=node.writable,
                name=node.name,
                **{"node-name": node.node},
            )
        if isinstance(node, BackupJob):
            args = {"job-id": node.id, "device": node.source, "target": node.target}
            return m.qmp(
                "blockdev-backup", sync="none", **args, **{"filter-node-name": node.filter}
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
            nbd: dict[str, Any] = {
                "driver": "nbd",
                "node-name": node.name,
                "server": {"type": "unix", "path": self.sockets[node.machine]},
                "export": node.export,
            }
            if node.reconnect_delay:
                nbd["reconnect-delay"] = node.reconnect_delay
            return nbd
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
                **({"read-only": True} if node.read_only else {}),
            }
        if isinstance(node, Null):
            return {"driver": "null-co", "node-name": node.name}
        if isinstance(node, LogWrites):
            return {
                "driver": "blklogwrites",
                "node-name": node.name,
                "file": node.file,
                "log": node.log,
            }
        raise TypeError(f"no options for {node!r}")

    def _ref(self, machine: str, name: str) -> Any:
        """An inline node's options, else its name."""
        _, node = self.graph.find(name)
        return self.options(machine, node) if node.inline else name

    def _image(self, machine: str, node: Image) -> dict[str, Any]:
        if node.backing == HEADER:
            opts = self.chain.blockdev(node.layer, backing=FROM_HEADER)
        elif node.backing is None:
            opts = self.chain.blockdev(node.layer, backing=None)
        else:
            opts = self.chain.blockdev(node.layer, backing=self._ref(machine, node.backing))
        if node.fault is not None:
            opts["file"] = node.fault.options(opts["file"])
        if node.read_only is not None:
            opts["read-only"] = node.read_only
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
