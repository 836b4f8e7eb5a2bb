"""QEMU's side of the operations harness.model.lifecycle answers for the model: a
machine's quit, an export that comes back (and a write that waits for it, and the wait
until the primary's NBD client has reconnected), a node's read-only state.

`dispatch(topo)` gives RealSide its handlers for them; each takes the operation and the
model's expectation (a hint only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from harness import faults, ops
from harness.graph import node_info
from harness.nbd_reader import NbdReader, NbdReaderError
from harness.observe import QMP_OK, Crashed, IoResult, Observation, QmpResult
from harness.real.topology import LiveTopology
from harness.topology.values import Export
from harness.verdicts import signal_name

# A write sent while the link is down is left this long to start waiting before the
# export comes back.
WRITE_WAITS = 0.3
# How long the primary's NBD client may take to reconnect: its connection thread sleeps
# 1, 2, 4, 8, then 16 s between attempts, so a case that brings its export back soon
# after the drop is reconnected within a few seconds; this bounds the rest.
RECONNECT_DEADLINE = 40.0
RECONNECT_POLL = 0.05


def dispatch(topo: LiveTopology) -> dict[type[ops.Op], Callable[[Any, Observation], Observation]]:
    return {
        ops.ReadOnly: partial(_read_only, topo),
        ops.Quit: partial(_quit, topo),
        faults.LinkUp: partial(_link_up, topo),
        faults.LinkUpDuringWrite: partial(_link_up_during_write, topo),
        faults.AwaitReconnect: partial(_await_reconnect, topo),
    }


def _read_only(topo: LiveTopology, op: ops.ReadOnly, expected: Observation) -> Observation:
    return QmpResult(True, bool(node_info(topo.machine(op.machine), op.node)["ro"]))


def _quit(topo: LiveTopology, op: ops.Quit, expected: Observation) -> Observation:
    """quit, waited for; the machine is gone from the topology (its images still
    checked offline unless it died: then its qcow2 caches died with it)."""
    m = topo.machine(op.machine)
    m.shutdown()
    if m.quit_hung is not None:
        raise m.quit_hung
    rc = m.returncode
    topo.machine_gone(op.machine, images_kept=rc == 0)
    return QMP_OK if rc == 0 else Crashed(signal_name(rc), m.stderr_tail())


def _link_up(topo: LiveTopology, op: faults.LinkUp, expected: Observation) -> Observation:
    return topo.export_back(op.export, server=op.mode == "server")


def _link_up_during_write(
    topo: LiveTopology, op: faults.LinkUpDuringWrite, expected: Observation
) -> Observation:
    """The write in a thread of its own (it drives the writer's machine), the export
    brought back meanwhile on the other machine; the write's answer."""
    io = topo.guests[op.node]
    seen: list[Observation] = []
    failed: list[BaseException] = []

    def write() -> None:
        try:
            seen.append(io.write(op.offset, op.length, op.pattern))
        except BaseException as e:  # re-raised in the caller's thread
            failed.append(e)

    writer = threading.Thread(target=write, name=f"write on {op.node}", daemon=True)
    writer.start()
    writer.join(WRITE_WAITS)
    answer = _link_up(topo, op, expected)
    writer.join(RECONNECT_DEADLINE)
    if failed:
        raise failed[0]
    if writer.is_alive():
        raise TimeoutError(f"{op.describe()}: the write did not end in {RECONNECT_DEADLINE} s")
    assert answer == QMP_OK, f"{op.describe()}: {answer.describe()}"
    return seen[0]


def _await_reconnect(
    topo: LiveTopology, op: faults.AwaitReconnect, expected: Observation
) -> Observation:
    """The write again and again until the export holds it; IO_OK then, or after the
    deadline the last write's answer with what the export held."""
    _, export = topo.graph.find(op.export)
    assert isinstance(export, Export), op.export
    want = ((op.offset, op.length, op.pattern),)
    reader = NbdReader(topo.sockets[op.machine], export.name)
    deadline = time.monotonic() + RECONNECT_DEADLINE
    try:
        while True:
            wrote = topo.guests[op.node].write(op.offset, op.length, op.pattern)
            try:
                held = reader.read(op.offset, op.length, want)
            except NbdReaderError as e:
                held = IoResult(False, str(e))
            if not wrote.ok or held.data == want:
                return wrote
            if time.monotonic() > deadline:
                return IoResult(
                    False, f"never reconnected in {RECONNECT_DEADLINE} s: {held.describe()}"
                )
            time.sleep(RECONNECT_POLL)
    finally:
        reader.close()
