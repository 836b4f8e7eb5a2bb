"""The model of a whole topology: disks, replication nodes per machine, and the QMP layer.

`Model.apply(op)` answers with the observation real QEMU must produce. The QMP
commands walk a machine's replication nodes as replication.c does: newest
first (QLIST_INSERT_HEAD), stopping at the first error.
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from harness import faults, ops
from harness.model.colo import Colo
from harness.model.disks import Disk, to_data, view, write_layer
from harness.model.extents import UNDEF
from harness.model.lifecycle import dispatch as more_dispatch
from harness.model.profiles import Profile
from harness.model.quorum import QuorumNode
from harness.model.replication import Abort, ReplicationNode, Stage
from harness.observe import (
    EIO,
    IO_EIO,
    IO_OK,
    QMP_OK,
    Crashed,
    IoResult,
    Observation,
    OneOf,
    QmpResult,
    qmp_error,
    status,
)
from harness.topology.values import Mode

SETTLED = QmpResult(True, "settled")


@dataclass(frozen=True, eq=False)
class Fork(Observation):
    """QEMU's answer depends on timing, and so does the state after it: each allowed
    answer with the model that follows from it (the story goes on with the branch
    QEMU's answer matches)."""

    branches: tuple[tuple[Observation, Model], ...]

    def describe(self) -> str:
        return "one of: " + " | ".join(o.describe() for o, _ in self.branches)

    def allowed(self) -> OneOf:
        return OneOf(tuple(o for o, _ in self.branches))


@dataclass(eq=False)
class MachineModel:
    """One QEMU process: its replication nodes in creation order."""

    name: str
    nodes: list[ReplicationNode] = field(default_factory=list)
    crashed: Crashed | None = None
    # it quit cleanly (QMP quit) or died: its exports are gone
    gone: bool = False


@dataclass(eq=False)
class Model:
    """Reference model of every replication node and disk of a topology."""

    profile: Profile
    machines: dict[str, MachineModel] = field(default_factory=dict)
    nodes: dict[str, ReplicationNode] = field(default_factory=dict)
    disks: dict[str, Disk] = field(default_factory=dict)
    # The disk the primary's writes reach over NBD (the secondary disk's export).
    export: Disk | None = None
    # Quorum nodes (the COLO pair's guest disks): guest I/O on them fans out to children.
    quorums: dict[str, QuorumNode] = field(default_factory=dict)
    # Block exports: (machine, export id) -> the disk it serves (its BlockBackend).
    exports: dict[tuple[str, str], Disk] = field(default_factory=dict)
    # Primary replication nodes over an NBD client: node name -> (machine, export id).
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The harness's own NBD client connections (PrimaryWrite/PrimaryRead): (machine, id).
    clients: set[tuple[str, str]] = field(default_factory=set)
    # The COLO pair that migration drives (harness.model.colo), if the topology has one.
    colo: Colo | None = None

    def __post_init__(self) -> None:
        self._dispatch: dict[type[ops.Op], Callable[[Any], Observation]] = {
            ops.Write: self._write,
            ops.WriteZeroes: self._write_zeroes,
            ops.Discard: self._discard,
            ops.Flush: self._flush,
            ops.Read: self._read,
            ops.PrimaryWrite: self._primary_write,
            ops.PrimaryRead: self._primary_read,
            ops.PrimaryWriteZeroes: self._primary_write_zeroes,
            ops.PrimaryDiscard: self._primary_discard,
            ops.Start: self._start,
            ops.Stop: self._stop,
            ops.Checkpoint: self._checkpoint,
            ops.Status: self._status,
            ops.Settle: self._settle,
            ops.BlockdevDel: self._blockdev_del,
            faults.LinkDown: self._link_down,
            faults.Kill: self._kill,
            faults.HoldCommit: lambda op: self._hold_commit(op.machine, True),
            faults.ReleaseCommit: lambda op: self._hold_commit(op.machine, False),
            ops.ColoStart: self._colo_start,
            ops.ColoCheckpoint: self._colo_checkpoint,
            ops.LostHeartbeat: self._lost_heartbeat,
        }
        self._dispatch.update(more_dispatch(self))

    # ---- building

    def add_disk(self, disk: Disk) -> Disk:
        self.disks[disk.name] = disk
        return disk

    def add_node(self, machine: str, node: ReplicationNode) -> ReplicationNode:
        self.machines.setdefault(machine, MachineModel(machine)).nodes.append(node)
        self.nodes[node.name] = node
        return node

    def machine(self, name: str) -> MachineModel:
        return self.machines.setdefault(name, MachineModel(name))

    def link_backing(self, disk: Disk, below: Disk) -> None:
        """`disk` is opened with `below` as its backing node."""
        disk.backing = below

    def add_export(
        self, machine: str, export_id: str, disk: Disk, *, path: bool, client: bool
    ) -> None:
        """An export of `disk` (its BlockBackend). `path`: the export the primary's writes
        reach (PrimaryWrite, the COLO primary); `client`: the harness connects to it."""
        self.exports[(machine, export_id)] = disk
        disk.has_blk = True
        if client:
            self.clients.add((machine, export_id))
        if path and self.export is None:
            self.export = disk

    def connect(self, node: ReplicationNode, machine: str, export_id: str) -> None:
        """A primary node over an NBD client of an export: its writes go there (through
        the export, so the secondary's copy-before-write runs); the link is up if the
        export is there now."""
        self.links[node.name] = (machine, export_id)
        disk = self.exports.get((machine, export_id))
        node.forward = None if disk is None else partial(self.nbd_write_to, disk)
        node.link_up = disk is not None and not self.machine(machine).gone

    def attach_child(self, quorum: str, node: str) -> None:
        """x-blockdev-change parent=QUORUM node=NODE: the quorum's next child."""
        self.quorums[quorum].add_child(self.nodes[node])

    def detach_child(self, quorum: str, child: str) -> Observation:
        """x-blockdev-change parent=QUORUM child=CHILD: QEMU's answer."""
        err = self.quorums[quorum].remove_child(child, self.profile.texts)
        return QMP_OK if err is None else QmpResult(False, None, "GenericError", err)

    def drive_colo(self, primary: str, secondary: str) -> Colo:
        """COLO's migration drives the replication nodes of `primary` and `secondary`."""
        self.colo = Colo.pair(self.profile, primary, secondary, self)
        return self.colo

    def _colo(self) -> Colo:
        if self.colo is None:
            raise KeyError("this topology has no COLO pair")
        return self.colo

    def inject(self, fault: faults.Fault) -> None:
        """A fault built into the graph (harness.faults): what it means to the model."""
        if isinstance(fault, faults.FailingWrites):
            self.disks[fault.target].fault = fault
        elif isinstance(fault, faults.EjectAtEmpty):
            self.disks[fault.target].eject = fault
        # A throttle changes no answer by itself (HoldCommit and ReleaseCommit do).

    def top_is_valid(self, node: ReplicationNode) -> bool:
        """Does `node`'s top-id name a root above (or equal to) it: its own BlockBackend,
        or a node without a parent node whose subtree holds it (replication_start's
        check_top_bs)? Exports' BlockBackends are anonymous; drives are named."""
        if node.top_valid is not None:
            return node.top_valid
        top = node.top_id
        if top is not None and top == node.drive_id:
            return True
        if top == node.name:
            return not self._has_parent(node)
        q = self.quorums.get(top or "")
        return q is not None and self._holds(q, node) and not self._has_parent(q)

    def _has_parent(self, child: ReplicationNode | QuorumNode) -> bool:
        return any(c.node is child for q in self.quorums.values() for c in q.children)

    def _holds(self, q: QuorumNode, node: ReplicationNode) -> bool:
        return any(
            c.node is node or (isinstance(c.node, QuorumNode) and self._holds(c.node, node))
            for c in q.children
        )

    def quits(self, machine: str) -> Observation:
        """QMP quit: every replication node is closed (a running one is stopped without
        failover), and the machine's exports go with it. QEMU's exit: clean, or where
        the profile knows a crash at quit, either."""
        crash = self.colo is not None and self.colo.quit_may_crash(machine)
        for n in self.machine(machine).nodes:
            n.close()
        self._gone(machine)
        if crash:
            return OneOf((QMP_OK, Crashed(signal.Signals.SIGSEGV.name)))
        return QMP_OK

    def _gone(self, machine: str) -> None:
        self.machine(machine).gone = True
        if self.colo is not None and machine in (
            self.colo.primary.machine,
            self.colo.secondary.machine,
        ):
            self.colo.gone(machine)
        self._drop_exports([k for k in self.exports if k[0] == machine])

    def _drop_exports(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            disk = self.exports.pop(key)
            if disk not in self.exports.values():
                disk.has_blk = False
            self.clients.discard(key)
        for name, key in self.links.items():
            if key in keys and name in self.nodes:
                self.nodes[name].link_up = False

    # ---- applying operations

    def apply(self, op: ops.Op) -> Observation:
        """The observation QEMU must produce for `op`, updating the model's state."""
        return self._dispatch[type(op)](op)

    def _node(self, name: str) -> ReplicationNode:
        return self.nodes[name]

    def _crash(self, machine: str, reason: str, sig: str = signal.Signals.SIGABRT.name) -> Crashed:
        c = Crashed(sig, reason)
        self.machine(machine).crashed = c
        self._gone(machine)
        return c

    # ---- faults that happen at a moment

    def _kill(self, op: faults.Kill) -> Observation:
        return self._crash(op.machine, "", op.signal)

    def _link_down(self, op: faults.LinkDown) -> Observation:
        if op.mode == "server":
            keys = [k for k in self.exports if k[0] == op.machine]
        else:
            keys = [k for k in self.exports if k == (op.machine, op.export)]
        if op.mode == "safe" and keys:
            linked = [n for n, k in self.links.items() if k in keys and self.nodes[n].link_up]
            if linked or any(k in self.clients for k in keys):
                return qmp_error(self.profile.texts.export_in_use(op.export))
        self._drop_exports(keys)
        return QMP_OK

    def _hold_commit(self, machine: str, held: bool) -> Observation:
        for node in self.machine(machine).nodes:
            node.commit_held = held
        return QMP_OK

    def _io_node(self, name: str) -> ReplicationNode | QuorumNode:
        """The node guest I/O names: a quorum, else a replication node."""
        return self.quorums.get(name) or self._node(name)

    def _write_value(self, node_name: str, offset: int, length: int, val: int) -> Observation:
        node = self._io_node(node_name)
        try:
            err = node.write(offset, offset + length, val)
        except Abort as a:
            return self._crash(self._machine_of(node), a.reason)
        return IO_OK if err is None else IoResult(False, err)

    def _machine_of(self, node: ReplicationNode | QuorumNode) -> str:
        if isinstance(node, QuorumNode):
            return node.machine
        for m in self.machines.values():
            if node in m.nodes:
                return m.name
        raise KeyError(node.name)

    def _write(self, op: ops.Write) -> Observation:
        return self._write_value(op.node, op.offset, op.length, op.pattern)

    def _write_zeroes(self, op: ops.WriteZeroes) -> Observation:
        # The filter has no write-zeroes callback: the block layer writes a zero buffer.
        # A primary node that takes the request writes its padded head and tail sectors
        # from an uninitialised buffer (ReplicationNode.undefine_padded_sectors; the
        # profile's known bug unaligned_zeroes_garbage), whether the request was sent to it
        # or reached it through a quorum (quorum_co_pwrite_zeroes hands each child a
        # write-zeroes of its own).
        node = self._io_node(op.node)
        primaries = node.replication_children() if isinstance(node, QuorumNode) else [node]
        taking = [
            n for n in primaries if n.mode is Mode.PRIMARY and n.link_up and n.io_status() >= 0
        ]
        if self.profile.unaligned_zeroes_garbage is None:
            taking = []
        obs = self._write_value(op.node, op.offset, op.length, 0)
        if isinstance(obs, IoResult) and (obs.ok or isinstance(node, QuorumNode)):
            for n in taking:
                n.undefine_padded_sectors(op.offset, op.offset + op.length)
        return obs

    def _discard(self, op: ops.Discard) -> Observation:
        # No discard callback: the block layer answers success and does nothing.
        return IO_OK

    def _flush(self, op: ops.Flush) -> Observation:
        # The node's answer (node.flush) is kept for unit tests, but qemu-io's
        # flush command ignores the result and prints nothing either way
        # (7.2 and 10.0), so the only observation QEMU can give is success.
        self._io_node(op.node).flush()
        return IO_OK

    def _read(self, op: ops.Read) -> Observation:
        res = self._io_node(op.node).read(op.offset, op.offset + op.length)
        if isinstance(res, str):
            return IO_EIO if res == EIO else IoResult(False, res)
        return IoResult(True, None, to_data(res))

    def _export_disk(self) -> Disk:
        if self.export is None:
            raise KeyError("this topology has no NBD export for the primary's I/O")
        return self.export

    def _primary_write(self, op: ops.PrimaryWrite) -> Observation:
        return self._primary_write_value(op.offset, op.length, op.pattern)

    def _primary_write_zeroes(self, op: ops.PrimaryWriteZeroes) -> Observation:
        # The copy-before-write filter copies before a write-zeroes as before a write;
        # the qcow2 layer then holds zeros over whole clusters (zero or data clusters,
        # allocated either way).
        return self._primary_write_value(op.offset, op.length, 0)

    def _primary_discard(self, op: ops.PrimaryDiscard) -> Observation:
        # Neither the secondary disk (no discard=unmap) nor the copy-before-write filter
        # (inserted with BDRV_O_RDWR only) has BDRV_O_UNMAP: bdrv_co_pdiscard returns 0
        # before any driver runs, so nothing is copied and nothing is discarded.
        self._export_disk()
        return IO_OK

    def nbd_write(self, start: int, end: int, value: int) -> str | None:
        """A write arriving at the harness's export (the COLO primary's forwarded
        writes): the errno text it fails with, or None."""
        return self.nbd_write_to(self._export_disk(), start, end, value)

    def nbd_write_to(self, disk: Disk, start: int, end: int, value: int) -> str | None:
        """A write arriving at `disk`'s export: the errno text it fails with, or None."""
        res = self._primary_write_value(start, end - start, value, disk)
        return res.errno if isinstance(res, IoResult) and not res.ok else None

    def _primary_write_value(
        self, offset: int, length: int, pattern: int, disk: Disk | None = None
    ) -> Observation:
        disk = disk or self._export_disk()
        start, end = offset, offset + length
        for node in self.nodes.values():
            err = node.before_secondary_write(disk, start, end)
            if err is not None:
                return IoResult(False, err)
        write_layer(disk.chain(), 0, start, end, pattern)
        for node in self.nodes.values():
            if node.settling and node.secondary is disk:
                # Racing the failover commit: where it copies, either side's data wins.
                for s, e in node.commit_dirty:
                    lo, hi = max(s, start), min(e, end)
                    if lo < hi:
                        disk.data.set(lo, hi, UNDEF)
        return IO_OK

    def _primary_read(self, op: ops.PrimaryRead) -> Observation:
        disk = self._export_disk()
        return IoResult(True, None, to_data(view(disk.chain(), op.offset, op.offset + op.length)))

    # ---- the QMP layer (replication_*_all)

    def _walk(self, machine: str, fn: Callable[[ReplicationNode], str | None]) -> str | None:
        for node in reversed(self.machine(machine).nodes):
            err = fn(node)
            if err is not None:
                return err
        return None

    def start_all(self, machine: str, mode: Mode) -> str | None:
        """replication_start_all; Abort where QEMU aborts."""
        return self._walk(machine, lambda n: n.start(mode, self.top_is_valid(n)))

    def stop_all(self, machine: str, failover: bool) -> str | None:
        return self._walk(machine, lambda n: n.stop(failover))

    def checkpoint_all(self, machine: str) -> str | None:
        return self._walk(machine, lambda n: n.checkpoint())

    def get_error_all(self, machine: str) -> str | None:
        return self._walk(machine, lambda n: n.get_error())

    def _start(self, op: ops.Start) -> Observation:
        if op.failover is not None:
            return qmp_error(self.profile.texts.FAILOVER_ON_ENABLE)
        try:
            err = self.start_all(op.machine, Mode.PRIMARY if op.primary else Mode.SECONDARY)
        except Abort as a:
            return self._crash(op.machine, a.reason)
        return QMP_OK if err is None else qmp_error(err)

    def _stop(self, op: ops.Stop) -> Observation:
        err = self.stop_all(op.machine, op.failover)
        if op.failover or err is None:
            # With failover, QEMU passes no errp: every error is dropped.
            return QMP_OK
        return qmp_error(err)

    def _checkpoint(self, op: ops.Checkpoint) -> Observation:
        err = self.checkpoint_all(op.machine)
        return QMP_OK if err is None else qmp_error(err)

    def _colo_start(self, op: ops.ColoStart) -> Observation:
        colo = self._colo()
        try:
            return colo.start()
        except Abort as a:
            # a start_all that aborts QEMU (a known bug): the secondary's is first
            return self._crash(colo.secondary.machine, a.reason)

    def fork(self) -> Model:
        """A copy of the model that goes its own way (a Fork's branch)."""
        other = copy.deepcopy(self)
        other.__post_init__()  # its dispatch table's closures are its own
        return other

    def _colo_checkpoint(self, op: ops.ColoCheckpoint) -> Observation:
        if op.kill is None:
            return self._colo().checkpoint()
        victim = op.kill
        ends = self._colo().interruptions(victim)
        models = [self.fork() for _ in ends[1:]] + [self]
        branches = []
        for model, end in zip(models, ends, strict=True):
            model._colo().interrupted(victim, end)
            model._crash(victim, "", signal.Signals.SIGKILL.name)
            branches.append((model._colo().observe(), model))
        return Fork(tuple(branches))

    def _lost_heartbeat(self, op: ops.LostHeartbeat) -> Observation:
        colo = self._colo()
        err = colo.lost_heartbeat(op.machine)
        return qmp_error(err) if err is not None else colo.observe()

    def _status_now(self, machine: str) -> QmpResult:
        return status(self.get_error_all(machine))

    def _status(self, op: ops.Status) -> Observation:
        settled = self._status_now(op.machine)
        racing = [n for n in self.machine(op.machine).nodes if n.settling]
        if not racing:
            return settled
        # While a failover commit runs, the node reads FAILOVER with error set.
        return OneOf((status(self.profile.texts.IO_ERROR), settled))

    def _settle(self, op: ops.Settle) -> Observation:
        for node in self.machine(op.machine).nodes:
            node.settling = False
        return SETTLED

    def _blockdev_del(self, op: ops.BlockdevDel) -> Observation:
        """Replication nodes only: the op blocker of a running secondary whose top-id
        names the node refuses it; otherwise replication_close (which cancels a failover
        commit in flight), and the node is gone."""
        node = self._node(op.node)
        mm = self.machine(op.machine)
        for n in mm.nodes:
            if n.mode is Mode.SECONDARY and n.stage is Stage.RUNNING and n.top_id == op.node:
                return qmp_error(self.profile.texts.node_busy(op.node))
        node.close()
        mm.nodes.remove(node)
        del self.nodes[op.node]
        return QMP_OK

    # ---- inspection

    def settled(self) -> bool:
        return not any(n.settling for n in self.nodes.values())

    def stage(self, node: str) -> Stage:
        return self._node(node).stage
