"""What a secondary start does to the graph around its node, step by step in QEMU's
order, and what the backup job's cleanup undoes (block/replication.c, replication_start
after the make_empty check, reopen_backing_file, backup_job_cleanup).

1. reopen_backing_file(writable=true): the hidden and secondary disks found read-only
   (remembered as orig_*_read_only) are reopened read-write together, one transaction:
   a node whose driver cannot be reopened (a quorum) fails it with the driver's text, and
   neither changes.
2. From 6.1 (profile.start_attaches_children) the `hidden disk` and `secondary disk`
   children are attached, each with write and sharing neither resize: a parent that takes
   resize on that disk refuses it (its permission conflict is the answer; a `hidden disk`
   child attached before a refused `secondary disk` one stays).
3. s->blocker is set: a blocker leaked by an earlier attempt aborts QEMU here (the known
   bug START_RETRY_ABORTS). Then the top-id check (ReplicationNode), then
4. backup_job_create: another job's op blocker on its source (the secondary disk, or the
   filter that job put above it) or its target (the hidden disk) refuses it with that
   blocker's text; backup_job_cleanup then frees s->blocker without forgetting it (the
   same leak), unblocks the top and reopens back.

The reopen back (writable=false) has no errp: it fails, and changes nothing, while a
writer is attached to a disk it would make read-only (profile.read_only_not_restored).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from harness.model.disks import Disk

if TYPE_CHECKING:
    from harness.model.replication import ReplicationNode


class Crash(Exception):
    """QEMU dies here with `signal` (a known bug of the profile); `reason`: what its
    stderr says, if anything."""

    def __init__(self, reason: str, sig: str = signal.Signals.SIGABRT.name) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signal = sig


def reopen_writable(node: ReplicationNode, hidden: Disk, secondary: Disk) -> str | None:
    """Step 1: the refusal's text, or None with the read-only ones now read-write."""
    node.orig_read_only = tuple(d for d in (hidden, secondary) if d.read_only)
    for d in node.orig_read_only:
        if not d.reopenable:
            return node.profile.texts.reopen_unsupported(d.fmt, d.name)
    for d in node.orig_read_only:
        d.read_only = False
    return None


def attach_children(node: ReplicationNode, hidden: Disk, secondary: Disk) -> str | None:
    """Step 2 (from 6.1): the permission conflict that refuses a child, or None."""
    if not node.profile.start_attaches_children:
        return None
    for disk, edge in ((hidden, "hidden disk"), (secondary, "secondary disk")):
        if disk.resize_holder is not None:
            user, user_edge = disk.resize_holder
            return node.profile.texts.perm_conflict(
                disk.name, "resize", user, user_edge, f"node '{node.name}'", edge, existing="user"
            )
        node.children.add(disk.name)
    return None


def create_backup(node: ReplicationNode, hidden: Disk, secondary: Disk) -> str | None:
    """Step 4: the op blocker that refuses the backup job (source first), or None."""
    for disk in (secondary, hidden):
        if disk.job is not None:
            blocked, job = disk.job
            node.blocker_leaked = True
            restore_read_only(node, backup_filter=False)
            return node.profile.texts.job_busy(blocked, job)
    return None


def restore_read_only(node: ReplicationNode, backup_filter: bool) -> None:
    """reopen_backing_file(writable=false) from backup_job_cleanup (or the top-id
    check's refusal): the disks start made read-write go back, unless a writer is still
    attached to one of them (`backup_filter`: the backup job ran, and its filter's target
    child may still hold the hidden disk)."""
    queued = node.orig_read_only
    if not queued:
        return
    p = node.profile
    for d in queued:
        if d.ejected and p.ejected_hidden_reopen_crashes is not None:
            raise Crash("", signal.Signals.SIGSEGV.name)
    hidden_held = backup_filter and p.cleanup_meets_backup_target
    for d in queued:
        if d.name in node.children or (hidden_held and d is node.hidden):
            return
    for d in queued:
        d.read_only = True
