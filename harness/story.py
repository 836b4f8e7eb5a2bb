"""A case as a story: operations applied to the model and to QEMU in lock-step.

Each step is compared as it happens.

Every divergence report says what the model expected, what QEMU did, the
operations that led there, and the layer maps of both sides.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness import ops
from harness.layers import inspect_all
from harness.machine import MachineError
from harness.model.disks import Disk
from harness.model.extents import UNDEF
from harness.model.system import to_data
from harness.observe import (
    Crashed,
    Data,
    IoResult,
    Observation,
    QmpResult,
    compare,
    data_differences,
    fmt_data,
)
from harness.real import COMMIT_STALLED, RealSide, live_allocation
from harness.topology import Topology

# An offline layer check lists this many differing extents of a layer, then counts the rest.
OFFLINE_EXTENTS_SHOWN = 6


class Divergence(AssertionError):
    """QEMU did not do what the model says it must."""


class ModelDisagrees(AssertionError):
    """The case's own statement and the model's answer differ: a model (or case) bug."""


@dataclass(frozen=True, slots=True)
class Step:
    op: ops.Op
    expected: Observation
    actual: Observation


def _model_layers(disks: Iterable[Disk]) -> list[str]:
    lines = []
    for d in disks:
        pieces = [(s, e, v) for s, e, v in d.data.items()]
        exact = "" if d.alloc_exact else " (allocation not predicted)"
        lines.append(f"    {d.name:10s}{exact}: {fmt_data(to_data(pieces), limit=6)}")
    return lines


def _ranges(rs: Iterable[tuple[int, int]]) -> str:
    parts = [f"[{s:#x}-{e:#x})" for s, e in rs]
    return " ".join(parts[:8]) + (f" ... ({len(parts) - 8} more)" if len(parts) > 8 else "") or (
        "(none)"
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

    def __init__(self, topo: Topology, label: str = "") -> None:
        self.topo = topo
        self.model = topo.model
        self.real = RealSide(topo)
        self.steps: list[Step] = []
        self.label = label or f"QEMU {topo.build.label}, profile {topo.model.profile.name}"
        _made.append(weakref.ref(self))

    # ---- running

    def do(self, op: ops.Op) -> Observation:
        """Apply `op` to both sides; raise Divergence if QEMU's answer is not allowed."""
        expected = self.model.apply(op)
        actual = self.real.apply(op, expected)
        self.steps.append(Step(op, expected, actual))
        diff = compare(expected, actual)
        if diff is not None:
            raise Divergence(self.report(str(diff)))
        return actual

    def run(self, *seq: ops.Op) -> list[Observation]:
        return [self.do(op) for op in seq]

    def expect(self, op: ops.Op, stated: Observation) -> Observation:
        """`op` must give `stated`: checked against the model first, then against QEMU."""
        expected = self.model.apply(op)
        if compare(expected, stated) is not None:
            self.steps.append(Step(op, expected, stated))
            raise ModelDisagrees(
                self.report(
                    f"the case states {stated.describe()}\n"
                    f"but the model answers {expected.describe()}"
                )
            )
        actual = self.real.apply(op, expected)
        self.steps.append(Step(op, expected, actual))
        diff = compare(expected, actual)
        if diff is not None:
            raise Divergence(self.report(str(diff)))
        return actual

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
            real = live_allocation(m, node)
            want = list(_merge(disk.data.allocated(0, disk.size)))
            if real != want:
                problems.append(
                    f"  {name}: model allocates {_ranges(want)}\n"
                    f"  {' ' * len(name)}  QEMU allocates  {_ranges(real)}"
                )
        if problems:
            raise Divergence(self.report("layer allocation differs:\n" + "\n".join(problems)))

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
            want_map = disk.allocates and disk.alloc_exact
            expect = to_data([(s, e, v) for s, e, v in disk.data.items() if v != UNDEF])
            if want_map or expect:
                checks.append((disk, (str(layer.path), layer.format, want_map, expect)))
        found = inspect_all(self.topo.build, [layer for _, layer in checks])
        problems: list[str] = []
        for (disk, _), (real, bad) in zip(checks, found, strict=True):
            problems += self._offline_problems(disk, real, bad)
        if problems:
            raise Divergence(self.report("offline layer check failed:\n" + "\n".join(problems)))

    @staticmethod
    def _offline_problems(
        disk: Disk, real: list[tuple[int, int]] | None, bad: list[tuple[Data, IoResult]]
    ) -> list[str]:
        problems: list[str] = []
        if real is not None:
            want = list(_merge(disk.data.allocated(0, disk.size)))
            if real != want:
                problems.append(
                    f"  {disk.name}: model allocates {_ranges(want)}; "
                    f"the image (offline, qemu-io map) has {_ranges(real)}"
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

    def report(self, headline: str) -> str:
        lines = [f"{self.label}", headline, "operations:"]
        for i, st in enumerate(self.steps, 1):
            mark = ">" if i == len(self.steps) else " "
            lines.append(f" {mark}{i:3d}. {st.op.describe()}")
        lines.append("layer maps (model):")
        lines += _model_layers(self.model.disks.values())
        lines.append("layer allocation (QEMU, live):")
        last = self.steps[-1].actual if self.steps else None
        if isinstance(last, QmpResult) and last.error_class == COMMIT_STALLED:
            # HMP qemu-io drains the node, which waits for the stalled commit's requests
            lines.append("    not asked: qemu-io would wait on the stalled commit")
        else:
            lines += self._live_maps()
        for m in self.topo.machines:
            if not m.alive():
                lines.append(f"machine {m.name}:")
                lines.append(m.failure_report())
        return "\n".join(lines)

    def _live_maps(self) -> list[str]:
        out = []
        for name, (machine, node) in self.topo.layer_nodes.items():
            m = self.topo.machine(machine)
            if m.kind != "system" or not m.alive():
                continue
            try:
                out.append(f"    {name:10s}: {_ranges(live_allocation(m, node))}")
            except (MachineError, AssertionError) as e:
                out.append(f"    {name:10s}: unavailable ({str(e).splitlines()[0]})")
        return out

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
