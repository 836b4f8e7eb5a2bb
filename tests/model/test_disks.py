"""Model disks: the chain view, cluster copy-on-write, copy, make-empty, allocation above a base."""

from __future__ import annotations

import pytest
from model_helpers import CL, merge_pieces, runs

from harness.model.disks import (
    ALLOCATING_FORMATS,
    MAKE_EMPTY_FORMATS,
    Disk,
    allocated_above,
    copy_range,
    make_empty,
    undefine,
    view,
    write_layer,
    write_range,
)
from harness.model.extents import UNDEF
from harness.units import KiB, MiB


def chain3(size: int = MiB, cluster: int = CL) -> tuple[Disk, Disk, Disk]:
    sec = Disk("secondary", size, cluster, has_blk=True)
    hidden = Disk("hidden", size, cluster, backing=sec)
    active = Disk("active", size, cluster, backing=hidden)
    return active, hidden, sec


def test_chain_and_empty_view_reads_zeros() -> None:
    active, hidden, sec = chain3()
    assert active.chain() == [active, hidden, sec]
    assert sec.chain() == [sec]
    assert view(active.chain(), 0, MiB) == [(0, MiB, 0)]


def test_view_top_layer_wins() -> None:
    active, hidden, sec = chain3()
    sec.data.set(0, 3 * CL, 1)
    hidden.data.set(CL, 2 * CL, 2)
    active.data.set(CL + 10, CL + 20, 3)
    assert view(active.chain(), 0, 3 * CL) == [
        (0, CL, 1),
        (CL, CL + 10, 2),
        (CL + 10, CL + 20, 3),
        (CL + 20, 2 * CL, 2),
        (2 * CL, 3 * CL, 1),
    ]


def test_view_beyond_a_shorter_layer_reads_zeros() -> None:
    small = Disk("small", CL)
    small.data.set(0, CL, 9)
    top = Disk("top", 2 * CL, backing=small)
    assert view(top.chain(), 0, 2 * CL) == [(0, CL, 9), (CL, 2 * CL, 0)]


def test_qcow2_write_allocates_whole_clusters_copying_up() -> None:
    active, hidden, sec = chain3()
    sec.data.set(0, 2 * CL, 5)
    write_layer(active.chain(), 0, 100, 200, 7)
    # the rest of the cluster is copied up from below: the view does not change there
    assert list(active.data.items()) == [(0, 100, 5), (100, 200, 7), (200, CL, 5)]
    assert merge_pieces(view(active.chain(), 0, 2 * CL)) == [
        (0, 100, 5),
        (100, 200, 7),
        (200, 2 * CL, 5),
    ]
    assert list(hidden.data.items()) == []


def test_qcow2_write_across_clusters_allocates_each_touched_cluster() -> None:
    active, _, _ = chain3()
    write_layer(active.chain(), 0, CL - 10, CL + 10, 7)
    assert runs(active) == [(0, 2 * CL)]
    assert list(active.data.items()) == [
        (0, CL - 10, 0),
        (CL - 10, CL + 10, 7),
        (CL + 10, 2 * CL, 0),
    ]


def test_cow_keeps_already_allocated_bytes() -> None:
    active, _, sec = chain3()
    sec.data.set(0, CL, 5)
    active.data.set(0, CL, 6)
    write_layer(active.chain(), 0, 10, 20, 7)
    assert list(active.data.items()) == [(0, 10, 6), (10, 20, 7), (20, CL, 6)]


def test_cow_cluster_end_capped_at_disk_size() -> None:
    size = CL + 4 * KiB
    d = Disk("d", size, CL)
    write_layer([d], 0, CL + 100, CL + 200, 1)
    assert runs(d) == [(CL, size)]


@pytest.mark.parametrize("fmt", ["raw", "file"])
def test_non_allocating_format_writes_exact_bytes(fmt: str) -> None:
    d = Disk("d", MiB, CL, fmt=fmt)
    assert not d.allocates
    write_range([d], 100, 200, 1)
    assert list(d.data.items()) == [(100, 200, 1)]


def test_format_tables() -> None:
    assert {"qcow2", "qcow"} == set(MAKE_EMPTY_FORMATS)
    for fmt in ("qed", "vmdk", "raw"):
        assert not Disk("d", MiB, fmt=fmt).supports_make_empty
    assert Disk("d", MiB, fmt="qcow").supports_make_empty
    assert {"qcow2", "qed", "qcow", "vmdk"} == set(ALLOCATING_FORMATS)


def test_small_cluster_cow() -> None:
    d = Disk("d", MiB, 4 * KiB)
    write_layer([d], 0, 5000, 5001, 1)
    assert runs(d) == [(4 * KiB, 8 * KiB)]


def test_copy_range_copies_the_view_into_the_top_of_dst() -> None:
    active, _, sec = chain3()
    sec.data.set(0, CL, 4)
    active.data.set(10, 20, 8)
    target = Disk("target", MiB, CL)
    copy_range(active.chain(), [target], 0, CL)
    assert list(target.data.items()) == [(0, 10, 4), (10, 20, 8), (20, CL, 4)]


def test_make_empty_drops_everything() -> None:
    active, _, _ = chain3()
    write_layer(active.chain(), 0, 0, 3 * CL, 1)
    make_empty(active)
    assert len(active.data) == 0


def test_undefine_marks_bytes_undefined() -> None:
    d = Disk("d", MiB)
    undefine(d, 10, 20)
    assert list(d.data.items()) == [(10, 20, UNDEF)]


def test_allocated_above_looks_at_layers_above_base_only() -> None:
    active, hidden, sec = chain3()
    sec.data.set(0, MiB, 1)  # the base: never counts
    hidden.data.set(CL, 2 * CL, 2)
    active.data.set(3 * CL, 4 * CL, 3)
    assert allocated_above(active, sec, 0, 5 * CL) == [
        (0, CL, False),
        (CL, 2 * CL, True),
        (2 * CL, 3 * CL, False),
        (3 * CL, 4 * CL, True),
        (4 * CL, 5 * CL, False),
    ]
    # adjacent allocations in two layers form one run
    hidden.data.set(2 * CL, 3 * CL, 2)
    assert allocated_above(active, sec, 0, 5 * CL)[1] == (CL, 4 * CL, True)
