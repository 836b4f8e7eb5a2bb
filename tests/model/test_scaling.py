"""Scaling: a 1 TiB model holds exactly what a 64 MiB one holds for the same slot workload.

No timing here (see benchmarks/model.py): the model's memory is its extents, so
the test counts extents, and checks that both models hold the same extents up
to the slot stride.
"""

from __future__ import annotations

import random

import pytest

from harness import ops
from harness.model import Model, profile_for
from harness.model.build import secondary_model
from harness.units import MiB

TiB = 1 << 40
REQ = 64 * 1024
SLOTS = 1024


def slot_offsets(size: int) -> list[int]:
    step = size // SLOTS
    return [(i * step) // REQ * REQ for i in range(SLOTS)]


def pattern(slot: int, k: int) -> int:
    return (slot % 2) * 128 + 1 + k % 127  # neighbouring slots never share a pattern


def workload(size: int, n: int, seed: int) -> tuple[Model, list[object]]:
    m = secondary_model(profile_for((7, 2, 0)), size=size)
    offsets = slot_offsets(size)
    for i, off in enumerate(offsets):
        m.apply(ops.PrimaryWrite(off, REQ, pattern(i, 0)))
    assert m.apply(ops.Start(primary=False)).ok  # type: ignore[attr-defined]
    rng = random.Random(seed)
    answers: list[object] = []
    for k in range(n):
        s = rng.randrange(SLOTS)
        r = rng.random()
        if r < 0.4:
            op: ops.Op = ops.Write(offsets[s], REQ, pattern(s, k))
        elif r < 0.7:
            op = ops.PrimaryWrite(offsets[s], REQ, pattern(s, k))
        elif r < 0.995:
            op = ops.Read(offsets[s], REQ)
        else:
            op = ops.Checkpoint()
        obs = m.apply(op)
        # the answers, with offsets expressed as slot numbers
        data = getattr(obs, "data", None)
        if data:
            answers.append(tuple((o // (size // SLOTS), n_, p) for o, n_, p in data))
        else:
            answers.append(obs)
    return m, answers


def by_slot(m: Model, disk: str, size: int) -> list[tuple[int, int, int, int]]:
    stride = size // SLOTS
    return [(s // stride, s % stride, e - s, v) for s, e, v in m.disks[disk].data.items()]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_extent_count_independent_of_virtual_size(seed: int) -> None:
    small, a_small = workload(64 * MiB, 4000, seed)
    big, a_big = workload(TiB, 4000, seed)
    assert a_small == a_big
    for disk in ("active", "hidden", "secondary"):
        assert len(small.disks[disk].data) == len(big.disks[disk].data), disk
        assert by_slot(small, disk, 64 * MiB) == by_slot(big, disk, TiB), disk
    # every layer is bounded by the slot count, not by the size
    assert all(len(d.data) <= SLOTS for d in big.disks.values())
    b_small, b_big = small.nodes[ops.REP].backup, big.nodes[ops.REP].backup
    assert b_small is not None and b_big is not None
    # the backup's copied-cluster map: slots touch on 64 MiB (one extent per run of
    # neighbouring slots), 1 GiB apart on 1 TiB (one per slot); both bounded by SLOTS
    assert len(b_small.copied) <= len(b_big.copied) <= SLOTS
    assert b_big.copied.total() // REQ == len(b_big.copied)
    assert b_small.copied.total() == b_big.copied.total()


def test_full_disk_read_of_1tib_is_cheap() -> None:
    big, _ = workload(TiB, 200, 7)
    obs = big.apply(ops.Read(0, TiB))
    data = getattr(obs, "data", None)
    assert data is not None and data[-1][0] + data[-1][1] == TiB
    assert len(data) <= 2 * SLOTS + 1
