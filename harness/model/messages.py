"""QEMU's exact error texts for the replication filter and its QMP commands.

Where QEMU's text is the contract, cases compare it exactly; keeping every
string here gives the README's coverage table one place to point at. The model
and the cases read them through the probed release's profile (`Texts`, below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

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


# replication_start's reopen of the hidden and secondary disks (block.c
# bdrv_reopen_prepare): a read-only node whose driver cannot be reopened
def reopen_unsupported(fmt: str, node: str) -> str:
    return f"Block format '{fmt}' used by node '{node}' does not support reopening files"


# checkpoint
BACKUP_CANCELLED = "Backup job was cancelled unexpectedly"


# secondary_do_checkpoint: a layer whose driver qcow2 dropped (bs->drv = NULL)
def active_ejected(node: str) -> str:
    return f"Active disk {node} is ejected"


def hidden_ejected(node: str) -> str:
    return f"Hidden disk {node} is ejected"


SEED_CANNOT_EMPTY_ACTIVE = "Cannot make active disk empty"
SEED_CANNOT_EMPTY_HIDDEN = "Cannot make hidden disk empty"


def failed_to_empty(filename: str, strerror: str) -> str:
    return f"Failed to empty {filename}: {strerror}"


# get_error / stop
NOT_RUNNING = "Block replication is not running"
IO_ERROR = "I/O error occurred"

# qmp_xen_set_replication
FAILOVER_ON_ENABLE = "Parameter 'failover' is only for stopping replication"

# x-colo-lost-heartbeat (migration/colo-failover.c)
COLO_FEATURE_DISABLED = "The feature 'colo' is not enabled"
COLO_NOT_IN_MODE = "VM is not in COLO mode"
# migrate-set-capabilities, 11.x
COLO_NEEDS_RETURN_PATH = "Capability 'x-colo' requires capability 'return-path'"

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


@dataclass(frozen=True, slots=True)
class Texts:
    """QEMU's texts as one release prints them: a profile's `texts` (harness.model.profiles).

    The model answers with them and the cases state them (their `msg` fixture is the
    probed build's `profile.texts`), so the two cannot disagree, and a release that words
    something differently is one `replace(texts, ...)` in its profile. Each name above is
    here under the same name; below them, the block layer's and QAPI's texts that cases
    state and the model has no path to.
    """

    # 5.1: a failed make-empty says "Failed to empty <file>: <strerror>" (before:
    # "Cannot make active disk empty" / "Cannot make hidden disk empty").
    failed_to_empty_message: bool
    # 9.0 ("blockdev: Fix block_resize error reporting for op blockers"): block_resize of
    # a node an op blocker guards answers with the blocker's text; before, with its
    # `device` argument, which is NULL when node-name is given: "Device '(null)' is in use".
    block_resize_names_blocker: bool
    # 6.0 ("block: Clarify error messages pertaining to 'node-name'", 785ec4b1b9, and
    # "blockdev: Clarify error messages pertaining to 'node-name'", ef2e38a1a1): the
    # node-name lookups' texts quote the names and say node-name; before, bdrv_lookup_bs
    # says "Cannot find device=X nor node_name=X" and blockdev-del "Cannot find node X".
    node_name_texts_quoted: bool
    # 6.1 ("block: improve permission conflict error message", 30ebb9aa92, with
    # "block: improve bdrv_child_get_parent_desc()", 2c0a3acb95, and "block-backend:
    # improve blk_root_get_parent_desc()", fd240a184b): a permission conflict names both
    # edges ("Permission conflict on node ..."); before, bdrv_check_update_perm checked the
    # changing edge against each existing one and named only the existing one ("Conflicts
    # with use by X as 'edge', which uses/does not allow 'perm' on node"), a node parent
    # by its bare device-or-node name, an unnamed BlockBackend as "a block device".
    perm_conflict_names_both: bool
    # 6.2 ("qapi: Improve input_type_enum()'s error message", ea29331ba6): a value an
    # enum does not have is "Parameter 'mode' does not accept value 'X'"; before, QAPI's
    # QERR_INVALID_PARAMETER, "Invalid parameter 'X'".
    enum_error_names_parameter: bool
    # What a backup job's filter says when inserting it above its source meets a
    # permission conflict: before 6.1 the backup-top filter is appended without its
    # target's permissions, which are taken after ("Cannot set permissions for backup-top
    # filter: "); 6.1 ("block/backup-top: drop .active", b75d64b329) takes them in
    # bdrv_append ("Cannot append backup-top filter: "); 6.2 ("block/copy-before-write:
    # make public block driver", 751cec7a26) inserts copy-before-write with
    # bdrv_insert_node ("Could not replace node: ", f053b7e800).
    backup_filter_prefix: str
    # 10.2: an HMP command's error prints after "Error: " (drive_add's among them).
    hmp_error_prefix: str = ""
    # 8.0 ("migration/colo: Improve an x-colo-lost-heartbeat error message",
    # 43aef7e632): x-colo-lost-heartbeat outside COLO says "VM is not in COLO mode";
    # before, QERR_FEATURE_DISABLED's "The feature 'colo' is not enabled".
    colo_not_in_mode: bool = False

    MISSING_MODE: str = MISSING_MODE
    BAD_MODE: str = BAD_MODE
    PRIMARY_TOP_ID: str = PRIMARY_TOP_ID
    MISSING_TOP_ID: str = MISSING_TOP_ID
    SCHEMA_MISSING_MODE: str = SCHEMA_MISSING_MODE
    RUNNING_OR_DONE: str = RUNNING_OR_DONE
    NO_ACTIVE_BACKING: str = NO_ACTIVE_BACKING
    NO_HIDDEN_BACKING: str = NO_HIDDEN_BACKING
    NO_BLOCK_BACKEND: str = NO_BLOCK_BACKEND
    LENGTHS_DIFFER: str = LENGTHS_DIFFER
    NO_MAKE_EMPTY: str = NO_MAKE_EMPTY
    BAD_TOP: str = BAD_TOP
    BLOCKER: str = BLOCKER
    BACKUP_CANCELLED: str = BACKUP_CANCELLED
    SEED_CANNOT_EMPTY_ACTIVE: str = SEED_CANNOT_EMPTY_ACTIVE
    SEED_CANNOT_EMPTY_HIDDEN: str = SEED_CANNOT_EMPTY_HIDDEN
    NOT_RUNNING: str = NOT_RUNNING
    IO_ERROR: str = IO_ERROR
    FAILOVER_ON_ENABLE: str = FAILOVER_ON_ENABLE
    ERRP_ASSERTION: str = ERRP_ASSERTION
    COLO_FEATURE_DISABLED: str = COLO_FEATURE_DISABLED
    COLO_NOT_IN_MODE: str = COLO_NOT_IN_MODE
    COLO_NEEDS_RETURN_PATH: str = COLO_NEEDS_RETURN_PATH

    @property
    def colo_not_enabled(self) -> str:
        """x-colo-lost-heartbeat on a QEMU that is not in COLO."""
        return self.COLO_NOT_IN_MODE if self.colo_not_in_mode else self.COLO_FEATURE_DISABLED

    # ---- the block layer's and QAPI's (block.c, blockdev.c, block/io.c, qapi)
    SCHEMA_MISSING_FILE: str = "Parameter 'file' is missing"
    DRIVE_MISSING_FILE: str = 'A block device must be specified for "file"'
    NEED_ROOT: str = "Need a root block node"
    MIRROR_INTO_ITSELF: str = "Can't mirror node into itself"
    # bdrv_co_write_req_prepare, a truncate without RESIZE on the child
    RESIZE_ASSERTION: str = "Assertion `child->perm & BLK_PERM_RESIZE' failed"
    RESIZE_NULL_DEVICE: str = "Device '(null)' is in use"

    # bdrv_co_write_req_prepare, a write through a child without WRITE (before 6.1, a
    # FAILOVER_FAILED write reaching the secondary disk through hidden's backing child)
    WRITE_ASSERTION: str = "Assertion `child->perm & BLK_PERM_WRITE' failed"
    # &error_abort meeting a permission conflict (block-stream of a replication node, 5.2)
    PERM_CHECK_ABORT: str = "Unexpected error in bdrv_check_update_perm()"

    def schema_bad_mode(self, value: str) -> str:
        if self.enum_error_names_parameter:
            return schema_bad_mode(value)
        return f"Invalid parameter '{value}'"

    def hmp_error(self, text: str) -> str:
        """`text` as an HMP command prints it when it fails."""
        return self.hmp_error_prefix + text

    def mode_mismatch(self, needs: int, got: int) -> str:
        return mode_mismatch(needs, got)

    def reopen_unsupported(self, fmt: str, node: str) -> str:
        return reopen_unsupported(fmt, node)

    def active_ejected(self, node: str) -> str:
        return active_ejected(node)

    def hidden_ejected(self, node: str) -> str:
        return hidden_ejected(node)

    def failed_to_empty(self, filename: str, strerror: str, *, disk: str) -> str:
        """secondary_do_checkpoint's make-empty failure on `disk` ("active" or "hidden")."""
        if self.failed_to_empty_message:
            return failed_to_empty(filename, strerror)
        return self.SEED_CANNOT_EMPTY_ACTIVE if disk == "active" else self.SEED_CANNOT_EMPTY_HIDDEN

    def node_busy(self, node: str, reason: str | None = None) -> str:
        return node_busy(node, self.BLOCKER if reason is None else reason)

    def quorum_no_child(self, parent: str, child: str) -> str:
        return quorum_no_child(parent, child)

    def quorum_below_threshold(self, threshold: int) -> str:
        return quorum_below_threshold(threshold)

    # ---- the block layer's and QAPI's, with arguments

    def block_resize_busy(self, blocked: str) -> str:
        """block_resize of a node an op blocker guards; `blocked`: the blocker's text."""
        return blocked if self.block_resize_names_blocker else self.RESIZE_NULL_DEVICE

    def job_busy(self, node: str, job: str = "backup") -> str:
        return f"Node '{node}' is busy: block device is in use by block job: {job}"

    def backing_busy(self, node: str, parent: str) -> str:
        return f"Node '{node}' is busy: node is used as backing hd of '{parent}'"

    def not_owned(self, node: str) -> str:
        return f"Node {node} is not owned by the monitor"

    def in_use(self, node: str) -> str:
        return f"Node {node} is in use"

    def node_not_found(self, node: str) -> str:
        """blockdev-del of a node that does not exist."""
        if self.node_name_texts_quoted:
            return f"Failed to find node with node-name='{node}'"
        return f"Cannot find node {node}"

    def perm_conflict(
        self,
        node: str,
        perm: str,
        user: str,
        user_edge: str,
        holder: str,
        edge: str,
        *,
        existing: Literal["user", "holder"],
    ) -> str:
        """`user` (over `user_edge`) requires `perm` on `node`, which `holder` (over `edge`)
        does not share; parents as 6.1 describes them ("node 'rep'", "commit job 'j'",
        "an unnamed block device"). `existing`: which of the two edges was there before
        the operation; a text that names one edge only (before 6.1) names that one."""
        if self.perm_conflict_names_both:
            return (
                f"Permission conflict on node '{node}': permissions '{perm}' are both "
                f"required by {user} (uses node '{node}' as '{user_edge}' child) and "
                f"unshared by {holder} (uses node '{node}' as '{edge}' child)."
            )
        if existing == "user":
            return (
                f"Conflicts with use by {self._old_parent_desc(user)} as '{user_edge}', "
                f"which uses '{perm}' on {node}"
            )
        return (
            f"Conflicts with use by {self._old_parent_desc(holder)} as '{edge}', which does not "
            f"allow '{perm}' on {node}"
        )

    def export_in_use(self, export_id: str) -> str:
        """block-export-del mode=safe while a client is connected."""
        return f"export '{export_id}' still in use"

    @staticmethod
    def _old_parent_desc(desc: str) -> str:
        """A parent as QEMU before 6.1 describes it in a permission conflict: a node by its
        bare name (bdrv_get_device_or_node_name), an unnamed BlockBackend as "a block
        device"; a job as later ("commit job 'j'")."""
        if desc == "an unnamed block device":
            return "a block device"
        m = re.fullmatch(r"node '(.*)'", desc)
        return m.group(1) if m else desc

    def backup_filter_refused(self, reason: str) -> str:
        """A backup job's filter could not be inserted above its source (see
        backup_filter_prefix)."""
        return self.backup_filter_prefix + reason

    def schema_bad_type(self, param: str) -> str:
        return f"Invalid parameter type for '{param}', expected: string"

    def schema_unexpected(self, param: str) -> str:
        return f"Parameter '{param}' is unexpected"

    def unsupported_option(self, param: str) -> str:
        return f"Block format 'replication' does not support the option '{param}'"

    def cannot_find(self, ref: str) -> str:
        """bdrv_lookup_bs with `ref` as both device and node name (a `file` reference)."""
        if self.node_name_texts_quoted:
            return f"Cannot find device='{ref}' nor node-name='{ref}'"
        return f"Cannot find device={ref} nor node_name={ref}"

    def could_not_open(self, path: str, strerror: str = "No such file or directory") -> str:
        return f"Could not open '{path}': {strerror}"
