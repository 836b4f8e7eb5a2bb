"""The `*_all` QMP layer: every node of a machine, newest first, stopping at the first error."""

from __future__ import annotations

import pytest
from model_helpers import by_profile

from harness import ops
from harness.model import Model, Profile
from harness.model import messages as msg
from harness.model.disks import Disk
from harness.model.replication import ReplicationNode, Stage
from harness.observe import QMP_OK, QmpResult, qmp_error, status
from harness.topology.values import Mode
from harness.units import MiB

M = ops.SECONDARY


def add_secondary(m: Model, name: str, *, machine: str = M, blk: bool = True) -> ReplicationNode:
    sec = m.add_disk(Disk(f"{name}-secondary", MiB, has_blk=blk))
    hidden = m.add_disk(Disk(f"{name}-hidden", MiB, backing=sec))
    active = m.add_disk(Disk(f"{name}-active", MiB, backing=hidden))
    return m.add_node(
        machine, ReplicationNode(name, Mode.SECONDARY, m.profile, active, top_id=name)
    )


def two(profile: Profile, *, old_blk: bool = True, new_blk: bool = True) -> Model:
    m = Model(profile)
    add_secondary(m, "old", blk=old_blk)
    add_secondary(m, "new", blk=new_blk)
    return m


def stages(m: Model) -> tuple[Stage, Stage]:
    return m.stage("old"), m.stage("new")


@by_profile()
def test_start_all_succeeds_on_every_node(profile: Profile) -> None:
    m = two(profile)
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    assert stages(m) == (Stage.RUNNING, Stage.RUNNING)


@by_profile()
def test_start_stops_at_newest_error(profile: Profile) -> None:
    m = two(profile, new_blk=False)
    assert m.apply(ops.Start(primary=False)) == qmp_error(msg.NO_BLOCK_BACKEND)
    # newest first: the error came before the old node was visited
    assert stages(m) == (Stage.NONE, Stage.NONE)


@by_profile()
def test_start_error_on_oldest_after_newest_started(profile: Profile) -> None:
    m = two(profile, old_blk=False)
    assert m.apply(ops.Start(primary=False)) == qmp_error(msg.NO_BLOCK_BACKEND)
    assert stages(m) == (Stage.NONE, Stage.RUNNING)


@by_profile()
def test_checkpoint_walks_newest_first(profile: Profile) -> None:
    m = two(profile, old_blk=False)
    m.apply(ops.Start(primary=False))  # new RUNNING, old NONE
    m.disks["new-active"].data.set(0, 10, 1)
    assert m.apply(ops.Checkpoint()) == qmp_error(msg.BACKUP_CANCELLED)
    assert len(m.disks["new-active"].data) == 0  # the newest was checkpointed first


@by_profile()
def test_checkpoint_stops_at_first_error(profile: Profile) -> None:
    m = two(profile)
    m.apply(ops.Start(primary=False))
    m.nodes["new"].make_empty_error = "Input/output error"
    m.disks["old-active"].data.set(0, 10, 1)
    assert not m.apply(ops.Checkpoint()).ok  # type: ignore[attr-defined]
    assert len(m.disks["old-active"].data) == 1  # never reached


@by_profile()
def test_status_stops_at_newest_error(profile: Profile) -> None:
    m = two(profile)
    m.apply(ops.Start(primary=False))
    m.nodes["new"].error = True
    assert m.apply(ops.Status()) == status(msg.IO_ERROR)
    m.nodes["new"].error = False
    m.nodes["old"].error = True
    assert m.apply(ops.Status()) == status(msg.IO_ERROR)
    m.nodes["old"].error = False
    assert m.apply(ops.Status()) == status(None)


@by_profile()
def test_status_reports_newest_of_two_errors(profile: Profile) -> None:
    m = two(profile, old_blk=False)
    m.apply(ops.Start(primary=False))  # new RUNNING, old NONE
    m.nodes["new"].error = True
    assert m.apply(ops.Status()) == status(msg.IO_ERROR)
    m.nodes["new"].error = False
    assert m.apply(ops.Status()) == status(msg.NOT_RUNNING)


@by_profile()
def test_plain_stop_stops_at_first_error(profile: Profile) -> None:
    m = two(profile, old_blk=False)
    m.apply(ops.Start(primary=False))  # new RUNNING, old NONE
    obs = m.apply(ops.Stop(primary=False))
    if profile.plain_stop_skips_empty:
        # the newest's own stop errors: the old one is never visited (it would error too)
        assert obs == qmp_error(msg.BACKUP_CANCELLED)
    else:
        assert obs == qmp_error(msg.NOT_RUNNING)  # from the old node, in NONE
    assert stages(m) == (Stage.NONE, Stage.DONE)


@by_profile()
def test_failover_drops_errors_but_stops_at_first_erroring_node(profile: Profile) -> None:
    m = two(profile, new_blk=False)
    assert m.apply(ops.Start(primary=False)) == qmp_error(msg.NO_BLOCK_BACKEND)
    assert m.nodes["old"].start(Mode.SECONDARY) is None  # start the old node alone
    assert stages(m) == (Stage.RUNNING, Stage.NONE)
    assert m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
    # the newest errored ("not running"): the error is dropped, but the walk stopped there
    assert stages(m) == (Stage.RUNNING, Stage.NONE)
    assert m.apply(ops.Stop(primary=False, failover=False)) == qmp_error(msg.NOT_RUNNING)
    assert stages(m) == (Stage.RUNNING, Stage.NONE)


@by_profile()
def test_failover_all_nodes(profile: Profile) -> None:
    m = two(profile)
    m.apply(ops.Start(primary=False))
    assert m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
    assert stages(m) == (Stage.DONE, Stage.DONE)


@by_profile()
@pytest.mark.parametrize(
    "op",
    [
        ops.Start(primary=False),
        ops.Start(primary=True),
        ops.Stop(primary=False),
        ops.Stop(primary=True, failover=True),
        ops.Checkpoint(),
    ],
    ids=lambda o: o.describe(),
)
def test_zero_nodes_all_succeed(profile: Profile, op: ops.Op) -> None:
    m = Model(profile)
    assert m.apply(op) == QMP_OK


@by_profile()
def test_zero_nodes_status(profile: Profile) -> None:
    m = Model(profile)
    assert m.apply(ops.Status()) == QmpResult(True, {"error": False})


@by_profile()
def test_other_machines_nodes_untouched(profile: Profile) -> None:
    m = Model(profile)
    add_secondary(m, "here")
    add_secondary(m, "there", machine="other")
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    assert m.stage("here") is Stage.RUNNING and m.stage("there") is Stage.NONE
    assert m.apply(ops.Status(machine="other")) == status(msg.NOT_RUNNING)


@by_profile()
def test_mixed_modes_mode_mismatch_from_newest(profile: Profile) -> None:
    m = Model(profile)
    add_secondary(m, "sec")
    child = m.add_disk(Disk("child", MiB, has_blk=True))
    m.add_node(M, ReplicationNode("pri", Mode.PRIMARY, profile, child))
    # the newest node is the primary: a secondary start fails there first
    assert m.apply(ops.Start(primary=False)) == qmp_error(msg.mode_mismatch(0, 1))
    assert m.stage("sec") is Stage.NONE and m.stage("pri") is Stage.NONE
    # a primary start passes the primary, then fails on the older secondary
    assert m.apply(ops.Start(primary=True)) == qmp_error(msg.mode_mismatch(1, 0))
    assert m.stage("pri") is Stage.RUNNING
