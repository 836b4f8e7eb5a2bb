"""blockdev-del of a replication node: the op blocker, replication_close, leaving the list."""

from __future__ import annotations

import pytest
from model_helpers import by_profile, node, started, started_primary

from harness import ops
from harness.model import Profile
from harness.model import messages as msg
from harness.model.build import secondary_model
from harness.model.replication import Stage
from harness.observe import QMP_OK, qmp_error, status

BlockdevDel = getattr(ops, "BlockdevDel", None)
pytestmark = pytest.mark.skipif(BlockdevDel is None, reason="ops.BlockdevDel not available")


@by_profile()
def test_running_secondary_top_node_is_busy(profile: Profile) -> None:
    m = started(profile)
    assert m.apply(BlockdevDel()) == qmp_error(  # type: ignore[misc]
        "Node 'rep' is busy: Block device is in use by internal backup job"
    )
    assert m.stage(ops.REP) is Stage.RUNNING


@by_profile()
def test_not_started_secondary_is_removed(profile: Profile) -> None:
    m = secondary_model(profile)
    assert m.apply(BlockdevDel()) == QMP_OK  # type: ignore[misc]
    assert ops.REP not in m.nodes
    assert m.apply(ops.Status()) == status(None)  # no nodes left


@by_profile()
def test_bad_top_installs_no_blocker(profile: Profile) -> None:
    m = secondary_model(profile, top_valid=False)
    assert m.apply(ops.Start(primary=False)) == qmp_error(msg.BAD_TOP)
    assert m.apply(BlockdevDel()) == QMP_OK  # type: ignore[misc]


@by_profile()
def test_after_plain_stop_blocker_is_gone(profile: Profile) -> None:
    m = started(profile)
    m.apply(ops.Stop(primary=False))
    assert m.apply(BlockdevDel()) == QMP_OK  # type: ignore[misc]
    assert m.apply(ops.Checkpoint()) == QMP_OK


@by_profile()
def test_running_primary_is_stopped_and_removed(profile: Profile) -> None:
    m = started_primary(profile)
    n = node(m)
    assert m.apply(BlockdevDel(machine=ops.PRIMARY)) == QMP_OK  # type: ignore[misc]
    assert n.stage is Stage.DONE
    assert m.apply(ops.Status(machine=ops.PRIMARY)) == status(None)
