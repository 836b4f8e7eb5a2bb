"""The model's answers beyond the replication commands (harness.model.lifecycle): a quit
and a close while the failover commit runs, an NBD export that comes back and the
client that reconnects, read-only states."""

from __future__ import annotations

import pytest
from model_helpers import by_profile, started

from harness import faults, ops
from harness.model import Model, Profile
from harness.model import messages as msg
from harness.model.build import build_model
from harness.model.extents import UNDEF
from harness.model.replication import MIRROR_MAX_OPS
from harness.observe import IO_OK, QMP_OK, QmpResult, status
from harness.topology import standard
from harness.units import KiB

CL = 64 * KiB


def held(profile: Profile, runs: int) -> Model:
    """A failover whose commit is held, `runs` separate chunks to copy."""
    m = started(profile)
    for i in range(runs):
        m.apply(ops.Write(i * 2 * CL, 4 * KiB, 0x30 + i % 64))
    m.apply(faults.HoldCommit())
    assert m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
    assert not m.settled()
    return m


@by_profile()
@pytest.mark.parametrize("close", [ops.Quit(), ops.BlockdevDel()])
def test_a_close_cancels_the_held_commit_whose_copies_land(profile: Profile, close: ops.Op) -> None:
    m = held(profile, 4)
    assert m.apply(close) == QMP_OK
    assert m.settled()
    sec = m.disks["secondary"]
    assert [v for _, _, v in sec.data.items() if v not in (0, UNDEF)] == [0x30, 0x31, 0x32, 0x33]


@by_profile()
def test_a_bigger_commit_cannot_tell_which_copies_landed(profile: Profile) -> None:
    m = held(profile, MIRROR_MAX_OPS + 1)
    assert m.apply(ops.Quit()) == QMP_OK
    assert {v for _, _, v in m.disks["secondary"].data.items()} == {UNDEF}
    assert m.machines[ops.SECONDARY].gone


@by_profile()
def test_read_only_answers_the_disks_state(profile: Profile) -> None:
    m = started(profile)
    assert m.apply(ops.ReadOnly("hidden")) == QmpResult(True, False)
    assert m.apply(ops.ReadOnly("secondary")) == QmpResult(True, False)


# ---- the primary's NBD link


def primary(profile: Profile, delay: int) -> Model:
    m = build_model(standard.primary(reconnect_delay=delay), profile)
    assert m.apply(ops.Start(primary=True, machine=ops.PRIMARY)) == QMP_OK
    assert m.nodes[ops.REP].reconnect_delay == delay
    return m


def child(m: Model) -> list[tuple[int, int, int]]:
    return list(m.disks["primary-disk"].data.items())


@by_profile()
def test_a_write_waiting_in_the_delay_arrives(profile: Profile) -> None:
    m = primary(profile, 5)
    m.apply(faults.LinkDown())
    seen = m.apply(faults.LinkUpDuringWrite(offset=0, length=CL, pattern=0x22))
    assert seen == IO_OK and (0, CL, 0x22) in child(m)
    assert m.apply(ops.Status(machine=ops.PRIMARY)) == status(None)
    assert m.apply(ops.Write(CL, CL, 0x23)) == IO_OK and (CL, 2 * CL, 0x23) in child(m)


@by_profile()
def test_without_a_delay_the_write_is_lost_until_the_client_reconnects(profile: Profile) -> None:
    m = primary(profile, 0)
    m.apply(faults.LinkDown())
    assert m.apply(faults.LinkUpDuringWrite(offset=0, length=CL, pattern=0x22)) == IO_OK
    assert not child(m)
    assert m.apply(ops.Status(machine=ops.PRIMARY)) == status(msg.IO_ERROR)
    with pytest.raises(ValueError, match="AwaitReconnect"):
        m.apply(ops.Write(CL, CL, 0x23))
    assert m.apply(faults.AwaitReconnect(CL, CL, 0x24)) == IO_OK
    assert child(m) == [(CL, 2 * CL, 0x24)]
    assert m.apply(ops.Status(machine=ops.PRIMARY)) == status(msg.IO_ERROR)


@by_profile()
def test_a_link_up_restores_the_export_only(profile: Profile) -> None:
    m = primary(profile, 1)
    m.apply(faults.LinkDown(mode="server"))
    assert ("child", "export") not in m.exports
    assert m.apply(faults.LinkUp(mode="server")) == QMP_OK
    assert m.exports[("child", "export")] is m.disks["primary-disk"]
    assert m.nodes[ops.REP].reconnect_pending and not m.nodes[ops.REP].link_up
