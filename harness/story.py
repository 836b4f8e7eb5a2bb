"""A case as a story: operations applied to the model and to QEMU in lock-step.

Each step is compared as it happens.

Where QEMU's answer is not one the model allows, the story raises a verdict of
harness.verdicts (Divergence, QemuCrashed or QemuAborted, CommitStalled) carrying what
the model expected, what QEMU did, and the story's Evidence: the operations that led
there and the layer maps of both sides. A case's statement that the model contradicts
is a ModelDisagrees (not QEMU's). Anything else raised while applying an operation
(a harness bug) passes through as it is.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from harness import ops
from harness.builds import QemuBuild
from harness.graph import NodeMissing, live_allocation
from harness.layer_inspector import inspect_all
from harness.machine import MachineDied, MachineError, MachineSet
from harness.model import Model, Profile
from harness.model.build import add_late, build_model
from harness.model.disks import Disk, to_data
from harness.model.extents import UNDEF
from harness.model.system import Fork
from harness.observe import (
    QMP_OK,
    Crashed,
    Data,
    Difference,
    IoResult,
    Observation,
    OneOf,
    QmpResult,
    compare,
    data_differences,
)
from harness.real import COMMIT_STALLED, LiveTopology, RealSide, open_live
from harness.topology import Graph
from harness.verdicts import (
    CommitStalled,
    Divergence,
    Evidence,
    LiveLayer,
    ModelDisagrees,
    ModelLayer,
    QemuAborted,
    QemuCrashed,
    QemuMisbehaved,
    Step,
    fmt_ranges,
)

# An offline layer check lists this many differing extents of a layer, then counts the rest.
OFFLINE_EXTENTS_SHOWN = 6


def _model_layers(disks: Iterable[Disk]) -> tuple[ModelLayer, ...]:
    return tuple(
        ModelLayer(d.name, to_data([(s, e, v) for s, e, v in d.data.items()]), d.alloc_exact)
        for d in disks
    )


# Stories made in this process, oldest first (weak: a story lives as long as its
# case keeps it).  The report plugin reads them when a case fails, to write its
# trace and layer maps; it calls forget_stories() as each case starts.
_made: list[weakref.ref[Story]] = []


def stories() -> list[Story]:
    """The stories made since the last forget_stories(), oldest first, still alive."""
    alive = [s for s in (r() for r in _made) if s is not None]
    _made[:] = [weakref.ref(s) for s in alive]
    return alive


def forget_stories() -> None:
    _made.clear()


class Story:
    """Runs operations on the model and on QEMU and compares every observation."""

    def __init__(self, topo: LiveTopology, model: Model, label: str = "") -> None:
        self.topo = topo
        self.model = model
        self.real = RealSide(topo)
        self.steps: list[Step] = []
        self.label = label or f"QEMU {topo.build.label}, profile {model.profile.name}"
        _made.append(weakref.ref(self))

    @classmethod
    def open(
        cls,
        graph: Graph,
        build: QemuBuild,
        profile: Profile,
        machines: MachineSet,
        workdir: Path,
        label: str = "",
    ) -> Self:
        """A story on `graph`: built in QEMU (harness.real.topology), then the model of
        the same value (harness.model.build), with QEMU's names for its layers."""
        live = open_live(graph, build, profile, machines, workdir)
        try:
            return cls(live, build_model(graph, profile, live.filenames()), label)
        except BaseException:
            live.close()
            raise

    def add_late(self, name: str) -> None:
        """Create the late node `name` of the topology's value in QEMU and in the model
        (a set-up step, not an operation under test: QEMU must accept it)."""
        answer = self.topo.create_late(name)
        assert answer == QMP_OK, f"creating {name}: {answer.describe()}"
        add_late(self.model, self.topo.graph, name)

    # ---- running

    def do(self, op: ops.Op) -> Observation:
        """Apply `op` to both sides; a verdict (harness.verdicts) if QEMU's answer is not
        one the model allows."""
        return self._real(op, self.model.apply(op))

    def check_view(self, op: ops.Read | ops.PrimaryRead, sparse: bool = False) -> Observation:
        """do() for a check's read of a view (not an operation under test): QEMU's side
        reads it with one NBD request of the harness's own where the view has an
        export (RealSide.check_read; `sparse`: answered with holes where it may)."""
        expected = self.model.apply(op)
        return self._recorded(op, expected, self.real.check_read(op, expected, sparse))

    def _real(self, op: ops.Op, expected: Observation) -> Observation:
        """Apply `op` to QEMU, record and compare the step, then follow the machines."""
        hint = expected.allowed() if isinstance(expected, Fork) else expected
        return self._recorded(op, expected, self.real.apply(op, hint))

    def _follow(self, expected: Observation, actual: Observation) -> Observation:
        """A Fork: the branch QEMU's answer matches is the model from now on."""
        if not isinstance(expected, Fork):
            return expected
        for obs, model in expected.branches:
            if compare(obs, actual) is None:
                self.model = model
                return obs
        return expected.allowed()

    def _recorded(self, op: ops.Op, expected: Observation, actual: Observation) -> Observation:
        expected = self._follow(expected, actual)
        try:
            self.record(op, expected, actual, self.real.died)
        finally:
            self._after_machines()
        return actual

    def _after_machines(self) -> None:
        """The topology after a step: a machine the model says crashed or was killed is
        gone (its images no longer checked); the harness's NBD client of an export the
        model says is gone is closed."""
        for m in self.model.machines.values():
            if m.crashed is not None and m.name not in self.topo.gone:
                self.topo.machine_gone(m.name, images_kept=False)
        if self.topo.export_io is not None and not self.model.clients:
            self.topo.export_gone()

    def record(
        self,
        op: ops.Op,
        expected: Observation,
        actual: Observation,
        died: MachineDied | None = None,
    ) -> None:
        """Record a step; its verdict if `actual` is not what `expected` allows (`died`:
        the process death behind a Crashed `actual`, for its name and exit state)."""
        self.steps.append(Step(op, expected, actual))
        diff = compare(expected, actual)
        if diff is not None:
            raise self.verdict(op, diff, died)

    def verdict(
        self, op: ops.Op, diff: Difference, died: MachineDied | None = None
    ) -> QemuMisbehaved:
        """What QEMU's answer to `op`, the last step, was: a crash (QEMU died), a stalled
        failover commit (Settle), else a divergence."""
        actual = diff.actual
        machine = str(getattr(op, "machine", "QEMU"))
        if isinstance(actual, Crashed):
            cls = QemuAborted if actual.signal == "SIGABRT" else QemuCrashed
            return cls(
                died.machine if died is not None else machine,
                actual.signal,
                died.returncode if died is not None else None,
                actual.stderr_contains,
                expected=diff.expected,
                actual=actual,
                details=diff.details,
                evidence=self.evidence(),
            )
        if isinstance(actual, QmpResult) and actual.error_class == COMMIT_STALLED:
            return CommitStalled(machine, diff.expected, actual, evidence=self.evidence())
        return Divergence(diff.expected, actual, diff.details, evidence=self.evidence())

    def run(self, *seq: ops.Op) -> list[Observation]:
        return [self.do(op) for op in seq]

    def expect(self, op: ops.Op, stated: Observation) -> Observation:
        """`op` must give `stated`: checked against the model first, then against QEMU."""
        expected = self.model.apply(op)
        said = expected.allowed() if isinstance(expected, Fork) else expected
        if not _allows(stated, said):
            self.steps.append(Step(op, said, stated))
            raise ModelDisagrees(stated, said, self.evidence())
        return self._real(op, expected)

    # ---- layer checks

    def check_layers_live(self) -> None:
        """Compare each layer's own allocation, asked of the running QEMU, with the model's."""
        if not self.model.settled():
            self.do(ops.Settle())
        problems = []
        for name, (machine, node) in self.topo.layer_nodes.items():
            disk = self.model.disks[name]
            if disk.closed or not (disk.allocates and disk.alloc_exact):
                continue
            m = self.topo.machine(machine)
            if m.kind != "system":
                continue
            try:
                real = live_allocation(m, node)
            except NodeMissing:
                problems.append(f"  {name}: the model has it open; QEMU has no node {node!r}")
                continue
            want = list(_merge(disk.data.allocated(0, disk.size)))
            if real != want:
                problems.append(
                    f"  {name}: model allocates {fmt_ranges(want)}\n"
                    f"  {' ' * len(name)}  QEMU allocates  {fmt_ranges(real)}"
                )
        if problems:
            raise Divergence(
                check="layer allocation differs", details=problems, evidence=self.evidence()
            )

    def finish(self) -> None:
        """Quit QEMU, then check every layer offline: allocation (qemu-img map) and bytes."""
        if not self.model.settled() and not any(isinstance(s.actual, Crashed) for s in self.steps):
            self.do(ops.Settle())
        # A QEMU that died on a signal (an abort the model predicted) left its images'
        # cached qcow2 metadata unwritten: what they hold says nothing about the filter.
        aborted = {
            name
            for name in {m for m, _ in self.topo.layer_nodes.values()}
            if (rc := self.topo.machine(name).returncode) is not None and rc < 0
        }
        self.topo.close()
        self.topo.machines.shutdown_all()
        checks: list[tuple[Disk, tuple[str, str, bool, Data]]] = []
        for name, layer in self.topo.chain.layers.items():
            disk = self.model.disks.get(name)
            if disk is None:
                continue
            if self.topo.layer_nodes.get(name, ("", ""))[0] in aborted:
                continue
            want_map = disk.allocates and disk.offline_alloc_exact
            expect = to_data([(s, e, v) for s, e, v in disk.data.items() if v != UNDEF])
            if want_map or expect:
                checks.append((disk, (str(layer.path), layer.format, want_map, expect)))
        found = inspect_all(self.topo.build, [layer for _, layer in checks])
        problems: list[str] = []
        for (disk, _), (real, bad) in zip(checks, found, strict=True):
            problems += self._offline_problems(disk, real, bad)
        if problems:
            raise Divergence(
                check="offline layer check failed", details=problems, evidence=self.evidence()
            )

    @staticmethod
    def _offline_problems(
        disk: Disk, real: list[tuple[int, int]] | None, bad: list[tuple[Data, IoResult]]
    ) -> list[str]:
        problems: list[str] = []
        if real is not None:
            want = list(_merge(disk.data.allocated(0, disk.size)))
            if real != want:
                problems.append(
                    f"  {disk.name}: model allocates {fmt_ranges(want)}; "
                    f"the image (offline, qemu-io map) has {fmt_ranges(real)}"
                )
        for wanted, got in bad[:OFFLINE_EXTENTS_SHOWN]:
            diffs = data_differences(wanted, got.data or ())
            problems.append(f"  {disk.name}: {got.describe()}; " + "; ".join(diffs))
        if len(bad) > OFFLINE_EXTENTS_SHOWN:
            rest = bad[OFFLINE_EXTENTS_SHOWN:]
            size = sum(n for wanted, _ in rest for _, n, _ in wanted)
            problems.append(
                f"  {disk.name}: ... and {len(rest)} more extents differ ({size} bytes in them)"
            )
        return problems

    # ---- reporting

    def evidence(self) -> Evidence:
        """The story now: its steps, the model's layers, QEMU's live layers (asked now),
        the machines that are gone with their failure reports."""
        last = self.steps[-1].actual if self.steps else None
        # HMP qemu-io drains the node, which waits for the stalled commit's requests
        stalled = isinstance(last, QmpResult) and last.error_class == COMMIT_STALLED
        return Evidence(
            label=self.label,
            steps=tuple(self.steps),
            model_layers=_model_layers(self.model.disks.values()),
            live_layers=() if stalled else self._live_maps(),
            live_not_asked="qemu-io would wait on the stalled commit" if stalled else None,
            gone=tuple((m.name, m.failure_report()) for m in self.topo.machines if not m.alive()),
        )

    def report(self, headline: str) -> str:
        """The story's report now, under `headline`."""
        return self.evidence().report(headline)

    def _live_maps(self) -> tuple[LiveLayer, ...]:
        out = []
        for name, (machine, node) in self.topo.layer_nodes.items():
            m = self.topo.machine(machine)
            if m.kind != "system" or not m.alive():
                continue
            try:
                out.append(LiveLayer(name, tuple(live_allocation(m, node))))
            except (MachineError, AssertionError) as e:
                why = (str(e).splitlines() or [type(e).__name__])[0]
                out.append(LiveLayer(name, unavailable=why))
        return tuple(out)

    def trace(self) -> dict[str, Any]:
        """A replayable record of the story so far."""
        return {
            "qemu": self.topo.build.label,
            "profile": self.model.profile.name,
            "recipe": self.topo.chain.recipe.source,
            "operations": [s.op.to_json() for s in self.steps],
            "expected": [s.expected.describe() for s in self.steps],
            "observed": [s.actual.describe() for s in self.steps],
        }

    def trace_json(self) -> str:
        return json.dumps(self.trace(), indent=1)


def _allows(stated: Observation, said: Observation) -> bool:
    """Does the case's statement allow every answer the model gives? (A statement of
    several outcomes, OneOf, allows a model that narrows them down.)"""
    answers = said.allowed if isinstance(said, OneOf) else (said,)
    if isinstance(stated, OneOf):
        return all(compare(stated, a) is None for a in answers)
    return compare(said, stated) is None


def _merge(ranges: Iterable[tuple[int, int]]) -> Iterable[tuple[int, int]]:
    cur: tuple[int, int] | None = None
    for s, e in ranges:
        if cur is not None and cur[1] == s:
            cur = (cur[0], e)
            continue
        if cur is not None:
            yield cur
        cur = (s, e)
    if cur is not None:
        yield cur
