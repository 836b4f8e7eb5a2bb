"""Fault injection for the COLO pair: blkdebug rules, throttle groups, held commits.

Kills and clean exits are PairStory steps (harness.pair: `kill`, `quit`); this module
builds the nodes that inject errors or hold requests, and the steps that switch them.

- `blkdebug(image, ...)`: a blkdebug node over `image` whose rule, once its event has
  fired, fails every later write (`once: false`) with EIO (optionally only writes that
  cover one sector). Under a qcow2 layer (as its file) the event `write_aio` is the
  first guest-data write into that layer: metadata writes before it succeed (so the
  checkpoint that start performs still empties the layer), everything after it fails.
  Over the secondary disk the event `pwritev` arms it at the first write, and a
  `sector` limits it to the requests covering that sector (the failover commit's).
- Throttle: the secondary disk under a throttle node in group `tg-free` (no limits);
  `hold_commit` moves it to `tg-hold` (bps-write 512: after one request the next waits
  minutes) with blockdev-reopen, `release_commit` moves it back. The reopen drains the
  node, so queued requests restart at once; setting the group's limits with qom-set
  would not restart them (a queued request keeps its timer).
"""

from __future__ import annotations

from typing import Any

from harness import graph
from harness.model.replication import Mode, ReplicationNode
from harness.observe import QMP_OK, Observation, qmp_error
from harness.ops import REP, SECONDARY
from harness.pair import Action, PairStory

EIO_ERRNO = 5
SECTOR = 512

EXPORT_ID = "export"  # the secondary's block export (harness.pair)

THROTTLE_FREE = "tg-free"
THROTTLE_HOLD = "tg-hold"
THROTTLE_NODE = "sec-throttle"
# object-add arguments for the secondary: the two groups the throttle node moves between
THROTTLE_OBJECTS = (
    {"qom-type": "throttle-group", "id": THROTTLE_FREE},
    {"qom-type": "throttle-group", "id": THROTTLE_HOLD, "limits": {"bps-write": 512}},
)


def blkdebug(
    image: Any,
    node_name: str,
    *,
    event: str = "write_aio",
    sector: int | None = None,
    errno: int = EIO_ERRNO,
) -> dict[str, Any]:
    """blockdev-add options of a blkdebug node over `image` (a node name or options)."""
    rule: dict[str, Any] = {"event": event, "iotype": "write", "errno": errno, "once": False}
    if sector is not None:
        rule["sector"] = sector
    return {"driver": "blkdebug", "node-name": node_name, "image": image, "inject-error": [rule]}


def secondary_blkdebug(offset: int, node_name: str = "sec-dbg") -> dict[str, Any]:
    """A blkdebug over the secondary disk failing every write that covers `offset`."""
    if offset % SECTOR:
        raise ValueError("blkdebug rules name whole sectors")
    return blkdebug("secondary", node_name, event="pwritev", sector=offset // SECTOR)


def throttle_filter(group: str = THROTTLE_FREE) -> dict[str, Any]:
    """A throttle node over the secondary disk (its groups: THROTTLE_OBJECTS)."""
    return {
        "driver": "throttle",
        "node-name": THROTTLE_NODE,
        "throttle-group": group,
        "file": "secondary",
    }


def _rep(s: PairStory) -> ReplicationNode:
    return s.model.nodes[REP]


def hold_commit(s: PairStory) -> Observation:
    """From now on the secondary disk takes one write and queues the rest: a failover
    commit started now stays in flight (FAILOVER) until release_commit()."""
    return _move_throttle(s, THROTTLE_HOLD, held=True)


def release_commit(s: PairStory) -> Observation:
    """Back to the unlimited group; the reopen's drain restarts the queued writes."""
    return _move_throttle(s, THROTTLE_FREE, held=False)


def _move_throttle(s: PairStory, group: str, held: bool) -> Observation:
    """blockdev-reopen the throttle filter into `group`; the model's commit is `held`."""
    sm = s.topo.machine(SECONDARY)

    def model() -> Observation:
        _rep(s).commit_held = held
        return QMP_OK

    return s.act(
        Action(SECONDARY, f"blockdev-reopen {THROTTLE_NODE} throttle-group={group}"),
        lambda: graph.reopen(sm, [throttle_filter(group)]),
        model,
    )


def remove_export(s: PairStory, mode: str) -> Observation:
    """block-export-del of the secondary's export; `hard` disconnects the primary, `safe`
    is refused while it is connected (QEMU's text: export '<id>' still in use)."""
    sm = s.topo.machine(SECONDARY)

    def model() -> Observation:
        clients = [
            n for n in s.model.nodes.values() if n.mode is Mode.PRIMARY and n.forward is not None
        ]
        connected = any(n.link_up for n in clients) or s.topo.export_io is not None
        if mode == "safe" and connected:
            return qmp_error(f"export '{EXPORT_ID}' still in use")
        s.export_gone()
        return QMP_OK

    return s.act(
        Action(SECONDARY, f"block-export-del id={EXPORT_ID} mode={mode}"),
        lambda: sm.qmp("block-export-del", id=EXPORT_ID, mode=mode),
        model,
    )

