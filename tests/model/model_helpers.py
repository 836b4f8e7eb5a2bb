"""Shared helpers for the reference model's own tests (no QEMU involved)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from harness import ops
from harness.model import PROFILES, Model, Profile
from harness.model.build import primary_model, secondary_model
from harness.model.disks import Disk, view
from harness.model.replication import ReplicationNode, Stage
from harness.observe import QMP_OK, Data, IoResult, Observation
from harness.units import KiB

CL = 64 * KiB

PROFILE_IDS = [p.name for p in PROFILES]


def profiles(pred: object = None) -> list[Profile]:
    """PROFILES, optionally filtered by a predicate on the profile."""
    if pred is None:
        return list(PROFILES)
    return [p for p in PROFILES if pred(p)]  # type: ignore[operator]


def by_profile(pred: object = None) -> pytest.MarkDecorator:
    """Parametrise a test's `profile` argument over (a filtered subset of) PROFILES."""
    chosen = profiles(pred)
    return pytest.mark.parametrize("profile", chosen, ids=[p.name for p in chosen])


def started(profile: Profile, **kw: object) -> Model:
    """A RUNNING secondary model (start answered success)."""
    m = secondary_model(profile, **kw)  # type: ignore[arg-type]
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    return m


def started_primary(profile: Profile, **kw: object) -> Model:
    m = primary_model(profile, **kw)  # type: ignore[arg-type]
    assert m.apply(ops.Start(primary=True, machine=ops.PRIMARY)) == QMP_OK
    return m


def items(m: Model, disk: str) -> list[tuple[int, int, int]]:
    """A layer's extents (start, end, value)."""
    return list(m.disks[disk].data.items())


def node(m: Model, name: str = ops.REP) -> ReplicationNode:
    return m.nodes[name]


def stage(m: Model, name: str = ops.REP) -> Stage:
    return m.stage(name)


def data_of(obs: Observation) -> Data:
    assert isinstance(obs, IoResult) and obs.ok and obs.data is not None, obs
    return obs.data


def guest(m: Model, off: int, length: int, name: str = ops.REP) -> Data:
    """What the guest reads through the replication node."""
    return data_of(m.apply(ops.Read(off, length, node=name)))


def sec(m: Model, off: int, length: int) -> Data:
    """What the secondary disk holds (its NBD export)."""
    return data_of(m.apply(ops.PrimaryRead(off, length)))


def layer_view(disks: Iterable[Disk], off: int, length: int) -> list[tuple[int, int, int]]:
    return view(list(disks), off, off + length)


def d(*extents: tuple[int, int, int | None]) -> Data:
    """Data literal: (offset, length, pattern) extents."""
    return tuple(extents)


def merge_pieces(pieces: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Merge touching pieces with equal values (views are not merged across layers)."""
    out: list[tuple[int, int, int]] = []
    for s, e, v in pieces:
        if out and out[-1][2] == v and out[-1][1] == s:
            out[-1] = (out[-1][0], e, v)
        else:
            out.append((s, e, v))
    return out


def runs(disk: Disk, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """A layer's allocated ranges, touching ones merged (what `qemu-img map` would show)."""
    out: list[tuple[int, int]] = []
    for s, e in disk.data.allocated(start, disk.size if end is None else end):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
