"""COLO's calls into the filter (harness.model.colo): which `*_all` calls each COLO step
makes, in which order, on which side, and what each side shows after it; then the same
steps through the whole model of a COLO pair (harness.topology.pair with colo=True)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from model_helpers import by_profile

from harness import ops
from harness.faults import Kill
from harness.model import Model, Profile
from harness.model import build as model_build
from harness.model.colo import Colo
from harness.model.profiles import V5_2, V7_2, V10_0, V10_0_7, V11_1
from harness.model.replication import Stage
from harness.model.system import Fork
from harness.observe import IO_OK, QMP_OK, ColoSideState, ColoState, Crashed, OneOf, qmp_error
from harness.topology.pair import LOCAL, PQ, PREP, pair
from harness.topology.values import Mode
from harness.units import KiB

P, S = ops.PRIMARY, ops.SECONDARY


@dataclass
class Calls:
    """A stand-in for the Model's *_all layer: records each call, answers from `errors`."""

    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    def _call(self, what: str, machine: str) -> str | None:
        self.log.append((what, machine))
        return self.errors.get((what, machine))

    def start_all(self, machine: str, mode: Mode) -> str | None:
        assert mode is (Mode.PRIMARY if machine == P else Mode.SECONDARY)
        return self._call("start", machine)

    def checkpoint_all(self, machine: str) -> str | None:
        return self._call("checkpoint", machine)

    def get_error_all(self, machine: str) -> str | None:
        return self._call("get_error", machine)

    def stop_all(self, machine: str, failover: bool) -> str | None:
        assert failover
        return self._call("stop", machine)


def colo(profile: Profile = V7_2, **errors: str) -> tuple[Colo, Calls]:
    calls = Calls({tuple(k.rsplit("_", 1)): v for k, v in errors.items()})  # type: ignore[misc]
    return Colo.pair(profile, P, S, calls), calls


def state(obs: object) -> dict[str, ColoSideState]:
    assert isinstance(obs, ColoState), obs
    return {s.machine: s for s in obs.sides}


def running(machine: str, mode: str, runs: tuple[str, ...], last: str = "none") -> ColoSideState:
    return ColoSideState(machine, mode, last, "none", True, runs)


# ---- start


def test_start_secondary_first_then_primary() -> None:
    c, calls = colo()
    obs = c.start()
    assert calls.log == [("start", S), ("start", P)]
    assert obs == ColoState(
        (running(P, "primary", ("RESUME",)), running(S, "secondary", ("RESUME",)))
    )
    with pytest.raises(ValueError, match="migrates once"):
        c.start()


@pytest.mark.parametrize("profile", [V5_2, V7_2], ids=["5.2", "7.2"])
def test_last_mode_at_start(profile: Profile) -> None:
    c, _ = colo(profile)
    sides = state(c.start())
    want = profile.colo_last_mode_at_start
    assert sides[P].last_mode == ("primary" if want else "none")
    assert sides[S].last_mode == ("secondary" if want else "none")


def test_secondary_start_refused() -> None:
    """The secondary leaves COLO, its VM never runs; the primary waits in COLO for READY
    (its replication never started)."""
    c, calls = colo(start_secondary="No top_bs or it is invalid")
    sides = state(c.start())
    assert calls.log == [("start", S)]
    assert sides[S] == ColoSideState(S, "secondary", "none", "none", False, (), "error")
    assert sides[P] == ColoSideState(P, "primary", "none", "none", False, ())


def test_primary_start_refused() -> None:
    c, calls = colo(start_primary="The parameter mode's value is invalid, needs 1, but got 0")
    sides = state(c.start())
    assert calls.log == [("start", S), ("start", P)]
    assert sides[P].exit == "error" and not sides[P].running
    assert sides[S] == running(S, "secondary", ("RESUME",))


