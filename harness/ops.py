"""The operations vocabulary shared by the model, the real side, the cases and the random runner.

An operation is a small immutable value. The model applies it and answers
with the observation QEMU must produce; the real side performs it on QEMU and
answers with what QEMU did. Names follow QEMU: `Start` is `xen-set-replication
enable=true`, `Checkpoint` is `xen-colo-do-checkpoint`, `Status` is
`query-xen-replication-status`, a `Stop` with failover is a failover.

Operations serialise to JSON (`to_json`/`from_json`) so a trace can be replayed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.errors import TraceError

# The replication node's name in the standard topologies.
REP = "rep"
# The machine names of the standard topologies.
SECONDARY = "secondary"
PRIMARY = "primary"


class Op:
    """Base of every operation."""

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Op]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            Op.registry[cls.kind] = cls

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            d[f.name] = getattr(self, f.name)
        return d


def from_json(d: Any) -> Op:
    """Rebuild an operation; a malformed record raises TraceError with the reason."""
    if not isinstance(d, dict) or not isinstance(d.get("op"), str):
        raise TraceError(f"not an operation record: {json.dumps(d)[:80]}")
    cls = Op.registry.get(d["op"])
    if cls is None:
        raise TraceError(f"unknown operation {d['op']!r}")
    args = {k: v for k, v in d.items() if k != "op"}
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(args) - set(names)
    if unknown:
        raise TraceError(f"operation {d['op']!r}: unknown field(s) {sorted(unknown)}")
    for k, v in args.items():
        if isinstance(v, list):
            args[k] = _freeze(v)
        _check_type(d["op"], k, names[k].type, args[k])
    try:
        return cls(**args)
    except TypeError as e:
        raise TraceError(f"operation {d['op']!r}: {e}") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "bool": (bool,),
    "str": (str,),
    "bool | None": (bool, type(None)),
    "int | None": (int, type(None)),
    "str | None": (str, type(None)),
}


def _check_type(op: str, name: str, annotation: Any, value: Any) -> None:
    """Trace fields must have their declared JSON type (bool is not an int here)."""
    allowed = _TYPES.get(str(annotation))
    if allowed is None:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        raise TraceError(f"operation {op!r}: field {name!r} must be {annotation}, got {value!r}")


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


# ---- guest I/O through a node (HMP qemu-io on the machine holding the node)


@dataclass(frozen=True, slots=True)
class Write(Op):
    offset: int
    length: int
    pattern: int
    node: str = REP
    kind: ClassVar[str] = "write"

    def describe(self) -> str:
        return (
            f"qemu-io {self.node} 'write -P {self.pattern:#04x} {self.offset:#x} {self.length:#x}'"
        )


@dataclass(frozen=True, slots=True)
class WriteZeroes(Op):
    offset: int
    length: int
    node: str = REP
    kind: ClassVar[str] = "write_zeroes"

    def describe(self) -> str:
        return f"qemu-io {self.node} 'write -z {self.offset:#x} {self.length:#x}'"


@dataclass(frozen=True, slots=True)
class Discard(Op):
    offset: int
    length: int
    node: str = REP
    kind: ClassVar[str] = "discard"

    def describe(self) -> str:
        return f"qemu-io {self.node} 'discard {self.offset:#x} {self.length:#x}'"


@dataclass(frozen=True, slots=True)
class Flush(Op):
    node: str = REP
    kind: ClassVar[str] = "flush"

    def describe(self) -> str:
        return f"qemu-io {self.node} 'flush'"


@dataclass(frozen=True, slots=True)
class Read(Op):
    offset: int
    length: int
    node: str = REP
    kind: ClassVar[str] = "read"

    def describe(self) -> str:
        return f"qemu-io {self.node} 'read {self.offset:#x} {self.length:#x}'"


# ---- the primary's I/O arriving at the secondary disk over NBD


@dataclass(frozen=True, slots=True)
class PrimaryWrite(Op):
    """A write of the primary arriving through the secondary disk's NBD export."""

    offset: int
    length: int
    pattern: int
    kind: ClassVar[str] = "primary_write"

    def describe(self) -> str:
        return f"nbd 'write -P {self.pattern:#04x} {self.offset:#x} {self.length:#x}'"


@dataclass(frozen=True, slots=True)
class PrimaryRead(Op):
    """A read of the secondary disk through its NBD export (what the primary's child sees)."""

    offset: int
    length: int
    kind: ClassVar[str] = "primary_read"

    def describe(self) -> str:
        return f"nbd 'read {self.offset:#x} {self.length:#x}'"


@dataclass(frozen=True, slots=True)
class PrimaryWriteZeroes(Op):
    """A write-zeroes of the primary arriving through the secondary disk's NBD export."""

    offset: int
    length: int
    kind: ClassVar[str] = "primary_write_zeroes"

    def describe(self) -> str:
        return f"nbd 'write -z {self.offset:#x} {self.length:#x}'"


