"""Is a QEMU as it was when it started? QEMU's own answers say; and a generic teardown.

A QEMU process may serve several cases (harness.pool) only if, between them, it is in
the state a fresh one starts in. `leftovers(m, fresh)` asks QEMU six questions, with
public queries, one for each kind of state a case can leave behind, and names what it
finds (nothing: the QEMU is pristine):

- block nodes: `query-named-block-nodes` lists every node, named or `#blockNNN`;
- exports: `query-block-exports`;
- an NBD server: `nbd-server-stop` answers `NBD server not running` when none runs (every
  release, 5.2 to 11.1); one that runs is stopped, and reported;
- jobs: `query-jobs` (block jobs included);
- objects: `qom-list /objects`, its children beyond the fresh process's (none up to 10.0,
  the QMP monitor on 11.1; before 10.0 the container itself appears with the first
  object-add, and `Device '/objects' not found` means no objects);
- a replication node in the `*_all` walk: `query-xen-replication-status` answers
  `{"error": false}` when the walk has nothing to report, which is what every release
  (5.2 to 11.1) answers with no node at all (not an error text); a node that has not
  started answers `Block replication is not running`, and a running one is a block node.

`teardown(m, fresh)` undoes whatever graph a case left, in the order QEMU needs, reading
the graph (`x-debug-query-block-graph`: nodes, BlockBackends, jobs, edges) between steps:
`nbd-server-stop` (which deletes the NBD exports and waits until they are gone, their
clients disconnected); a secondary replication still running its internal backup job
stopped without failover (`xen-set-replication enable=false`: the `replication_stop`
that `quit`'s `replication_close` runs too; in both the backup job is cancelled, and
active and hidden are left as they are); exports of other kinds deleted, HMP drive_add's
BlockBackends removed (drive_del); then the graph's roots deleted (blockdev-del), round
by round (a root's inline children go with it, a node it referenced becomes a root), and
the objects (object-del). It gives up with TeardownRefused, saying what QEMU kept, where
QEMU refuses or where undoing would not be calm: a job (a user job, or an internal one
still there after the stop: a failover commit in flight, a job held by a throttle
group), a node QEMU will not delete (an op blocker), an object still in use. The caller
then quits that QEMU (its `quit` closes what is left, as it always did) and starts a
fresh one; nothing here is a verdict on QEMU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.machine import Machine
from harness.observe import QmpResult

NBD_NOT_RUNNING = "NBD server not running"
# query-xen-replication-status with nothing to report: what a fresh QEMU answers
NO_REPLICATION_ERROR = {"error": False}
RUNSTATE = "prelaunch"
# the deadline of one teardown or check command (a healthy one answers in milliseconds)
COMMAND_DEADLINE = 5.0
# how long deleted exports may take to go (their clients are disconnected first)
EXPORT_DEADLINE = 2.0


class TeardownRefused(Exception):
    """The graph could not be undone calmly; the message says what QEMU kept."""


@dataclass(frozen=True)
class Fresh:
    """What a QEMU answered right after it started; `leftovers` compares with it."""

    objects: frozenset[str]
    graph: bool  # x-debug-query-block-graph is there (the teardown reads the graph)


def _ask(m: Machine, cmd: str, args: Mapping[str, Any] | None = None) -> QmpResult:
    return m.execute(cmd, args, COMMAND_DEADLINE)


def _value(m: Machine, cmd: str, args: Mapping[str, Any] | None = None) -> Any:
    res = _ask(m, cmd, args)
    if not res.ok:
        raise TeardownRefused(f"{cmd}: {res.error_class}: {res.desc}")
    return res.value


def _objects(m: Machine) -> set[str]:
    """The children of /objects (none when the container is not there yet)."""
    res = _ask(m, "qom-list", {"path": "/objects"})
    if not res.ok:
        if res.error_class == "DeviceNotFound":
            return set()
        raise TeardownRefused(f"qom-list /objects: {res.error_class}: {res.desc}")
    return {p["name"] for p in res.value if str(p["type"]).startswith("child<")}


def fresh_state(m: Machine) -> Fresh:
    """Ask a QEMU that has just started what a pristine one answers."""
    graph = _ask(m, "x-debug-query-block-graph")
    return Fresh(frozenset(_objects(m)), graph.ok)


def leftovers(m: Machine, fresh: Fresh) -> list[str]:
    """What `m` holds that a fresh QEMU does not, one line each; [] when it is pristine.
    Six questions, each answered by QEMU (see the module's docstring)."""
    try:
        return _leftovers(m, fresh)
    except TeardownRefused as e:
        return [f"a query was refused: {e}"]


def _leftovers(m: Machine, fresh: Fresh) -> list[str]:
    found: list[str] = []

    def names(what: str, items: list[str]) -> None:
        if items:
            found.append(f"{what}: {', '.join(sorted(items))}")

    names("block nodes", [n["node-name"] for n in _value(m, "query-named-block-nodes")])
    names("exports", [e["id"] for e in _value(m, "query-block-exports")])
    nbd = _ask(m, "nbd-server-stop")
    if nbd.ok:
        found.append("an NBD server was running (nbd-server-stop stopped it)")
    elif nbd.desc != NBD_NOT_RUNNING:
        found.append(f"nbd-server-stop answered {nbd.error_class}: {nbd.desc}")
    names("jobs", [f"{j['type']} {j['id']} ({j['status']})" for j in _value(m, "query-jobs")])
    names("objects", list(_objects(m) - fresh.objects))
    walk = _ask(m, "query-xen-replication-status")
    if not walk.ok or walk.value != NO_REPLICATION_ERROR:
        said = walk.value.get("desc", walk.value) if walk.ok else walk.desc
        found.append(f"the replication walk answers {said!r}")
    return found


# ---- teardown


def teardown(m: Machine, fresh: Fresh) -> None:
    """Undo the graph a case left in `m` (see the module's docstring); TeardownRefused
    (what QEMU kept) where it cannot be undone calmly. Without x-debug-query-block-graph
    (no release Debian ships lacks it) nothing is undone: the caller starts afresh."""
    if not fresh.graph:
        raise TeardownRefused("this QEMU has no x-debug-query-block-graph to undo a graph by")
    # Stopping the NBD server deletes its exports and waits until they are gone
    # (nbd_server_free: blk_exp_close_all_type), its clients disconnected first.
    nbd = _ask(m, "nbd-server-stop")
    if not nbd.ok and nbd.desc != NBD_NOT_RUNNING:
        raise TeardownRefused(f"nbd-server-stop: {nbd.desc}")
    graph = _value(m, "x-debug-query-block-graph")
    if any(n["type"] == "block-job" for n in graph["nodes"]):
        # a running secondary's backup job: stop it as quit's replication_close would
        _ask(m, "xen-set-replication", {"enable": False, "primary": False})
        graph = _value(m, "x-debug-query-block-graph")
    backends = [n for n in graph["nodes"] if n["type"] == "block-backend"]
    if backends:
        _delete_backends(m, backends)
        graph = _value(m, "x-debug-query-block-graph")
    while graph["nodes"]:
        _delete_roots(m, graph)
        graph = _value(m, "x-debug-query-block-graph")
    objects = _objects(m) - fresh.objects
    for obj in sorted(objects):
        res = _ask(m, "object-del", {"id": obj})
        if not res.ok:
            raise TeardownRefused(f"object-del {obj}: {res.desc}")


def _delete_backends(m: Machine, backends: list[dict[str, Any]]) -> None:
    """Exports of other kinds than NBD (block-export-del) and HMP drive_add's
    BlockBackends (drive_del)."""
    exports = _value(m, "query-block-exports")
    for e in exports:
        if not e.get("shutting-down"):
            res = _ask(m, "block-export-del", {"id": e["id"], "mode": "hard"})
            if not res.ok:
                raise TeardownRefused(f"block-export-del {e['id']}: {res.desc}")
    end = time.monotonic() + EXPORT_DEADLINE
    while exports:
        if time.monotonic() > end:
            ids = ", ".join(e["id"] for e in exports)
            raise TeardownRefused(f"exports still there {EXPORT_DEADLINE} s after deletion: {ids}")
        time.sleep(0.001)
        exports = _value(m, "query-block-exports")
    for blk in backends:
        if blk["name"]:
            out = m.hmp(f"drive_del {blk['name']}", COMMAND_DEADLINE)
            if out.strip():
                raise TeardownRefused(f"drive_del {blk['name']}: {out.strip()}")


def _delete_roots(m: Machine, graph: dict[str, Any]) -> None:
    """blockdev-del the graph's roots: a root's inline children go with it, and a node
    that only it referenced becomes a root of the next round."""
    held = [
        f"{n['type']} {n['name'] or '-'}" for n in graph["nodes"] if n["type"] != "block-driver"
    ]
    if held:
        raise TeardownRefused(f"the graph still holds {', '.join(held)}")
    children = {e["child"] for e in graph["edges"]}
    roots = [n["name"] for n in graph["nodes"] if n["id"] not in children]
    if not roots:
        raise TeardownRefused("no node of the graph is a root")
    for name in roots:
        res = _ask(m, "blockdev-del", {"node-name": name})
        if not res.ok:
            raise TeardownRefused(f"blockdev-del {name}: {res.desc}")
