"""Reading a running QEMU's block graph: what the cases assert about nodes and edges, and
what the harness asks of it (a failover commit in flight and its progress, a node's own
allocation).

The model has no block graph of its own beyond the disks and nodes it tracks, so
the graph-shape cases (open, start, stop, blockers) ask QEMU directly and state the
expected shape in the case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.layer_inspector import parse_qemu_io_map
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


def export_gone(m: Machine, export_id: str, deadline: float = 5.0) -> None:
    """Wait until `m` no longer lists the export `export_id` (a hard block-export-del
    removes it only once its clients are disconnected)."""
    end = time.monotonic() + deadline
    while any(e["id"] == export_id for e in m.qmp_ok("query-block-exports")):
        if time.monotonic() > end:
            raise TimeoutError(f"{m.name}: export {export_id!r} still there after {deadline} s")
        time.sleep(0.01)


def node_filename(m: Machine, node: str) -> str:
    """QEMU's bs->filename of `node` (query-named-block-nodes' "file"): the name QEMU's
    texts quote ("Failed to empty <filename>"), a json: filename over a blkdebug file."""
    for n in m.qmp_ok("query-named-block-nodes"):
        if n["node-name"] == node:
            return str(n["file"])
    raise KeyError(f"no node {node!r} in query-named-block-nodes")


def _commits(graph: dict[str, Any]) -> set[str]:
    """The ids of the failover commits in an x-debug-query-block-graph reply: internal
    block jobs with a `source` edge (the mirror-based active commit). The backup job of a
    running secondary has only `main node` and `target` edges and lives as long as
    replication runs, so with several replication nodes a commit must not be confused
    with it."""
    jobs = {n["id"] for n in graph.get("nodes", []) if n.get("type") == "block-job"}
    return {
        e["parent"] for e in graph.get("edges", []) if e["parent"] in jobs and e["name"] == "source"
    }


def commit_in_flight(machine: Machine) -> bool:
    """True while the graph shows a failover commit."""
    return bool(_commits(machine.qmp_ok("x-debug-query-block-graph")))


@dataclass(frozen=True)
class CommitProgress:
    """What QEMU shows of a failover commit (replication's commit_active_start, a mirror
    job: internal, so absent from query-jobs and query-block-jobs). The graph shows its
    block-job node; the job's anonymous dirty bitmap (on its source, the active disk, up
    to 7.2; on its mirror_top filter from 10.0) counts the bytes it still has to copy."""

    in_flight: bool
    left: int | None = None  # bytes still to copy; None: no bitmap seen
    size: int | None = None  # the source's virtual size (for a deadline without `left`)


def commit_progress(machine: Machine) -> CommitProgress:
    """The failover commit's progress (CommitProgress(False) when none is in flight)."""
    graph = machine.qmp_ok("x-debug-query-block-graph")
    names = {n["id"]: n.get("name") for n in graph.get("nodes", [])}
    edges = graph.get("edges", [])
    commits = _commits(graph)
    if not commits:
        return CommitProgress(False)
    watched = {
        names[e["child"]]: e["name"]
        for e in edges
        if e["parent"] in commits and e["name"] in ("main node", "source")
    }
    res = machine.qmp("query-named-block-nodes", flat=True)
    nodes = res.value if res.ok else machine.qmp_ok("query-named-block-nodes")
    left: int | None = None
    size: int | None = None
    for node in nodes:
        role = watched.get(node.get("node-name"))
        if role is None:
            continue
        for bm in node.get("dirty-bitmaps") or []:
            if "name" not in bm and "count" in bm:
                left = (left or 0) + int(bm["count"])
        if role == "source":
            size = node.get("image", {}).get("virtual-size")
    return CommitProgress(True, left, size)


class NodeMissing(AssertionError):
    """The running QEMU has no node of that name (HMP qemu-io's "Cannot find device")."""


def live_allocation(machine: Machine, node: str) -> list[tuple[int, int]]:
    """A node's own allocated ranges, asked of the running QEMU (HMP `qemu-io NODE map`);
    NodeMissing where QEMU has no such node."""
    mark = machine.stdout_mark()
    reply = machine.hmp(f'qemu-io {node} "map"')
    out = machine.stdout_since(mark)
    if reply.strip():
        # e.g. "Error: Cannot find device=active nor node-name=active": never read as "empty"
        cls = NodeMissing if "Cannot find device" in reply else AssertionError
        raise cls(f"qemu-io {node} map on {machine.name}: {reply.strip()}")
    return parse_qemu_io_map(out, f"qemu-io {node} map on {machine.name}")
