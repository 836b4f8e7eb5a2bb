"""The full COLO pair: two qemu-system processes wired as QEMU's docs/block-replication.txt
and docs/COLO-FT.txt wire them, built in QEMU and in the model at once.

Secondary (machine "secondary"): the secondary disk ("secondary", COLO-FT's parent0)
exported writable over NBD on a unix socket (export "secondary"), optionally under a
filter node (blkdebug, throttle) that the export and the hidden disk's backing use; the
replication node "rep" (mode secondary) over the inline active -> hidden -> secondary
chain (COLO-FT's childs0); optionally the quorum "top-disk1" over rep (COLO-FT's
secondary colo-disk0: after a failover it can take a new primary child), and top-id
then names that quorum.

Primary (machine "primary"): its local disk "primary-disk" under the quorum "colo-disk0"
(vote-threshold 1, read-pattern fifo) that the guest uses; `connect()` adds the
replication node "replication0" (mode primary) over an NBD client ("nbd0") of the
secondary's export and hot-adds it to the quorum with x-blockdev-change (children.1).

Guest I/O is qemu-io through the quorums (and rep when the secondary has no quorum).
The model mirrors the graph: a Quorum per quorum node, the primary's replication node
forwarding each write through Model.nbd_write into the secondary's export (so the
secondary's copy-before-write runs), reads of the primary's quorum answered by the
local disk (fifo; the primary replication child refuses reads).

Steps that are not replication operations (graph changes, faults) are `Action`s:
recorded in the story's steps like operations, with the model's expected answer and
QEMU's, compared the same way.
"""

from __future__ import annotations

import dataclasses
import resource
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness import ops
from harness.builds import QemuBuild
from harness.images import Recipe, build_chain
from harness.machine import MachineDied, MachineSet
from harness.model import Model, Profile
from harness.model.quorum import Quorum
from harness.model.replication import Mode, ReplicationNode
from harness.nbd_client import NbdClient
from harness.observe import QMP_OK, Crashed, IoResult, Observation, QmpResult
from harness.ops import PRIMARY, REP, SECONDARY
from harness.qemu_io import GuestIO
from harness.story import Story
from harness.topology import (
    EXPORT,
    Topology,
    disk_from_layer,
    export_node,
    nbd_server,
    open_secondary_disk,
)
from harness.verdicts import signal_name

# node names (COLO-FT's where it has one; node names are unique across the pair
# because operations name nodes, not machines)
PQ = "colo-disk0"  # the primary's quorum: the primary VM's disk
SQ = "top-disk1"  # the secondary's quorum (block-replication.txt's top-disk1)
PREP = "replication0"  # the primary's replication node
NBD_NODE = "nbd0"  # its NBD client
LOCAL = "primary-disk"  # the primary's local disk (the quorum's children.0)
PRIMARY_CHILD = "children.1"  # the replication node's child name in the quorum
GUEST_EXPORT = "guest"  # the secondary guest node's own NBD export (guest_over_nbd)

KiB = 1 << 10
MiB = 1 << 20

_CORE_SIGNALS = {signal.SIGABRT, signal.SIGQUIT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE}


def pair_recipe(
    size: int | str = "4M",
    cluster: int | str = "64k",
    *,
    contents: Sequence[tuple[int | str, int | str, int]] = ((0, "1M", 0x11),),
    hidden_cluster: int | str | None = None,
    active_cluster: int | str | None = None,
    local_cluster: int | str | None = None,
) -> Recipe:
    """The four images of a pair: secondary <- hidden <- active, and the primary's disk.

    The primary's and the secondary's disks start with the same `contents`: before
    replication starts both must hold the same data (block-replication.txt).
    """
    extents = [{"offset": o, "length": n, "pattern": p} for o, n, p in contents]

    def layer(cl: int | str | None, backing: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"size": size, "cluster_size": cluster if cl is None else cl}
        if backing is not None:
            d["backing"] = backing
        return d

    sec = layer(None)
    sec["contents"] = extents
    local = layer(local_cluster)
    local["contents"] = extents
    args = f"size={size}, cluster={cluster}"
    for k, v in (("hidden", hidden_cluster), ("active", active_cluster), ("local", local_cluster)):
        if v is not None:
            args += f", {k}={v}"
    if contents:
        args += ", contents=" + ",".join(f"{o}+{n}={p:#x}" for o, n, p in contents)
    return Recipe.from_dict(
        {
            "description": f"COLO pair ({args})",
            "layers": {
                "secondary": sec,
                "hidden": layer(hidden_cluster, "secondary"),
                "active": layer(active_cluster, "hidden"),
                LOCAL: local,
            },
        },
        source=f"<pair {args}>",
    )


