"""QEMU's exact texts: every error_setg of the seed, the open-time messages, the QMP layer's."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from harness import ops
from harness.model import PROFILES
from harness.model import messages as msg
from harness.model.build import secondary_model
from harness.model.profiles import SEED_4_1, V5_0, V5_1, V5_2, V6_0, V6_1, V6_2, V7_2, V9_0, V10_0
from harness.observe import qmp_error, status

# Every error text of the seed (block/replication.c ~4.1), verbatim; %d/%s filled in below.
SEED_TEXTS = {
    "MISSING_MODE": "Missing the option mode",
    "PRIMARY_TOP_ID": "The primary side does not support option top-id",
    "MISSING_TOP_ID": "Missing the option top-id",
    "BAD_MODE": "The option mode's value should be primary or secondary",
    "BACKUP_CANCELLED": "Backup job was cancelled unexpectedly",
    "SEED_CANNOT_EMPTY_ACTIVE": "Cannot make active disk empty",
    "SEED_CANNOT_EMPTY_HIDDEN": "Cannot make hidden disk empty",
    "RUNNING_OR_DONE": "Block replication is running or done",
    "NO_ACTIVE_BACKING": "Active disk doesn't have backing file",
    "NO_HIDDEN_BACKING": "Hidden disk doesn't have backing file",
    "NO_BLOCK_BACKEND": "The secondary disk doesn't have block backend",
    "LENGTHS_DIFFER": "Active disk, hidden disk, secondary disk's length are not the same",
    "NO_MAKE_EMPTY": "Active disk or hidden disk doesn't support make_empty",
    "BLOCKER": "Block device is in use by internal backup job",
    "BAD_TOP": "No top_bs or it is invalid",
    "NOT_RUNNING": "Block replication is not running",
    "IO_ERROR": "I/O error occurred",
}


@pytest.mark.parametrize(("name", "text"), sorted(SEED_TEXTS.items()))
def test_seed_text(name: str, text: str) -> None:
    assert getattr(msg, name) == text


@pytest.mark.parametrize(
    ("needs", "got", "text"),
    [
        (0, 1, "The parameter mode's value is invalid, needs 0, but got 1"),
        (1, 0, "The parameter mode's value is invalid, needs 1, but got 0"),
    ],
)
def test_mode_mismatch(needs: int, got: int, text: str) -> None:
    assert msg.mode_mismatch(needs, got) == text


def _all_texts() -> str:
    return inspect.getsource(msg)


def test_seed_ejected_texts_present() -> None:
    src = _all_texts()
    assert "Active disk {" in src or "Active disk %s is ejected" in src
    assert "Hidden disk {" in src or "Hidden disk %s is ejected" in src


# ---- open time (replication_open; blockdev-add's schema answers first)


def test_open_texts_schema_less_paths() -> None:
    assert msg.MISSING_MODE == "Missing the option mode"
    assert msg.BAD_MODE == "The option mode's value should be primary or secondary"
    assert msg.PRIMARY_TOP_ID == "The primary side does not support option top-id"
    assert msg.MISSING_TOP_ID == "Missing the option top-id"


def test_open_texts_blockdev_add_schema() -> None:
    assert msg.SCHEMA_MISSING_MODE == "Parameter 'mode' is missing"
    assert msg.schema_bad_mode("bogus") == "Parameter 'mode' does not accept value 'bogus'"
    assert msg.schema_bad_mode("") == "Parameter 'mode' does not accept value ''"


# ---- later versions and the QMP layer


def test_failed_to_empty() -> None:
    assert (
        msg.failed_to_empty("/tmp/a.qcow2", "Input/output error")
        == "Failed to empty /tmp/a.qcow2: Input/output error"
    )


def test_qmp_layer_texts() -> None:
    assert msg.FAILOVER_ON_ENABLE == "Parameter 'failover' is only for stopping replication"
    assert msg.ERRP_ASSERTION == "Assertion `*errp == NULL' failed"


def test_node_busy() -> None:
    assert msg.node_busy("top") == (
        "Node 'top' is busy: Block device is in use by internal backup job"
    )
    assert msg.node_busy("n", "other") == "Node 'n' is busy: other"


# ---- one release's texts (profile.texts): what the model answers and the cases state


def _module_texts() -> list[str]:
    return [n for n, v in vars(msg).items() if n.isupper() and isinstance(v, str)]


def test_every_text_is_a_profile_text() -> None:
    """Each of the module's texts and text functions is in Texts under its own name, and
    with the same words in every profile (but schema_bad_mode: QAPI's, below)."""
    functions = [
        n for n, v in vars(msg).items() if inspect.isfunction(v) and v.__module__ == msg.__name__
    ]
    for p in PROFILES:
        for name in _module_texts():
            assert getattr(p.texts, name) == getattr(msg, name), (p.name, name)
        for name in functions:
            assert callable(getattr(p.texts, name)), (p.name, name)
        assert p.texts.mode_mismatch(0, 1) == msg.mode_mismatch(0, 1)
        assert p.texts.node_busy("n") == msg.node_busy("n")
        assert p.texts.node_busy("n", "why") == msg.node_busy("n", "why")
        assert p.texts.quorum_no_child("q", "c") == msg.quorum_no_child("q", "c")
        assert p.texts.quorum_below_threshold(2) == msg.quorum_below_threshold(2)


def test_failed_to_empty_by_release() -> None:
    assert SEED_4_1.texts.failed_to_empty("a.qcow2", "EIO", disk="active") == (
        "Cannot make active disk empty"
    )
    assert V5_0.texts.failed_to_empty("h.qcow2", "EIO", disk="hidden") == (
        "Cannot make hidden disk empty"
    )
    for p in (V5_1, V10_0):
        assert p.texts.failed_to_empty("h.qcow2", "EIO", disk="hidden") == (
            "Failed to empty h.qcow2: EIO"
        )


def test_block_resize_busy_by_release() -> None:
    blocked = msg.node_busy("rep")
    assert V7_2.texts.block_resize_busy(blocked) == "Device '(null)' is in use"
    assert V9_0.texts.block_resize_busy(blocked) == blocked
    assert V10_0.texts.block_resize_busy(blocked) == blocked


def test_a_release_rewords_a_text_in_one_place() -> None:
    """How a profile states a changed text: the model answers with it at once."""
    texts = dataclasses.replace(V10_0.texts, NOT_RUNNING="Replication is not running")
    profile = dataclasses.replace(V10_0, texts=texts)
    m = secondary_model(profile)
    assert m.apply(ops.Status()) == status("Replication is not running")
    assert m.apply(ops.Stop(primary=False)) == qmp_error("Replication is not running")


# ---- the block layer's and QAPI's texts that releases reworded (5.2's as QEMU 5.2.0 prints
# them)


def test_schema_bad_mode_by_release() -> None:
    for p in (V5_2, V6_1):
        assert p.texts.schema_bad_mode("bogus") == "Invalid parameter 'bogus'"
    for p in (V6_2, V10_0):
        assert p.texts.schema_bad_mode("bogus") == msg.schema_bad_mode("bogus")


def test_node_name_texts_by_release() -> None:
    assert V5_2.texts.cannot_find("n") == "Cannot find device=n nor node_name=n"
    assert V5_2.texts.node_not_found("hidden") == "Cannot find node hidden"
    for p in (V6_0, V10_0):
        assert p.texts.cannot_find("n") == "Cannot find device='n' nor node-name='n'"
        assert p.texts.node_not_found("hidden") == "Failed to find node with node-name='hidden'"


def test_perm_conflict_by_release() -> None:
    args = ("active", "resize", "an unnamed block device", "root", "node 'rep'", "file")
    assert V6_1.texts.perm_conflict(*args, existing="holder") == (
        "Permission conflict on node 'active': permissions 'resize' are both required by an "
        "unnamed block device (uses node 'active' as 'root' child) and unshared by node 'rep' "
        "(uses node 'active' as 'file' child)."
    )
    assert V6_1.texts.perm_conflict(*args, existing="user") == V6_1.texts.perm_conflict(
        *args, existing="holder"
    )
    # before 6.1: only the existing edge, its parent by its bare name
    assert V5_2.texts.perm_conflict(*args, existing="holder") == (
        "Conflicts with use by rep as 'file', which does not allow 'resize' on active"
    )
    assert V6_0.texts.perm_conflict(*args, existing="user") == (
        "Conflicts with use by a block device as 'root', which uses 'resize' on active"
    )
    job = ("active", "write", "node 'rep'", "file", "stream job 'j'", "intermediate node")
    assert V5_2.texts.perm_conflict(*job, existing="holder") == (
        "Conflicts with use by stream job 'j' as 'intermediate node', which does not allow "
        "'write' on active"
    )


def test_backup_filter_refused_by_release() -> None:
    assert V5_2.texts.backup_filter_refused("x") == (
        "Cannot set permissions for backup-top filter: x"
    )
    assert V6_1.texts.backup_filter_refused("x") == "Cannot append backup-top filter: x"
    assert V6_2.texts.backup_filter_refused("x") == "Could not replace node: x"
    assert V7_2.texts.backup_filter_refused("x") == "Could not replace node: x"
