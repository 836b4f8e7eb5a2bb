"""Model-side builders for the standard topologies (the real side mirrors them)."""

from __future__ import annotations

from harness.model.disks import Disk
from harness.model.profiles import Profile
from harness.model.replication import Mode, ReplicationNode
from harness.model.system import Model
from harness.ops import PRIMARY, REP, SECONDARY

MiB = 1 << 20


def secondary_model(
    profile: Profile,
    size: int = 64 * MiB,
    cluster: int = 65536,
    *,
    active_cluster: int | None = None,
    hidden_cluster: int | None = None,
    secondary_cluster: int | None = None,
    top_valid: bool = True,
) -> Model:
    """Secondary-only topology: rep -> active -> hidden -> secondary (exported over NBD)."""
    m = Model(profile)
    sec = m.add_disk(Disk("secondary", size, secondary_cluster or cluster, has_blk=True))
    hidden = m.add_disk(Disk("hidden", size, hidden_cluster or cluster, backing=sec))
    active = m.add_disk(Disk("active", size, active_cluster or cluster, backing=hidden))
    m.export = sec
    m.add_node(
        SECONDARY,
        ReplicationNode(REP, Mode.SECONDARY, profile, active, top_id=REP, top_valid=top_valid),
    )
    return m


def primary_model(profile: Profile, size: int = 64 * MiB, cluster: int = 65536) -> Model:
    """Primary-only topology: rep (primary) -> NBD client -> a storage daemon's disk."""
    m = Model(profile)
    child = m.add_disk(Disk("child", size, cluster, has_blk=True))
    m.add_node(PRIMARY, ReplicationNode(REP, Mode.PRIMARY, profile, child))
    return m
