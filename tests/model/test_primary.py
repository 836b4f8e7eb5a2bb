"""The primary side: child errors swallowed into `error`, flush, unaligned writes."""

from __future__ import annotations

import pytest
from model_helpers import CL, by_profile, items, node, started_primary

from harness import ops
from harness.model import Profile
from harness.model import messages as msg
from harness.model.extents import UNDEF
from harness.observe import EIO, IO_EIO, IO_OK, QMP_OK, status

P = ops.PRIMARY


@by_profile()
@pytest.mark.parametrize("zeroes", [False, True])
def test_child_error_swallowed(profile: Profile, zeroes: bool) -> None:
    m = started_primary(profile)
    node(m).link_up = False
    op = ops.WriteZeroes(0, 512) if zeroes else ops.Write(0, 512, 1)
    assert m.apply(op) == IO_OK  # the write reports success ...
    assert items(m, "child") == []  # ... but nothing arrived
    assert m.apply(ops.Status(machine=P)) == status("I/O error occurred")
    # the child's flush fails (the node's answer) ...
    assert node(m).flush() == EIO
    # ... but qemu-io's flush prints nothing either way: the observation is success
    assert m.apply(ops.Flush()) == IO_OK
    # the link comes back: the stored error stays until start/stop clears it
    node(m).link_up = True
    assert m.apply(ops.Write(0, 512, 1)) == IO_OK
    assert m.apply(ops.Status(machine=P)) == status(msg.IO_ERROR)


@by_profile()
def test_flush_error_does_not_touch_error(profile: Profile) -> None:
    m = started_primary(profile)
    node(m).link_up = False
    assert node(m).flush() == EIO
    assert m.apply(ops.Flush()) == IO_OK
    assert node(m).error is False
    assert m.apply(ops.Status(machine=P)) == status(None)


@by_profile()
def test_error_cleared_by_stop(profile: Profile) -> None:
    m = started_primary(profile)
    node(m).link_up = False
    m.apply(ops.Write(0, 512, 1))
    assert m.apply(ops.Stop(primary=True, machine=P)) == QMP_OK
    assert node(m).error is False


@by_profile()
def test_reads_always_fail(profile: Profile) -> None:
    m = started_primary(profile)
    m.apply(ops.Write(0, 512, 1))
    assert m.apply(ops.Read(0, 512)) == IO_EIO


@by_profile()
@pytest.mark.parametrize(
    ("off", "length", "want"),
    [
        (100, 10, [(0, 100, UNDEF), (100, 110, 0xAA), (110, 512, UNDEF)]),
        (0, 512, [(0, 512, 0xAA)]),
        (512, 1024, [(512, 1536, 0xAA)]),
        (500, 24, [(0, 500, UNDEF), (500, 524, 0xAA), (524, 1024, UNDEF)]),
        (512, 10, [(512, 522, 0xAA), (522, 1024, UNDEF)]),
        (1000, 24, [(512, 1000, UNDEF), (1000, 1024, 0xAA)]),
    ],
)
def test_unaligned_write_leaves_rest_of_sectors_undefined(
    profile: Profile, off: int, length: int, want: list[tuple[int, int, int]]
) -> None:
    m = started_primary(profile)
    assert m.apply(ops.Write(off, length, 0xAA)) == IO_OK
    child = m.disks["child"].data
    lo, hi = want[0][0], want[-1][1]
    assert child.pieces(lo, hi) == want
    # the rest of the qcow2 cluster is zeros (copied up), not undefined
    rest = [(s, e, v) for s, e, v in child.items() if e <= lo or s >= hi]
    assert all(v == 0 for _, _, v in rest)
    assert child.allocated(0, 2 * CL)[-1][1] == CL
