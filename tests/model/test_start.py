"""Start (`xen-set-replication enable=true`): the checks in QEMU's order, and their messages."""

from __future__ import annotations

import pytest
from model_helpers import CL, by_profile, items, node, stage, started, started_primary

from harness import ops
from harness.model import Model, Profile, profile_for
from harness.model import messages as msg
from harness.model.build import primary_model, secondary_model
from harness.model.disks import Disk
from harness.model.replication import ReplicationNode, Stage
from harness.observe import QMP_OK, Crashed, compare, qmp_error, status
from harness.topology.values import Mode
from harness.units import MiB

START_SEC = ops.Start(primary=False)
START_PRI = ops.Start(primary=True, machine=ops.PRIMARY)


def graph(
    profile: Profile,
    *,
    hidden: bool = True,
    secondary: bool = True,
    sec_blk: bool = True,
    sizes: tuple[int, int, int] = (MiB, MiB, MiB),
    fmts: tuple[str, str, str] = ("qcow2", "qcow2", "qcow2"),
    top_valid: bool = True,
) -> Model:
    """A secondary topology built by hand, with the chosen defect."""
    m = Model(profile)
    sec = m.add_disk(Disk("secondary", sizes[2], CL, fmt=fmts[2], has_blk=sec_blk))
    hid = m.add_disk(Disk("hidden", sizes[1], CL, fmt=fmts[1], backing=sec if secondary else None))
    act = m.add_disk(Disk("active", sizes[0], CL, fmt=fmts[0], backing=hid if hidden else None))
    m.export = sec
    m.add_node(
        ops.SECONDARY,
        ReplicationNode(ops.REP, Mode.SECONDARY, profile, act, top_id=ops.REP, top_valid=top_valid),
    )
    return m


@by_profile()
def test_secondary_start_runs_and_status_clean(profile: Profile) -> None:
    m = secondary_model(profile)
    assert m.apply(START_SEC) == QMP_OK
    assert stage(m) is Stage.RUNNING
    assert m.apply(ops.Status()) == status(None)


@by_profile()
def test_primary_start_runs_and_clears_error(profile: Profile) -> None:
    m = primary_model(profile)
    node(m).error = True
    assert m.apply(START_PRI) == QMP_OK
    assert stage(m) is Stage.RUNNING
    assert m.apply(ops.Status(machine=ops.PRIMARY)) == status(None)


@by_profile()
def test_secondary_start_clears_error(profile: Profile) -> None:
    m = secondary_model(profile)
    node(m).error = True
    assert m.apply(START_SEC) == QMP_OK
    assert m.apply(ops.Status()) == status(None)


@by_profile()
def test_start_empties_active_and_hidden(profile: Profile) -> None:
    m = secondary_model(profile)
    m.disks["active"].data.set(0, CL, 1)
    m.disks["hidden"].data.set(CL, 2 * CL, 2)
    m.disks["secondary"].data.set(0, 4 * CL, 3)
    assert m.apply(START_SEC) == QMP_OK
    assert items(m, "active") == []
    assert items(m, "hidden") == []
    assert items(m, "secondary") == [(0, 4 * CL, 3)]


@by_profile()
@pytest.mark.parametrize("primary", [True, False])
def test_start_twice_is_running_or_done(profile: Profile, primary: bool) -> None:
    m = started_primary(profile) if primary else started(profile)
    mach = ops.PRIMARY if primary else ops.SECONDARY
    assert m.apply(ops.Start(primary=primary, machine=mach)) == qmp_error(msg.RUNNING_OR_DONE)
    assert stage(m) is Stage.RUNNING


@by_profile()
def test_mode_mismatch_on_secondary(profile: Profile) -> None:
    m = secondary_model(profile)
    obs = m.apply(ops.Start(primary=True))
    assert obs == qmp_error("The parameter mode's value is invalid, needs 1, but got 0")
    assert stage(m) is Stage.NONE


