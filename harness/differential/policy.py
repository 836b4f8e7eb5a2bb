"""What the differential reads when: the read policy, its specification here.

The policy's reads are not part of a trace (`ViewPolicy.steps`): a replay makes them
again, the same ones (they depend on the operations alone).

The guest views of a topology (its kind's `view_reads`): on the secondary-only kinds
the secondary VM's disk (rep) and the secondary disk as the primary sees it through the
NBD export (while the primary's link is up); on the primary kind the primary node's answer and the
child through its export; on the two-node machine each node and rep's export; on the
COLO pair both VMs' disks (PairStory.view_nodes). Every read is byte-exact: each byte
the model defines is verified. On the secondary-only kinds each range is one NBD request
of the harness's own (Story.check_view, harness.nbd_reader), compared in Python: rep is
exported for it (the secondary VM's disk holds a BlockBackend on rep the whole run, as
a VM's would), and every byte of such a read goes through rep (NBD_CMD_FLAG_DF: QEMU's
NBD server would otherwise answer an unallocated range with a hole from block status,
without calling replication's read, which fails before start), except in a whole view
the model says reads as data: its head (one granule) goes through rep, the rest is
answered sparsely, holes where QEMU's block status finds nothing allocated in active,
hidden or secondary disk, everything else read through rep. A change QEMU made is
allocated somewhere below rep, so it is read through rep and compared; the head shows
whether rep answers with data at all. The primary's view is read through the export
the primary writes to, holes allowed (as the primary's qemu-io NBD client reads it).
Elsewhere qemu-io verifies the reads (harness.qemu_io), one request per pattern
(pair.read_pieces). The operations under test (the guest's and the primary's reads and
writes) go through qemu-io either way.

What is read when (`ViewPolicy`, which harness.differential.session runs around each
operation and at the end):

- every operation is applied to the model and to QEMU and compared (Story.do); the
  guest's and the primary's reads are compared like any operation;
- just before a checkpoint of the machine holding rep, each layer's own allocation is
  asked of the running QEMU and compared with the model (`check_layers_live`), unless
  it was since the last operation that could change it;
- WHOLE VIEWS (every byte of every view) just before a checkpoint or a failover (a stop
  with failover, a lost heartbeat; any COLO checkpoint) of the running replication
  node: both empty the active and hidden disks, and with them what the views would
  still show; and at the end of the session
  (after the final live layer check, before the offline one);
- after any other operation that can change what a guest sees (all but reads, status
  and flush), once no failover commit runs (the model is settled: a commit in flight
  races the reads, and on 10.0 an HMP qemu-io drains it):
  - on every view, what the operation could have changed (`changed`), rounded out to
    the granule: the largest cluster of any layer, at least 64 KiB (copy-before-write's
    cluster), so every cluster a write can allocate, copy before writing or commit.
    For a write, write-zeroes or discard (the guest's or the primary's) that is its
    range; for a checkpoint or a plain stop, what the active and hidden disks held just
    before it (what it empties, if it does); for a start that started a node, the same
    (a secondary's start empties them) and the first SAMPLE bytes of every view (its
    node's answers turn from EIO to data: the first read shows whether they did); for
    a settled failover commit, what they held before the failover (what it copies into
    the secondary disk); COLO's steps (the COLO kinds) as what they do to the filter: a
    COLO checkpoint as a checkpoint, COLO's start as a start, and a lost heartbeat or a
    COLO checkpoint with a death in it (a side fails over, a branch of the model is
    taken) every view whole; for anything else (a start that started nothing, the NBD
    link going down) nothing;
  - then one sample, of one view in turn: from where that view's last sample stopped,
    up to SAMPLE bytes and no further than the end of the extent the model shows there
    (one qemu-io request), wrapping at the end of the view.

Why a change the model does not predict is caught, and how late. A guest view is a
function of the layers under it; the model says, for each operation, which bytes of
which layers it changes, and the reads after the operation cover every view over those
bytes rounded out to whole clusters: whatever QEMU does there, the model predicted
something and it is compared at once (a value QEMU wrote that the model did not, or one
it failed to write).
A change QEMU makes anywhere else stays in the view it is in until some operation
changes those bytes again, and is read, at the latest:
- by that view's samples: each advances the view's cursor by SAMPLE bytes or to the end
  of an extent, so a view of S bytes holding E extents is swept by S / SAMPLE + E of its
  samples (a 4 MiB view holding one pattern: 16; with V views, one sample each V
  operations that read);
- by the next whole read: before the next checkpoint or failover of the running node,
  or at the end: within the rest of the example
  (the CI profile's have at most 20 steps, the pair's 12; the nightly profile's 50).
What a later operation overwrites first, on both sides, before any of these reads comes
is gone from the views (no read of a guest could show it any more); what such a change
left in the layers (an allocated cluster) the layer checks before each checkpoint and at
the end compare. A read of one view that the model says fails (EIO) or succeeds is
compared as such, so a node that started or stopped where the model did not shows at the
first read of its view, sample or range.

At the end: the layers once more live, the whole views, then QEMU quits and every layer
is checked offline (qemu-img map and bytes: `Story.finish`).

`ViewPolicy(..., whole_views=True)` keeps the previous policy (every view read whole
after every operation that can change one): benchmarks/differential.py compares the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from harness import ops
from harness.differential.kinds import Kind, View
from harness.model import Model
from harness.model.replication import Stage
from harness.observe import IoResult, Observation, OneOf
from harness.pair import read_pieces
from harness.story import Story
from harness.units import KiB

# Operations that change nothing a guest sees: no guest views after them.
OBSERVING = (ops.Read, ops.PrimaryRead, ops.Status, ops.Flush)
# Operations that change data in a range: after them the views are read there.
_DATA = (
    ops.Write,
    ops.WriteZeroes,
    ops.Discard,
    ops.PrimaryWrite,
    ops.PrimaryWriteZeroes,
    ops.PrimaryDiscard,
)
# Operations that may empty the active and hidden disks, or start or fail over a node:
# what those held is noted just before them.
_CONTROL = (
    ops.Checkpoint,
    ops.Stop,
    ops.Start,
    ops.ColoStart,
    ops.ColoCheckpoint,
    ops.LostHeartbeat,
)
# A data operation's range is rounded out to the largest cluster of the topology, and at
# least to the backup job's smallest (copy-before-write's granularity: 64 KiB).
MIN_GRANULE = 64 * KiB
# After each operation that can change a view, one view (each in turn) is also read over
# its next sample: from where its last one stopped, up to SAMPLE bytes, and no further than
# the end of the model's extent there. A 4 MiB view holding one pattern is swept in 16 of
# its samples; each costs what its bytes do (a read through rep transfers every byte).
SAMPLE = 256 * KiB


def _succeeds(expected: Observation) -> bool:
    """Does the model say this read succeeds (whichever way a race goes)?"""
    if isinstance(expected, OneOf):
        return all(_succeeds(alt) for alt in expected.allowed)
    return isinstance(expected, IoResult) and expected.ok


def _view_key(whole: View) -> str:
    return f"{whole.kind}:{getattr(whole, 'node', '')}"


def _merged(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """`ranges` clipped to [0, size), sorted, touching or overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in ranges):
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class ViewPolicy:
    """The read policy (the module docstring) on one story of a topology of `kind`; the
    session calls `checks_layers_before`/`check_layers` and `empties`/`whole` before an
    operation, `before` just before it, `after` once QEMU carried it out."""

    def __init__(self, story: Story, kind: Kind[Any], *, whole_views: bool = False) -> None:
        self.story = story
        self.kind = kind
        # indices (in story.steps) of the policy's reads: not part of a trace, a replay
        # makes them again
        self.steps: set[int] = set()
        # every view read whole since the last operation that could change one
        self.fresh = False
        # the layers' live allocation checked since the last operation that could change it
        self.layers_fresh = False
        # where each view's sample goes next, and how many samples were read
        self.cursor: dict[str, int] = {}
        self.samples = 0
        # what the active and hidden disks held before the last checkpoint or stop, and
        # before the last failover (what its commit copies)
        self.dirty: list[tuple[int, int]] = []
        self.committed: list[tuple[int, int]] = []
        # what a read after an operation is rounded out to
        self.granule = max(MIN_GRANULE, *(d.cluster for d in self.model.disks.values()))
        # the old policy (every view whole after every operation that can change one):
        # for comparisons (benchmarks/differential.py --whole-views)
        self.whole_views = whole_views
        # the replication nodes' stages before the operation being applied
        self._stages: list[Stage] = []

    @property
    def model(self) -> Model:
        return self.story.model

    def read(self, reads: Callable[[], None]) -> None:
        """Run `reads` as the policy's (recorded in `steps`: no part of a trace)."""
        first = len(self.story.steps)
        try:
            reads()
        finally:
            self.steps.update(range(first, len(self.story.steps)))

    # ---- around an operation

    def checks_layers_before(self, op: ops.Op) -> bool:
        """Is `op` a checkpoint of the machine holding rep, or a COLO checkpoint (the
        layers are checked before it)?"""
        if isinstance(op, ops.ColoCheckpoint):
            return True
        return isinstance(op, ops.Checkpoint) and op.machine == self.kind.machine

    def check_layers(self) -> None:
        """Each live layer's allocation against the model, unless checked since the last
        operation that could change it (and no failover commit runs)."""
        if self.layers_fresh and self.model.settled():
            return
        self.story.check_layers_live()
        self.layers_fresh = True

    def empties(self, op: ops.Op) -> bool:
        """Is `op` a checkpoint or a failover of the running replication node (it empties
        the active and hidden disks, and with them what a view would still show)?"""
        node = self.model.nodes[ops.REP]
        if node.stage is not Stage.RUNNING:
            return False
        if isinstance(op, ops.ColoCheckpoint):
            return True
        if getattr(op, "machine", "") != self.kind.machine:
            return False
        failover = isinstance(op, ops.Stop) and bool(op.failover)
        return isinstance(op, ops.Checkpoint | ops.LostHeartbeat) or failover

    def before(self, op: ops.Op) -> None:
        """Just before `op` is applied: what the active and hidden disks hold (what a
        checkpoint, stop or start may empty, what a failover commits)."""
        if isinstance(op, _CONTROL):
            self.dirty = [r for node in self.model.nodes.values() for r in node.dirty()]
            if isinstance(op, ops.LostHeartbeat) or (isinstance(op, ops.Stop) and op.failover):
                self.committed = self.dirty
        self._stages = [node.stage for node in self.model.nodes.values()]

    def after(self, op: ops.Op) -> None:
        """After QEMU carried out `op` (not an observing one): the views and layers are
        stale; once the model is settled, the reads after it: on every view what `op`
        could have changed (`changed`), then the next sample of one view (`_sample`)."""
        self.fresh = self.layers_fresh = False
        if not self.model.settled():
            return
        moved = self._stages != [node.stage for node in self.model.nodes.values()]
        changed = self.changed(op, moved)
        if changed is None:
            self.whole()
            return
        views = self._view_reads()
        for whole in views:
            self._read(whole, changed)
        if views:
            self._sample(views[self.samples % len(views)])
            self.samples += 1

    def changed(self, op: ops.Op, moved: bool) -> list[tuple[int, int]] | None:
        """What the model says `op` could have changed in a view, rounded out to `granule`
        (every cluster a write can allocate, copy before writing or commit); None:
        anything. `moved`: it changed a replication node's stage.

        - a data operation (write, write-zeroes, discard; the guest's or the primary's):
          its range;
        - a start that started a node (`moved`; its answers turn from EIO to data):
          what the active and hidden disks held (a secondary's start empties them) and
          the head of every view (`_heads`);
        - a checkpoint, a plain stop: what the active and hidden disks held just before
          (`dirty`: what it empties, if it does); a settled failover commit: what they
          held before the failover (what it copies into the secondary disk);
        - anything else (a start that started nothing, the NBD link going down): nothing.
        """
        if self.whole_views:
            return None
        if isinstance(op, _DATA):
            return self._rounded([(op.offset, op.offset + op.length)])
        if isinstance(op, ops.Start | ops.ColoStart):
            return self._rounded(self.dirty) + self._heads() if moved else []
        if isinstance(op, ops.LostHeartbeat) or (
            isinstance(op, ops.ColoCheckpoint) and op.kill is not None
        ):
            return None  # a side fails over, or dies mid-checkpoint: every view
        if isinstance(op, ops.Stop) and op.failover:
            return []  # the commit runs: nothing is read until it settled
        if isinstance(op, ops.Checkpoint | ops.Stop | ops.ColoCheckpoint):
            return self._rounded(self.dirty)
        if isinstance(op, ops.Settle):
            return self._rounded(self.committed)
        return []

    def _heads(self) -> list[tuple[int, int]]:
        """The first SAMPLE bytes (a view clips them): after a start, every view shows at
        once whether its node answers with data or fails."""
        return [(0, SAMPLE)]

    def _rounded(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        g = self.granule
        return [(s - s % g, -(-e // g) * g) for s, e in ranges]

    # ---- the reads

    def whole(self) -> None:
        """Every guest view whole (unless read whole since the last operation that could
        change one): each replication node's read answer (whatever the model says it is,
        EIO included) and, while the primary's link is up, the disk behind the NBD
        export; the pair: both VMs' disks. Only once the model is settled (a failover
        commit in flight races the reads, and on 10.0 an HMP qemu-io drains it)."""
        if self.fresh or not self.model.settled():
            return
        for whole in self._view_reads():
            if (
                isinstance(whole, ops.Read)
                and self.story.real.checked_by_nbd(whole)
                and _succeeds(self.model.apply(whole))
            ):
                # every byte through the node over the head, the rest answered sparsely
                # (the module docstring: why this reads every change)
                head = dataclasses.replace(whole, length=min(self.granule, whole.length))
                self.story.check_view(head)
                self.story.check_view(whole, sparse=True)
                continue
            self._read(whole, [(0, whole.length)])
        self.fresh = True

    def _view_reads(self) -> list[View]:
        return self.kind.view_reads(self.story, self.kind.link_up(self.model))

    def _sample(self, whole: View) -> None:
        """The view's next sample: from where its last one stopped (wrapping at its end),
        up to SAMPLE bytes, no further than the end of the extent the model shows there
        (one qemu-io command)."""
        key = _view_key(whole)
        start = self.cursor.get(key, 0) % whole.length
        part = dataclasses.replace(whole, offset=start, length=min(SAMPLE, whole.length - start))
        off, n = read_pieces(self.model.apply(part), part.offset, part.length)[0]
        self.cursor[key] = (off + n) % whole.length
        self._read(whole, [(off, off + n)])

    def _read(self, whole: View, ranges: list[tuple[int, int]]) -> None:
        """Read `ranges` of the view `whole` (merged, clipped to it): each in one NBD
        request of the harness's own where the view has an export (Story.check_view),
        else in pieces cut along the model's extents (qemu-io verifies one pattern per
        command)."""
        nbd = self.story.real.checked_by_nbd(whole)
        for start, end in _merged(ranges, whole.length):
            part = dataclasses.replace(whole, offset=start, length=end - start)
            if nbd:
                self.story.check_view(part)
                continue
            expected = self.model.apply(part)  # reads change nothing
            for off, n in read_pieces(expected, start, end - start):
                self.story.check_view(dataclasses.replace(part, offset=off, length=n))
