"""One replication node (BDRVReplicationState): stages, checks in QEMU's order, per-stage I/O.

Each method mirrors a function of block/replication.c and returns what QEMU
returns: an error text or None, or an I/O observation. The profile decides
the answers that changed between releases, and words every text.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.model.disks import (
    ENOMEDIUM,
    Disk,
    allocated_above,
    copy_range,
    make_empty,
    not_inserted,
    undefine,
    view,
    write_layer,
)
from harness.model.extents import UNDEF, ExtentMap
from harness.model.profiles import Profile
from harness.model.start_graph import (
    Crash,
    attach_children,
    create_backup,
    reopen_writable,
    restore_read_only,
)
from harness.observe import EIO
from harness.topology.values import Mode
from harness.units import SECTOR

BACKUP_CLUSTER_MIN = 65536


class Stage(enum.Enum):
    NONE = "none"
    RUNNING = "running"
    FAILOVER = "failover"
    FAILOVER_FAILED = "failover_failed"
    DONE = "done"


@dataclass(eq=False)
class Backup:
    """The internal sync=none backup job: secondary disk -> hidden disk, copy-before-write."""

    cluster: int
    copied: ExtentMap = field(default_factory=ExtentMap)


class Abort(Crash):
    """QEMU aborts here (a known bug of the profile)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


