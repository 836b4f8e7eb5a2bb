"""Faults as values: each says what to do to QEMU and what it means to the model.

A fault is stated once. The topology value carries the faults built into its graph
(`FailingWrites`, `Throttle`); the steps a story takes carry the faults that happen
at a moment (`LinkDown`, `Kill`, `HoldCommit`, `ReleaseCommit`, which are operations:
`Story.do` applies them to both sides and compares). The QEMU side reads a fault's
options or command (harness.real.topology, harness.real.side); the model learns it through
`Model.inject` (harness.model.system) and nothing else.

- `FailingWrites`: a blkdebug node whose rule, once its event has fired, fails every
  later write of its iotypes (`once: false`) with EIO, optionally only the writes that
  cover one sector. As the file of a qcow2 layer (`under=True`) the event is
  `write_aio`, the first guest-data write into that layer: metadata writes before it
  succeed (so the checkpoint that start performs still empties the layer); the write
  that fires it and everything after it fails. Over a node as a filter (the secondary
  disk: the export and the hidden disk's backing then use it) the event is `pwritev`,
  the first data write reaching it, and `sector` limits it to the requests covering
  that sector: the failover commit's, when the commit copies its chunk.
- `Throttle`: a throttle node over the secondary disk in a throttle group; its groups
  are object-add'ed first. `HoldCommit` moves it with blockdev-reopen into the group
  that lets one write through and queues the rest for minutes (a failover commit
  started then stays in flight), `ReleaseCommit` moves it back: the reopen drains the
  node, so queued requests restart at once (setting the group's limits with qom-set
  would not: a queued request keeps its timer).
- `EjectAtEmpty`: a blkdebug as the file of a qcow2 layer that lets `passes` make-empties
  through and fails the next one after its metadata was half rewritten, so qcow2 drops
  the node's driver (`bs->drv = NULL`, make_completely_empty's fail_broken_refcounts):
  the node is "ejected".
- `LinkDown`: an export goes (`block-export-del`, or `nbd-server-stop` for every export
  of the machine): its disk loses that BlockBackend and every primary replication
  node connected to it loses its link (its writes' errors are stored, success reported).
- `LinkUp`: the export comes back (`block-export-add`, after `nbd-server-start` when the
  server was stopped); the NBD clients that lost it reconnect in their own time
  (`AwaitReconnect` waits for that), or at once for a write waiting in their
  reconnect-delay (`LinkUpDuringWrite`).
- `Kill`: a signal to a machine; the model's answer is a crash with that signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.ops import REP, SECONDARY, Op
from harness.units import SECTOR

EIO_ERRNO = 5
# The qemu-storage-daemon (or emulator) serving the primary's child in the primary topology.
CHILD = "child"
EXPORT_ID = "export"  # the block export id every standard topology gives its export


@dataclass(frozen=True)
class FailingWrites:
    """A blkdebug node failing writes into `target` (see the module docstring)."""

    node: str
    target: str
    under: bool = False
    sector: int | None = None
    iotypes: tuple[str, ...] = ("write",)
    errno: int = EIO_ERRNO

    @property
    def event(self) -> str:
        return "write_aio" if self.under else "pwritev"

    def options(self, image: Any) -> dict[str, Any]:
        """blockdev-add options of the blkdebug node over `image` (a node name or options)."""
        rules: list[dict[str, Any]] = []
        for iotype in self.iotypes:
            rule: dict[str, Any] = {
                "event": self.event,
                "iotype": iotype,
                "errno": self.errno,
                "once": False,
            }
            if self.sector is not None:
                rule["sector"] = self.sector
            rules.append(rule)
        return {"driver": "blkdebug", "node-name": self.node, "image": image, "inject-error": rules}


def over_secondary(
    sector: int | None = None,
    *,
    iotypes: tuple[str, ...] = ("write",),
    node: str = "secondary-dbg",
    target: str = "secondary",
) -> FailingWrites:
    """A blkdebug filter over the secondary disk failing the writes covering `sector`
    (any sector if None): guest writes of a running secondary never reach it, so its
    first writer is the failover commit, which then fails (FAILOVER_FAILED) exactly when
    it copies that sector's chunk. Primary writes over NBD and writes after the failover
    do reach it: a case keeps them off `sector` or expects their EIO."""
    return FailingWrites(node, target, sector=sector, iotypes=iotypes)


def at_offset(offset: int, node: str = "sec-dbg") -> FailingWrites:
    """over_secondary() of the sector holding byte `offset` (a whole sector)."""
    if offset % SECTOR:
        raise ValueError("blkdebug rules name whole sectors")
    return over_secondary(offset // SECTOR, node=node)


def under_layer(layer: str) -> FailingWrites:
    """A blkdebug as the file of `layer`'s qcow2 node: its guest-data writes fail."""
    return FailingWrites(f"{layer}-dbg", layer, under=True)