def test_plain_migration_profile() -> None:
    """10.0.0 to 10.1: the secondary starts and leaves COLO; the primary never enters it."""
    c, calls = colo(V10_0)
    sides = state(c.start())
    assert calls.log == [("start", S)]
    assert sides[P] == ColoSideState(P, "none", "none", "none", False, ())
    assert sides[S] == ColoSideState(S, "secondary", "none", "none", True, ("RESUME",), "error")
    # no checkpoint can run: nothing is called, nothing changes
    calls.log.clear()
    assert c.checkpoint() == ColoState(
        (sides[P], ColoSideState(S, "secondary", "none", "none", True, ()))
    )
    assert calls.log == []


# ---- checkpoint


def test_checkpoint_order() -> None:
    c, calls = colo()
    c.start()
    calls.log.clear()
    obs = c.checkpoint()
    assert calls.log == [("checkpoint", P), ("get_error", S), ("checkpoint", S)]
    assert obs == ColoState(
        (running(P, "primary", ("STOP", "RESUME")), running(S, "secondary", ("STOP", "RESUME")))
    )


@pytest.mark.parametrize("failing", ["get_error", "checkpoint"])
def test_secondary_error_ends_colo_at_the_checkpoint(failing: str) -> None:
    """The secondary leaves COLO with its VM stopped; the primary waits stopped for
    LOADED, and takes no later request."""
    c, calls = colo(**{f"{failing}_{S}": "I/O error occurred"})
    c.start()
    calls.log.clear()
    sides = state(c.checkpoint())
    want = [("checkpoint", P), ("get_error", S)]
    if failing == "checkpoint":
        want.append(("checkpoint", S))
    assert calls.log == want
    assert sides[S] == ColoSideState(S, "secondary", "none", "none", False, ("STOP",), "error")
    assert sides[P] == ColoSideState(P, "primary", "none", "none", False, ("STOP",))
    calls.log.clear()
    sides = state(c.checkpoint())
    assert calls.log == []
    assert sides[P].runs == () and sides[S].exit is None


def test_primary_notices_a_dead_secondary_at_its_next_checkpoint() -> None:
    c, calls = colo()
    c.start()
    c.observe()
    c.gone(S)
    assert state(c.observe())[P] == running(P, "primary", ())
    calls.log.clear()
    assert state(c.checkpoint())[P] == ColoSideState(
        P, "primary", "none", "none", True, (), "error"
    )
    assert calls.log == []


def test_secondary_notices_a_dead_primary_at_once() -> None:
    c, _ = colo()
    c.start()
    c.observe()
    c.gone(P)
    assert state(c.observe())[S] == ColoSideState(S, "secondary", "none", "none", True, (), "error")


# ---- failover


@pytest.mark.parametrize(
    ("profile", "text"),
    [(V7_2, "The feature 'colo' is not enabled"), (V10_0_7, "VM is not in COLO mode")],
    ids=["7.2", "10.0.7"],
)
def test_lost_heartbeat_outside_colo(profile: Profile, text: str) -> None:
    c, calls = colo(profile)
    assert c.lost_heartbeat(P) == text
    assert calls.log == []


def test_lost_heartbeat_after_the_peer_died() -> None:
    """The secondary: COLO_EXIT already came (error) when the primary died; the failover
    stops the VM, calls stop_all(failover), leaves COLO and runs the VM."""
    c, calls = colo()
    c.start()
    c.observe()
    c.gone(P)
    calls.log.clear()
    assert c.lost_heartbeat(S) is None
    assert calls.log == [("stop", S)]
    assert c.observe() == ColoState(
        (ColoSideState(S, "none", "secondary", "request", True, ("STOP", "RESUME"), "error"),)
    )
    assert c.lost_heartbeat(S) == V7_2.texts.colo_not_enabled


def test_primary_failover_with_the_secondary_alive() -> None:
    """The primary's failover shuts the stream under the secondary: it leaves COLO too;
    the primary's own COLO_EXIT reason races its failover."""
    c, _ = colo()
    c.start()
    c.observe()
    c.lost_heartbeat(P)
    obs = c.observe()
    assert isinstance(obs, OneOf) and len(obs.allowed) == 2
    reasons = {state(o)[P].exit for o in obs.allowed}
    assert reasons == {"request", "error"}
    assert {state(o)[S].exit for o in obs.allowed} == {"error"}


