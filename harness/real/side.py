"""Applies operations to real QEMU and answers with observations, as the model does.

A read is given the model's expectation only as a hint for speed: qemu-io
verifies every expected byte, and on any mismatch the real bytes are dumped,
so what comes back is what QEMU holds, never the hint echoed.
"""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from harness import faults, graph, ops
from harness.colo_link import ColoLink
from harness.faults import Kill
from harness.graph import CommitProgress, commit_progress
from harness.machine import Machine, MachineDied
from harness.model.system import SETTLED
from harness.nbd_client import NbdSession
from harness.nbd_reader import NbdReader, NbdReaderError
from harness.observe import Crashed, IoResult, Observation, OneOf, QmpResult
from harness.qemu_io import QemuIoSession
from harness.real.lifecycle import dispatch as more_dispatch
from harness.real.topology import LiveTopology
from harness.verdicts import signal_name

KILL_DEADLINE = 10.0
_CORE_SIGNALS = {signal.SIGABRT, signal.SIGQUIT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE}

# Settle waits for a failover commit as long as its data needs, and no longer than its
# progress shows: SETTLE_BASE s plus what the commit has left to copy at SETTLE_MIN_RATE
# (extended when that grows), and a commit whose bytes left have not moved for
# SETTLE_STALL s is reported at once (a job paused on an error, a job ready but never
# completed, writes held). A healthy commit moves every few milliseconds (the mirror job
# copies at most 16 MiB at a time); SETTLE_STALL leaves room for a loaded machine.
SETTLE_BASE = 10.0
SETTLE_MIN_RATE = 8 << 20  # bytes/s
SETTLE_STALL = 3.0
# What a stalled or late commit is, as Settle's observation (the model answers SETTLED).
COMMIT_STALLED = "CommitStalled"


def _hint(expected: Observation) -> Any:
    if isinstance(expected, IoResult) and expected.ok:
        return expected.data
    if isinstance(expected, OneOf):
        for alt in expected.allowed:
            if isinstance(alt, IoResult) and alt.ok:
                return alt.data
    return None


