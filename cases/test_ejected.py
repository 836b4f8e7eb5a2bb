"""Checkpoints after qcow2 dropped the active or the hidden disk's driver (issue 23, list
A item 7): secondary_do_checkpoint's `Active disk %s is ejected` / `Hidden disk %s is
ejected`.

qcow2 ejects a node (bs->drv = NULL) when it cannot trust its own metadata any more: a
corruption it detects, or a make-empty whose writes fail after it has begun rewriting
the metadata (make_completely_empty's fail_broken_refcounts). The fault
(harness.faults.EjectAtEmpty, a blkdebug under the layer) lets start's own make-empty
through and fails the next one that way, at the first checkpoint.

Facts pinned here (5.2, 7.2, 10.0, 11.1; the texts are the release's):
- That checkpoint answers `Failed to empty <filename>: Input/output error` (the hidden
  disk's after the active disk was emptied), and every later one `Active disk active is
  ejected` (before anything is emptied) or `Hidden disk hidden is ejected` (after the
  active disk was). The status stays clean: a checkpoint's error is not stored.
- Every read and write through the replication node fails with `No medium found`, with
  either layer ejected: bdrv_is_inserted recurses into every child, so no node above an
  ejected one is "inserted". The primary's writes still arrive when only the active
  disk is gone (the backup filter's children are the secondary and hidden disks).
- A plain stop answers as always when the active disk is ejected. With the hidden disk
  ejected, QEMU dies (SIGSEGV) at the stop (and at any close of the running node)
  before 11.1.3 (profile.ejected_hidden_reopen_crashes). A failover with the active disk
  ejected kills QEMU with SIGFPE on every release here
  (profile.ejected_active_commit_crashes).
- The ejected image, offline: its L1 table was zeroed before the failing write, so it
  maps nothing.
"""

from __future__ import annotations

import pytest

from harness import faults
from harness.graph import rep_edges
from harness.machine import MachineDied
from harness.model.disks import ENOMEDIUM
from harness.observe import EIO, IO_OK, QMP_OK, Crashed, IoResult, qmp_error, status
from harness.ops import SECONDARY, Checkpoint, PrimaryWrite, Read, Start, Status, Stop, Write
from harness.units import KiB

QUICK = pytest.mark.quick
pytestmark = [pytest.mark.secondary, pytest.mark.faults]

CL = 64 * KiB


def ejected_story(secondary, layer: str):
    """A running secondary whose `layer` is ejected by the first checkpoint after start
    (asserted with its texts): the story, and the checkpoint's answer from then on."""
    s = secondary(layer_faults={layer: faults.ejecting(layer)})
    msg = s.model.profile.texts
    s.expect(Start(primary=False), QMP_OK)
    s.run(PrimaryWrite(0, CL, 0x22), Write(2 * CL, CL, 0x33))
    filename = s.model.disks[layer].filename or layer
    s.expect(Checkpoint(), qmp_error(msg.failed_to_empty(filename, EIO, disk=layer)))
    ejected = msg.active_ejected(layer) if layer == "active" else msg.hidden_ejected(layer)
    s.expect(Checkpoint(), qmp_error(ejected))
    s.expect(Status(), status(None))
    return s, qmp_error(ejected)


@QUICK
def test_active_disk_ejected(secondary, msg):
    s, answer = ejected_story(secondary, "active")
    s.expect(Read(0, CL), IoResult(False, ENOMEDIUM))
    s.expect(Write(CL, CL, 0x34), IoResult(False, ENOMEDIUM))
    s.expect(PrimaryWrite(3 * CL, CL, 0x24), IO_OK)  # its copy goes to the hidden disk
    s.expect(Checkpoint(), answer)
    s.do(Stop(primary=False))
    s.expect(Status(), status(msg.IO_ERROR))
    s.finish()


@QUICK
def test_hidden_disk_ejected(secondary, msg):
    s, answer = ejected_story(secondary, "hidden")
    # even where the active disk alone would answer: the node is not "inserted"
    s.expect(Read(0, CL), IoResult(False, ENOMEDIUM))
    s.expect(Write(CL, CL, 0x34), IoResult(False, ENOMEDIUM))
    s.expect(Checkpoint(), answer)
    s.do(Stop(primary=False))  # SIGSEGV where the profile knows the bug
    s.finish()


def test_hidden_ejected_stop_crashes(secondary, profile, needs_bug):
    needs_bug(profile.ejected_hidden_reopen_crashes)
    s, _ = ejected_story(secondary, "hidden")
    s.expect(Stop(primary=False), Crashed("SIGSEGV"))
    s.finish()


def test_hidden_ejected_stop_answers(secondary, profile, msg, xfail_bug):
    """What QEMU should do: the stop answers as without the ejection, QEMU lives on."""
    xfail_bug(profile.ejected_hidden_reopen_crashes, raises=MachineDied)
    s, _ = ejected_story(secondary, "hidden")
    m = s.topo.machine(SECONDARY)
    answer = m.qmp("xen-set-replication", enable=False, primary=False)
    assert answer == qmp_error(msg.BACKUP_CANCELLED)
    assert m.qmp("query-xen-replication-status") == status(msg.IO_ERROR)


@QUICK
def test_active_ejected_failover_crashes(secondary, profile, needs_bug):
    needs_bug(profile.ejected_active_commit_crashes)
    s, _ = ejected_story(secondary, "active")
    s.expect(Stop(primary=False, failover=True), Crashed("SIGFPE"))
    s.finish()


def test_active_ejected_failover_survives(secondary, profile, xfail_bug):
    """What QEMU should do: a failover it cannot commit leaves FAILOVER_FAILED (or at
    least an answer), not a dead QEMU."""
    xfail_bug(profile.ejected_active_commit_crashes, raises=MachineDied)
    s, _ = ejected_story(secondary, "active")
    m = s.topo.machine(SECONDARY)
    assert m.qmp("xen-set-replication", enable=False, primary=False, failover=True) == QMP_OK
    assert rep_edges(m)["file"] == "active"
