"""Each topology is a value: it prints, compares, and builds twice into the same graph.

Both interpreters read the value: QEMU's (harness.real.topology) and the model's
(harness.model.build). Built twice, QEMU shows the same named nodes, exports and
replication status, and the model holds the same disks, nodes and links; told the names
QEMU gives the layers over a blkdebug file, the model is the one made from the value
alone with those names. The value answers the interpreters' questions itself (a node's
`late` and `inline`, the node an NBD client's export serves).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import faults
from harness.builds import find_build
from harness.faults import THROTTLE_NODE
from harness.machine import MachineSet
from harness.model import Model, profile_for
from harness.model.build import build_model
from harness.ops import REP
from harness.probe import probe, replication_verdict
from harness.real import open_live
from harness.topology import Graph, standard
from harness.topology.pair import NBD_NODE, PREP, pair
from harness.topology.values import Export, Image, Mode, NbdClient, Quorum, Vm

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
            live = open_live(graph, build, profile, machines, tmp_path / f"run{i}")
            try:
                names = live.filenames()
                faulty = {n.layer for _, n in graph.nodes() if isinstance(n, Image) and n.fault}
                assert set(names) <= faulty, "QEMU names only layers over a blkdebug file apart"
                model = build_model(graph, profile, names)
                assert {d.name: d.filename for d in model.disks.values() if d.filename} == names
                shapes.append((_qemu_shape(live), _shape(model)))
            finally:
                live.close()
    assert shapes[0] == shapes[1]
    # the value says which nodes QEMU has: every non-late, non-inline-only name exists
    graph = VALUES[name]()
    qemu_nodes = {n for nodes, _, _ in shapes[0][0].values() for n in nodes}
    qemu_exports = {e for _, exports, _ in shapes[0][0].values() for e in exports}
    for _, node in graph.nodes():
        if isinstance(node, Export):
            assert node.id in qemu_exports, f"export {node.id} of the value is not in QEMU"
        elif not node.late and not node.inline:
            assert node.name in qemu_nodes, f"{node.name} of the value is not in QEMU"
    modes = {n.mode for _, n in graph.nodes() if hasattr(n, "mode")}
    assert modes <= {Mode.PRIMARY, Mode.SECONDARY}


def test_the_value_answers_where_a_node_is_created_and_what_a_link_reaches() -> None:
    graph = pair(over_secondary=faults.Throttle())
    placed = {n.name: (n.late, n.inline) for _, n in graph.nodes() if not isinstance(n, Export)}
    assert placed[PREP] == (True, False)  # connected by the story, after start
    assert placed[NBD_NODE] == (False, True)  # inside replication0's options
    assert placed["active"] == placed["hidden"] == (False, True)  # inside rep's
    assert placed["secondary"] == placed[THROTTLE_NODE] == (False, False)
    _, link = graph.find(NBD_NODE)
    assert isinstance(link, NbdClient)
    assert graph.export_node(link) == THROTTLE_NODE  # the export is over the filter
    assert graph.inline_images(REP) == ("active", "hidden")
    assert graph.inline_images(PREP) == ()  # its file is the NBD client, no image


def test_a_guest_reaches_qemu(system_build: Any, tmp_path: Path) -> None:
    """A machine value with a Vm runs that machine type with its vCPU (-M pc: one CPU),
    never from the pool; one without runs -M none (no CPU)."""
    build, found = system_build
    profile = profile_for(found.version_tuple)
    graphs = {"guest": pair(colo=True, vm=Vm(accel="tcg", memory="16M")), "none": pair()}
    for name, graph in graphs.items():
        with MachineSet(tmp_path / name) as machines:
            topo = open_live(graph, build, profile, machines, tmp_path / name)
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
