"""Each topology is a value: it prints, compares, and builds twice into the same graph.

Both interpreters read the value: QEMU's (harness.topology.qemu) and the model's
(harness.model.build). Built twice, QEMU shows the same named nodes, exports and
replication status, and the model holds the same disks, nodes and links; the model the
QEMU interpreter makes equals the one the model interpreter makes alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import faults
from harness.builds import find_build
from harness.machine import MachineSet
from harness.model import Model, profile_for
from harness.model.build import build_model
from harness.model.replication import Mode
from harness.ops import REP
from harness.probe import probe, replication_verdict
from harness.topology import Graph, open_topology, standard
from harness.topology.pair import pair
from harness.topology.values import Export, Image, NbdClient, Quorum, Vm

VALUES: dict[str, Callable[[], Graph]] = {
    "secondary": lambda: standard.secondary("secondary"),
    "secondary-no-export": lambda: standard.secondary("secondary", export=False),
    "secondary-failing-commit": lambda: standard.secondary(
        "secondary", over_secondary=faults.over_secondary(1)
    ),
    "secondary-quorum-above": lambda: standard.secondary(
        "secondary", top_id="q", extra=(Quorum("q", (REP,)),), guest_through="q"
    ),
    "primary": lambda: standard.primary("primary-child"),
    "primary-local": lambda: standard.primary_local(drive_id="blk", size="1M"),
    "many-nodes": lambda: standard.many_nodes(
        [standard.NodeSpec("old", export=False), standard.NodeSpec(REP)], size="1M"
    ),
    "pair": lambda: pair(secondary_quorum=True, hidden_fault=faults.under_layer("hidden")),
    "pair-held": lambda: pair(over_secondary=faults.Throttle(), guest_over_nbd=True),
    "pair-colo-guest": lambda: pair(colo=True, vm=Vm(accel="tcg", memory="16M")),
}


@pytest.mark.parametrize("name", VALUES)
def test_value_prints_and_compares(name: str) -> None:
    make = VALUES[name]
    graph = make()
    text = graph.describe()
    print(text)
    for m in graph.machines:
        assert m.name in text
    assert graph == make(), "the same description twice is the same value"
    others = [make2() for other, make2 in VALUES.items() if other != name]
    assert all(graph != o for o in others), "a different topology is a different value"


def _shape(model: Model) -> dict[str, Any]:
    """What the model knows of a graph, without its runtime state."""
    return {
        "disks": {
            n: (d.size, d.cluster, d.fmt, d.backing.name if d.backing else None, d.has_blk)
            for n, d in model.disks.items()
        },
        "faults": {n: d.fault for n, d in model.disks.items() if d.fault is not None},
        "nodes": {
            m.name: [(n.name, n.mode, n.file.name, n.top_id, n.link_up) for n in m.nodes]
            for m in model.machines.values()
        },
        "top_valid": {n.name: model.top_is_valid(n) for n in model.nodes.values()},
        "quorums": {q: [c.name for c in v.children] for q, v in model.quorums.items()},
        "exports": {k: d.name for k, d in model.exports.items()},
        "links": dict(model.links),
        "export": model.export.name if model.export else None,
    }


@pytest.fixture(scope="module")
def system_build() -> Any:
    build = find_build(None, os.environ)
    found = probe(build)
    verdict = replication_verdict(found)
    if verdict is not None:
        pytest.skip(verdict)
    return build, found


def _qemu_shape(topo: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mg in topo.graph.machines:
        m = topo.machine(mg.name)
        nodes = sorted(n["node-name"] for n in m.qmp_ok("query-named-block-nodes"))
        exports = sorted(e["id"] for e in m.qmp_ok("query-block-exports"))
        out[mg.name] = (nodes, exports, m.qmp("query-xen-replication-status").describe())
    return out


@pytest.mark.parametrize("name", VALUES)
def test_value_builds_twice(name: str, system_build: Any, tmp_path: Path) -> None:
    build, found = system_build
    profile = profile_for(found.version_tuple)
    shapes = []
    for i in (1, 2):
        graph = VALUES[name]()
        with MachineSet(tmp_path / f"run{i}") as machines:
            topo = open_topology(graph, build, profile, machines, tmp_path / f"run{i}")
            try:
                # the model of the QEMU build is the model interpreter's of the same value
                alone = build_model(
                    graph,
                    profile,
                    {d.name: d.filename for d in topo.model.disks.values() if d.filename},
                )
                assert _shape(topo.model) == _shape(alone)
                shapes.append((_qemu_shape(topo), _shape(topo.model)))
            finally:
                topo.close()
    assert shapes[0] == shapes[1]
    # the value says which nodes QEMU has: every non-late, non-inline-only name exists
    graph = VALUES[name]()
    qemu_nodes = {n for nodes, _, _ in shapes[0][0].values() for n in nodes}
    qemu_exports = {e for _, exports, _ in shapes[0][0].values() for e in exports}
    for _, node in graph.nodes():
        if isinstance(node, Export):
            assert node.id in qemu_exports, f"export {node.id} of the value is not in QEMU"
        elif not getattr(node, "late", False) and not _inline(node):
            assert node.name in qemu_nodes, f"{node.name} of the value is not in QEMU"
    modes = {n.mode for _, n in graph.nodes() if hasattr(n, "mode")}
    assert modes <= {Mode.PRIMARY, Mode.SECONDARY}


def _inline(node: object) -> bool:
    """Opened inside its parent's options (created with it)."""
    return isinstance(node, NbdClient) or (isinstance(node, Image) and node.inline)


def test_a_guest_reaches_qemu(system_build: Any, tmp_path: Path) -> None:
    """A machine value with a Vm runs that machine type with its vCPU (-M pc: one CPU),
    never from the pool; one without runs -M none (no CPU)."""
    build, found = system_build
    profile = profile_for(found.version_tuple)
    graphs = {"guest": pair(colo=True, vm=Vm(accel="tcg", memory="16M")), "none": pair()}
    for name, graph in graphs.items():
        with MachineSet(tmp_path / name) as machines:
            topo = open_topology(graph, build, profile, machines, tmp_path / name)
            try:
                for mg in graph.machines:
                    m = topo.machine(mg.name)
                    cpus = m.qmp_ok("query-cpus-fast")
                    assert len(cpus) == (1 if mg.vm is not None else 0), m.argv
                    assert ("-M", mg.vm.machine_type if mg.vm else "none") in zip(
                        m.argv, m.argv[1:], strict=False
                    )
            finally:
                topo.close()