@dataclass(eq=False)
class Pair(Topology):
    """A COLO pair: the topology plus what the pair's steps need to know."""

    sock: str = ""  # the secondary's NBD server socket
    secondary_guest: str = REP  # the node the secondary VM's I/O goes through
    sec_node: str = "secondary"  # the node exported (the secondary disk or its filter)
    primary_rep_opts: dict[str, Any] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # machines killed or crashed
    guest_machine: dict[str, str] = field(default_factory=dict)  # guest node -> machine

    def quorum(self, name: str) -> Quorum:
        return self.model.quorums[name]

    def close(self) -> None:
        super().close()
        for name, g in list(self.guests.items()):
            if isinstance(g, NbdClient):
                g.close()
                del self.guests[name]


def node_filename(m: Any, node: str) -> str:
    """QEMU's bs->filename of `node` (query-named-block-nodes' "file")."""
    for n in m.qmp_ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return str(n["file"])
    raise KeyError(f"no node {node!r} in query-named-block-nodes")


def build_pair(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    recipe: Recipe | None = None,
    *,
    secondary_quorum: bool = False,
    secondary_filter: Mapping[str, Any] | None = None,
    hidden_file: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    active_file: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    objects: Sequence[Mapping[str, Any]] = (),
    export_client: bool = False,
    top_id: str | None = None,
    guest_over_nbd: bool = False,
) -> Pair:
    """Both machines, as far as COLO sets them up before replication starts.

    `secondary_filter`: blockdev-add options of a filter over the secondary disk (its
    "file"/"image" names "secondary"); `hidden_file`/`active_file`: wrap that layer's
    file node options (a blkdebug under the qcow2 layer); `objects`: object-add
    arguments for the secondary (throttle groups) before any node; `export_client`:
    also open the harness's own NBD client of the export (PrimaryWrite/PrimaryRead);
    `top_id`: another top-id for rep (the model then knows it names no valid top);
    `guest_over_nbd`: the secondary VM's I/O goes through a second NBD export (name
    GUEST_EXPORT) of its guest node instead of HMP qemu-io, which on 10.0 drains the
    graph (and so would let a held failover commit finish).
    """
    rec = recipe or pair_recipe()
    chain = build_chain(build, rec, workdir / "images")
    model = Model(profile)
    sm = machines.launch(build, SECONDARY)
    sec_node = open_secondary_disk(sm, chain, objects, secondary_filter)
    sock = nbd_server(sm)
    export_node(sm, sec_node, EXPORT)
    hidden_opts = chain.blockdev("hidden", backing=sec_node)
    if hidden_file is not None:
        hidden_opts["file"] = hidden_file(hidden_opts["file"])
    active_opts = chain.blockdev("active", backing=hidden_opts)
    if active_file is not None:
        active_opts["file"] = active_file(active_opts["file"])
    valid_top = SQ if secondary_quorum else REP
    top_id = valid_top if top_id is None else top_id
    sm.qmp_ok(
        "blockdev-add",
        driver="replication",
        **{"node-name": REP, "top-id": top_id},
        mode="secondary",
        file=active_opts,
    )
    if secondary_quorum:
        sm.qmp_ok("blockdev-add", **_quorum_opts(SQ, REP))
    sec = model.add_disk(disk_from_layer(chain, "secondary"))
    hidden = model.add_disk(disk_from_layer(chain, "hidden"))
    active = model.add_disk(disk_from_layer(chain, "active"))
    hidden.backing, active.backing = sec, hidden
    sec.has_blk = True
    model.export = sec
    for disk in (hidden, active):
        disk.filename = node_filename(sm, disk.name)
    rep = model.add_node(
        SECONDARY,
        ReplicationNode(
            REP, Mode.SECONDARY, profile, active, top_id=top_id, top_valid=top_id == valid_top
        ),
    )
    topo = Pair(build, model, machines, chain, sock=sock, sec_node=sec_node)
    topo.guests[REP] = GuestIO(sm, REP)
    if secondary_quorum:
        q = model.quorums.setdefault(SQ, Quorum(SQ, SECONDARY))
        q.add_child(rep)
        topo.guests[SQ] = GuestIO(sm, SQ)
        topo.secondary_guest = SQ
    if export_client:
        topo.export_io = NbdClient(build, sock, EXPORT)
    if guest_over_nbd:
        export_node(sm, topo.secondary_guest, GUEST_EXPORT, export_id=GUEST_EXPORT)
        topo.guests[topo.secondary_guest] = NbdClient(build, sock, GUEST_EXPORT)

    pm = machines.launch(build, PRIMARY)
    pm.qmp_ok("blockdev-add", **chain.blockdev(LOCAL, backing=None))
    pm.qmp_ok("blockdev-add", **_quorum_opts(PQ, LOCAL))
    local = model.add_disk(disk_from_layer(chain, LOCAL))
    model.machine(PRIMARY)
    model.quorums[PQ] = Quorum(PQ, PRIMARY)
    model.quorums[PQ].add_child(local)
    topo.guests[PQ] = GuestIO(pm, PQ)
    topo.primary_rep_opts = {
        "driver": "replication",
        "node-name": PREP,
        "mode": "primary",
        "file": {
            "driver": "nbd",
            "node-name": NBD_NODE,
            "server": {"type": "unix", "path": sock},
            "export": EXPORT,
        },
    }
    topo.layer_nodes = {n: (SECONDARY, n) for n in ("active", "hidden", "secondary")}
    topo.layer_nodes[LOCAL] = (PRIMARY, LOCAL)
    topo.guest_machine = {REP: SECONDARY, SQ: SECONDARY, PQ: PRIMARY}
    return topo