class RealSide:
    """Performs operations on the topology's QEMU processes."""

    def __init__(self, topo: LiveTopology) -> None:
        self.topo = topo
        self.died: MachineDied | None = None
        self._dispatch: dict[type[ops.Op], Callable[[Any, Observation], Observation]] = {
            ops.Write: lambda op, e: self._io(op.node).write(op.offset, op.length, op.pattern),
            ops.WriteZeroes: lambda op, e: self._io(op.node).write_zeroes(op.offset, op.length),
            ops.Discard: lambda op, e: self._io(op.node).discard(op.offset, op.length),
            ops.Flush: lambda op, e: self._io(op.node).flush(),
            ops.Read: lambda op, e: self._io(op.node).read(op.offset, op.length, _hint(e)),
            ops.PrimaryWrite: lambda op, e: self._export().write(op.offset, op.length, op.pattern),
            ops.PrimaryRead: lambda op, e: self._export().read(op.offset, op.length, _hint(e)),
            ops.PrimaryWriteZeroes: lambda op, e: self._export().write_zeroes(op.offset, op.length),
            ops.PrimaryDiscard: lambda op, e: self._export().discard(op.offset, op.length),
            ops.Start: self._start,
            ops.Stop: self._stop,
            ops.Checkpoint: lambda op, e: self._m(op.machine).qmp("xen-colo-do-checkpoint"),
            ops.Status: lambda op, e: self._m(op.machine).qmp("query-xen-replication-status"),
            ops.Settle: self._settle,
            ops.BlockdevDel: lambda op, e: self._m(op.machine).qmp(
                "blockdev-del", **{"node-name": op.node}
            ),
            faults.LinkDown: self._link_down,
            faults.Kill: self._kill,
            faults.HoldCommit: lambda op, e: graph.reopen(self._m(op.machine), [op.options()]),
            faults.ReleaseCommit: lambda op, e: graph.reopen(self._m(op.machine), [op.options()]),
            ops.ColoStart: lambda op, e: self._colo().start(e),
            ops.ColoCheckpoint: self._colo_checkpoint,
            ops.LostHeartbeat: lambda op, e: self._colo().lost_heartbeat(self._m(op.machine), e),
        }
        self._dispatch.update(more_dispatch(topo))

    def _colo(self) -> ColoLink:
        if self.topo.colo is None:
            raise KeyError("this topology has no COLO pair")
        return self.topo.colo

    def _colo_checkpoint(self, op: ops.ColoCheckpoint, expected: Observation) -> Observation:
        if op.kill is None:
            return self._colo().checkpoint(expected)
        victim = op.kill
        return self._colo().checkpoint(
            expected, kill=(self._m(victim), lambda: self._kill(Kill(victim), expected))
        )

    def _m(self, name: str) -> Machine:
        return self.topo.machine(name)

    def _io(self, node: str) -> QemuIoSession:
        return self.topo.guests[node]

    def _export(self) -> QemuIoSession:
        if self.topo.export_io is None:
            raise KeyError("this topology has no NBD export for the primary's I/O")
        return self.topo.export_io

    def apply(self, op: ops.Op, expected: Observation) -> Observation:
        """What QEMU did for `op`; a QEMU that died doing it is a Crashed observation (and
        `died` the MachineDied that said so, until the next apply)."""
        self.died = None
        try:
            return self._dispatch[type(op)](op, expected)
        except MachineDied as e:
            self.died = e
            return Crashed(e.signal, e.stderr_tail)

    def checked_by_nbd(self, op: ops.Read | ops.PrimaryRead) -> bool:
        """Can a check read the view `op` reads with one NBD request of the harness's
        own (check_read)? A guest's view with a check export; the primary's view through
        the harness's NBD client of the export."""
        return self._reader(op) is not None

    def check_read(
        self, op: ops.Read | ops.PrimaryRead, expected: Observation, sparse: bool = False
    ) -> Observation:
        """A check's read (not an operation under test): one NBD request of the
        harness's own where the view has one (harness.nbd_reader), else (or if it could
        not be made) the request apply() makes. `sparse`: it may be answered with holes
        (otherwise the reader's way: the primary's view always may)."""
        self.died = None
        reader = self._reader(op)
        if reader is not None:
            try:
                return reader.read(op.offset, op.length, _hint(expected), sparse or None)
            except NbdReaderError:
                pass
        return self.apply(op, expected)

    def _reader(self, op: ops.Read | ops.PrimaryRead) -> NbdReader | None:
        if isinstance(op, ops.Read):
            return self.topo.checkers.get(op.node)
        io = self.topo.export_io
        return io.checker if isinstance(io, NbdSession) else None

    def _link_down(self, op: faults.LinkDown, expected: Observation) -> Observation:
        m = self._m(op.machine)
        if op.mode == "server":
            return m.qmp("nbd-server-stop")
        return m.qmp("block-export-del", id=op.export, mode=op.mode)

    def _kill(self, op: faults.Kill, expected: Observation) -> Observation:
        """The signal, then the exit (with a deadline); no core file from a fault we inject
        (it would land in QEMU's working directory)."""
        m = self._m(op.machine)
        sig = signal.Signals[op.signal]
        if sig in _CORE_SIGNALS:
            resource.prlimit(m.pid, resource.RLIMIT_CORE, (0, 0))
        m.kill(sig)
        rc = m.wait_exit(KILL_DEADLINE)
        return Crashed(signal_name(rc), m.stderr_tail())

    def _start(self, op: ops.Start, expected: Observation) -> Observation:
        args: dict[str, Any] = {"enable": True, "primary": op.primary}
        if op.failover is not None:
            args["failover"] = op.failover
        return self._m(op.machine).qmp("xen-set-replication", **args)

    def _stop(self, op: ops.Stop, expected: Observation) -> Observation:
        return self._m(op.machine).qmp(
            "xen-set-replication", enable=False, primary=op.primary, failover=op.failover
        )

    def _settle(self, op: ops.Settle, expected: Observation) -> Observation:
        """Wait until the failover commit is gone (SETTLED); a commit that stalls or
        outlasts the time its data needs is the answer instead (COMMIT_STALLED)."""
        m = self._m(op.machine)
        start = time.monotonic()
        deadline: float | None = None
        last: int | None = None
        moved = start
        pause = 0.0005
        while True:
            p = commit_progress(m)
            if not p.in_flight:
                return SETTLED
            now = time.monotonic()
            data = p.left if p.left is not None else p.size or 0
            need = now + SETTLE_BASE + data / SETTLE_MIN_RATE
            if deadline is None or (p.left is not None and last is not None and p.left > last):
                deadline = max(deadline or 0.0, need)
            if p.left is not None and p.left != last:
                last, moved = p.left, now
            elif p.left is not None and now - moved >= SETTLE_STALL:
                return _stalled(op.machine, p, now - moved, now - start)
            if now >= deadline:
                return _stalled(op.machine, p, None, now - start)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _stalled(machine: str, p: CommitProgress, still: float | None, waited: float) -> QmpResult:
    left = "unknown" if p.left is None else f"{p.left} bytes"
    if still is None:
        why = f"still running after {waited:.1f} s, past the time its data needs ({left} left)"
    elif p.left == 0:
        why = (
            f"made no progress for {still:.1f} s with nothing left to copy (its job ready "
            "but never completed, or its last writes held)"
        )
    else:
        why = (
            f"made no progress for {still:.1f} s with {left} left to copy (its job paused, "
            "e.g. on an error, or its writes held)"
        )
    return QmpResult(False, None, COMMIT_STALLED, f"{machine}: the failover commit {why}")
