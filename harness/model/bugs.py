"""Known QEMU bugs as values (`Bug`), and the bugs found in the machinery the filter
leans on (issue 23: reopen, qcow2's ejection, the commit and the NBD client): the
profiles (harness.model.profiles) carry each one for the releases that have it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bug:
    """A known QEMU bug: the releases it is known in, and what goes wrong."""

    versions: str
    what: str

    @property
    def reason(self) -> str:
        """The reason of a case's strict expected failure."""
        return f"QEMU bug ({self.versions}): {self.what}"


READ_ONLY_NOT_RESTORED = Bug(
    "5.2, 7.2, 10.0, 11.1 seen (by the sources the hidden disk from 4.2, the secondary disk "
    "from 6.1 on)",
    "backup_job_cleanup's reopen_backing_file(writable=false), meant to give the hidden and "
    "secondary disks back the read-only state start found, fails silently (no errp) while "
    "a writer is still attached: the backup filter's target child on the hidden disk (the "
    "filter is unreferenced by the job's clean, but the job holds it until it is freed, "
    "after the completion callback that cleans up), and from 6.1 (3b78420bb1 'replication: "
    "Properly attach children') the node's own `hidden disk` and `secondary disk` children; "
    "both disks, reopened together, stay read-write",
)
EJECTED_HIDDEN_REOPEN_CRASHES = Bug(
    "5.2, 7.2, 10.0 and the master of 2026-02-15 seen; since 3cdc69d31b 'block: Pass "
    "parent_is_format to .inherit_options()' (5.1); 11.1.3 has a fix newer than that master "
    "(11.0 not run)",
    "once qcow2 has ejected a read-only hidden disk (bs->drv = NULL), the backup job's "
    "cleanup queues it for the reopen back to read-only, and bdrv_reopen_queue_child reads "
    "bs->drv->is_format for its children: SIGSEGV at a stop, a failover or the node's close",
)
EJECTED_ACTIVE_COMMIT_CRASHES = Bug(
    "5.2, 7.2, 10.0, 11.1 and the master of 2026-02-15 seen; since 9c60a5d197 'block: "
    "Require aligned image size to avoid assertion failure' (5.1)",
    "a failover once qcow2 has ejected the active disk: commit_active_start adds the "
    "commit job's node, the permission refresh's alignment check (bdrv_node_refresh_perm) "
    "takes the image size modulo the ejected node's bl.request_alignment, which is 0 "
    "(bdrv_refresh_limits zeroes the limits and returns at once for a node without a "
    "driver): SIGFPE",
)