@by_profile()
def test_mode_mismatch_on_primary(profile: Profile) -> None:
    m = primary_model(profile)
    obs = m.apply(ops.Start(primary=False, machine=ops.PRIMARY))
    assert obs == qmp_error("The parameter mode's value is invalid, needs 0, but got 1")
    assert stage(m) is Stage.NONE


@by_profile()
def test_stage_check_comes_before_mode_check(profile: Profile) -> None:
    m = started(profile)
    assert m.apply(ops.Start(primary=True)) == qmp_error(msg.RUNNING_OR_DONE)


@by_profile()
def test_mode_check_comes_before_graph_checks(profile: Profile) -> None:
    m = graph(profile, hidden=False, sec_blk=False)
    assert m.apply(ops.Start(primary=True)) == qmp_error(msg.mode_mismatch(1, 0))


CASES = [
    ("no_active_backing", {"hidden": False}, "Active disk doesn't have backing file"),
    ("no_hidden_backing", {"secondary": False}, "Hidden disk doesn't have backing file"),
    ("no_block_backend", {"sec_blk": False}, "The secondary disk doesn't have block backend"),
    (
        "active_length",
        {"sizes": (2 * MiB, MiB, MiB)},
        "Active disk, hidden disk, secondary disk's length are not the same",
    ),
    (
        "hidden_length",
        {"sizes": (MiB, 2 * MiB, MiB)},
        "Active disk, hidden disk, secondary disk's length are not the same",
    ),
    (
        "secondary_length",
        {"sizes": (MiB, MiB, 2 * MiB)},
        "Active disk, hidden disk, secondary disk's length are not the same",
    ),
    (
        "active_qed",
        {"fmts": ("qed", "qcow2", "qcow2")},
        "Active disk or hidden disk doesn't support make_empty",
    ),
    (
        "hidden_vmdk",
        {"fmts": ("qcow2", "vmdk", "qcow2")},
        "Active disk or hidden disk doesn't support make_empty",
    ),
    ("bad_top", {"top_valid": False}, "No top_bs or it is invalid"),
    # the first failing check wins
    ("blk_before_length", {"sec_blk": False, "sizes": (MiB, MiB, 2 * MiB)}, msg.NO_BLOCK_BACKEND),
    ("length_before_fmt", {"sizes": (2 * MiB, MiB, MiB), "fmts": ("qed",) * 3}, msg.LENGTHS_DIFFER),
    ("fmt_before_top", {"fmts": ("vmdk",) * 3, "top_valid": False}, msg.NO_MAKE_EMPTY),
    ("hidden_before_blk", {"secondary": False, "sec_blk": False}, msg.NO_HIDDEN_BACKING),
]


