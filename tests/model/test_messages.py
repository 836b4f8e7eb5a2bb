"""QEMU's exact texts: every error_setg of the seed, the open-time messages, the QMP layer's."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from harness import ops
from harness.model import PROFILES
from harness.model import messages as msg
from harness.model.factory import secondary_model
from harness.model.profiles import SEED_4_1, V5_0, V5_1, V7_2, V9_0, V10_0
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


@pytest.mark.xfail(
    strict=True,
    reason="model lacks the seed's 'Active disk %s is ejected' / 'Hidden disk %s is ejected' "
    "(secondary_do_checkpoint when the layer's drv is NULL): no text in messages.py, no path",
)
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
    (no release has changed one yet) with the same words in every profile."""
    functions = [
        n for n, v in vars(msg).items() if inspect.isfunction(v) and v.__module__ == msg.__name__
    ]
    for p in PROFILES:
        for name in _module_texts():
            assert getattr(p.texts, name) == getattr(msg, name), (p.name, name)
        for name in functions:
            assert callable(getattr(p.texts, name)), (p.name, name)
        assert p.texts.mode_mismatch(0, 1) == msg.mode_mismatch(0, 1)
        assert p.texts.schema_bad_mode("x") == msg.schema_bad_mode("x")
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
