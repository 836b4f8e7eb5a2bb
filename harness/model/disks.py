"""Model disks: image layers with cluster-granular allocation, and the chain through them.

A layer write allocates whole clusters, as qcow2 does: the bytes of a touched
cluster outside the request are copied up from the chain below (COW), so the
guest view does not change but the layer's allocation map does. That is what
`qemu-img map` shows on the real layers after a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.faults import EjectAtEmpty, FailingWrites
from harness.model.extents import UNDEF, ExtentMap
from harness.observe import EIO, Data
from harness.units import SECTOR

# Formats whose driver implements bdrv_make_empty (QEMU 7.2 and 10.0: qcow2
# and qcow; replication's start refuses the others).
MAKE_EMPTY_FORMATS = frozenset({"qcow2", "qcow"})
# Formats with allocation tracking we compare with `qemu-img map`.
ALLOCATING_FORMATS = frozenset({"qcow2", "qed", "qcow", "vmdk"})
# Drivers without bdrv_reopen_prepare: a reopen of such a node is refused (block.c
# bdrv_reopen_prepare, "Block format '%s' used by node '%s' does not support reopening
# files"; QEMU 5.2 to master).
NO_REOPEN_FORMATS = frozenset({"quorum"})
# What an I/O request on a node without a driver (ejected) fails with (-ENOMEDIUM).
ENOMEDIUM = "No medium found"


@dataclass(eq=False)
class Disk:
    """One image layer: its data where allocated, and its place in the graph."""

    name: str
    size: int
    cluster: int = 65536
    fmt: str = "qcow2"
    backing: Disk | None = None
    # Attached to a BlockBackend (an NBD export, a device): start requires it
    # of the secondary disk.
    has_blk: bool = False
    data: ExtentMap = field(default_factory=ExtentMap)
    # False once an operation made the exact allocation unknowable (a failed
    # commit); data comparisons still apply, allocation ones are skipped.
    alloc_exact: bool = True
    # Created inline (not by its own blockdev-add): QEMU closes it once nothing
    # references it, as happens to active and hidden after a successful failover.
    monitor_owned: bool = False
    closed: bool = False
    # QEMU's bs->filename when it is not the plain name (error texts such as
    # "Failed to empty <filename>: ..." quote it); None: the disk's name.
    filename: str | None = None
    # Fault injection: bdrv_make_empty of this layer fails with this strerror.
    make_empty_error: str | None = None
    # Fault injection: a guest write into this layer fails with this strerror.
    write_error: str | None = None
    # A FailingWrites fault on this layer (harness.faults; learnt by Model.inject). Under
    # it (the qcow2 node's file): its first guest-data write fires the rule
    # (`fault_armed`) and fails, as does every write after it, metadata included. Over it
    # (a filter): the failover commit fails when it copies the fault's sector.
    fault: FailingWrites | None = None
    fault_armed: bool = False
    # An EjectAtEmpty under this layer (learnt by Model.inject): the make-empty after its
    # `passes` ones ejects the node; `empties`: how many it has let through.
    eject: EjectAtEmpty | None = None
    empties: int = 0
    # qcow2 dropped its driver (bs->drv = NULL): checkpoints name it ejected, I/O fails.
    ejected: bool = False
    # query-named-block-nodes' "ro".
    read_only: bool = False
    # A filter node (a one-child quorum over the disk below): no data of its own, its
    # reads and writes are its `backing`'s (the model links the child as backing).
    filter: bool = False
    # Another user's block job on this node: (the node its op blocker guards, the job
    # type), what backup_job_create's op-blocker check names (BackupJob).
    job: tuple[str, str] | None = None
    # Another parent that takes resize on this node and shares neither write nor resize
    # (a blklogwrites log, LogWrites): its (description, edge).
    resize_holder: tuple[str, str] | None = None

    @property
    def allocates(self) -> bool:
        return self.fmt in ALLOCATING_FORMATS

    @property
    def supports_make_empty(self) -> bool:
        return self.fmt in MAKE_EMPTY_FORMATS

    @property
    def offline_alloc_exact(self) -> bool:
        """Is the image's allocation after QEMU quits predicted? Not once its writes
        fail: the qcow2 metadata QEMU still caches never reaches the file (stderr:
        "Failed to flush the L2 table cache"); its bytes still are."""
        return self.alloc_exact and not self.fault_armed

    @property
    def reopenable(self) -> bool:
        return self.fmt not in NO_REOPEN_FORMATS

    @property
    def store(self) -> Disk:
        """The disk holding this one's data: itself, or the one below a filter."""
        d = self
        while d.filter and d.backing is not None:
            d = d.backing
        return d

    def data_write_refused(self) -> str | None:
        """A guest-data write into this layer: the strerror it fails with, or None.
        Under a FailingWrites fault it fires the rule (and fails)."""
        if self.ejected:
            return ENOMEDIUM
        if self.fault is not None and self.fault.under:
            self.fault_armed = True
            return EIO
        return self.write_error

    def write_refused(self, start: int, end: int) -> str | None:
        """A write of [start, end) reaching this node: data_write_refused, and a
        FailingWrites filter over it (every write, or those covering its sector)."""
        f = self.fault
        if f is None or f.under:
            return self.data_write_refused()
        if f.sector is None:
            return EIO
        lo = f.sector * SECTOR
        return EIO if start < lo + SECTOR and lo < end else None

    def empty_refused(self) -> str | None:
        """bdrv_make_empty of this layer: the strerror it fails with, or None. The one
        an EjectAtEmpty fails ejects the node, its metadata left as QEMU left it: the L1
        table zeroed before the failing write, so its image no longer maps a cluster."""
        if self.make_empty_error is not None:
            return self.make_empty_error
        if self.eject is not None:
            self.empties += 1
            if self.empties > self.eject.passes:
                self.ejected = True
                self.data.clear()
                return EIO
        return EIO if self.fault_armed else None

    def chain(self) -> list[Disk]:
        out: list[Disk] = []
        d: Disk | None = self
        while d is not None and len(out) < 64:
            out.append(d)
            d = d.backing
        return out