def _quorum_opts(name: str, *children: str) -> dict[str, Any]:
    return {
        "driver": "quorum",
        "node-name": name,
        "vote-threshold": 1,
        "read-pattern": "fifo",
        "children": list(children),
    }


# ---- steps that are not replication operations


@dataclass(frozen=True, slots=True)
class Action(ops.Op):
    """A graph change or a fault, recorded among a story's steps. Not registered as an
    operation kind: the random runner never draws it, and a trace shows it as `op: ""`."""

    machine: str
    what: str
    kind: ClassVar[str] = ""

    def describe(self) -> str:
        return f"{self.machine}: {self.what}"


def act(
    story: Story,
    action: Action,
    real: Callable[[], Observation],
    model: Callable[[], Observation],
) -> Observation:
    """Apply `action` to the model (its expected answer) and to QEMU, record, compare."""
    expected = model()
    died = None
    try:
        actual = real()
    except MachineDied as e:
        died, actual = e, Crashed(e.signal, e.stderr_tail)
    story.record(action, expected, actual, died)
    return actual


# Steps that only observe: no check after them.
_OBSERVING = (ops.Read, ops.PrimaryRead, ops.Status)


class PairStory(Story):
    """A story on a COLO pair, with the pair's life cycle as steps.

    With `auto_check` (the default), every step that can change something is followed
    by `check()`: both VMs' whole disks read back byte by byte and every live layer's
    allocation, against the model. Skipped while a failover commit may still run (the
    model is not settled): reading would race it, and on 10.0 an HMP qemu-io drains it.
    """

    topo: Pair

    def __init__(self, topo: Pair, label: str = "", auto_check: bool = True) -> None:
        super().__init__(topo, label)
        self.topo = topo
        self.auto_check = auto_check
        self._checking = False

    # ---- names

    @property
    def sguest(self) -> str:
        return self.topo.secondary_guest

    def pwrite(self, offset: int, length: int, pattern: int) -> ops.Write:
        """A write of the primary VM (through its quorum)."""
        return ops.Write(offset, length, pattern, node=PQ)

    def swrite(self, offset: int, length: int, pattern: int) -> ops.Write:
        """A write of the secondary VM."""
        return ops.Write(offset, length, pattern, node=self.sguest)

    def pread(self, offset: int, length: int) -> ops.Read:
        return ops.Read(offset, length, node=PQ)

    def sread(self, offset: int, length: int) -> ops.Read:
        return ops.Read(offset, length, node=self.sguest)

    @property
    def size(self) -> int:
        return self.model.disks[LOCAL].size

    # ---- running: crashes seen in any step cut the pair's links

    def do(self, op: ops.Op) -> Observation:
        try:
            seen = super().do(op)
        finally:
            self._after_crashes()
        self._after_step(op)
        return seen

    def expect(self, op: ops.Op, stated: Observation) -> Observation:
        try:
            seen = super().expect(op, stated)
        finally:
            self._after_crashes()
        self._after_step(op)
        return seen

    def act(
        self,
        action: Action,
        real: Callable[[], Observation],
        model: Callable[[], Observation],
    ) -> Observation:
        """A graph change or fault as a step (see `act`), then the check."""
        seen = act(self, action, real, model)
        self._after_step(action)
        return seen

    def _after_step(self, op: ops.Op) -> None:
        quiet = self.model.settled() and not self._checking
        if self.auto_check and quiet and not isinstance(op, _OBSERVING):
            self.check()

    def _after_crashes(self) -> None:
        for m in self.model.machines.values():
            if m.crashed is not None and m.name not in self.topo.dead:
                self._machine_gone(m.name, images_kept=False)

    def _machine_gone(self, name: str, images_kept: bool) -> None:
        """Model and topology after `name` is gone: the other side's link to it is down.
        A machine that died (not quit) leaves images the model cannot predict (its qcow2
        metadata caches died with it): they are no longer checked."""
        topo = self.topo
        topo.dead.add(name)
        if name == SECONDARY:
            for n in self.model.nodes.values():
                if n.mode is Mode.PRIMARY and n.forward is not None:
                    n.link_up = False
        topo.layer_nodes = {k: v for k, v in topo.layer_nodes.items() if v[0] != name}
        if not images_kept:
            gone = {k for k, (mach, _) in _layer_machines(topo).items() if mach == name}
            topo.chain = dataclasses.replace(
                topo.chain, layers={k: v for k, v in topo.chain.layers.items() if k not in gone}
            )
        for k in [k for k in topo.guests if topo.guest_machine.get(k) == name]:
            g = topo.guests.pop(k)
            if isinstance(g, NbdClient):
                g.close()
        if name == SECONDARY and topo.export_io is not None:
            topo.export_io.close()
            topo.export_io = None

    def mark_dead(self, name: str, crashed: Crashed) -> None:
        """A machine killed from outside (a fault): the model learns it is gone."""
        self.model.machine(name).crashed = crashed
        self._after_crashes()

    # ---- the life cycle

    def connect(self) -> None:
        """The primary's replication node over NBD, hot-added to its quorum (COLO-FT)."""
        self.add_primary_node()
        self.attach_primary()

    def add_primary_node(self) -> Observation:
        """blockdev-add of the primary's replication node over an NBD client."""
        pm = self.topo.machine(PRIMARY)

        def model() -> Observation:
            sec = self.model.export
            assert sec is not None
            node = self.model.add_node(
                PRIMARY,
                ReplicationNode(
                    PREP, Mode.PRIMARY, self.model.profile, sec, forward=self.model.nbd_write
                ),
            )
            node.link_up = SECONDARY not in self.topo.dead and sec.has_blk
            return QMP_OK

        return self.act(
            Action(PRIMARY, f"blockdev-add {PREP} (NBD client of the secondary's export)"),
            lambda: pm.qmp("blockdev-add", **self.topo.primary_rep_opts),
            model,
        )

    def attach_primary(self, node: str = PREP) -> Observation:
        """x-blockdev-change parent=colo-disk0 node=replication0: the next quorum child."""
        pm = self.topo.machine(PRIMARY)

        def model() -> Observation:
            self.topo.quorum(PQ).add_child(self.model.nodes[node])
            return QMP_OK

        return self.act(
            Action(PRIMARY, f"x-blockdev-change parent={PQ} node={node}"),
            lambda: pm.qmp("x-blockdev-change", parent=PQ, node=node),
            model,
        )

    def start(self) -> None:
        """COLO's order: the secondary starts first, then the primary connects and starts."""
        self.expect(ops.Start(primary=False), QMP_OK)
        if PREP not in self.model.nodes:
            self.connect()
        self.expect(ops.Start(primary=True, machine=PRIMARY), QMP_OK)

    def checkpoint(self) -> None:
        """A COLO checkpoint: both sides (the primary's is a no-op)."""
        self.expect(ops.Checkpoint(), QMP_OK)
        self.expect(ops.Checkpoint(machine=PRIMARY), QMP_OK)

    def views(self, offset: int = 0, length: int | None = None) -> None:
        """Both VMs' views of [offset, +length) (default: the whole disk), byte-exact.

        Every byte is read and verified; the range is read in pieces along the model's
        extents (qemu-io verifies one pattern per command, so one whole-disk read would
        be re-read once per extent)."""
        n = self.size - offset if length is None else length
        if PRIMARY not in self.topo.dead:
            self._view(PQ, offset, n)
        if SECONDARY not in self.topo.dead:
            self._view(self.sguest, offset, n)

    def _view(self, node: str, offset: int, length: int) -> None:
        expected = self.model.apply(ops.Read(offset, length, node=node))  # reads change nothing
        pieces = read_pieces(expected, offset, length)
        for off, n in pieces:
            self.do(ops.Read(off, n, node=node))

    def check(self) -> None:
        """Both views and every live layer's allocation, against the model."""
        self._checking = True
        try:
            self._sync_layers()
            self.views()
            self.check_layers_live()
        finally:
            self._checking = False

    def _sync_layers(self) -> None:
        """After a completed failover the inline active and hidden nodes are closed
        (unreferenced): only the offline check still sees them."""
        rep = self.model.nodes.get(REP)
        if rep is not None and rep.secondary is not None and rep.file is rep.secondary:
            for name in ("active", "hidden"):
                self.topo.layer_nodes.pop(name, None)

    def remove_primary_child(self, child: str = PRIMARY_CHILD) -> Observation:
        """x-blockdev-change parent=colo-disk0 child=children.1: the primary goes on alone."""
        pm = self.topo.machine(PRIMARY)
        q = self.topo.quorum(PQ)

        def model() -> Observation:
            err = q.remove_child(child, self.model.profile.texts)
            return QMP_OK if err is None else QmpResult(False, None, "GenericError", err)

        return self.act(
            Action(PRIMARY, f"x-blockdev-change parent={PQ} child={child}"),
            lambda: pm.qmp("x-blockdev-change", parent=PQ, child=child),
            model,
        )

    def primary_alone(self) -> None:
        """The primary after losing the secondary (block-replication.txt, "After
        Failover"): the replication child leaves the quorum, replication stops, the
        node is deleted; the guest goes on with its local disk."""
        self.remove_primary_child()
        self.expect(ops.Stop(primary=True, machine=PRIMARY), QMP_OK)
        self.expect(ops.BlockdevDel(node=PREP, machine=PRIMARY), QMP_OK)

    def stop_nbd_server(self) -> Observation:
        """nbd-server-stop on the secondary: the export goes, the primary's NBD client is
        disconnected (its later writes fail: error stored, success reported)."""
        sm = self.topo.machine(SECONDARY)

        def model() -> Observation:
            self.export_gone()
            return QMP_OK

        return self.act(
            Action(SECONDARY, "nbd-server-stop"), lambda: sm.qmp("nbd-server-stop"), model
        )

    def export_gone(self) -> None:
        sec = self.model.export
        if sec is not None:
            sec.has_blk = False
        for n in self.model.nodes.values():
            if n.mode is Mode.PRIMARY and n.forward is not None:
                n.link_up = False
        if self.topo.export_io is not None:
            self.topo.export_io.close()
            self.topo.export_io = None

    def failover(self) -> None:
        """The secondary after losing the primary (COLO-FT "Secondary Failover"):
        nbd-server-stop, then x-colo-lost-heartbeat's replication_stop_all(failover=true);
        wait for the commit; the secondary VM then runs on the secondary disk."""
        self.stop_nbd_server()
        self.expect(ops.Stop(primary=False, failover=True), QMP_OK)
        self.do(ops.Settle())
        self.after_failover()

    def after_failover(self) -> None:
        """Once the commit has finished: the inline active and hidden nodes are closed."""
        self._sync_layers()

    def quit(self, machine: str) -> None:
        """A machine leaves cleanly (QMP quit): replication nodes are closed (a running
        one is stopped without failover), images flushed, so they are still checked."""
        m = self.topo.machine(machine)

        def real() -> Observation:
            m.shutdown()
            rc = m.returncode
            return QMP_OK if rc == 0 else Crashed(signal_name(rc), m.stderr_tail())

        def model() -> Observation:
            for n in self.model.machine(machine).nodes:
                n.close()
            return QMP_OK

        act(self, Action(machine, "quit"), real, model)
        self._machine_gone(machine, images_kept=True)
        self._after_step(self.steps[-1].op)

    def kill(self, machine: str, sig: int = signal.SIGKILL, deadline: float = 10.0) -> Crashed:
        """Send `sig` to a machine and wait (with a deadline) until it has exited."""
        m = self.topo.machine(machine)
        name = signal.Signals(sig).name

        def real() -> Observation:
            if sig in _CORE_SIGNALS:
                # no core file from a fault we inject (it would land in QEMU's cwd)
                resource.prlimit(m.pid, resource.RLIMIT_CORE, (0, 0))
            m.kill(sig)
            rc = m.wait_exit(deadline)
            return Crashed(signal_name(rc), m.stderr_tail())

        expected = Crashed(name, "")

        def model() -> Observation:
            return expected

        seen = act(self, Action(machine, f"kill -{name[3:]} (pid {m.pid})"), real, model)
        assert isinstance(seen, Crashed)
        self.mark_dead(machine, seen)
        self._after_step(self.steps[-1].op)
        return seen


# A piece of a view read costs (extents in it) x (its length): qemu-io reads the whole
# request once per pattern it verifies.
_PIECE_BUDGET = 1 * MiB


def read_pieces(expected: Observation, offset: int, length: int) -> list[tuple[int, int]]:
    """[offset, +length) cut along the expected extents into cheap reads (the whole range
    when the read is expected to fail)."""
    if not isinstance(expected, IoResult) or not expected.ok or not expected.data:
        return [(offset, length)]
    pieces: list[tuple[int, int]] = []
    start, count = offset, 0
    for off, n, _ in expected.data:
        end = off + n
        if count and (count + 1) * (end - start) > _PIECE_BUDGET:
            pieces.append((start, off - start))
            start, count = off, 0
        count += 1
    pieces.append((start, offset + length - start))
    return pieces


def _layer_machines(topo: Pair) -> dict[str, tuple[str, str]]:
    """Every image layer of the pair and the machine that has it open."""
    out = {n: (SECONDARY, n) for n in ("active", "hidden", "secondary")}
    out[LOCAL] = (PRIMARY, LOCAL)
    return out
