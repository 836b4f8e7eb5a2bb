"""Applies operations to real QEMU and answers with observations, as the model does.

A read is given the model's expectation only as a hint for speed: qemu-io
verifies every expected byte, and on any mismatch the real bytes are dumped,
so what comes back is what QEMU holds, never the hint echoed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import ops
from harness.layers import parse_map
from harness.machine import Machine, MachineDied
from harness.model.system import SETTLED
from harness.observe import Crashed, IoResult, Observation, OneOf
from harness.poll import poll
from harness.qemu_io import QemuIoSession
from harness.topology import Topology

SETTLE_DEADLINE = 60.0


def _hint(expected: Observation) -> Any:
    if isinstance(expected, IoResult) and expected.ok:
        return expected.data
    if isinstance(expected, OneOf):
        for alt in expected.allowed:
            if isinstance(alt, IoResult) and alt.ok:
                return alt.data
    return None


def commit_in_flight(machine: Machine) -> bool | None:
    """True while the graph shows a failover commit: an internal block job with a `source`
    edge (the mirror-based active commit). The backup job of a running secondary has only
    `main node` and `target` edges and lives as long as replication runs, so with several
    replication nodes a commit must not be confused with it."""
    graph = machine.qmp_ok("x-debug-query-block-graph")
    jobs = {n["id"] for n in graph.get("nodes", []) if n.get("type") == "block-job"}
    return any(e["parent"] in jobs and e["name"] == "source" for e in graph.get("edges", []))


class RealSide:
    """Performs operations on the topology's QEMU processes."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
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
        }

    def _m(self, name: str) -> Machine:
        return self.topo.machine(name)

    def _io(self, node: str) -> QemuIoSession:
        return self.topo.guests[node]

    def _export(self) -> QemuIoSession:
        if self.topo.export_io is None:
            raise KeyError("this topology has no NBD export for the primary's I/O")
        return self.topo.export_io

    def apply(self, op: ops.Op, expected: Observation) -> Observation:
        """What QEMU did for `op`; a QEMU that died doing it is a Crashed observation."""
        try:
            return self._dispatch[type(op)](op, expected)
        except MachineDied as e:
            return Crashed(e.signal, e.stderr_tail)

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
        m = self._m(op.machine)
        poll(
            lambda: True if not commit_in_flight(m) else None,
            f"{op.machine}: the failover commit to finish",
            SETTLE_DEADLINE,
        )
        return SETTLED


def live_allocation(machine: Machine, node: str) -> list[tuple[int, int]]:
    """A node's own allocated ranges, asked of the running QEMU (HMP `qemu-io NODE map`)."""
    mark = machine.stdout_mark()
    reply = machine.hmp(f'qemu-io {node} "map"')
    out = machine.stdout_since(mark)
    if reply.strip():
        # e.g. "Error: Cannot find device=active nor node-name=active": never read as "empty"
        raise AssertionError(f"qemu-io {node} map on {machine.name}: {reply.strip()}")
    return parse_map(out, f"qemu-io {node} map on {machine.name}")
