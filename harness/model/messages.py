"""QEMU's exact error texts for the replication filter and its QMP commands.

Where QEMU's text is the contract, cases compare it exactly; keeping every
string here gives the README's coverage table one place to point at.
"""

from __future__ import annotations

# replication_open (schema-less paths; blockdev-add's schema answers first)
MISSING_MODE = "Missing the option mode"
BAD_MODE = "The option mode's value should be primary or secondary"
PRIMARY_TOP_ID = "The primary side does not support option top-id"
MISSING_TOP_ID = "Missing the option top-id"
# blockdev-add's schema checks for the same inputs
SCHEMA_MISSING_MODE = "Parameter 'mode' is missing"


def schema_bad_mode(value: str) -> str:
    return f"Parameter 'mode' does not accept value '{value}'"


# replication_start
RUNNING_OR_DONE = "Block replication is running or done"


def mode_mismatch(needs: int, got: int) -> str:
    return f"The parameter mode's value is invalid, needs {needs}, but got {got}"


NO_ACTIVE_BACKING = "Active disk doesn't have backing file"
NO_HIDDEN_BACKING = "Hidden disk doesn't have backing file"
NO_BLOCK_BACKEND = "The secondary disk doesn't have block backend"
LENGTHS_DIFFER = "Active disk, hidden disk, secondary disk's length are not the same"
NO_MAKE_EMPTY = "Active disk or hidden disk doesn't support make_empty"
BAD_TOP = "No top_bs or it is invalid"
BLOCKER = "Block device is in use by internal backup job"

# checkpoint
BACKUP_CANCELLED = "Backup job was cancelled unexpectedly"
SEED_CANNOT_EMPTY_ACTIVE = "Cannot make active disk empty"
SEED_CANNOT_EMPTY_HIDDEN = "Cannot make hidden disk empty"


def failed_to_empty(filename: str, strerror: str) -> str:
    return f"Failed to empty {filename}: {strerror}"


# get_error / stop
NOT_RUNNING = "Block replication is not running"
IO_ERROR = "I/O error occurred"

# qmp_xen_set_replication
FAILOVER_ON_ENABLE = "Parameter 'failover' is only for stopping replication"

# the abort of the known start-retry bug
ERRP_ASSERTION = "Assertion `*errp == NULL' failed"


def node_busy(node: str, reason: str = BLOCKER) -> str:
    """The op blocker's answer to blockdev-del and friends."""
    return f"Node '{node}' is busy: {reason}"


# x-blockdev-change on a quorum (blockdev.c qmp_x_blockdev_change, block/quorum.c)
def quorum_no_child(parent: str, child: str) -> str:
    return f"Node '{parent}' does not have child '{child}'"


def quorum_below_threshold(threshold: int) -> str:
    return f"The number of children cannot be lower than the vote threshold {threshold}"