@dataclass(eq=False)
class ReplicationNode:
    """The model of one `replication` block node."""

    name: str
    mode: Mode
    profile: Profile
    # bs->file: the active disk (secondary) or the child towards the secondary (primary)
    file: Disk
    top_id: str | None = None
    # Whether top-id names a root above (or equal to) this node. None: the model decides
    # from its graph at each start (Model.top_is_valid); a bool fixes it (unit tests).
    top_valid: bool | None = None
    # The BlockBackend this node is the root of (HMP drive_add's id), if any.
    drive_id: str | None = None
    stage: Stage = Stage.NONE
    error: bool = False
    backup: Backup | None = None
    # the disks start() found, kept for checkpoint/stop/commit
    active: Disk | None = None
    hidden: Disk | None = None
    secondary: Disk | None = None
    # primary: the NBD link to the secondary is up
    link_up: bool = True
    # fault injection: the failover commit fails / make_empty fails (strerror)
    commit_fails: bool = False
    make_empty_error: str | None = None
    blocker_leaked: bool = False
    # failover commit not yet known to have finished (status is racy until then)
    settling: bool = False
    # the ranges the failover commit copies (allocated in active or hidden)
    commit_dirty: list[tuple[int, int]] = field(default_factory=list)
    # primary: where its writes go; None: straight into `file`'s chain. The COLO pair
    # (harness.pair) sets the NBD path into the secondary's export, which runs the
    # secondary's copy-before-write; it answers the NBD write's error text or None.
    forward: Callable[[int, int, int], str | None] | None = None
    # fault injection (unit tests; topologies state a FailingWrites under the hidden
    # disk instead): copying a cluster that holds data into the hidden disk fails with
    # this strerror, and so does the write that needed the copy
    cbw_error: str | None = None
    # the failover commit is known to be still running (a fault holds it): a write
    # goes through the commit's filter into the active disk, and is committed later
    commit_held: bool = False
    # the disks start found read-only and reopened read-write (orig_*_read_only)
    orig_read_only: tuple[Disk, ...] = ()
    # the disks start attached as the node's own children (from 6.1), by name
    children: set[str] = field(default_factory=set)
    # primary over an NBD client: its reconnect-delay (s), and whether its export is
    # back while the client has not reconnected yet (when it will is QEMU's timing)
    reconnect_delay: int = 0
    reconnect_pending: bool = False

    # ---- control (ReplicationOps)

    def start(self, mode: Mode, top_valid: bool = True) -> str | None:
        """replication_start; `top_valid`: whether top-id names a root above this node."""
        p = self.profile
        if p.ignore_after_failover and self.stage in (Stage.DONE, Stage.FAILOVER):
            return None
        if self.stage is not Stage.NONE:
            return p.texts.RUNNING_OR_DONE
        if self.mode is not mode:
            return p.texts.mode_mismatch(int(self.mode), int(mode))
        if self.mode is Mode.SECONDARY:
            err = self._start_secondary(top_valid)
            if err is not None:
                return err
        self.stage = Stage.RUNNING
        err = self._start_checkpoint()
        self.error = False
        return err

    def _start_checkpoint(self) -> str | None:
        """Start's own checkpoint: a secondary empties its active and hidden disks."""
        return self._do_checkpoint() if self.mode is Mode.SECONDARY else None

    def _start_secondary(self, top_valid: bool) -> str | None:
        msg = self.profile.texts
        active = self.file
        if active.backing is None:
            return msg.NO_ACTIVE_BACKING
        hidden = active.backing
        if hidden.backing is None:
            return msg.NO_HIDDEN_BACKING
        secondary = hidden.backing
        if not secondary.has_blk:
            return msg.NO_BLOCK_BACKEND
        if not active.size == hidden.size == secondary.size:
            return msg.LENGTHS_DIFFER
        if not (active.supports_make_empty and hidden.supports_make_empty):
            return msg.NO_MAKE_EMPTY
        err = reopen_writable(self, hidden, secondary) or attach_children(self, hidden, secondary)
        if err is not None:
            return err
        if self.blocker_leaked and self.profile.start_retry_after_bad_top_aborts is not None:
            raise Abort(msg.ERRP_ASSERTION)
        if not top_valid:
            self.blocker_leaked = True
            restore_read_only(self, backup_filter=False)
            return msg.BAD_TOP
        err = create_backup(self, hidden, secondary)
        if err is not None:
            return err
        self.active, self.hidden, self.secondary = active, hidden, secondary
        self.backup = Backup(cluster=max(BACKUP_CLUSTER_MIN, hidden.cluster))
        return None

    def checkpoint(self) -> str | None:
        if self.profile.ignore_after_failover and self.stage in (Stage.DONE, Stage.FAILOVER):
            return None
        if self.mode is Mode.SECONDARY:
            return self._do_checkpoint()
        return None

    def _do_checkpoint(self) -> str | None:
        """secondary_do_checkpoint: forget what was copied, then empty active and hidden."""
        msg = self.profile.texts
        if self.backup is None:
            return msg.BACKUP_CANCELLED
        self.backup.copied.clear()
        assert self.active is not None and self.hidden is not None
        for disk, which in ((self.active, "active"), (self.hidden, "hidden")):
            if disk.ejected:
                ejected = msg.active_ejected if which == "active" else msg.hidden_ejected
                return ejected(disk.name)
            error = self.make_empty_error or disk.empty_refused()
            if error is not None:
                return msg.failed_to_empty(disk.filename or disk.name, error, disk=which)
            make_empty(disk)
        return None

    def get_error(self) -> str | None:
        msg = self.profile.texts
        if self.profile.get_error_only_none:
            if self.stage is Stage.NONE:
                return msg.NOT_RUNNING
        elif self.stage is not Stage.RUNNING:
            return msg.NOT_RUNNING
        return msg.IO_ERROR if self.error else None

    def stop(self, failover: bool) -> str | None:
        if self.profile.ignore_after_failover and self.stage in (Stage.DONE, Stage.FAILOVER):
            return None
        if self.stage is not Stage.RUNNING:
            return self.profile.texts.NOT_RUNNING
        if self.mode is Mode.PRIMARY:
            self.stage = Stage.DONE
            self.error = False
            return None
        # The backup job is cancelled while the stage is still RUNNING, so its
        # completion callback records the cancellation as an I/O error, and its cleanup
        # reopens the disks start made read-write.
        self.error = True
        if self.backup is not None:
            restore_read_only(self, backup_filter=True)
        if self.profile.plain_stop_skips_empty:
            self.backup = None
        if not failover:
            err = self._do_checkpoint()
            self.backup = None
            self.stage = Stage.DONE
            return err
        self.stage = Stage.FAILOVER
        assert self.active is not None
        if self.active.ejected and self.profile.ejected_active_commit_crashes is not None:
            raise Crash("", signal.Signals.SIGFPE.name)
        self._commit()
        return None

    # ---- what the active and hidden disks hold

    def dirty(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """The ranges of [start, end) (default: the whole disk) allocated in the active
        or the hidden disk, above the secondary disk: what a checkpoint empties and a
        failover commit copies. None before start, nor once the commit closed them."""
        active, secondary = self.active, self.secondary
        if active is None or secondary is None or active.closed:
            return []
        runs = allocated_above(active, secondary, start, secondary.size if end is None else end)
        return [(s, e) for s, e, allocated in runs if allocated]

    def commit_copies(self, offset: int) -> bool:
        """Would a failover commit starting now copy the chunk holding byte `offset`?
        It copies the chunks (commit_chunk) holding anything dirty()."""
        if self.stage is not Stage.RUNNING or self.secondary is None:
            return False
        return bool(self.dirty(*commit_chunk(self.secondary, offset)))

    def _commit(self) -> None:
        """The internal active commit of active+hidden into the secondary disk."""
        active, secondary = self.active, self.secondary
        assert active is not None and secondary is not None
        self.settling = True
        dirty = self.dirty()
        self.commit_dirty = dirty
        ejected = active.ejected or (self.hidden is not None and self.hidden.ejected)
        if self.commit_fails or ejected or _commit_refused(secondary, dirty):
            for s, e in dirty:
                undefine(secondary.store, s, e)
            secondary.store.alloc_exact = False
            self.stage = Stage.FAILOVER_FAILED
            self.error = True
            return
        chain = active.chain()
        target = secondary.chain()
        for s, e in dirty:
            copy_range(chain, target, s, e)
        # The mirror copies whole granularity chunks: the secondary disk's exact
        # allocation is not predicted; its data is.
        if dirty:
            secondary.store.alloc_exact = False
        self.file = secondary
        self.stage = Stage.DONE
        self.error = False
        # the commit gives its target the read-only state of the node it replaces, and
        # replication_done drops the node's own children
        secondary.read_only = active.read_only
        self.children.clear()
        for disk in (active, self.hidden):
            if disk is not None and not disk.monitor_owned:
                disk.closed = True

    def close(self) -> None:
        """replication_close: a running node is stopped without failover; a failover
        commit in flight is cancelled (job_cancel_sync; at a quit, every job is cancelled
        first): the copies it has issued are written (the drain restarts writes a
        throttle holds), the rest never are. A commit of at most MIRROR_MAX_OPS runs of at
        most a buffer in all has issued every copy at once; of a bigger one the model
        cannot tell which copies were issued."""
        if self.stage is Stage.RUNNING:
            self.stop(False)
        if self.settling and self.secondary is not None:
            runs = self.commit_dirty
            if len(runs) > MIRROR_MAX_OPS or sum(e - s for s, e in runs) > MIRROR_BUFFER:
                for s, e in runs:
                    undefine(self.secondary.store, s, e)
        self.settling = False
        self.commit_held = False

    # ---- I/O (the BlockDriver callbacks)

    def io_status(self) -> int:
        """replication_get_io_status: <0 fail, 0 pass through, 1 split by allocation."""
        st = self.stage
        if st is Stage.NONE:
            return -1
        if st is Stage.RUNNING:
            return 0
        if self.mode is Mode.PRIMARY:
            return -1
        return 1 if st is Stage.FAILOVER_FAILED else 0

    def read(self, start: int, end: int) -> list[tuple[int, int, int]] | str:
        """Pieces read, or the errno text."""
        if self.mode is Mode.PRIMARY or self.io_status() < 0:
            return EIO
        chain = self.file.chain()
        if not_inserted(chain):
            return ENOMEDIUM
        return view(chain, start, end)

    def write(self, start: int, end: int, val: int) -> str | None:
        """None on success, else the errno text."""
        st = self.io_status()
        if st < 0:
            return EIO
        if self.mode is Mode.SECONDARY and not_inserted(self.file.chain()):
            return ENOMEDIUM
        if self.mode is Mode.PRIMARY:
            # A child error is stored and the write reports success.
            if self.reconnect_pending:
                raise ValueError(
                    f"{self.name}: its NBD export is back, but whether its client has "
                    "reconnected is QEMU's timing: AwaitReconnect first"
                )
            if self.link_up and self.forward is not None:
                self._forward(start, end, val)
            elif self.link_up:
                chain = self.file.chain()
                write_layer(chain, 0, start, end, val)
                # Request alignment is 512; the padding read of the read-modify-write
                # fails (primary reads are refused) and is ignored, so the rest of
                # each touched sector gets bytes QEMU does not define.
                head = start - start % SECTOR
                tail = -(-end // SECTOR) * SECTOR
                if head < start:
                    write_layer(chain, 0, head, start, UNDEF)
                if end < tail:
                    write_layer(chain, 0, end, tail, UNDEF)
            else:
                self.error = True
            return None
        if st == 0:
            refused = self.file.data_write_refused()
            if refused is not None:
                return refused
            if self.commit_held and self.active is not None and self.file is not self.active:
                # FAILOVER, the commit held: into the active disk through the commit's
                # filter; the commit copies it on (the model's file is already its target)
                write_layer(self.active.chain(), 0, start, end, val)
            write_layer(self.file.chain(), 0, start, end, val)
            return None
        assert self.active is not None and self.secondary is not None
        runs = allocated_above(self.active, self.secondary, start, end)
        if self.profile.failover_failed_write_crashes and not all(a for _, _, a in runs):
            raise Abort(self.profile.texts.WRITE_ASSERTION)
        # run by run: a run allocated in the active or the hidden disk into the active
        # disk, any other straight into the secondary disk; the first run refused ends
        # the request with its error, the runs before it written
        for s, e, alloc in runs:
            target = self.active if alloc else self.secondary
            refused = target.write_refused(s, e)
            if refused is not None:
                return refused
            write_layer(target.chain(), 0, s, e, val)
        return None

    def _forward(self, start: int, end: int, val: int) -> None:
        """A primary write sent on by `forward`: one request over whole sectors (the
        padding undefined, as above); a failure is stored and the write succeeds."""
        assert self.forward is not None
        head = start - start % SECTOR
        tail = -(-end // SECTOR) * SECTOR
        err = self.forward(head, tail, UNDEF) if (head < start or end < tail) else None
        if err is None:
            err = self.forward(start, end, val)
        if err is not None:
            self.error = True

    def undefine_padded_sectors(self, start: int, end: int) -> None:
        """An unaligned write-zeroes through a primary node: its partly covered head and tail
        sectors end up undefined as a whole, the bytes it asked to zero included.

        bdrv_co_do_zero_pwritev pads the request to the node's 512-byte alignment and calls
        bdrv_padding_rmw_read(..., zero_middle=true); the primary refuses the read-modify-write
        read, and that function returns before its `zero_mem:` memset, so the padded sectors
        are written from a buffer nobody initialised (the caller ignores the failed read).
        """
        head = start - start % SECTOR
        tail = -(-end // SECTOR) * SECTOR
        sectors = []
        if head < start:
            sectors.append((head, min(head + SECTOR, tail)))
        if end < tail:
            sectors.append((max(tail - SECTOR, head), tail))
        for s, e in sectors:
            if self.forward is not None:
                if self.forward(s, e, UNDEF) is not None:
                    self.error = True
            else:
                write_layer(self.file.chain(), 0, s, e, UNDEF)

    def flush(self) -> str | None:
        if self.mode is Mode.PRIMARY and not self.link_up:
            return EIO
        return None

    # ---- the primary's writes arriving at the secondary disk

    def before_secondary_write(self, disk: Disk, start: int, end: int) -> str | None:
        """Copy-before-write: old data of each untouched backup cluster goes to hidden.

        With `cbw_error`, the copy goes cluster by cluster in order: a cluster that
        reads as zeros is copied as a write-zeroes (qcow2: metadata only, which
        succeeds), the first cluster holding data fails, and the error (returned)
        fails the guest write before it writes anything. (block-copy runs its tasks in
        parallel, so zero clusters after the failing one may or may not be copied:
        the model copies none of them, and cases leave that case out.)"""
        b = self.backup
        if b is None or disk is not self.secondary or self.hidden is None:
            return None
        c = b.cluster
        cs = start - start % c
        ce = min(-(-end // c) * c, disk.size)
        chain = disk.chain()
        hidden_chain = self.hidden.chain()
        hidden = self.hidden
        refusing = self.cbw_error is not None or (hidden.fault is not None and hidden.fault.under)
        for s, e, v in b.copied.pieces(cs, ce):
            if v is not None:
                continue
            if not refusing:
                copy_range(chain, hidden_chain, s, e)
                continue
            for k in range(s, e, c):
                ke = min(k + c, e)
                if any(d.data.any_mapped(k, ke) for d in disk.chain()):
                    return self.cbw_error or hidden.data_write_refused()
                copy_range(chain, hidden_chain, k, ke)
                b.copied.set(k, ke, 1)
        b.copied.set(cs, ce, 1)
        return None


# The failover commit's copy granularity: clamp(secondary cluster, 4 KiB, 64 KiB).
MIRROR_GRANULARITY_MIN = 4096
MIRROR_GRANULARITY_MAX = 65536
# The mirror's copies in flight at once (MAX_IN_FLIGHT) and its buffer (16 MiB).
MIRROR_MAX_OPS = 16
MIRROR_BUFFER = 16 << 20


def commit_chunk(secondary: Disk, offset: int) -> tuple[int, int]:
    """The chunk of the failover commit (a mirror of active into the secondary disk)
    holding byte `offset`: it copies whole chunks of clamp(secondary cluster, 4 KiB,
    64 KiB) that hold anything allocated in the active or the hidden disk."""
    g = min(max(MIRROR_GRANULARITY_MIN, secondary.cluster), MIRROR_GRANULARITY_MAX)
    start = offset - offset % g
    return start, start + g


def _commit_refused(secondary: Disk, dirty: list[tuple[int, int]]) -> bool:
    """Does a FailingWrites filter over the secondary disk fail this commit? It does
    when the commit copies anything (no sector) or the chunk holding its sector."""
    fault = secondary.fault
    if fault is None or fault.under or not dirty:
        return False
    if fault.sector is None:
        return True
    lo, hi = commit_chunk(secondary, fault.sector * SECTOR)
    return any(s < hi and lo < e for s, e in dirty)
