"""Layers qcow2 ejected (EjectAtEmpty), and writes after a failed failover that fail
themselves (FailingWrites over the secondary disk, under the active disk)."""

from __future__ import annotations

import signal

import pytest
from model_helpers import by_profile, d, guest, stage

from harness import faults, ops
from harness.model import Model, Profile
from harness.model import messages as msg
from harness.model.build import build_model
from harness.model.disks import ENOMEDIUM
from harness.model.replication import Stage
from harness.observe import EIO, IO_OK, QMP_OK, Crashed, IoResult, qmp_error, status
from harness.topology import standard
from harness.units import KiB, MiB

CL = 64 * KiB
START = ops.Start(primary=False)
CHECKPOINT = ops.Checkpoint()


def ejecting(profile: Profile, layer: str) -> Model:
    graph = standard.secondary(layer_faults={layer: faults.ejecting(layer)})
    m = build_model(graph, profile)
    assert m.apply(START) == QMP_OK  # start's own make-empty passes
    return m


@by_profile(lambda p: p.texts.failed_to_empty_message)
@pytest.mark.parametrize("layer", ["active", "hidden"])
def test_the_checkpoint_after_the_ejection_names_the_disk(profile: Profile, layer: str) -> None:
    m = ejecting(profile, layer)
    m.apply(ops.Write(0, CL, 0x33))
    assert m.apply(CHECKPOINT) == qmp_error(msg.failed_to_empty(layer, EIO))
    assert m.disks[layer].ejected and not list(m.disks[layer].data.items())
    if layer == "hidden":  # the active disk was emptied first
        assert not list(m.disks["active"].data.items())
    ejected = msg.active_ejected(layer) if layer == "active" else msg.hidden_ejected(layer)
    for _ in range(2):
        assert m.apply(CHECKPOINT) == qmp_error(ejected)
    assert m.apply(ops.Status()) == status(None)
    assert m.apply(ops.Read(0, CL)) == IoResult(False, ENOMEDIUM)
    assert m.apply(ops.Write(0, CL, 1)) == IoResult(False, ENOMEDIUM)


@by_profile(lambda p: p.texts.failed_to_empty_message)
def test_a_stop_with_the_hidden_disk_ejected(profile: Profile) -> None:
    m = ejecting(profile, "hidden")
    m.apply(CHECKPOINT)
    seen = m.apply(ops.Stop(primary=False))
    if profile.ejected_hidden_reopen_crashes is not None:
        assert seen == Crashed(signal.Signals.SIGSEGV.name)
        assert m.machines[ops.SECONDARY].crashed is not None
    else:
        assert seen == qmp_error(msg.BACKUP_CANCELLED)


@by_profile(lambda p: p.texts.failed_to_empty_message)
def test_a_failover_with_the_active_disk_ejected(profile: Profile) -> None:
    m = ejecting(profile, "active")
    m.apply(CHECKPOINT)
    seen = m.apply(ops.Stop(primary=False, failover=True))
    if profile.ejected_active_commit_crashes is not None:
        assert seen == Crashed(signal.Signals.SIGFPE.name)
    else:
        assert seen == QMP_OK and stage(m) is Stage.FAILOVER_FAILED


# ---- FAILOVER_FAILED writes that fail


C = 1 * MiB
BAD = C + 32 * KiB


def failed_over(profile: Profile, **kw: object) -> Model:
    recipe = standard.secondary_chain(active_cluster="4k", secondary_contents=[(C, CL, 0x11)])
    graph = standard.secondary(recipe, over_secondary=faults.at_offset(BAD), **kw)  # type: ignore[arg-type]
    m = build_model(graph, profile)
    m.apply(START)
    m.apply(ops.PrimaryWrite(0, CL, 0x22))
    m.apply(ops.PrimaryWrite(C, 4 * KiB, 0x23))
    m.apply(ops.Stop(primary=False, failover=True))
    assert stage(m) is Stage.FAILOVER_FAILED
    return m


@by_profile(lambda p: not p.failover_failed_write_crashes)
def test_a_run_for_the_secondary_disk_refused(profile: Profile) -> None:
    m = failed_over(profile)
    # [hidden's cluster at C | allocated nowhere, over BAD]? C's chunk is the hidden
    # disk's: a write over BAD goes into the active disk; elsewhere it reaches BAD
    assert m.apply(ops.Write(BAD, 4 * KiB, 0x41)) == IO_OK
    assert m.apply(ops.Write(CL - 4 * KiB, 8 * KiB, 0x42)) == IO_OK
    m = failed_over(profile)
    m.disks["secondary"].fault = faults.at_offset(CL + 32 * KiB)
    seen = m.apply(ops.Write(CL - 4 * KiB, 40 * KiB, 0x43))  # [0, CL) hidden's, then nowhere
    assert seen == IoResult(False, EIO)
    assert guest(m, CL - 4 * KiB, 8 * KiB) == d((CL - 4 * KiB, 4 * KiB, 0x43), (CL, 4 * KiB, 0))


@by_profile(lambda p: not p.failover_failed_write_crashes)
def test_a_run_for_the_active_disk_refused(profile: Profile) -> None:
    m = failed_over(profile, layer_faults={"active": faults.under_layer("active")})
    seen = m.apply(ops.Write(C - 4 * KiB, 8 * KiB, 0x42))  # nowhere, then hidden's
    assert seen == IoResult(False, EIO)
    assert guest(m, C - 4 * KiB, 8 * KiB) == d((C - 4 * KiB, 4 * KiB, 0x42), (C, 4 * KiB, 0x11))
    assert m.apply(ops.Write(2 * MiB, 4 * KiB, 0x43)) == IO_OK  # the secondary disk's


@by_profile(lambda p: p.failover_failed_write_crashes)
def test_before_6_1_a_run_for_the_secondary_disk_aborts_first(profile: Profile) -> None:
    m = failed_over(profile)
    seen = m.apply(ops.Write(CL - 4 * KiB, 8 * KiB, 0x43))
    assert seen == Crashed(signal.Signals.SIGABRT.name, profile.texts.WRITE_ASSERTION)