THROTTLE_FREE = "tg-free"
THROTTLE_HOLD = "tg-hold"
THROTTLE_NODE = "sec-throttle"
# The groups the standard throttle moves between: no limits, and one write then minutes.
HOLD_GROUPS: tuple[tuple[str, Mapping[str, int] | None], ...] = (
    (THROTTLE_FREE, None),
    (THROTTLE_HOLD, {"bps-write": 512}),
)


@dataclass(frozen=True)
class Throttle:
    """A throttle node over `target` in `group`; `groups` are created first (object-add)."""

    node: str = THROTTLE_NODE
    target: str = "secondary"
    group: str = THROTTLE_FREE
    groups: tuple[tuple[str, Mapping[str, int] | None], ...] = field(default=HOLD_GROUPS)

    def objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for gid, limits in self.groups:
            obj: dict[str, Any] = {"qom-type": "throttle-group", "id": gid}
            if limits is not None:
                obj["limits"] = dict(limits)
            out.append(obj)
        return out

    def options(self, image: Any = None, group: str | None = None) -> dict[str, Any]:
        return {
            "driver": "throttle",
            "node-name": self.node,
            "throttle-group": group or self.group,
            "file": self.target if image is None else image,
        }


@dataclass(frozen=True)
class EjectAtEmpty:
    """A blkdebug as the file of qcow2 layer `target` (see the module docstring): its
    rules count make-empties with blkdebug's states on the event `empty_image_prepare`
    (only make_completely_empty has it) and fail every write after the (`passes` + 1)-th:
    that make-empty has already zeroed the L1 table, so its next write failing leaves the
    refcounts broken and qcow2 ejects the node."""

    node: str
    target: str
    passes: int = 1
    errno: int = EIO_ERRNO
    event: ClassVar[str] = "empty_image_prepare"

    def options(self, image: Any) -> dict[str, Any]:
        """blockdev-add options of the blkdebug node over `image`."""
        last = self.passes + 1
        return {
            "driver": "blkdebug",
            "node-name": self.node,
            "image": image,
            "set-state": [
                {"event": self.event, "state": n, "new_state": n + 1} for n in range(1, last)
            ],
            "inject-error": [
                {
                    "event": self.event,
                    "state": last,
                    "iotype": "write",
                    "errno": self.errno,
                    "once": False,
                }
            ],
        }


def ejecting(layer: str, passes: int = 1) -> EjectAtEmpty:
    """EjectAtEmpty under `layer`: `passes` make-empties work (start's own is the first)."""
    return EjectAtEmpty(f"{layer}-dbg", layer, passes)


Fault = FailingWrites | Throttle | EjectAtEmpty


# ---- faults that happen at a moment: operations


@dataclass(frozen=True, slots=True)
class LinkDown(Op):
    """An export goes: `block-export-del id=EXPORT mode=MODE` on `machine` (mode "hard"
    drops the connected clients, "safe" is refused while one is connected), or with mode
    "server" `nbd-server-stop` (every export of the machine, clients dropped)."""

    machine: str = CHILD
    export: str = EXPORT_ID
    mode: str = "hard"
    kind: ClassVar[str] = "link_down"

    def describe(self) -> str:
        if self.mode == "server":
            return f"{self.machine}: nbd-server-stop (the primary's NBD link goes down)"
        return (
            f"{self.machine}: block-export-del id={self.export} mode={self.mode}"
            " (the primary's NBD link goes down)"
        )


