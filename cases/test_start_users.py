"""A start that cannot attach its children or create its backup job, because another
user of the hidden or secondary disk is there first (issue 23, list A item 10): what
start answers and what it leaves (op blocker, children, read-only state, a retry).

The other users, made before start (harness.topology.values):
- a user's backup job (blockdev-backup sync=none, running until cancelled) into the
  hidden disk, or out of the secondary disk (its copy-before-write filter, named, then
  sits between the secondary disk and its parents, the hidden disk's backing included);
- a blklogwrites node logging into the hidden disk: its `log` child takes resize on it
  and shares neither write nor resize.

Facts pinned here (5.2, 7.2, 10.0, 11.1; texts the release's):
- A job there refuses the backup job start creates: `Node 'hidden' is busy: block device
  is in use by block job: backup` (the target's op blocker), or the source's, which
  names the user's filter, the node start found as the secondary disk. Start has attached
  its children by then (from 6.1) and leaves them; its cleanup lifts the op blocker from
  the top, and reopens back what it made read-write (restored on 5.2, left read-write
  from 6.1, where the children hold write: profile.read_only_not_restored); it frees
  s->blocker without forgetting it, so a retry aborts QEMU in error_setv, as after `No
  top_bs or it is invalid` (profile.start_retry_after_bad_top_aborts).
- From 6.1 the log's resize refuses the `hidden disk` child: start answers the
  permission conflict (`... both required by node 'logw' (uses node 'hidden' as 'log'
  child) and unshared by node 'rep' (uses node 'hidden' as 'hidden disk' child)`),
  before s->blocker is set (a retry answers the same) and after the disks were made
  read-write (left so). 5.2 attaches no children, and its backup filter's target child
  does not mind the log: replication starts.
"""

from __future__ import annotations

import pytest

from harness.graph import block_job_nodes, rep_edges
from harness.images import Recipe, load_recipe
from harness.machine import MachineDied
from harness.observe import QMP_OK, Crashed, QmpResult, qmp_error, status
from harness.ops import (
    SECONDARY,
    BlockdevDel,
    Checkpoint,
    Read,
    ReadOnly,
    Start,
    Status,
    Write,
)
from harness.topology.values import BackupJob, Image, LogWrites
from harness.units import KiB

QUICK = pytest.mark.quick
pytestmark = [pytest.mark.secondary]

JOB = "userjob"
FILTER = "user-cbw"
LOG = "logw"


def _recipe() -> Recipe:
    """The secondary chain and a scratch image of the same size, for the other user."""
    layers = load_recipe("secondary").to_dict()["layers"]
    layers["scratch"] = {"format": "qcow2", "size": layers["secondary"]["size"]}
    return Recipe.from_dict({"layers": layers}, source="<secondary, and a scratch image>")


RECIPE = _recipe()
# the other users (with the scratch image first), and where the backup job is blocked
INTO_HIDDEN = (Image("scratch"), BackupJob(JOB, "scratch", "hidden", FILTER))
OUT_OF_SECONDARY = (Image("scratch"), BackupJob(JOB, "secondary", "scratch", FILTER))
LOGGING = (Image("scratch"), LogWrites(LOG, "scratch", "hidden"))


def read_only(s) -> None:
    for n in ("hidden", "secondary"):
        s.do(ReadOnly(n))


def refused_by_a_job(secondary, profile, users, blocked: str, **options):
    """The start the job refuses, and what it leaves: the story."""
    s = secondary(RECIPE, extra=users, **options)
    m = s.topo.machine(SECONDARY)
    s.expect(Start(primary=False), qmp_error(s.model.profile.texts.job_busy(blocked)))
    s.expect(Status(), status(s.model.profile.texts.NOT_RUNNING))
    read_only(s)
    edges = rep_edges(m)
    if profile.start_attaches_children:
        below = FILTER if blocked == FILTER else "secondary"  # the user's filter moved up
        assert edges == {"file": "active", "hidden disk": "hidden", "secondary disk": below}
    else:
        assert edges == {"file": "active"}
    assert block_job_nodes(m) == 1  # the user's job, none of replication's
    return s


# the secondary disk read-only (exported read-only) where the job leaves it so
JOBS = [
    pytest.param(INTO_HIDDEN, "hidden", {"secondary": True}, id="into-hidden", marks=QUICK),
    pytest.param(OUT_OF_SECONDARY, FILTER, {}, id="out-of-secondary", marks=QUICK),
]


@pytest.mark.parametrize(("users", "blocked", "ro"), JOBS)
def test_a_job_refuses_the_backup_job(secondary, profile, users, blocked, ro):
    """... and the op blocker on the top was lifted: the node can be deleted."""
    options = {"read_only": {"hidden": False, **ro}, "export_writable": not ro}
    s = refused_by_a_job(secondary, profile, users, blocked, **options)
    s.expect(BlockdevDel(), QMP_OK)
    s.finish()


@pytest.mark.parametrize(("users", "blocked", "ro"), [p.values for p in JOBS])
def test_a_retry_after_the_job_refused_aborts(secondary, profile, needs_bug, users, blocked, ro):
    needs_bug(profile.start_retry_after_bad_top_aborts)
    options = {"read_only": {"hidden": False, **ro}, "export_writable": not ro}
    s = refused_by_a_job(secondary, profile, users, blocked, **options)
    s.expect(Start(primary=False), Crashed("SIGABRT", s.model.profile.texts.ERRP_ASSERTION))
    s.finish()


@pytest.mark.quick
def test_a_retry_after_the_job_refused_answers(secondary, profile, msg, xfail_bug):
    """What QEMU should do: answer the retry as the first attempt."""
    xfail_bug(profile.start_retry_after_bad_top_aborts, raises=MachineDied)
    s = secondary(RECIPE, extra=INTO_HIDDEN, read_only={"hidden": False})
    m = s.topo.machine(SECONDARY)
    for _ in range(2):
        answer = m.qmp("xen-set-replication", enable=True, primary=False)
        assert answer == qmp_error(msg.job_busy("hidden"))


@pytest.mark.quick
def test_a_log_on_the_hidden_disk(secondary, profile, msg):
    s = secondary(
        RECIPE,
        extra=LOGGING,
        read_only={"hidden": False, "secondary": True},
        export_writable=False,
    )
    m = s.topo.machine(SECONDARY)
    if not profile.start_attaches_children:
        s.expect(Start(primary=False), QMP_OK)
        s.run(Write(0, 64 * KiB, 0x33), Read(0, 64 * KiB), Checkpoint(), Read(0, 64 * KiB))
        read_only(s)
        s.finish()
        return
    refused = qmp_error(
        msg.perm_conflict(
            "hidden", "resize", f"node '{LOG}'", "log", "node 'rep'", "hidden disk", existing="user"
        )
    )
    s.expect(Start(primary=False), refused)
    s.expect(Status(), status(msg.NOT_RUNNING))
    read_only(s)  # the secondary disk was made read-write, and stays so
    s.expect(ReadOnly("secondary"), QmpResult(True, False))
    assert rep_edges(m) == {"file": "active"}
    s.expect(Start(primary=False), refused)  # no blocker was leaked: the same answer
    s.finish()
