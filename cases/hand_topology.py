"""Hand-built graphs for the open and start cases, in QEMU and in the model at once.

The standard topologies (harness.topology) cannot express a secondary whose active or
hidden disk has no backing node, a raw layer, or a replication node opened through HMP
`drive_add` (a named BlockBackend, the only way to get one on `-M none`, and the
schema-less open path). These builders do, and set the model's `top_valid` from the
graph they build (the caller can override it when it adds nodes later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.builds import QemuBuild
from harness.images import FROM_HEADER, Recipe, build_chain, load_recipe
from harness.machine import Machine, MachineSet
from harness.model import Model, Profile
from harness.model.replication import Mode, ReplicationNode
from harness.nbd_client import NbdClient
from harness.ops import PRIMARY, REP, SECONDARY
from harness.qemu_io import GuestIO
from harness.topology import EXPORT, Topology, disk_from_layer


def nbd_addr(path: str) -> dict[str, Any]:
    return {"type": "unix", "data": {"path": path}}


def flatten(opts: Mapping[str, Any], prefix: str = "") -> list[str]:
    """blockdev options as `-drive` dotted keys (commas in values doubled)."""
    out: list[str] = []
    for k, v in opts.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += flatten(v, key + ".")
        elif isinstance(v, bool):
            out.append(f"{key}={'on' if v else 'off'}")
        elif v is None:
            # "" means null here, but both versions warn that it is deprecated
            raise ValueError(f"{key}: null cannot be spelt in -drive options")
        else:
            out.append(f"{key}={str(v).replace(',', ',,')}")
    return out


def drive_add(m: Machine, opts: Mapping[str, Any]) -> str:
    """HMP `drive_add` of an if=none drive: its answer ("OK" or QEMU's error text)."""
    line = ",".join(["if=none", *flatten(opts)])
    return m.hmp(f"drive_add 0 {line}").rstrip("\r\n")


def layer_opts(chain: Any, name: str, backing: Any) -> dict[str, Any]:
    """chain.blockdev(), also for raw layers (which take no backing option)."""
    if chain[name].format == "raw":
        return chain.blockdev(name, backing=None)
    return chain.blockdev(name, backing=backing)


def secondary(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    recipe: Recipe | str = "secondary",
    *,
    active_backing: bool = True,
    hidden_backing: bool = True,
    export: bool = True,
    top_id: str = REP,
    drive_id: str | None = None,
    top_valid: bool | None = None,
    objects: Sequence[Mapping[str, Any]] = (),
    secondary_filter: Mapping[str, Any] | None = None,
) -> Topology:
    """rep (secondary) -> active [-> hidden [-> secondary]], the secondary disk exported.

    `active_backing`/`hidden_backing` false: that layer is opened with backing null (a raw
    layer never has one). `drive_id`: open rep with HMP drive_add as BlockBackend
    `drive_id` (else blockdev-add). `top_valid` defaults to what this graph makes of
    `top_id`: valid when it names rep itself or rep's BlockBackend. `objects`: object-add
    arguments run first (a throttle group); `secondary_filter`: a filter node over the
    secondary disk, which the export and the hidden disk's backing then use.
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    chain = build_chain(build, rec, workdir / "images")
    m = machines.launch(build, SECONDARY)
    for obj in objects:
        m.qmp_ok("object-add", **obj)
    m.qmp_ok("blockdev-add", **chain.blockdev("secondary", backing=None))
    sec_node = "secondary"
    if secondary_filter is not None:
        m.qmp_ok("blockdev-add", **secondary_filter)
        sec_node = secondary_filter["node-name"]
    topo = Topology(build, Model(profile), machines, chain)
    sec = topo.model.add_disk(disk_from_layer(chain, "secondary"))
    hidden = topo.model.add_disk(disk_from_layer(chain, "hidden"))
    active = topo.model.add_disk(disk_from_layer(chain, "active"))
    hidden_opts = layer_opts(chain, "hidden", sec_node if hidden_backing else None)
    active_opts = layer_opts(chain, "active", hidden_opts if active_backing else None)
    if "backing" in hidden_opts and hidden_opts["backing"] is not None:
        hidden.backing = sec
    if "backing" in active_opts and active_opts["backing"] is not None:
        active.backing = hidden
    if export:
        sock = m.sock_path("nbd.sock")
        m.qmp_ok("nbd-server-start", addr=nbd_addr(sock))
        m.qmp_ok(
            "block-export-add",
            type="nbd",
            id="export",
            **{"node-name": sec_node},
            writable=True,
            name=EXPORT,
        )
        sec.has_blk = True
        topo.model.export = sec
        topo.export_io = NbdClient(build, sock, EXPORT)
    opts: dict[str, Any] = {
        "driver": "replication",
        "node-name": REP,
        "mode": "secondary",
        "top-id": top_id,
        "file": active_opts,
    }
    if drive_id is None:
        m.qmp_ok("blockdev-add", **opts)
    else:
        answer = drive_add(m, {"id": drive_id, **opts})
        assert answer == "OK", f"drive_add refused the replication node: {answer}"
    if top_valid is None:
        top_valid = top_id in (REP, drive_id)
    topo.model.add_node(
        SECONDARY,
        ReplicationNode(REP, Mode.SECONDARY, profile, active, top_id=top_id, top_valid=top_valid),
    )
    topo.guests[REP] = GuestIO(m, REP)
    topo.layer_nodes = {n: (SECONDARY, n) for n in ("active", "hidden", "secondary")}
    if active.backing is None:
        # the hidden disk is left out of rep's graph: it is not opened at all
        del topo.layer_nodes["hidden"]
    return topo


def primary_local(
    build: QemuBuild,
    profile: Profile,
    machines: MachineSet,
    workdir: Path,
    *,
    drive_id: str | None = None,
    size: str = "64M",
) -> Topology:
    """rep (primary) over a local qcow2 child (as tests/unit/test-replication.c opens it),
    by blockdev-add or, with `drive_id`, by HMP drive_add. The child has no export."""
    rec = Recipe.from_dict(
        {"layers": {"child": {"size": size, "cluster_size": "64k"}}},
        source=f"<primary's local child, {size}>",
    )
    chain = build_chain(build, rec, workdir / "images")
    m = machines.launch(build, PRIMARY)
    opts: dict[str, Any] = {
        "driver": "replication",
        "node-name": REP,
        "mode": "primary",
        "file": chain.blockdev("child", backing=FROM_HEADER),
    }
    if drive_id is None:
        m.qmp_ok("blockdev-add", **opts)
    else:
        answer = drive_add(m, {"id": drive_id, **opts})
        assert answer == "OK", f"drive_add refused the replication node: {answer}"
    topo = Topology(build, Model(profile), machines, chain)
    child = topo.model.add_disk(disk_from_layer(chain, "child"))
    child.has_blk = drive_id is not None
    topo.model.add_node(PRIMARY, ReplicationNode(REP, Mode.PRIMARY, profile, child))
    topo.guests[REP] = GuestIO(m, REP)
    topo.layer_nodes = {"child": (PRIMARY, "child")}
    return topo


# ---- reading the graph


def rep_edges(m: Machine, node: str = REP) -> dict[str, str]:
    """x-debug-query-block-graph: `node`'s children, child name -> the child node's name
    (an auto-generated #blockNNN name is replaced by its driver, e.g. copy-before-write)."""
    graph = m.qmp_ok("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    drivers = {n["node-name"]: n["drv"] for n in m.qmp_ok("query-named-block-nodes")}
    parent = [i for i, n in names.items() if n == node]
    assert len(parent) == 1, f"node {node!r} not (or twice) in the graph: {names}"
    out: dict[str, str] = {}
    for e in graph["edges"]:
        if e["parent"] == parent[0]:
            child = names[e["child"]]
            out[e["name"]] = drivers.get(child, child) if child.startswith("#") else child
    return out


def block_job_nodes(m: Machine) -> int:
    graph = m.qmp_ok("x-debug-query-block-graph")
    return sum(1 for n in graph["nodes"] if n["type"] == "block-job")


def node_info(m: Machine, node: str) -> dict[str, Any]:
    for n in m.qmp_ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return dict(n)
    raise KeyError(f"no node {node!r} in query-named-block-nodes")
