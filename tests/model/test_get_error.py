"""get_error (`query-xen-replication-status`) per stage, error flag and profile."""

from __future__ import annotations

import pytest
from model_helpers import by_profile, node, started, started_primary

from harness import ops
from harness.model import Profile
from harness.model import messages as msg
from harness.model.build import primary_model, secondary_model
from harness.model.replication import Stage
from harness.observe import QmpResult, status

STAGES = list(Stage)


def test_status_value_shapes() -> None:
    assert status(None) == QmpResult(True, {"error": False})
    assert status("I/O error occurred") == QmpResult(
        True, {"error": True, "desc": "I/O error occurred"}
    )


@by_profile()
@pytest.mark.parametrize("primary", [True, False], ids=["primary", "secondary"])
@pytest.mark.parametrize("st", STAGES, ids=[s.value for s in STAGES])
@pytest.mark.parametrize("error", [False, True], ids=["clean", "error"])
def test_get_error_matrix(profile: Profile, primary: bool, st: Stage, error: bool) -> None:
    if primary:
        m = primary_model(profile) if st is Stage.NONE else started_primary(profile)
        mach = ops.PRIMARY
    else:
        m = secondary_model(profile) if st is Stage.NONE else started(profile)
        mach = ops.SECONDARY
    n = node(m)
    n.stage = st
    n.error = error
    obs = m.apply(ops.Status(machine=mach))
    # seed: fails in every stage but RUNNING; 5.0 on: only in NONE
    not_running = st is Stage.NONE if profile.get_error_only_none else st is not Stage.RUNNING
    if not_running:
        assert obs == status("Block replication is not running")
    elif error:
        assert obs == status("I/O error occurred")
    else:
        assert obs == status(None)


@by_profile()
def test_get_error_has_no_side_effect(profile: Profile) -> None:
    m = started(profile)
    node(m).error = True
    assert m.apply(ops.Status()) == status(msg.IO_ERROR)
    assert m.apply(ops.Status()) == status(msg.IO_ERROR)
    assert node(m).error is True
