"""Guest I/O through the replication node: the stage x mode x request table."""

from __future__ import annotations

from typing import Any

import pytest
from model_helpers import CL, by_profile, guest, items, node, started, started_primary

from harness import ops
from harness.model import Model, Profile
from harness.model.build import primary_model, secondary_model
from harness.model.replication import Stage
from harness.observe import EIO, IO_EIO, IO_OK, Crashed, IoResult

# (mode, how the stage is reached)
SETUPS = [
    ("primary", "none"),
    ("primary", "running"),
    ("primary", "failover"),  # cannot occur in QEMU (a primary stop goes to DONE): forced
    ("primary", "failover_failed"),  # likewise forced
    ("primary", "done"),
    ("secondary", "none"),
    ("secondary", "running"),
    ("secondary", "failover"),  # the model's commit is synchronous: forced
    ("secondary", "failover_failed"),
    ("secondary", "done_failover"),
    ("secondary", "done_plain"),
]
REQUESTS = ["read", "write", "write_zeroes", "discard", "flush"]


def setup(profile: Profile, mode: str, how: str) -> Model:
    if mode == "primary":
        m = primary_model(profile) if how == "none" else started_primary(profile)
        if how == "failover":
            node(m).stage = Stage.FAILOVER
        elif how == "failover_failed":
            node(m).stage = Stage.FAILOVER_FAILED
        elif how == "done":
            m.apply(ops.Stop(primary=True, machine=ops.PRIMARY))
        return m
    m = secondary_model(profile) if how == "none" else started(profile)
    if how == "failover":
        node(m).stage = Stage.FAILOVER
    elif how == "failover_failed":
        node(m).commit_fails = True
        m.apply(ops.Stop(primary=False, failover=True))
    elif how == "done_failover":
        m.apply(ops.Stop(primary=False, failover=True))
    elif how == "done_plain":
        m.apply(ops.Stop(primary=False, failover=False))
    m.apply(ops.Settle())
    return m


def request(kind: str) -> ops.Op:
    return {
        "read": ops.Read(CL, 512),
        "write": ops.Write(CL, 512, 0x5A),
        "write_zeroes": ops.WriteZeroes(CL, 512),
        "discard": ops.Discard(CL, 512),
        "flush": ops.Flush(),
    }[kind]


def expected(profile: Profile, mode: str, how: str, kind: str) -> Any:
    """The notes' I/O table."""
    if kind in ("discard", "flush"):
        return IO_OK  # no callback: success in every stage (flush: the children are fine)
    if mode == "primary":
        if kind == "read":
            return IO_EIO
        return IO_OK if how == "running" else IO_EIO
    if how == "none":
        return IO_EIO
    if kind == "read":
        return "data"
    if how == "failover_failed" and profile.failover_failed_write_crashes:
        return Crashed
    return IO_OK


@by_profile()
@pytest.mark.parametrize("kind", REQUESTS)
@pytest.mark.parametrize(("mode", "how"), SETUPS, ids=[f"{a}-{b}" for a, b in SETUPS])
def test_io_table(profile: Profile, mode: str, how: str, kind: str) -> None:
    m = setup(profile, mode, how)
    n = node(m)
    st, err = n.stage, n.error
    obs = m.apply(request(kind))
    want = expected(profile, mode, how, kind)
    if want == "data":
        assert isinstance(obs, IoResult) and obs.ok and obs.data == ((CL, 512, 0),)
    elif want is Crashed:
        assert isinstance(obs, Crashed)
    else:
        assert obs == want
    assert n.stage is st
    if mode == "secondary" or kind != "write" or how != "running":
        assert n.error is err  # only a primary write's child error touches `error`


def test_eio_text() -> None:
    assert IoResult(False, "Input/output error") == IO_EIO and EIO == "Input/output error"


# ---- where the data lands


@by_profile()
@pytest.mark.parametrize("how", ["running", "failover", "done_plain"])
@pytest.mark.parametrize("zeroes", [False, True])
def test_secondary_write_goes_to_active(profile: Profile, how: str, zeroes: bool) -> None:
    m = setup(profile, "secondary", how)
    sec_before, hid_before = items(m, "secondary"), items(m, "hidden")
    op = ops.WriteZeroes(CL + 10, 100) if zeroes else ops.Write(CL + 10, 100, 7)
    assert m.apply(op) == IO_OK
    val = 0 if zeroes else 7
    assert m.disks["active"].data.pieces(CL + 10, CL + 110) == [(CL + 10, CL + 110, val)]
    assert items(m, "secondary") == sec_before and items(m, "hidden") == hid_before
    assert guest(m, CL, 200) == (
        ((CL, 200, 0),) if zeroes else ((CL, 10, 0), (CL + 10, 100, 7), (CL + 110, 90, 0))
    )


@by_profile()
def test_secondary_write_after_failover_goes_to_secondary_disk(profile: Profile) -> None:
    m = setup(profile, "secondary", "done_failover")
    active_before = items(m, "active")
    assert m.apply(ops.Write(CL, 100, 7)) == IO_OK
    assert items(m, "active") == active_before
    assert m.disks["secondary"].data.pieces(CL, CL + 100) == [(CL, CL + 100, 7)]
    assert guest(m, CL, 100) == ((CL, 100, 7),)


@by_profile()
def test_secondary_read_sees_active_then_hidden_then_secondary(profile: Profile) -> None:
    m = started(profile)
    m.disks["secondary"].data.set(0, 3 * CL, 1)
    m.disks["hidden"].data.set(CL, 3 * CL, 2)
    m.disks["active"].data.set(2 * CL, 3 * CL, 3)
    assert guest(m, 0, 4 * CL) == ((0, CL, 1), (CL, CL, 2), (2 * CL, CL, 3), (3 * CL, CL, 0))


@by_profile()
@pytest.mark.parametrize(("mode", "how"), SETUPS, ids=[f"{a}-{b}" for a, b in SETUPS])
def test_discard_changes_nothing(profile: Profile, mode: str, how: str) -> None:
    m = setup(profile, mode, how)
    if mode == "secondary" and how not in ("none", "failover_failed"):
        m.apply(ops.Write(0, 4 * CL, 1))
    before = {k: items(m, k) for k in m.disks}
    assert m.apply(ops.Discard(0, 4 * CL)) == IO_OK
    assert {k: items(m, k) for k in m.disks} == before


@by_profile()
def test_primary_write_goes_to_child(profile: Profile) -> None:
    m = started_primary(profile)
    assert m.apply(ops.Write(CL, CL, 7)) == IO_OK
    assert items(m, "child") == [(CL, 2 * CL, 7)]
    assert m.apply(ops.WriteZeroes(CL, 512)) == IO_OK
    assert items(m, "child") == [(CL, CL + 512, 0), (CL + 512, 2 * CL, 7)]
