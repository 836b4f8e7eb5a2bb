"""What a secondary start does to the graph around its node, and what the backup job's
cleanup undoes (harness.model.start_graph): read-only states, a filter that cannot be
reopened, other users of the hidden and secondary disks."""

from __future__ import annotations

import pytest
from model_helpers import by_profile, d, guest, stage

from harness import ops
from harness.images import Recipe, load_recipe
from harness.model import Model, Profile
from harness.model import messages as msg
from harness.model.build import build_model
from harness.model.profiles import SEED_4_1, V5_2, V7_2
from harness.model.replication import Stage
from harness.observe import IO_OK, QMP_OK, Crashed, QmpResult, qmp_error
from harness.topology import standard
from harness.topology.values import BackupJob, Image, LogWrites, Quorum
from harness.units import KiB

START = ops.Start(primary=False)
STOP = ops.Stop(primary=False)
FAILOVER = ops.Stop(primary=False, failover=True)


def ro(m: Model, node: str) -> bool:
    seen = m.apply(ops.ReadOnly(node))
    assert isinstance(seen, QmpResult) and seen.ok
    return bool(seen.value)


def model(profile: Profile, recipe: Recipe | str = "secondary", **kw: object) -> Model:
    return build_model(standard.secondary(recipe, **kw), profile)  # type: ignore[arg-type]


def with_scratch() -> Recipe:
    layers = load_recipe("secondary").to_dict()["layers"]
    layers["scratch"] = {"size": layers["secondary"]["size"]}
    return Recipe.from_dict({"layers": layers})


# ---- read-only states


@by_profile()
def test_opened_read_only_as_qemu_opens_them(profile: Profile) -> None:
    m = model(profile, read_only={"secondary": True}, export_writable=False)
    assert [ro(m, n) for n in ("active", "hidden", "secondary")] == [False, True, True]
    m = model(profile, read_only={"hidden": False})
    assert [ro(m, n) for n in ("hidden", "secondary")] == [False, False]


@by_profile()
@pytest.mark.parametrize("failover", [False, True])
def test_start_reopens_writable_and_the_stop_cannot_give_it_back(
    profile: Profile, failover: bool
) -> None:
    m = model(profile, read_only={"secondary": True}, export_writable=False)
    assert m.apply(START) == QMP_OK
    assert not ro(m, "hidden") and not ro(m, "secondary")
    m.apply(ops.Stop(primary=False, failover=failover))
    # 4.1's backup job lets go of the hidden disk in its clean: both restored; later a
    # writer stays attached (the backup filter's target, from 6.1 the children)
    restored = profile.read_only_not_restored is None
    if not failover:
        assert ro(m, "hidden") is restored and ro(m, "secondary") is restored
    else:
        assert ro(m, "secondary") is False  # the active disk's state, whose place it took


@pytest.mark.parametrize(("profile", "restored"), [(V5_2, True), (V7_2, False)])
def test_a_read_only_secondary_alone_comes_back_before_6_1(
    profile: Profile, restored: bool
) -> None:
    m = model(profile, read_only={"hidden": False, "secondary": True}, export_writable=False)
    m.apply(START)
    m.apply(STOP)
    assert ro(m, "secondary") is restored and ro(m, "hidden") is False


@pytest.mark.parametrize(("profile", "hidden_ro"), [(V5_2, True), (V7_2, False), (SEED_4_1, True)])
def test_a_bad_top_id_gives_back_what_no_child_holds(profile: Profile, hidden_ro: bool) -> None:
    m = model(profile, top_id="nowhere")
    assert m.apply(START) == qmp_error(msg.BAD_TOP)
    assert ro(m, "hidden") is hidden_ro


# ---- a one-child quorum over the secondary disk


@by_profile()
def test_a_read_only_quorum_cannot_be_reopened(profile: Profile) -> None:
    m = model(profile, over_secondary=Quorum("q", ("secondary",), read_only=True))
    refused = qmp_error(msg.reopen_unsupported("quorum", "q"))
    assert m.apply(START) == refused
    assert ro(m, "hidden") and ro(m, "q")  # the transaction changed nothing
    assert m.apply(START) == refused  # no blocker was leaked
    assert stage(m) is Stage.NONE


@by_profile()
def test_replication_runs_over_a_read_write_quorum(profile: Profile) -> None:
    m = model(profile, over_secondary=Quorum("q", ("secondary",)))
    assert m.apply(START) == QMP_OK
    assert m.apply(ops.PrimaryWrite(0, 64 * KiB, 0x22)) == IO_OK
    assert not list(m.disks["q"].data.items()) and m.disks["hidden"].data.allocated(0, 64 * KiB)
    assert guest(m, 0, 64 * KiB) == d((0, 64 * KiB, 0))  # the hidden disk's old copy
    m.apply(ops.Write(0, 4 * KiB, 0x33))
    assert m.apply(FAILOVER) == QMP_OK
    assert m.nodes["rep"].file is m.disks["q"]
    assert guest(m, 0, 8 * KiB) == d((0, 4 * KiB, 0x33), (4 * KiB, 4 * KiB, 0))
    assert next(iter(m.disks["secondary"].data.items()))[2] == 0x33  # committed through q


# ---- other users of the hidden and secondary disks


def scratch_model(profile: Profile, *users: object) -> Model:
    extra = (Image("scratch"), *users)
    return model(profile, with_scratch(), extra=extra, read_only={"hidden": False})


@by_profile(lambda p: p.start_retry_after_bad_top_aborts is not None)
@pytest.mark.parametrize(
    ("job", "blocked"),
    [
        (BackupJob("j", "scratch", "hidden", "f"), "hidden"),
        (BackupJob("j", "secondary", "scratch", "f"), "f"),
    ],
)
def test_a_job_refuses_the_backup_job_and_leaks_the_blocker(
    profile: Profile, job: BackupJob, blocked: str
) -> None:
    m = scratch_model(profile, job)
    assert m.apply(START) == qmp_error(profile.texts.job_busy(blocked))
    node = m.nodes["rep"]
    assert stage(m) is Stage.NONE and node.blocker_leaked
    assert node.children == ({"hidden", "secondary"} if profile.start_attaches_children else set())
    assert m.apply(ops.BlockdevDel()) == QMP_OK  # no op blocker left on the top
    m = scratch_model(profile, job)
    m.apply(START)
    assert m.apply(START) == Crashed("SIGABRT", msg.ERRP_ASSERTION)


@by_profile()
def test_a_log_refuses_the_hidden_disk_child_from_6_1(profile: Profile) -> None:
    m = model(
        profile,
        with_scratch(),
        extra=(Image("scratch"), LogWrites("logw", "scratch", "hidden")),
        read_only={"hidden": False, "secondary": True},
        export_writable=False,
    )
    answer = m.apply(START)
    if not profile.start_attaches_children:
        assert answer == QMP_OK
        return
    conflict = profile.texts.perm_conflict(
        "hidden", "resize", "node 'logw'", "log", "node 'rep'", "hidden disk", existing="user"
    )
    assert answer == qmp_error(conflict)
    assert ro(m, "secondary") is False  # reopened before the attach, never back
    assert m.nodes["rep"].children == set() and not m.nodes["rep"].blocker_leaked
    assert m.apply(START) == qmp_error(conflict)