@dataclass(frozen=True, slots=True)
class PrimaryDiscard(Op):
    """A discard (NBD trim) of the primary arriving through the secondary disk's NBD export."""

    offset: int
    length: int
    kind: ClassVar[str] = "primary_discard"

    def describe(self) -> str:
        return f"nbd 'discard {self.offset:#x} {self.length:#x}'"


# ---- the replication QMP commands (they act on every replication node of a machine)


@dataclass(frozen=True, slots=True)
class Start(Op):
    primary: bool
    failover: bool | None = None
    machine: str = SECONDARY
    kind: ClassVar[str] = "start"

    def describe(self) -> str:
        extra = "" if self.failover is None else f", failover={self.failover}"
        return f"{self.machine}: xen-set-replication enable=true primary={self.primary}{extra}"


@dataclass(frozen=True, slots=True)
class Stop(Op):
    primary: bool
    failover: bool = False
    machine: str = SECONDARY
    kind: ClassVar[str] = "stop"

    def describe(self) -> str:
        return (
            f"{self.machine}: xen-set-replication enable=false primary={self.primary}"
            f" failover={self.failover}"
        )


@dataclass(frozen=True, slots=True)
class Checkpoint(Op):
    machine: str = SECONDARY
    kind: ClassVar[str] = "checkpoint"

    def describe(self) -> str:
        return f"{self.machine}: xen-colo-do-checkpoint"


@dataclass(frozen=True, slots=True)
class Status(Op):
    machine: str = SECONDARY
    kind: ClassVar[str] = "status"

    def describe(self) -> str:
        return f"{self.machine}: query-xen-replication-status"


@dataclass(frozen=True, slots=True)
class Settle(Op):
    """Wait (by polling, with a deadline) until a failover in flight has finished."""

    machine: str = SECONDARY
    kind: ClassVar[str] = "settle"

    def describe(self) -> str:
        return f"{self.machine}: wait for the failover commit to finish"


@dataclass(frozen=True, slots=True)
class BlockdevDel(Op):
    """blockdev-del of a replication node: refused while a running secondary's op blocker
    sits on it (its top-id node), else the node is closed (a running one is stopped first,
    replication_close) and leaves the *_all list."""

    node: str = REP
    machine: str = SECONDARY
    kind: ClassVar[str] = "blockdev_del"

    def describe(self) -> str:
        return f"{self.machine}: blockdev-del node-name={self.node}"


@dataclass(frozen=True, slots=True)
class ReadOnly(Op):
    """Whether `node` (an image layer or a filter over one) is read-only now:
    query-named-block-nodes' "ro", answered as a QMP return value (true/false)."""

    node: str
    machine: str = SECONDARY
    kind: ClassVar[str] = "read_only"

    def describe(self) -> str:
        return f'{self.machine}: query-named-block-nodes, {self.node}\'s "ro"'


@dataclass(frozen=True, slots=True)
class Quit(Op):
    """QMP quit, waited for: every replication node of `machine` is closed
    (replication_close), its block jobs cancelled; the answer is QEMU's exit (clean, or
    the signal it died of)."""

    machine: str = SECONDARY
    kind: ClassVar[str] = "quit"

    def describe(self) -> str:
        return f"{self.machine}: quit"


# ---- COLO (migration/colo.c): the pair's migration drives the replication nodes


@dataclass(frozen=True, slots=True)
class ColoStart(Op):
    """The migration with x-colo (migrate-incoming on the secondary, migrate on the
    primary), waited for until each side has started its VM or left COLO: COLO calls
    replication_start_all on the secondary, then on the primary."""

    kind: ClassVar[str] = "colo_start"

    def describe(self) -> str:
        return "COLO: migrate with x-colo until both VMs run"


@dataclass(frozen=True, slots=True)
class ColoCheckpoint(Op):
    """One COLO checkpoint, requested on the primary (migrate-set-parameters
    x-checkpoint-delay) and waited for until the primary's VM runs again or a side
    leaves COLO: the secondary calls replication_get_error_all, then
    replication_do_checkpoint_all, with both VMs stopped. `kill`: that machine is
    SIGKILLed in the middle of it, as soon as the other side's VM has stopped."""

    kill: str | None = None
    kind: ClassVar[str] = "colo_checkpoint"

    def describe(self) -> str:
        if self.kill is None:
            return "COLO: checkpoint"
        return f"COLO: checkpoint, {self.kill} SIGKILLed once the other VM stopped"


@dataclass(frozen=True, slots=True)
class LostHeartbeat(Op):
    """x-colo-lost-heartbeat on `machine`, waited for until it has left COLO and its VM
    runs: replication_stop_all(failover=true) there."""

    machine: str = SECONDARY
    kind: ClassVar[str] = "lost_heartbeat"

    def describe(self) -> str:
        return f"{self.machine}: x-colo-lost-heartbeat"


OPS: tuple[type[Op], ...] = tuple(Op.registry.values())