@dataclass(frozen=True, slots=True)
class LinkUp(Op):
    """The export `export` of `machine` comes back as the topology first made it
    (`block-export-add`; with mode "server", `nbd-server-start` on the same socket
    first). The primary's NBD client is not connected by it: it reconnects on its own
    schedule (AwaitReconnect)."""

    machine: str = CHILD
    export: str = EXPORT_ID
    mode: str = "export"
    kind: ClassVar[str] = "link_up"

    def describe(self) -> str:
        again = "nbd-server-start, " if self.mode == "server" else ""
        return f"{self.machine}: {again}block-export-add id={self.export} (the export is back)"


@dataclass(frozen=True, slots=True)
class LinkUpDuringWrite(LinkUp):
    """A write of `pattern` at [offset, +length) on `node` (HMP qemu-io), sent while the
    link is down; while it waits, the export comes back (LinkUp). An NBD client with a
    reconnect-delay holds the write until it has reconnected, so it reaches the export."""

    offset: int = 0
    length: int = 0
    pattern: int = 0
    node: str = REP
    kind: ClassVar[str] = "link_up_during_write"

    def describe(self) -> str:
        write = f"{self.pattern:#04x} {self.offset:#x} {self.length:#x}"
        return f"qemu-io {self.node} 'write -P {write}', and while it waits {LinkUp.describe(self)}"


@dataclass(frozen=True, slots=True)
class AwaitReconnect(Op):
    """Until the primary's NBD client has reconnected to `export` of `machine`: the
    write of `pattern` at [offset, +length) on `node` again and again (a primary node
    reports success either way), until the export holds its bytes (the harness's own NBD
    reads), within a deadline."""

    offset: int
    length: int
    pattern: int
    node: str = REP
    machine: str = CHILD
    export: str = EXPORT_ID
    kind: ClassVar[str] = "await_reconnect"

    def describe(self) -> str:
        return (
            f"qemu-io {self.node} 'write -P {self.pattern:#04x} {self.offset:#x} "
            f"{self.length:#x}' until {self.machine}'s export {self.export!r} holds it"
        )


@dataclass(frozen=True, slots=True)
class Kill(Op):
    """Signal `signal` (a name: SIGKILL, SIGABRT, ...) to `machine`, waited for."""

    machine: str = SECONDARY
    signal: str = "SIGKILL"
    kind: ClassVar[str] = "kill"

    def describe(self) -> str:
        return f"{self.machine}: kill -{self.signal.removeprefix('SIG')}"


@dataclass(frozen=True, slots=True)
class HoldCommit(Op):
    """blockdev-reopen the throttle node `node` (over `target`) into `group`: from now on
    the secondary disk takes one write and queues the rest, so a failover commit started
    now stays in flight (FAILOVER) until ReleaseCommit."""

    machine: str = SECONDARY
    node: str = THROTTLE_NODE
    target: str = "secondary"
    group: str = THROTTLE_HOLD
    kind: ClassVar[str] = "hold_commit"

    def describe(self) -> str:
        return f"{self.machine}: blockdev-reopen {self.node} throttle-group={self.group}"

    def options(self) -> dict[str, Any]:
        return Throttle(self.node, self.target, self.group, ()).options()


@dataclass(frozen=True, slots=True)
class ReleaseCommit(HoldCommit):
    """The throttle node back in the unlimited group; the reopen's drain restarts the
    queued writes."""

    group: str = THROTTLE_FREE
    kind: ClassVar[str] = "release_commit"


StepFault = (
    LinkDown | LinkUp | LinkUpDuringWrite | AwaitReconnect | Kill | HoldCommit | ReleaseCommit
)
