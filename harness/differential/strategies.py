"""What the random operations look like: offsets, lengths and patterns.

Requests are biased towards a small set of interesting places: multiples of
512 B, 4 KiB, the backup cluster (64 KiB) and every layer's cluster size, a
few bytes either side of them, and the end of the disk, so that two random
requests meet, overlap and straddle boundaries far more often than uniform
offsets would. Some requests stay uniform over a window at the start of the
disk. `Requests` remembers where an example's recent requests went, so that later
ones meet them. Which node a guest request and which side a QMP command goes to, the
topology's kind draws (harness.differential.kinds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from hypothesis import strategies as st

from harness.differential.kinds import TopologySpec
from harness.units import KiB, MiB

PATTERNS = (0x11, 0x22, 0x33, 0x00, 0xFF, 0x5A)
# offsets from an interesting point (0 most often)
DELTAS = (0, 0, 0, 0, 1, -1, 512, -512, 4096, -4096, 100, -100, 1000)
LENGTHS = (512, 4096, 65536, 1, 511, 513, 1000, 4095, 4097, 65535, 65537, 131072, 196608)
# how far before the end of the disk a request may start
TAILS = (512, 4096, 65536, 65536 + 512, 1000, 1)
WINDOW = 4 * MiB
BACKUP_CLUSTER = 64 * KiB


@dataclass(frozen=True)
class Geometry:
    size: int
    # the granularities that matter, smallest first
    units: tuple[int, ...]
    window: int
    # the poisoned page (faults topology): writes that would reach the secondary
    # disk keep off it
    avoid: tuple[int, int] | None = None
    # places requests should meet often (the poisoned cluster of the faults topology)
    hot: tuple[int, ...] = ()

    def clip(self, offset: int, length: int, avoid: bool = False) -> tuple[int, int]:
        """A request inside the disk (and off the poisoned page, with `avoid`)."""
        offset = min(max(offset, 0), self.size - 1)
        length = max(1, min(length, self.size - offset))
        if avoid and self.avoid is not None:
            lo, hi = self.avoid
            if offset < hi and offset + length > lo:
                offset = hi
                length = max(1, min(length, self.size - offset))
        return offset, length


def geometry(spec: TopologySpec) -> Geometry:
    layers = spec.recipe.layers
    size = min(layer.size for layer in layers)
    units = {512, 4 * KiB, BACKUP_CLUSTER}
    if spec.kind.secondary_layer is not None:
        # the failover commit's chunk
        sec = spec.recipe.layer(spec.kind.secondary_layer)
        units.add(min(max(4 * KiB, sec.cluster_size or 0), 64 * KiB))
    for layer in layers:
        if layer.cluster_size:
            units.add(layer.cluster_size)
    hot: tuple[int, ...] = ()
    if spec.poison is not None:
        hot = (spec.poison - spec.poison % BACKUP_CLUSTER,)
    return Geometry(size, tuple(sorted(units)), min(WINDOW, size), spec.poison_page(), hot)


@lru_cache(maxsize=64)
def offsets(g: Geometry) -> st.SearchStrategy[int]:
    unit = st.sampled_from(g.units)
    near = st.builds(lambda u, k, d: u * k + d, unit, st.integers(0, 8), st.sampled_from(DELTAS))
    anywhere = st.integers(0, g.window - 1)
    tail = st.builds(lambda back: g.size - back, st.sampled_from(TAILS))
    if not g.hot:
        return st.one_of(near, near, near, anywhere, tail)
    hot = st.builds(lambda h, d: h + d, st.sampled_from(g.hot), st.sampled_from(DELTAS))
    return st.one_of(near, hot, near, anywhere, tail, hot)


@lru_cache(maxsize=64)
def lengths(g: Geometry) -> st.SearchStrategy[int]:
    unit = st.sampled_from(g.units)
    units = st.builds(
        lambda u, k, d: max(1, u * k + d), unit, st.integers(1, 3), st.sampled_from(DELTAS)
    )
    return st.one_of(st.sampled_from(LENGTHS), units, st.integers(1, 256 * KiB))


@lru_cache(maxsize=1)
def patterns() -> st.SearchStrategy[int]:
    return st.sampled_from(PATTERNS)


@dataclass
class Requests:
    """Where an example's recent requests went."""

    # ends of recent requests: later ones start there often
    recent: list[int] = field(default_factory=list)
    # starts of recent writes that copied before writing (RUNNING), and whether a
    # checkpoint came since the last one
    copied: list[int] = field(default_factory=list)
    rearmed: bool = False

    def region(
        self, data: st.DataObject, g: Geometry, avoid: bool, cbw: bool, running: bool
    ) -> tuple[int, int]:
        """Offset and length: near an interesting boundary, anywhere in the window, at
        the end of the disk, or (a third of the time, once there are some) at or next to
        a recent request, so that requests meet. `avoid`: off the poisoned page.

        `cbw`: the request is a write reaching the secondary disk (copy-before-write
        while `running`). The first such write after a checkpoint goes, half the time,
        where one before the checkpoint went: the checkpoint must have re-armed the
        copy of that cluster."""
        pool: tuple[int, ...] = ()
        if cbw and self.rearmed and self.copied:
            self.rearmed = False
            if data.draw(st.booleans(), label="where one copied before the checkpoint"):
                pool = tuple(self.copied)
        if (
            not pool
            and self.recent
            and data.draw(st.sampled_from((False, False, True)), label="again")
        ):
            pool = tuple(self.recent)
        if pool:
            base = data.draw(st.sampled_from(pool), label="recent")
            off = base + data.draw(st.sampled_from(DELTAS), label="delta")
        else:
            off = data.draw(offsets(g), label="offset")
        length = data.draw(lengths(g), label="length")
        off, length = g.clip(off, length, avoid)
        for p in (off, off + length):
            if p not in self.recent:
                self.recent.append(p)
        del self.recent[:-8]
        if cbw and running:
            self.copied.append(off)
            del self.copied[:-8]
        return off, length
