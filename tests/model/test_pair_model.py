"""The COLO pair's parts of the model: quorums, the primary forwarding into the secondary's
export, and the fault switches (copy-before-write, make-empty and write errors, a held
failover commit)."""

from __future__ import annotations

import pytest
from model_helpers import CL, by_profile, d, guest, items, node, runs

from harness import ops
from harness.model import PROFILES, Model, Profile
from harness.model import messages as msg
from harness.model.build import secondary_model
from harness.model.disks import Disk
from harness.model.extents import UNDEF
from harness.model.quorum import QuorumNode
from harness.model.replication import ReplicationNode, Stage
from harness.observe import EIO, IO_OK, QMP_OK, IoResult, qmp_error, status
from harness.topology.values import Mode
from harness.units import KiB, MiB

P = ops.PRIMARY
PQ = "pq"
SQ = "sq"
PREP = "prep"


def pair_model(profile: Profile, *, start: bool = True) -> Model:
    """secondary_model plus the primary's local disk, quorum and forwarding node."""
    m = secondary_model(profile, size=4 * MiB)
    m.disks["secondary"].data.set(0, 1 * MiB, 0x11)
    local = m.add_disk(Disk("local", 4 * MiB))
    local.data.set(0, 1 * MiB, 0x11)
    q = m.quorums[PQ] = QuorumNode(PQ, P)
    q.add_child(local)
    sec = m.export
    assert sec is not None
    prep = m.add_node(P, ReplicationNode(PREP, Mode.PRIMARY, profile, sec, forward=m.nbd_write))
    q.add_child(prep)
    if start:
        assert m.apply(ops.Start(primary=False)) == QMP_OK
        assert m.apply(ops.Start(primary=True, machine=P)) == QMP_OK
    return m


def pw(off: int, length: int, pat: int) -> ops.Write:
    return ops.Write(off, length, pat, node=PQ)


@by_profile()
def test_quorum_write_reaches_both_disks_read_is_local(profile: Profile) -> None:
    m = pair_model(profile)
    assert m.apply(pw(0, CL, 0x22)) == IO_OK
    assert items(m, "local")[0] == (0, CL, 0x22)
    assert items(m, "secondary")[0] == (0, CL, 0x22)
    assert items(m, "hidden") == [(0, CL, 0x11)]  # copy-before-write saved the old data
    assert guest(m, 0, 2 * CL, PQ) == d((0, CL, 0x22), (CL, CL, 0x11))
    assert guest(m, 0, 2 * CL) == d((0, 2 * CL, 0x11))  # the secondary VM: last checkpoint
    m.apply(ops.Checkpoint())
    assert guest(m, 0, 2 * CL) == d((0, CL, 0x22), (CL, CL, 0x11))


@by_profile()
def test_quorum_before_primary_start_writes_local_only(profile: Profile) -> None:
    m = pair_model(profile, start=False)
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    assert m.apply(pw(0, CL, 0x22)) == IO_OK  # the replication child's EIO is outvoted
    assert items(m, "secondary") == [(0, MiB, 0x11)]
    assert m.apply(ops.Status(machine=P)) == status(msg.NOT_RUNNING)


@by_profile()
def test_quorum_fails_when_no_child_succeeds(profile: Profile) -> None:
    m = pair_model(profile, start=False)
    q = m.quorums[PQ]
    assert q.remove_child("children.0", profile.texts) is None
    assert m.apply(pw(0, CL, 0x22)) == IoResult(False, EIO)
    assert m.apply(ops.Read(0, CL, node=PQ)) == IoResult(False, EIO)


def test_quorum_child_names() -> None:
    texts = PROFILES[-1].texts
    q = QuorumNode(PQ, P)
    assert q.add_child(Disk("a", MiB)) == "children.0"
    assert q.add_child(Disk("b", MiB)) == "children.1"
    assert q.remove_child("children.2", texts) == msg.quorum_no_child(PQ, "children.2")
    assert q.remove_child("children.1", texts) is None
    assert q.remove_child("children.0", texts) == msg.quorum_below_threshold(1)
    assert q.add_child(Disk("c", MiB)) == "children.1"  # the newest index is reused
    assert q.remove_child("children.0", texts) is None
    assert q.add_child(Disk("d", MiB)) == "children.2"  # an older one is not


@by_profile()
def test_primary_link_down_stores_the_error(profile: Profile) -> None:
    m = pair_model(profile)
    node(m, PREP).link_up = False
    assert m.apply(pw(0, CL, 0x22)) == IO_OK
    assert items(m, "secondary") == [(0, MiB, 0x11)]
    assert m.apply(ops.Status(machine=P)) == status(msg.IO_ERROR)


@by_profile()
def test_forwarded_unaligned_write_pads_whole_sectors(profile: Profile) -> None:
    m = pair_model(profile)
    assert m.apply(pw(1000, 100, 0x33)) == IO_OK
    assert items(m, "local")[:3] == [(0, 1000, 0x11), (1000, 1100, 0x33), (1100, MiB, 0x11)]
    sec = items(m, "secondary")
    assert sec[:3] == [(0, 512, 0x11), (512, 1000, -1), (1000, 1100, 0x33)]
    assert sec[3] == (1100, 1536, -1)


