"""What a secondary's start does to the rest of the process's block graph: since QEMU 8.0
start attaches the hidden and secondary disks as children under the graph's write lock,
and taking it (bdrv_graph_wrlock) begins a drained section over **every** block node of
the process (bdrv_drain_all_begin_nopoll). A drain restarts a throttle group's queued
requests at once, so a write held by a throttle on an unrelated node completes during
the start. Before 8.0 (5.2, 7.2) that write stays queued. QEMU 10.1 makes the drain
explicit (bdrv_graph_wrlock_drained); the answer is the same.

Facts pinned:
- whether start completes a write queued on an unrelated throttled node (the profile's
  `start_drains_every_node`), seen through that node's own `wr_highest_offset`
  (query-blockstats with query-nodes), which moves when the write completes;
- either way the write completes once its throttle node is drained by a reopen.
"""

from __future__ import annotations

import pytest

from harness import graph
from harness.faults import Throttle
from harness.images import Recipe
from harness.ops import REP, SECONDARY
from harness.qemu_io_process import InteractiveQemuIo
from harness.real import open_live
from harness.topology.values import Export, Filter, Graph, Image, MachineSpec, Mode, Replication
from harness.units import KiB

RECIPE = {
    "layers": {
        "other": {"size": "1M"},
        "secondary": {"size": "1M"},
        "hidden": {"size": "1M", "backing": "secondary"},
        "active": {"size": "1M", "backing": "hidden"},
    }
}
# 4 KiB/s: the first 64 KiB write passes on an empty bucket, the next waits about 16 s.
THROTTLE = Throttle("other-thr", "other", "slow", (("slow", {"bps-write": 4 * KiB}), ("free", {})))
# A secondary whose process also exports an unrelated disk under the throttle.
GRAPH = Graph(
    Recipe.from_dict(RECIPE, source="<drain>"),
    (
        MachineSpec(
            SECONDARY,
            (
                Image("other"),
                Image("secondary"),
                Filter(THROTTLE),
                Export("secondary", "secondary", "secondary"),
                Export("other-thr", "other", "other"),
                Image("hidden", "secondary", inline=True),
                Image("active", "hidden", inline=True),
                Replication(REP, Mode.SECONDARY, "active", top_id=REP),
            ),
        ),
    ),
)


def _highest_write(m, node: str) -> int:
    stats = m.qmp_ok("query-blockstats", **{"query-nodes": True})
    return next(s["stats"]["wr_highest_offset"] for s in stats if s.get("node-name") == node)


@pytest.mark.quick
@pytest.mark.secondary
def test_start_drains_every_node(qemu_build, profile, machines, tmp_path):
    build = qemu_build[0]
    topo = open_live(GRAPH, build, profile, machines, tmp_path)
    m, sock = topo.machine(SECONDARY), topo.sockets[SECONDARY]
    client = InteractiveQemuIo(
        build, ["-f", "raw", f"nbd+unix:///other?socket={sock}"], name="other's NBD client"
    )
    try:
        client.run("write -P 0x11 0 64k")  # passes: the bucket was empty
        client.run("aio_write -P 0x22 64k 64k")  # queued behind the throttle
        # The NBD server reads requests in order: once this read is answered, the write
        # before it has reached the throttle's queue.
        client.run("read 0 512")
        assert _highest_write(m, "other") == 64 * KiB
        assert m.qmp("xen-set-replication", enable=True, primary=False).ok
        drained = _highest_write(m, "other") == 128 * KiB
        assert drained == profile.start_drains_every_node, (
            f"after start the queued write has {'' if drained else 'not '}completed; "
            f"the profile {profile.name} says start "
            f"{'drains' if profile.start_drains_every_node else 'does not drain'} every node"
        )
        # Either way a drain of the throttle node itself releases it.
        assert graph.reopen(m, [THROTTLE.options(group="free")]).ok
        assert _highest_write(m, "other") == 128 * KiB
        client.run("aio_flush")
    finally:
        client.close()
    assert m.qmp("xen-set-replication", enable=False, primary=False, failover=True).ok
