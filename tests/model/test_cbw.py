"""Copy-before-write: the backup job copies the secondary's old data into the hidden disk,
per backup cluster (max(64 KiB, hidden's cluster size)), once per cluster per checkpoint;
the primary's writes stay invisible to the secondary's view until the next checkpoint."""

from __future__ import annotations

import pytest
from model_helpers import CL, by_profile, guest, items, node, runs, sec, started

from harness import ops
from harness.model import Model, Profile
from harness.model.build import secondary_model
from harness.model.profiles import SEED_4_1, V5_0
from harness.observe import IO_OK, QMP_OK
from harness.units import KiB, MiB


def seeded(profile: Profile, **kw: object) -> Model:
    """Started; the secondary disk holds 0x11 everywhere as of the last checkpoint."""
    m = started(profile, size=MiB, **kw)
    m.apply(ops.PrimaryWrite(0, MiB, 0x11))
    m.apply(ops.Checkpoint())
    assert items(m, "hidden") == []
    return m


@by_profile()
def test_primary_write_copies_old_cluster_into_hidden(profile: Profile) -> None:
    m = seeded(profile)
    assert m.apply(ops.PrimaryWrite(CL + 100, 10, 0x22)) == IO_OK
    assert items(m, "hidden") == [(CL, 2 * CL, 0x11)]
    assert sec(m, CL, CL) == (
        (CL, 100, 0x11),
        (CL + 100, 10, 0x22),
        (CL + 110, CL - 110, 0x11),
    )


@by_profile()
@pytest.mark.parametrize(
    ("hidden_cluster", "backup_cluster"),
    [(4 * KiB, CL), (32 * KiB, CL), (CL, CL), (128 * KiB, 128 * KiB), (256 * KiB, 256 * KiB)],
)
def test_backup_cluster_size(profile: Profile, hidden_cluster: int, backup_cluster: int) -> None:
    m = seeded(profile, hidden_cluster=hidden_cluster)
    bc = backup_cluster
    m.apply(ops.PrimaryWrite(3 * bc - 512, 1024, 0x22))
    # straddles two backup clusters: both copied, whole
    assert runs(m.disks["hidden"]) == [(2 * bc, 4 * bc)]
    assert items(m, "hidden") == [(2 * bc, 4 * bc, 0x11)]


@by_profile()
def test_second_write_to_same_cluster_does_not_recopy(profile: Profile) -> None:
    m = seeded(profile)
    m.apply(ops.PrimaryWrite(0, 512, 0x22))
    m.apply(ops.PrimaryWrite(1024, 512, 0x33))
    m.apply(ops.PrimaryWrite(0, CL, 0x44))
    # hidden keeps the OLD data (as of the checkpoint), not the first primary write's
    assert items(m, "hidden") == [(0, CL, 0x11)]
    assert guest(m, 0, CL) == ((0, CL, 0x11),)
    assert sec(m, 0, CL) == ((0, CL, 0x44),)


@by_profile()
def test_primary_writes_invisible_until_checkpoint(profile: Profile) -> None:
    m = seeded(profile)
    m.apply(ops.Write(2 * CL, 100, 0x55))
    view0 = guest(m, 0, MiB)
    for off, length, pat in ((0, 100, 0x22), (CL - 50, 100, 0x23), (2 * CL, CL, 0x24)):
        m.apply(ops.PrimaryWrite(off, length, pat))
        assert guest(m, 0, MiB) == view0
    assert m.apply(ops.Checkpoint()) == QMP_OK
    # now the view is the secondary disk: the guest's own write since the checkpoint is gone
    assert guest(m, 0, MiB) == sec(m, 0, MiB)
    assert guest(m, 0, 100) == ((0, 100, 0x22),)
    assert guest(m, 2 * CL, CL) == ((2 * CL, CL, 0x24),)


@by_profile()
def test_guest_write_does_not_trigger_copy(profile: Profile) -> None:
    m = seeded(profile)
    m.apply(ops.Write(0, CL, 0x22))
    assert items(m, "hidden") == []
    b = node(m).backup
    assert b is not None and len(b.copied) == 0


@by_profile()
def test_no_copy_before_start(profile: Profile) -> None:
    m = secondary_model(profile)
    m.apply(ops.PrimaryWrite(0, 512, 0x22))
    assert items(m, "hidden") == []
    assert sec(m, 0, 512) == ((0, 512, 0x22),)


@by_profile(lambda p: p.plain_stop_skips_empty)
@pytest.mark.parametrize("failover", [False, True], ids=["plain", "failover"])
@pytest.mark.parametrize("fails", [False, True], ids=["ok", "commit_fails"])
def test_no_copy_after_stop(profile: Profile, failover: bool, fails: bool) -> None:
    m = seeded(profile)
    node(m).commit_fails = fails
    m.apply(ops.Stop(primary=False, failover=failover))
    m.apply(ops.Settle())
    hidden = items(m, "hidden")
    m.apply(ops.PrimaryWrite(8 * CL, 512, 0x22))
    assert items(m, "hidden") == hidden
    # the backup job is gone: unallocated in active/hidden, the guest sees the new data
    assert guest(m, 8 * CL, 512) == ((8 * CL, 512, 0x22),)


@pytest.mark.parametrize("profile", [SEED_4_1, V5_0], ids=["4.1", "5.0"])
@pytest.mark.xfail(
    strict=True,
    reason="model bug: on 4.1/5.0 the model keeps copying-before-write after a failover stop "
    "(replication_stop cancels the backup job synchronously in every version); a primary "
    "write in FAILOVER_FAILED is copied into hidden and the guest keeps reading stale data",
)
def test_no_copy_after_failover_before_5_1(profile: Profile) -> None:
    m = seeded(profile)
    node(m).commit_fails = True
    m.apply(ops.Stop(primary=False, failover=True))
    m.apply(ops.PrimaryWrite(8 * CL, 512, 0x22))
    assert items(m, "hidden") == []
    assert guest(m, 8 * CL, 512) == ((8 * CL, 512, 0x22),)
