"""A story on the COLO pair (harness.topology.pair): the pair's life cycle as steps.

Guest I/O is qemu-io through the quorums (and rep when the secondary has no quorum).
The model mirrors the graph (harness.model.build): a QuorumNode per quorum node, the
primary's replication node forwarding each write into the secondary's export (so the
secondary's copy-before-write runs), reads of the primary's quorum answered by the
local disk (fifo; the primary replication child refuses reads).

Steps that are not replication operations and no fault (graph changes) are `Action`s:
recorded in the story's steps like operations, with the model's expected answer and
QEMU's, compared the same way. Faults (harness.faults: Kill, LinkDown, HoldCommit,
ReleaseCommit) are operations.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from harness import ops
from harness.faults import EXPORT_ID, Kill, LinkDown
from harness.machine import MachineDied
from harness.model import Model
from harness.model import build as model_build
from harness.observe import QMP_OK, Crashed, IoResult, Observation
from harness.ops import PRIMARY, REP, SECONDARY
from harness.qemu_io import MAX_VERIFY_EXTENTS
from harness.real import LiveTopology
from harness.story import Story
from harness.topology.pair import LOCAL, PQ, PREP, PRIMARY_CHILD, SQ
from harness.units import KiB
from harness.verdicts import signal_name

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

    def __init__(
        self, topo: LiveTopology, model: Model, label: str = "", auto_check: bool = True
    ) -> None:
        super().__init__(topo, model, label)
        self.auto_check = auto_check
        self._checking = False

    # ---- names

    @property
    def sguest(self) -> str:
        """The node the secondary VM's I/O goes through: its quorum, else rep."""
        return SQ if SQ in self.model.quorums else REP

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
        seen = super().do(op)
        self._after_step(op)
        return seen

    def expect(self, op: ops.Op, stated: Observation) -> Observation:
        seen = super().expect(op, stated)
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

    # ---- the life cycle

    def connect(self) -> None:
        """The primary's replication node over NBD, hot-added to its quorum (COLO-FT)."""
        self.add_primary_node()
        self.attach_primary()

    def add_primary_node(self) -> Observation:
        """blockdev-add of the primary's replication node over an NBD client."""

        def model() -> Observation:
            model_build.add_late(self.model, self.topo.graph, PREP)
            return QMP_OK

        return self.act(
            Action(PRIMARY, f"blockdev-add {PREP} (NBD client of the secondary's export)"),
            lambda: self.topo.create_late(PREP),
            model,
        )

    def attach_primary(self, node: str = PREP) -> Observation:
        """x-blockdev-change parent=colo-disk0 node=replication0: the next quorum child."""
        pm = self.topo.machine(PRIMARY)

        def model() -> Observation:
            self.model.attach_child(PQ, node)
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
        for node in self.view_nodes():
            self._view(node, offset, n)

    def view_nodes(self) -> list[str]:
        """The nodes of the VMs' views that can still be read: the primary's quorum, the
        secondary VM's node (a dead machine's not)."""
        out = []
        if PRIMARY not in self.topo.gone:
            out.append(PQ)
        if SECONDARY not in self.topo.gone:
            out.append(self.sguest)
        return out

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
            self.topo.after_failover(REP)

    def remove_primary_child(self, child: str = PRIMARY_CHILD) -> Observation:
        """x-blockdev-change parent=colo-disk0 child=children.1: the primary goes on alone."""
        pm = self.topo.machine(PRIMARY)
        return self.act(
            Action(PRIMARY, f"x-blockdev-change parent={PQ} child={child}"),
            lambda: pm.qmp("x-blockdev-change", parent=PQ, child=child),
            lambda: self.model.detach_child(PQ, child),
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
        return self.do(LinkDown(SECONDARY, EXPORT_ID, "server"))

    def remove_export(self, mode: str) -> Observation:
        """block-export-del of the secondary's export; `hard` disconnects the primary,
        `safe` is refused while it is connected (QEMU: export '<id>' still in use)."""
        return self.do(LinkDown(SECONDARY, EXPORT_ID, mode))

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
            if m.quit_hung is not None:
                raise m.quit_hung  # a hang, not the SIGKILL that ended it
            rc = m.returncode
            return QMP_OK if rc == 0 else Crashed(signal_name(rc), m.stderr_tail())

        seen = act(self, Action(machine, "quit"), real, lambda: self.model.quits(machine))
        # a crash at quit loses the qcow2 metadata QEMU still cached
        self.topo.machine_gone(machine, images_kept=not isinstance(seen, Crashed))
        self._after_step(self.steps[-1].op)

    def kill(self, machine: str, sig: int = signal.SIGKILL) -> Crashed:
        """Send `sig` to a machine and wait (with a deadline) until it has exited."""
        seen = self.do(Kill(machine, signal.Signals(sig).name))
        assert isinstance(seen, Crashed)
        return seen


# qemu-io verifies one pattern per command and reads the whole request for each: a view
# is read in one piece per pattern, each over its own extent, so that every byte is read
# once (harness.qemu_io.read). Past MAX_VERIFY_EXTENTS patterns in a request of at most
# DUMP_PIECE bytes, qemu-io dumps the request in one command instead: a run of that many
# small extents is one piece.
DUMP_PIECE = 16 * KiB


def read_pieces(expected: Observation, offset: int, length: int) -> list[tuple[int, int]]:
    """[offset, +length) cut along the expected extents into cheap reads: one per defined
    extent (with the undefined bytes next to it), or one for a run of more than
    MAX_VERIFY_EXTENTS of them within DUMP_PIECE bytes; the whole range when the read is
    expected to fail."""
    if not isinstance(expected, IoResult) or not expected.ok or not expected.data:
        return [(offset, length)]
    # one piece per defined extent; undefined bytes go with the piece before them
    cuts = [offset]
    seen = False
    for off, _, pat in expected.data:
        if pat is None:
            continue
        if seen:
            cuts.append(off)
        seen = True
    cuts.append(offset + length)
    singles = list(itertools.pairwise(cuts))
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < len(singles):
        j = i
        while j < len(singles) and singles[j][1] - singles[i][0] <= DUMP_PIECE:
            j += 1
        if j - i > MAX_VERIFY_EXTENTS:
            pieces.append((singles[i][0], singles[j - 1][1] - singles[i][0]))
            i = j
        else:
            pieces.append((singles[i][0], singles[i][1] - singles[i][0]))
            i += 1
    return pieces


# The pair's names and recipe live with its topology value (harness.topology.pair).
__all__ = [
    "LOCAL",
    "PQ",
    "PREP",
    "PRIMARY_CHILD",
    "SQ",
    "Action",
    "PairStory",
    "act",
    "read_pieces",
]
