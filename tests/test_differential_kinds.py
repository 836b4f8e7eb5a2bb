"""A topology kind of the differential is one object (harness.differential.kinds).

The throwaway kind below is defined here and nowhere else: one class, naming itself.
It runs through the whole differential machinery on the build under test (the PATH
build unless --qemu-dir says otherwise): the state machine's examples under the read
policy, a trace that names the kind, and that trace's replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import ops
from harness.builds import QemuBuild
from harness.differential.kinds import Kind, SecondaryKind, TopologySpec, kind_named
from harness.differential.replay import AGREES, replay
from harness.differential.runner import run_differential
from harness.differential.session import Session
from harness.differential.settings import CI, settings_for
from harness.differential.specs import sized
from harness.differential.trace import load_trace, session_trace
from harness.faults import Throttle
from harness.images import load_recipe
from harness.machine import MachineSet
from harness.model import profile_for
from harness.probe import Probe
from harness.topology import Graph, standard


class ThrottledSecondary(SecondaryKind):
    """The secondary-only topology over a throttle node whose group has no limits: the
    primary's writes and the failover commit reach the secondary disk through it."""

    name = "test-secondary-throttled"

    def graph(self, spec: TopologySpec) -> Graph:
        return standard.secondary(spec.recipe, over_secondary=Throttle(), checks_over_nbd=True)


def _spec() -> TopologySpec:
    return TopologySpec(kind_named(ThrottledSecondary.name), sized(load_recipe("secondary")))


def test_defining_the_class_registers_the_kind() -> None:
    kind = kind_named("test-secondary-throttled")
    assert isinstance(kind, ThrottledSecondary)
    assert _spec().to_dict() == {"kind": "test-secondary-throttled", "name": "", "poison": None}
    with pytest.raises(ValueError, match="exists already"):
        type("Again", (SecondaryKind,), {"name": "test-secondary-throttled"})
    with pytest.raises(ValueError, match="unknown topology kind"):
        kind_named("no-such-kind")
    assert set(Kind.registry) >= {"secondary", "secondary-faults", "primary", "pair"}


@pytest.mark.needs_qemu
def test_the_new_kind_runs_and_its_trace_replays(
    qemu_build: tuple[QemuBuild, Probe], tmp_path: Path
) -> None:
    build, found = qemu_build
    profile = profile_for(found.version_tuple)
    res = run_differential(
        build,
        found.version,
        profile,
        [_spec()],
        tmp_path / "run",
        hyp_settings=settings_for(CI, examples=3, steps=12),
        seed=0,
        weights=(("failover", 5),),
        start_first=True,
    )
    print(res.summary())
    assert res.failure is None, res.failure
    assert res.ops > 0 and res.view_reads > 0
    # a session's trace names the kind, and replays on it
    with MachineSet(tmp_path / "session") as machines:
        s = Session(_spec(), build, profile, machines, tmp_path / "session")
        try:
            for op in (
                ops.Start(primary=False),
                ops.PrimaryWrite(0, 65536, 0x33),
                ops.Write(4096, 512, 0x44),
                ops.Stop(primary=False, failover=True),
                ops.Settle(),
            ):
                s.step(op)
            s.end()
        finally:
            s.close()
        path = session_trace(s, found.version, 0).write(tmp_path / "trace.json")
    trace = load_trace(path)
    assert trace.spec.kind is kind_named(ThrottledSecondary.name)
    assert trace.spec.recipe.to_dict() == _spec().recipe.to_dict()
    assert replay(trace, build, found.version, found.version_tuple) == AGREES