@by_profile()
@pytest.mark.parametrize(("kw", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_secondary_precondition(profile: Profile, kw: dict[str, object], text: str) -> None:
    m = graph(profile, **kw)  # type: ignore[arg-type]
    assert m.apply(START_SEC) == qmp_error(text)
    assert stage(m) is Stage.NONE
    assert node(m).backup is None
    assert m.apply(ops.Status()) == status(msg.NOT_RUNNING)
    assert m.apply(ops.Checkpoint()) == qmp_error(msg.BACKUP_CANCELLED)


@by_profile()
def test_qcow_and_raw_secondary_are_accepted(profile: Profile) -> None:
    m = graph(profile, fmts=("qcow", "qcow2", "raw"))
    assert m.apply(START_SEC) == QMP_OK


@by_profile()
def test_retry_after_fixing_an_early_check_succeeds(profile: Profile) -> None:
    m = graph(profile, fmts=("qed", "qcow2", "qcow2"))
    assert m.apply(START_SEC) == qmp_error(msg.NO_MAKE_EMPTY)
    m.disks["active"].fmt = "qcow2"
    assert m.apply(START_SEC) == QMP_OK
    assert stage(m) is Stage.RUNNING


@by_profile(lambda p: p.start_retry_after_bad_top_aborts is not None)
@pytest.mark.parametrize("fixed", [False, True], ids=["same", "top_fixed"])
def test_start_retry_after_bad_top_aborts(profile: Profile, fixed: bool) -> None:
    m = secondary_model(profile, top_valid=False)
    assert m.apply(START_SEC) == qmp_error("No top_bs or it is invalid")
    if fixed:
        node(m).top_valid = True
    obs = m.apply(START_SEC)
    assert isinstance(obs, Crashed)
    assert obs.signal == "SIGABRT"
    assert "Assertion `*errp == NULL' failed" in obs.stderr_contains
    assert compare(Crashed("SIGABRT", msg.ERRP_ASSERTION), obs) is None
    assert m.machines[ops.SECONDARY].crashed == obs


def test_start_retry_abort_profiles() -> None:
    for v in ((4, 1, 0), (7, 2, 0), (10, 0, 0)):
        assert profile_for(v).start_retry_after_bad_top_aborts is not None


@by_profile()
@pytest.mark.parametrize("primary", [True, False])
@pytest.mark.parametrize("failover", [True, False])
def test_failover_parameter_on_enable(profile: Profile, primary: bool, failover: bool) -> None:
    m = secondary_model(profile)
    obs = m.apply(ops.Start(primary=primary, failover=failover))
    assert obs == qmp_error("Parameter 'failover' is only for stopping replication")
    assert stage(m) is Stage.NONE


@by_profile()
def test_start_checkpoint_error_returned_stage_running_error_cleared(profile: Profile) -> None:
    m = secondary_model(profile)
    node(m).make_empty_error = "Input/output error"
    m.disks["active"].data.set(0, CL, 1)
    obs = m.apply(START_SEC)
    if profile.texts.failed_to_empty_message:
        assert obs == qmp_error("Failed to empty active: Input/output error")
    else:
        assert obs == qmp_error("Cannot make active disk empty")
    assert stage(m) is Stage.RUNNING
    assert m.apply(ops.Status()) == status(None)
    assert items(m, "active") == [(0, CL, 1)]


# ---- start after a failover: silently accepted from 5.0


def _done_by_failover(profile: Profile) -> Model:
    m = started(profile)
    assert m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
    m.apply(ops.Settle())
    assert stage(m) is Stage.DONE
    return m


@by_profile()
@pytest.mark.parametrize("primary", [True, False])
def test_start_in_done(profile: Profile, primary: bool) -> None:
    m = _done_by_failover(profile)
    obs = m.apply(ops.Start(primary=primary))
    if profile.ignore_after_failover:
        assert obs == QMP_OK
    else:
        assert obs == qmp_error(msg.RUNNING_OR_DONE)
    assert stage(m) is Stage.DONE


@by_profile()
def test_start_in_failover(profile: Profile) -> None:
    m = started(profile)
    node(m).stage = Stage.FAILOVER  # the model's commit is synchronous: force the stage
    obs = m.apply(START_SEC)
    assert obs == (QMP_OK if profile.ignore_after_failover else qmp_error(msg.RUNNING_OR_DONE))
    assert stage(m) is Stage.FAILOVER


@by_profile()
def test_start_in_failover_failed(profile: Profile) -> None:
    m = started(profile)
    node(m).commit_fails = True
    m.apply(ops.Stop(primary=False, failover=True))
    assert stage(m) is Stage.FAILOVER_FAILED
    assert m.apply(START_SEC) == qmp_error(msg.RUNNING_OR_DONE)


@by_profile()
def test_primary_start_in_done(profile: Profile) -> None:
    m = started_primary(profile)
    assert m.apply(ops.Stop(primary=True, machine=ops.PRIMARY)) == QMP_OK
    obs = m.apply(START_PRI)
    assert obs == (QMP_OK if profile.ignore_after_failover else qmp_error(msg.RUNNING_OR_DONE))
    assert stage(m) is Stage.DONE


@by_profile()
def test_backup_cluster_is_max_of_64k_and_hidden_cluster(profile: Profile) -> None:
    for hc, want in ((4096, 65536), (65536, 65536), (131072, 131072), (2 * MiB, 2 * MiB)):
        m = started(profile, size=4 * MiB, hidden_cluster=hc)
        b = node(m).backup
        assert b is not None and b.cluster == want