def test_quit_may_crash_only_where_the_profile_says() -> None:
    for profile, crash in ((V5_2, True), (V7_2, False)):
        c, _ = colo(profile)
        c.start()
        assert not c.quit_may_crash(P)
        c.gone(S)
        c.checkpoint()  # the primary's thread ends
        assert c.quit_may_crash(P) is crash
        assert not c.quit_may_crash(S)


@pytest.mark.parametrize("victim", [P, S])
def test_interruptions(victim: str) -> None:
    c, _ = colo()
    assert c.interruptions(victim) == ("none",)
    c.start()
    want = ("completed", "failed", "ignored") if victim == S else ("completed", "failed")
    assert c.interruptions(victim) == want


# ---- through the whole model of a COLO pair


def colo_model(profile: Profile) -> Model:
    m = model_build.build_model(pair(colo=True), profile)
    model_build.add_late(m, pair(colo=True), PREP)
    m.attach_child(PQ, PREP)
    return m


@by_profile(lambda p: p.colo_plain_migration is None)
def test_pair_model_start_checkpoint_failover(profile: Profile) -> None:
    m = colo_model(profile)
    assert m.colo is not None
    m.apply(ops.ColoStart())
    assert m.stage("rep") is Stage.RUNNING and m.stage(PREP) is Stage.RUNNING
    assert m.apply(ops.Write(0, 64 * KiB, 0x22, node=PQ)) == IO_OK
    assert list(m.disks["hidden"].data.items()) == [(0, 64 * KiB, 0x11)]
    m.apply(ops.ColoCheckpoint())
    assert list(m.disks["hidden"].data.items()) == []
    m.apply(ops.Write(64 * KiB, 64 * KiB, 0x23, node=PQ))
    m.apply(Kill(P, "SIGKILL"))
    assert isinstance(m.apply(ops.LostHeartbeat(S)), (ColoState, OneOf))
    m.apply(ops.Settle())
    assert m.stage("rep") is Stage.DONE
    # the primary's write after the checkpoint is rolled back
    secondary = m.disks["secondary"]
    assert list(secondary.data.items())[:2] == [(0, 64 * KiB, 0x22), (64 * KiB, 1024 * KiB, 0x11)]
    assert LOCAL in m.disks


def test_interrupted_checkpoint_forks_the_model() -> None:
    m = colo_model(V11_1)
    m.apply(ops.ColoStart())
    m.apply(ops.Write(0, 64 * KiB, 0x22, node=PQ))
    fork = m.apply(ops.ColoCheckpoint(kill=P))
    assert isinstance(fork, Fork) and len(fork.branches) == 2
    (done_obs, done), (failed_obs, failed) = fork.branches
    assert failed is m and done is not m
    # completed: the secondary's checkpoint emptied the hidden disk; failed: it did not
    assert list(done.disks["hidden"].data.items()) == []
    assert list(failed.disks["hidden"].data.items()) == [(0, 64 * KiB, 0x11)]
    assert state(done_obs)[S].runs == ("STOP", "RESUME")
    assert state(failed_obs)[S].runs == ("STOP",)
    # each branch goes on by itself
    assert done.apply(ops.LostHeartbeat(S)) != failed.apply(ops.LostHeartbeat(S))


def test_quit_answer() -> None:
    m = colo_model(V5_2)
    m.apply(ops.ColoStart())
    assert m.quits(S) == QMP_OK
    m.apply(ops.ColoCheckpoint())  # the primary's request cannot be sent: its thread ends
    assert m.quits(P) == OneOf((QMP_OK, Crashed("SIGSEGV")))


def test_lost_heartbeat_answer_outside_colo() -> None:
    m = colo_model(V7_2)
    assert m.apply(ops.LostHeartbeat(P)) == qmp_error(V7_2.texts.colo_not_enabled)
