"""The full COLO pair as a value: two qemu-system processes wired as QEMU's
docs/block-replication.txt and docs/COLO-FT.txt wire them.

Secondary (machine "secondary"): the secondary disk ("secondary", COLO-FT's parent0)
exported writable over NBD on a unix socket (export "secondary"), optionally under a
filter node (blkdebug, throttle) that the export and the hidden disk's backing use; the
replication node "rep" (mode secondary) over the inline active -> hidden -> secondary
chain (COLO-FT's childs0); optionally the quorum "top-disk1" over rep (COLO-FT's
secondary colo-disk0: after a failover it can take a new primary child), and top-id
then names that quorum.

Primary (machine "primary"): its local disk "primary-disk" under the quorum "colo-disk0"
(vote-threshold 1, read-pattern fifo) that the guest uses; the replication node
"replication0" (mode primary) over an NBD client ("nbd0") of the secondary's export is
late: the story connects it (harness.pair.PairStory.connect) and hot-adds it to the
quorum with x-blockdev-change (children.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.faults import FailingWrites, Throttle
from harness.images import Recipe
from harness.ops import PRIMARY, REP, SECONDARY
from harness.topology.standard import EXPORT, GUEST_EXPORT
from harness.topology.values import (
    ColoMigration,
    Export,
    Filter,
    Graph,
    Guest,
    Image,
    MachineSpec,
    Mode,
    NbdClient,
    Node,
    Quorum,
    Replication,
    Vm,
)

# node names (COLO-FT's where it has one; node names are unique across the pair
# because operations name nodes, not machines)
PQ = "colo-disk0"  # the primary's quorum: the primary VM's disk
SQ = "top-disk1"  # the secondary's quorum (block-replication.txt's top-disk1)
PREP = "replication0"  # the primary's replication node
NBD_NODE = "nbd0"  # its NBD client
LOCAL = "primary-disk"  # the primary's local disk (the quorum's children.0)
PRIMARY_CHILD = "children.1"  # the replication node's child name in the quorum


def pair_recipe(
    size: int | str = "4M",
    cluster: int | str = "64k",
    *,
    contents: Sequence[tuple[int | str, int | str, int]] = ((0, "1M", 0x11),),
    hidden_cluster: int | str | None = None,
    active_cluster: int | str | None = None,
    local_cluster: int | str | None = None,
) -> Recipe:
    """The four images of a pair: secondary <- hidden <- active, and the primary's disk.

    The primary's and the secondary's disks start with the same `contents`: before
    replication starts both must hold the same data (block-replication.txt).
    """
    extents = [{"offset": o, "length": n, "pattern": p} for o, n, p in contents]

    def layer(cl: int | str | None, backing: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"size": size, "cluster_size": cluster if cl is None else cl}
        if backing is not None:
            d["backing"] = backing
        return d

    sec = layer(None)
    sec["contents"] = extents
    local = layer(local_cluster)
    local["contents"] = extents
    args = f"size={size}, cluster={cluster}"
    for k, v in (("hidden", hidden_cluster), ("active", active_cluster), ("local", local_cluster)):
        if v is not None:
            args += f", {k}={v}"
    if contents:
        args += ", contents=" + ",".join(f"{o}+{n}={p:#x}" for o, n, p in contents)
    return Recipe.from_dict(
        {
            "description": f"COLO pair ({args})",
            "layers": {
                "secondary": sec,
                "hidden": layer(hidden_cluster, "secondary"),
                "active": layer(active_cluster, "hidden"),
                LOCAL: local,
            },
        },
        source=f"<pair {args}>",
    )


def pair(
    recipe: Recipe | None = None,
    *,
    secondary_quorum: bool = False,
    over_secondary: FailingWrites | Throttle | None = None,
    hidden_fault: FailingWrites | None = None,
    active_fault: FailingWrites | None = None,
    export_client: bool = False,
    top_id: str | None = None,
    guest_over_nbd: bool = False,
    colo: bool = False,
    vm: Vm | None = None,
) -> Graph:
    """Both machines, as far as COLO sets them up before replication starts.

    `over_secondary`: a filter over the secondary disk; `hidden_fault`/`active_fault`: a
    FailingWrites under that layer (a blkdebug as its file); `export_client`: the harness
    also opens its own NBD client of the export (PrimaryWrite/PrimaryRead); `top_id`:
    another top-id for rep; `guest_over_nbd`: the secondary VM's I/O goes through a second
    NBD export (name GUEST_EXPORT) of its guest node instead of HMP qemu-io, which on 10.0
    drains the graph (and so would let a held failover commit finish); `colo`: COLO's
    migration drives the pair (the secondary waits for it with `-incoming defer`)
    instead of the Xen hooks; `vm`: both machines run that guest with a vCPU instead
    of -M none (COLO stops and starts it at each checkpoint).
    """
    sec_node = "secondary" if over_secondary is None else over_secondary.node
    guest = SQ if secondary_quorum else REP
    snodes: list[Node] = [Image("secondary")]
    if over_secondary is not None:
        snodes.append(Filter(over_secondary))
    snodes += [
        Export(sec_node, EXPORT, client=export_client, path=True),
        Image("hidden", sec_node, fault=hidden_fault, inline=True),
        Image("active", "hidden", fault=active_fault, inline=True),
        Replication(REP, Mode.SECONDARY, "active", top_id=top_id or guest),
    ]
    if secondary_quorum:
        snodes.append(Quorum(SQ, (REP,)))
    if guest_over_nbd:
        snodes.append(Export(guest, GUEST_EXPORT, GUEST_EXPORT))
    pnodes = (
        Image(LOCAL),
        Quorum(PQ, (LOCAL,)),
        NbdClient(NBD_NODE, SECONDARY, EXPORT),
        Replication(PREP, Mode.PRIMARY, NBD_NODE, late=True),
    )
    guests = [Guest(REP), Guest(PQ)]
    if secondary_quorum:
        guests.append(Guest(SQ))
    if guest_over_nbd:
        guests = [g for g in guests if g.node != guest] + [Guest(guest, export=GUEST_EXPORT)]
    return Graph(
        recipe or pair_recipe(),
        (
            MachineSpec(SECONDARY, tuple(snodes), incoming=colo, vm=vm),
            MachineSpec(PRIMARY, pnodes, vm=vm),
        ),
        tuple(guests),
        ColoMigration(PRIMARY, SECONDARY) if colo else None,
    )
