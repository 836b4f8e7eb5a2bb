"""The primary's write-zeroes and discards arriving over NBD (model only).

Write-zeroes: the copy-before-write filter copies the old cluster into the hidden disk
exactly as for a write, and the secondary disk then reads zeros. Discard: the secondary
disk has no discard=unmap and the filter is inserted with BDRV_O_RDWR only, so the block
layer answers success before any driver runs: nothing is copied, nothing changes.
"""

from __future__ import annotations

from harness import ops
from harness.model import PROFILES
from harness.model.build import primary_model, secondary_model
from harness.model.system import Model
from harness.observe import IO_OK, QMP_OK, IoResult

CL = 65536


def _started(profile_index: int = -1) -> Model:
    m = secondary_model(PROFILES[profile_index])
    assert m.apply(ops.Start(primary=False)) == QMP_OK
    assert m.apply(ops.PrimaryWrite(0, 4 * CL, 0x11)) == IO_OK
    assert m.apply(ops.Checkpoint()) == QMP_OK
    return m


def test_write_zeroes_copies_before_write() -> None:
    m = _started()
    assert m.apply(ops.PrimaryWriteZeroes(CL + 100, 1000)) == IO_OK
    assert list(m.disks["hidden"].data.items()) == [(CL, 2 * CL, 0x11)]
    assert m.apply(ops.PrimaryRead(CL, CL)) == IoResult(
        True, None, ((CL, 100, 0x11), (CL + 100, 1000, 0), (CL + 1100, CL - 1100, 0x11))
    )
    # the secondary VM still sees the checkpoint's data
    assert m.apply(ops.Read(CL, CL)) == IoResult(True, None, ((CL, CL, 0x11),))


def test_discard_is_a_no_op() -> None:
    m = _started()
    assert m.apply(ops.PrimaryDiscard(0, 2 * CL)) == IO_OK
    assert list(m.disks["hidden"].data.items()) == []
    assert m.apply(ops.PrimaryRead(0, 4 * CL)) == IoResult(True, None, ((0, 4 * CL, 0x11),))


def test_primary_topology_write_zeroes_and_discard() -> None:
    m = primary_model(PROFILES[-1])
    m.export = m.disks["child"]  # as topology.primary: the child's NBD export
    assert m.apply(ops.PrimaryWrite(0, CL, 0x22)) == IO_OK
    assert m.apply(ops.PrimaryWriteZeroes(512, 512)) == IO_OK
    assert m.apply(ops.PrimaryDiscard(0, CL)) == IO_OK
    assert m.apply(ops.PrimaryRead(0, CL)) == IoResult(
        True, None, ((0, 512, 0x22), (512, 512, 0), (1024, CL - 1024, 0x22))
    )
