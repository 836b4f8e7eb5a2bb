"""Reading a running QEMU's block graph: what the cases assert about nodes and edges.

The model has no block graph of its own beyond the disks and nodes it tracks, so
the graph-shape cases (open, start, stop, blockers) ask QEMU directly and state the
expected shape in the case.
"""

from __future__ import annotations

from typing import Any

from harness.machine import Machine
from harness.observe import QmpResult
from harness.ops import REP


def children(m: Machine, node: str = REP) -> dict[str, str]:
    """`node`'s children: edge name -> child node name (x-debug-query-block-graph)."""
    graph = m.qmp_ok("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    ids = [i for i, name in names.items() if name == node]
    assert len(ids) == 1, f"node {node!r} appears {len(ids)} times in the graph: {graph}"
    return {e["name"]: names[e["child"]] for e in graph["edges"] if e["parent"] == ids[0]}


def rep_edges(m: Machine, node: str = REP) -> dict[str, str]:
    """children(), with an auto-generated #blockNNN child named by its driver instead
    (e.g. copy-before-write), so the expected shape can be written down."""
    drivers = {n["node-name"]: n["drv"] for n in m.qmp_ok("query-named-block-nodes")}
    return {
        edge: drivers.get(child, child) if child.startswith("#") else child
        for edge, child in children(m, node).items()
    }


def block_job_nodes(m: Machine) -> int:
    """How many block jobs the graph holds (the backup job while a secondary runs)."""
    graph = m.qmp_ok("x-debug-query-block-graph")
    return sum(1 for n in graph["nodes"] if n["type"] == "block-job")


def node_info(m: Machine, node: str) -> dict[str, Any]:
    """query-named-block-nodes' entry for `node`."""
    for n in m.qmp_ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return dict(n)
    raise KeyError(f"no node {node!r} in query-named-block-nodes")


def node_names(m: Machine) -> set[str]:
    """The named nodes (query-named-block-nodes)."""
    return {n["node-name"] for n in m.qmp_ok("query-named-block-nodes")}


def reopen(m: Machine, options: list[dict[str, Any]]) -> QmpResult:
    """blockdev-reopen of the nodes in `options`.

    QEMU before 6.1 has only the experimental x-blockdev-reopen, which takes one
    node's options instead of a list; its schema answers CommandNotFound for the
    stable name, so the first call tells which one this QEMU speaks.
    """
    res = m.qmp("blockdev-reopen", options=options)
    if res.ok or res.error_class != "CommandNotFound":
        return res
    for opts in options:
        res = m.qmp("x-blockdev-reopen", **opts)
        if not res.ok:
            break
    return res


def node_filename(m: Machine, node: str) -> str:
    """QEMU's bs->filename of `node` (query-named-block-nodes' "file"): the name QEMU's
    texts quote ("Failed to empty <filename>"), a json: filename over a blkdebug file."""
    for n in m.qmp_ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return str(n["file"])
    raise KeyError(f"no node {node!r} in query-named-block-nodes")
