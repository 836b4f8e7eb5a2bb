"""What the differential runs are made of: topology specs, operation weights, CI groups.

Topology specs: each kind of topology (harness.differential.kinds) over the recipes
it runs with, every disk at DISK_SIZE. Operation weights (WEIGHTS): the operations a
step of the state machine (harness.differential.rules) chooses from and how often. A
`Group` is one run of the state machine: its specs, its share of the examples and the
weights that differ from WEIGHTS there; `ci_groups()` are the runs the CI test makes
per QEMU version.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from harness.differential.colo_kinds import COLO_FAULTS_KIND, COLO_KIND, COLO_REFUSED_KIND
from harness.differential.kinds import (
    FAULTS_KIND,
    NODES_KIND,
    PAIR_KIND,
    PRIMARY_KIND,
    SECONDARY_KIND,
    TopologySpec,
    nodes_recipe,
)
from harness.images import Recipe, load_recipe
from harness.topology.pair import pair_recipe

# ---- topology specs

# The size of every disk in the CI topologies. After each operation that can change
# one, each guest view is read back whole, at about 0.7 ms per MiB per read (qemu-io
# reads and verifies every byte): the secondary-only and primary-only recipes run at
# this size instead of their 64 MiB, as the pair and the two-node machine did already.
# The random requests stay inside the first 4 MiB (strategies.WINDOW) and at the end of
# the disk anyway.
DISK_SIZE = "4M"


def sized(recipe: Recipe, size: str = DISK_SIZE) -> Recipe:
    """`recipe` with every layer `size` long (its contents must fit)."""
    d = recipe.to_dict()
    for layer in d["layers"].values():
        layer["size"] = size
    return Recipe.from_dict(d, source=f"{recipe.source} at {size}")


def prefilled_recipe() -> Recipe:
    """secondary-prefilled at DISK_SIZE: its 0x22 extent, at 4M there, at 3M."""
    d = load_recipe("secondary-prefilled").to_dict()
    contents = d["layers"]["secondary"]["contents"]
    assert contents[1]["offset"] == "4M", contents
    contents[1]["offset"] = "3M"
    d["description"] += " (at 4 MiB: 0x22 over [3M, 3M+192k))"
    return sized(Recipe.from_dict(d, source="secondary-prefilled"))


def stale_recipe() -> Recipe:
    """4 MiB, 64 KiB clusters; the active and hidden disks hold stale data before start
    (start's checkpoint must empty them) and the secondary disk holds data of its own."""
    return Recipe.from_dict(
        {
            "description": "secondary chain with stale active and hidden disks",
            "layers": {
                "secondary": {
                    "size": DISK_SIZE,
                    "contents": [{"offset": 0, "length": "256k", "pattern": 0x66}],
                },
                "hidden": {
                    "size": DISK_SIZE,
                    "backing": "secondary",
                    "contents": [{"offset": "64k", "length": "128k", "pattern": 0xA5}],
                },
                "active": {
                    "size": DISK_SIZE,
                    "backing": "hidden",
                    "contents": [
                        {"offset": 0, "length": "96k", "pattern": 0x5A},
                        {"offset": "1M", "length": "4k", "pattern": 0x5B},
                    ],
                },
            },
        },
        source="<differential: stale active and hidden>",
    )


# the faults topology's poisoned sector: inside cluster 5 (where random requests land)
POISON = 0x50000 + 0x1000


def secondary_specs() -> tuple[TopologySpec, ...]:
    """The smallest clusters first (hypothesis draws the first most often): with 512-byte
    clusters everything below the 64 KiB backup cluster shows in the layer maps. Every
    recipe at DISK_SIZE."""
    recipes = ("secondary-512", "secondary", "secondary-mixed", "secondary-2m")
    specs = [TopologySpec(SECONDARY_KIND, sized(load_recipe(r)), r) for r in recipes]
    specs.insert(2, TopologySpec(SECONDARY_KIND, stale_recipe(), "stale"))
    specs.append(TopologySpec(SECONDARY_KIND, prefilled_recipe(), "secondary-prefilled"))
    return tuple(specs)


def faults_specs() -> tuple[TopologySpec, ...]:
    return (
        TopologySpec(FAULTS_KIND, sized(load_recipe("secondary")), "secondary", POISON),
        TopologySpec(FAULTS_KIND, stale_recipe(), "stale", POISON),
    )


def primary_specs() -> tuple[TopologySpec, ...]:
    return (TopologySpec(PRIMARY_KIND, sized(load_recipe("primary-child")), "primary-child"),)


def pair_specs() -> tuple[TopologySpec, ...]:
    """The COLO pair over three geometries (4 MiB disks, the first MiB holding data on
    both sides): 64 KiB clusters, 512-byte clusters (every write shows in the layer
    maps), and mixed (hidden 2 MiB: a 2 MiB backup cluster; local disk 4 KiB)."""
    mixed = pair_recipe(
        cluster="512", hidden_cluster="2M", active_cluster="64k", local_cluster="4k"
    )
    return (
        TopologySpec(PAIR_KIND, pair_recipe(cluster="64k"), "64k"),
        TopologySpec(PAIR_KIND, pair_recipe(cluster="512"), "512"),
        TopologySpec(PAIR_KIND, mixed, "mixed"),
    )


def colo_specs() -> tuple[TopologySpec, ...]:
    """The COLO pair that COLO's migration drives, over the pair's geometries; its hidden
    disk failing its writes (colo-faults); its secondary unable to start (colo-refused).
    hypothesis draws the first most often: the plain pair, then the faults."""
    (c64, c512, mixed) = (TopologySpec(COLO_KIND, s.recipe, s.name) for s in pair_specs())
    return (
        c64,
        TopologySpec(COLO_FAULTS_KIND, pair_recipe(cluster="64k"), "64k"),
        c512,
        TopologySpec(COLO_REFUSED_KIND, pair_recipe(cluster="64k"), "64k"),
        mixed,
    )


def nodes_specs() -> tuple[TopologySpec, ...]:
    return (TopologySpec(NODES_KIND, nodes_recipe(DISK_SIZE, "64k"), "old+rep"),)


# ---- operations

# The operations a step chooses from, with their weights. Each name is one operation of
# the state machine (its method `op_<name>`); the machine's preconditions say when it
# may be chosen.
WEIGHTS: tuple[tuple[str, int], ...] = (
    ("write", 4),
    ("primary_write", 6),
    ("checkpoint", 4),
    ("read", 3),
    ("failover", 3),
    ("link_down", 3),
    ("write_zeroes", 2),
    ("discard", 2),
    ("primary_read", 2),
    ("primary_write_zeroes", 2),
    ("status", 2),
    ("primary_discard", 1),
    ("flush", 1),
    ("stop", 1),
    ("start", 1),
    ("start_other_mode", 1),
    ("start_with_failover", 1),
    ("interrupted_checkpoint", 1),
)
OP_KINDS = tuple(k for k, _ in WEIGHTS)


@functools.lru_cache(maxsize=256)
def weighted_kinds(
    allowed: tuple[str, ...], changes: tuple[tuple[str, int], ...] = ()
) -> tuple[str, ...]:
    """The allowed operation kinds, each repeated by its weight (`changes` overrides
    WEIGHTS)."""
    weights = dict(WEIGHTS)
    weights.update(changes)
    return tuple(k for k, _ in WEIGHTS if k in allowed for _ in range(weights[k]))


# ---- groups


@dataclass(frozen=True, kw_only=True)
class Group:
    """One run of the state machine: a name, its specs and its share of the examples."""

    name: str
    specs: Callable[[], tuple[TopologySpec, ...]]
    # the CI profile's examples in this group
    examples: int
    # the CI profile keeps running (next seed) until this many steps have run
    min_steps: int = 0
    # operation weights that differ from WEIGHTS in this group
    weights: tuple[tuple[str, int], ...] = ()
    # examples start replication at once (else three in four do)
    start_first: bool = False
    # fail over only when the commit has something to copy (active or hidden hold data)
    failover_dirty: bool = False
    # the CI profile's steps per example in this group (None: the profile's)
    steps: int | None = None


def ci_groups() -> tuple[Group, ...]:
    """The CI test's runs per QEMU version: at most 34 examples (the pair's of 11 steps,
    the others' of 19; hypothesis ends some early: 30 examples, 530 steps at seed 0), at
    least 426 steps in all (a group short of its min_steps runs again with the next
    seed)."""
    return (
        Group(
            name="secondary",
            specs=secondary_specs,
            examples=12,
            min_steps=170,
            weights=(("failover", 5),),
            failover_dirty=True,
        ),
        # the failover commit is what this topology is about
        Group(
            name="faults",
            specs=faults_specs,
            examples=8,
            min_steps=100,
            weights=(("failover", 2), ("write", 6), ("primary_write", 3), ("checkpoint", 2)),
            start_first=True,
            failover_dirty=True,
        ),
        # the primary's own I/O and its link matter, the third party's writes less
        Group(
            name="primary",
            specs=primary_specs,
            examples=5,
            min_steps=70,
            weights=(("link_down", 4), ("write", 6), ("write_zeroes", 3), ("primary_write", 2)),
        ),
        # two nodes in one QEMU: what the *_all walk's order decides
        Group(
            name="many-nodes",
            specs=nodes_specs,
            examples=3,
            min_steps=36,
            weights=(("failover", 2),),
        ),
        # the full COLO pair: the VMs' writes, checkpoints on both sides, failover, the
        # primary's stop, the link between them (a failover ends an example's
        # replication: shorter examples, more of them)
        Group(
            name="pair",
            specs=pair_specs,
            examples=6,
            min_steps=50,
            weights=(("write", 8), ("checkpoint", 4), ("failover", 8), ("link_down", 2)),
            start_first=True,
            failover_dirty=True,
            steps=12,
        ),
        # COLO's migration drives the pair: its checkpoints, a side taking over from its
        # dead peer, a death in the middle of a checkpoint, the replication errors that
        # end COLO, a secondary that cannot start
        Group(
            name="colo",
            specs=colo_specs,
            examples=8,
            min_steps=60,
            weights=(
                ("write", 8),
                ("checkpoint", 5),
                ("failover", 4),
                ("interrupted_checkpoint", 2),
                ("link_down", 1),
            ),
            steps=12,
        ),
    )
