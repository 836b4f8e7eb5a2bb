"""What the model answers to the operations beyond the replication commands and guest
I/O: a machine's quit, an export that comes back and the NBD client that reconnects to
it, a node's read-only state; and a stop or a quit that QEMU dies in (a known bug the
profile has: start_graph.Crash).

`dispatch(model)` gives Model its handlers for them (harness.model.system); each is a
function of the model and the operation.

The NBD client of a primary node (block/nbd.c) after its export went: with a
reconnect-delay a request waits up to that long for a reconnection and then fails,
without one it fails at once (the primary stores the error and reports success either
way). When the export is back the client reconnects on its own schedule (its connection
thread retries after 1, 2, 4 ... 16 s; 5.2's connection coroutine likewise from the
drop), so the model does not say when: a write in between is refused by the model
(ReplicationNode.reconnect_pending) until AwaitReconnect has seen a write arrive. A
write that waits in the reconnect-delay while the export comes back is held until the
client has reconnected, and arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from harness import faults, ops
from harness.model.replication import ReplicationNode
from harness.model.start_graph import Crash
from harness.observe import IO_OK, Observation, QmpResult

if TYPE_CHECKING:
    from harness.model.system import Model


def dispatch(model: Model) -> dict[type[ops.Op], Callable[[Any], Observation]]:
    """The model's handlers of these operations."""
    return {
        ops.ReadOnly: partial(_read_only, model),
        ops.Quit: partial(_quit, model),
        ops.Stop: partial(_stop, model),
        faults.LinkUp: partial(_link_up, model),
        faults.LinkUpDuringWrite: partial(_link_up_during_write, model),
        faults.AwaitReconnect: partial(_await_reconnect, model),
    }


def _read_only(model: Model, op: ops.ReadOnly) -> Observation:
    return QmpResult(True, model.disks[op.node].read_only)


def _quit(model: Model, op: ops.Quit) -> Observation:
    try:
        return model.quits(op.machine)
    except Crash as c:
        return model._crash(op.machine, c.reason, c.signal)


def _stop(model: Model, op: ops.Stop) -> Observation:
    try:
        return model._stop(op)
    except Crash as c:
        return model._crash(op.machine, c.reason, c.signal)


def _linked(model: Model, machine: str, export: str) -> list[ReplicationNode]:
    """The primary nodes whose NBD client connects to `export` of `machine`."""
    return [model.nodes[n] for n, key in model.links.items() if key == (machine, export)]


def _link_up(model: Model, op: faults.LinkUp) -> Observation:
    """The export is back; its clients have not reconnected yet."""
    nodes = _linked(model, op.machine, op.export)
    if not nodes or model.machine(op.machine).gone:
        raise ValueError(f"{op.describe()}: no primary node was connected to it")
    disk = nodes[0].file
    model.exports[(op.machine, op.export)] = disk
    disk.has_blk = True
    for n in nodes:
        n.reconnect_pending = not n.link_up
    return QmpResult(True, {})


def _link_up_during_write(model: Model, op: faults.LinkUpDuringWrite) -> Observation:
    node = model.nodes[op.node]
    if node.link_up:
        raise ValueError(f"{op.describe()}: {op.node}'s link is up")
    waits = node.reconnect_delay > 0
    if not waits:
        seen = model.apply(ops.Write(op.offset, op.length, op.pattern, node=op.node))
    _link_up(model, op)
    if not waits:
        return seen
    return _reconnected(model, node, op.offset, op.length, op.pattern)


def _await_reconnect(model: Model, op: faults.AwaitReconnect) -> Observation:
    node = model.nodes[op.node]
    if (op.machine, op.export) not in model.exports:
        raise ValueError(f"{op.describe()}: the export is not there")
    return _reconnected(model, node, op.offset, op.length, op.pattern)


def _reconnected(
    model: Model, node: ReplicationNode, offset: int, n: int, pattern: int
) -> Observation:
    """The client has reconnected, and the write arrives through it."""
    node.link_up = True
    node.reconnect_pending = False
    seen = model.apply(ops.Write(offset, n, pattern, node=node.name))
    assert seen == IO_OK, seen
    return seen