Piece = tuple[int, int, int]


def view(layers: list[Disk], start: int, end: int, depth: int = 0) -> list[Piece]:
    """What a read of [start, end) through `layers` (top first) returns: (s, e, value)."""
    if depth >= len(layers):
        return [(start, end, 0)]
    layer = layers[depth]
    out: list[Piece] = []
    lim = layer.size
    for s, e, v in layer.data.pieces(start, end):
        if v is not None:
            out.append((s, e, v))
        elif s >= lim:
            out.append((s, e, 0))
        else:
            out.extend(view(layers, s, e, depth + 1))
    return out


def not_inserted(layers: list[Disk]) -> bool:
    """Is a node over `layers` (top first) "not inserted" (bdrv_is_inserted recurses into
    every child), so that its I/O fails with ENOMEDIUM? When any of them is ejected."""
    return any(d.ejected for d in layers)


def to_data(pieces: list[tuple[int, int, int]]) -> Data:
    """Model pieces (s, e, value) -> observation Data, merging equal neighbours."""
    out: list[tuple[int, int, int | None]] = []
    for s, e, v in pieces:
        pat = None if v == UNDEF else v
        if out and out[-1][2] == pat and out[-1][0] + out[-1][1] == s:
            o = out[-1]
            out[-1] = (o[0], o[1] + e - s, pat)
        else:
            out.append((s, e - s, pat))
    return tuple(out)


def write_layer(layers: list[Disk], depth: int, start: int, end: int, val: int) -> None:
    """Write [start, end) into layers[depth] (a filter's into the layer below it),
    copying up the rest of each touched cluster."""
    while layers[depth].filter:
        depth += 1
    layer = layers[depth]
    data = layer.data
    if layer.allocates:
        c = layer.cluster
        cs = start - start % c
        ce = -(-end // c) * c
        if ce > layer.size:
            ce = layer.size
        if cs < start:
            _copy_up(layers, depth, cs, start)
        if end < ce:
            _copy_up(layers, depth, end, ce)
    data.set(start, end, val)


def _copy_up(layers: list[Disk], depth: int, start: int, end: int) -> None:
    layer = layers[depth]
    for s, e, v in layer.data.pieces(start, end):
        if v is None:
            for ps, pe, pv in view(layers, s, e, depth + 1):
                layer.data.set(ps, pe, pv)


def write_range(layers: list[Disk], start: int, end: int, val: int) -> None:
    """A write through the chain lands in its top layer."""
    write_layer(layers, 0, start, end, val)


def copy_range(src_layers: list[Disk], dst_layers: list[Disk], start: int, end: int) -> None:
    """Copy what `src_layers` read at [start, end) into the top of `dst_layers`."""
    for s, e, v in view(src_layers, start, end):
        write_layer(dst_layers, 0, s, e, v)


def make_empty(disk: Disk) -> None:
    """bdrv_make_empty: drop every allocated cluster."""
    disk.data.clear()


def undefine(disk: Disk, start: int, end: int) -> None:
    disk.data.set(start, end, UNDEF)


def allocated_above(top: Disk, base: Disk, start: int, end: int) -> list[tuple[int, int, bool]]:
    """bdrv_is_allocated_above(top, base): split [start, end) into (s, e, allocated) runs."""
    layers: list[Disk] = []
    d: Disk | None = top
    while d is not None and d is not base:
        layers.append(d)
        d = d.backing
    marks = ExtentMap()
    for layer in layers:
        for s, e in layer.data.allocated(start, end):
            marks.set(s, e, 1)
    return [(s, e, v is not None) for s, e, v in marks.pieces(start, end)]
