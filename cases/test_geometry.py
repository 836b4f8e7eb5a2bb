"""The core replication story over image geometry: cluster sizes and disk sizes.

Each story: start; the secondary VM writes across a cluster boundary and up to the very
end of the disk (unaligned); the primary writes over NBD (overlapping the guest's writes,
and near the end); checkpoints; then a failover (or a plain stop) with I/O after it; and
at the end every layer is checked offline (qemu-img map and bytes) against the model,
after live checks (HMP qemu-io map) along the way.

Geometries: the standard recipes (512 B, 64 KiB, 2 MiB and mixed clusters; 1 MiB, 64 MiB
and 1 TiB virtual disks) and a few made with standard.secondary_chain: clusters larger than
the disk, a 1 TiB disk with 2 MiB clusters, 4 KiB clusters, and a size that is not a
multiple of any cluster.
"""

from __future__ import annotations

import pytest

from harness.images import Recipe, load_recipe
from harness.observe import IO_OK, QMP_OK, qmp_error, status
from harness.ops import (
    Checkpoint,
    PrimaryRead,
    PrimaryWrite,
    Read,
    Settle,
    Start,
    Status,
    Stop,
    Write,
)
from harness.topology.standard import secondary_chain
from harness.units import KiB, MiB

pytestmark = [pytest.mark.secondary]

GEOMETRIES: dict[str, str | Recipe] = {
    "512": "secondary-512",
    "64k": "secondary",
    "2m": "secondary-2m",
    "mixed": "secondary-mixed",
    "1m": "secondary-1m",
    "1t": "secondary-1t",
    "1m-2m-clusters": secondary_chain("1M", "2M"),
    "1t-2m-clusters": secondary_chain("1T", "2M"),
    "4k": secondary_chain("16M", "4k"),
    "odd-size": secondary_chain(MiB + 1536, "64k", hidden_cluster="2M", active_cluster=512),
}


def _recipe(geometry: str) -> Recipe:
    r = GEOMETRIES[geometry]
    return load_recipe(r) if isinstance(r, str) else r


class Layout:
    """Request positions for one geometry."""

    def __init__(self, recipe: Recipe) -> None:
        self.size = recipe.layer("secondary").size
        clusters = [recipe.layer(n).cluster_size or 64 * KiB for n in recipe.names]
        c = max(clusters)
        # a boundary of the biggest clusters (and of 64 KiB backup clusters), inside the disk
        b = min(max(c, 256 * KiB), self.size // 4)
        self.boundary = b - b % (64 * KiB)
        self.window = (max(0, self.boundary - 128 * KiB), 256 * KiB)
        self.end_window = (self.size - 256 * KiB, 256 * KiB)


def _first_interval(s, lay: Layout) -> None:
    a, e = lay.boundary, lay.size
    s.expect(Start(primary=False), QMP_OK)
    s.expect(Write(a - 700, 1500, 0x21), IO_OK)  # unaligned, across the boundary
    s.expect(Write(e - 1000, 1000, 0x22), IO_OK)  # unaligned start, up to the very end
    s.expect(PrimaryWrite(a - 4096, 8192, 0x31), IO_OK)  # under the guest's write
    s.expect(PrimaryWrite(e - 5000, 3000, 0x32), IO_OK)  # near the end, unaligned
    s.run(Read(*lay.window), Read(*lay.end_window), PrimaryRead(*lay.end_window))
    s.check_layers_live()
    s.expect(Checkpoint(), QMP_OK)
    s.run(Read(*lay.window), Read(*lay.end_window))
    # the second interval
    s.expect(PrimaryWrite(a - 100, 200, 0x41), IO_OK)
    s.expect(Write(a + 100, 100_000, 0x42), IO_OK)
    s.expect(PrimaryWrite(e - 512, 512, 0x43), IO_OK)  # the last sector
    s.expect(Write(e - 70_000, 1, 0x44), IO_OK)
    s.run(Read(*lay.window), Read(*lay.end_window), PrimaryRead(*lay.window))
    s.check_layers_live()


# The quick case of each story: the standard geometry, 64 KiB clusters. None is slow; the
# longest is mixed's failover (~0.5 s): the commit copies the hidden disk's 2 MiB clusters
# in 4 KiB chunks (the granularity follows the secondary disk's 512 B clusters).
PARAMS = [pytest.param(g, id=g, marks=pytest.mark.quick if g == "64k" else ()) for g in GEOMETRIES]


@pytest.mark.parametrize("geometry", PARAMS)
def test_failover_story(secondary, geometry):
    rec = _recipe(geometry)
    lay = Layout(rec)
    s = secondary(rec)
    _first_interval(s, lay)
    s.expect(Stop(primary=False, failover=True), QMP_OK)
    s.do(Settle())
    s.expect(Status(), status(None))
    # the secondary disk is now the VM's disk: writes go straight to it
    s.expect(Write(lay.size - 3000, 3000, 0x51), IO_OK)
    s.expect(Write(lay.boundary - 1, 2, 0x52), IO_OK)
    s.run(Read(*lay.window), Read(*lay.end_window), PrimaryRead(*lay.end_window))
    s.finish()


@pytest.mark.parametrize("geometry", PARAMS)
def test_plain_stop_story(secondary, msg, profile, geometry):
    if profile.without_plain_stop_report:
        pytest.skip(profile.without_plain_stop_report)
    rec = _recipe(geometry)
    lay = Layout(rec)
    s = secondary(rec)
    _first_interval(s, lay)
    s.expect(Stop(primary=False), qmp_error(msg.BACKUP_CANCELLED))
    s.expect(Status(), status(msg.IO_ERROR))
    # file is still the active disk; no backup job: the primary's writes are not copied
    s.expect(Write(lay.size - 3000, 3000, 0x51), IO_OK)
    s.expect(PrimaryWrite(lay.boundary - 8192, 4096, 0x53), IO_OK)
    s.run(Read(*lay.window), Read(*lay.end_window), PrimaryRead(*lay.window))
    s.check_layers_live()
    s.finish()