@by_profile()
def test_cbw_error_fails_data_copies_only(profile: Profile) -> None:
    m = pair_model(profile)
    node(m).cbw_error = EIO
    assert m.nbd_write(0, CL, 0x22) == EIO  # a data cluster: the copy fails
    assert items(m, "secondary") == [(0, MiB, 0x11)]
    assert items(m, "hidden") == []
    assert m.nbd_write(2 * MiB, 2 * MiB + CL, 0x23) is None  # zeros: copied as metadata
    assert items(m, "hidden") == [(2 * MiB, 2 * MiB + CL, 0)]
    # through the primary: the write succeeds, the error is stored
    assert m.apply(pw(CL, CL, 0x24)) == IO_OK
    assert m.apply(ops.Status(machine=P)) == status(msg.IO_ERROR)


@by_profile()
def test_cbw_error_copies_leading_zero_clusters(profile: Profile) -> None:
    m = pair_model(profile)
    node(m).cbw_error = EIO
    assert m.nbd_write(MiB - CL, MiB + CL, 0x22) == EIO  # data first: nothing copied
    assert items(m, "hidden") == []
    m2 = pair_model(profile)
    node(m2).cbw_error = EIO
    m2.disks["secondary"].data.clear()
    m2.disks["secondary"].data.set(MiB + CL, MiB + 2 * CL, 0x12)
    assert m2.nbd_write(MiB, MiB + 2 * CL, 0x22) == EIO
    assert runs(m2.disks["hidden"]) == [(MiB, MiB + CL)]


@by_profile(lambda p: p.texts.failed_to_empty_message)
def test_make_empty_error_of_one_disk(profile: Profile) -> None:
    m = pair_model(profile)
    m.apply(ops.Write(0, 4 * KiB, 0x33))
    m.apply(pw(CL, CL, 0x22))
    hidden = m.disks["hidden"]
    hidden.filename = "json:{hidden}"
    hidden.make_empty_error = EIO
    assert m.apply(ops.Checkpoint()) == qmp_error(msg.failed_to_empty("json:{hidden}", EIO))
    assert items(m, "active") == []  # emptied first
    assert items(m, "hidden") == [(CL, 2 * CL, 0x11)]
    assert node(m).stage is Stage.RUNNING


@by_profile()
def test_write_error_of_the_active_disk(profile: Profile) -> None:
    m = pair_model(profile)
    m.disks["active"].write_error = EIO
    assert m.apply(ops.Write(0, 4 * KiB, 0x33)) == IoResult(False, EIO)
    assert items(m, "active") == []
    assert m.apply(ops.Status()) == status(None)


@by_profile(lambda p: p.ignore_after_failover)
def test_held_commit_writes_go_to_active_and_secondary(profile: Profile) -> None:
    m = pair_model(profile)
    m.apply(ops.Write(0, 4 * KiB, 0x33))
    node(m).commit_held = True
    assert m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
    assert m.apply(ops.Write(2 * MiB, 4 * KiB, 0x44)) == IO_OK
    assert (2 * MiB, 2 * MiB + 4 * KiB, 0x44) in items(m, "active")
    assert (2 * MiB, 2 * MiB + 4 * KiB, 0x44) in items(m, "secondary")
    node(m).commit_held = False
    m.apply(ops.Settle())
    want = d((2 * MiB, 4 * KiB, 0x44), (2 * MiB + 4 * KiB, 4 * KiB, 0))
    assert guest(m, 2 * MiB, 8 * KiB) == want


@pytest.mark.parametrize("quorum_first", [True, False])
def test_secondary_quorum_over_rep(quorum_first: bool) -> None:
    from harness.model.profiles import V7_2

    m = secondary_model(V7_2)
    q = m.quorums[SQ] = QuorumNode(SQ, ops.SECONDARY)
    q.add_child(node(m))
    assert m.apply(ops.Read(0, CL, node=SQ)) == IoResult(False, EIO)  # NONE
    m.apply(ops.Start(primary=False))
    assert m.apply(ops.Write(0, CL, 0x31, node=SQ)) == IO_OK
    assert guest(m, 0, CL, SQ) == d((0, CL, 0x31))
    assert guest(m, 0, CL) == d((0, CL, 0x31))


@by_profile()
@pytest.mark.parametrize("started", [True, False])
def test_quorum_unaligned_write_zeroes_undefines_the_primary_childs_padding(
    profile: Profile, started: bool
) -> None:
    """quorum_co_pwrite_zeroes hands the replication child a write-zeroes of its own: a
    running primary writes its padded sectors from an uninitialised buffer (the QEMU bug
    test_primary_unaligned_write_zeroes_zeroes_its_bytes pins); the local disk is exact."""
    m = pair_model(profile, start=False)
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    if started:
        assert m.apply(ops.Start(primary=True, machine=P)) == QMP_OK
    assert m.apply(ops.WriteZeroes(CL + 10, 100, node=PQ)) == IO_OK
    exact = [(CL, CL + 10, 0x11), (CL + 10, CL + 110, 0), (CL + 110, CL + 512, 0x11)]
    assert m.disks["local"].data.pieces(CL, CL + 512) == exact
    secondary = m.disks["secondary"].data.pieces(CL, CL + 512)
    assert secondary == ([(CL, CL + 512, UNDEF)] if started else [(CL, CL + 512, 0x11)])
