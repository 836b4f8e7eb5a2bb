"""Property tests of the model's own invariants, on random operation sequences.

A state machine drives a secondary model (random profile, disk size and cluster
sizes) with guest writes, write-zeroes, discards and reads at random offsets and
lengths (aligned and not, across clusters), primary writes, checkpoints, plain
stops and failovers (successful or failed). Beside it runs a naive shadow: the
guest's view and the secondary disk as bytearrays, and for every pattern a
bytearray mask of where it was written. Checked:

(a) after a checkpoint the view through `rep` equals the secondary disk;
(b) a successful failover leaves the secondary disk equal to the view just before;
(c) primary writes are invisible to the view until a checkpoint;
(d) no read (guest, NBD, or any layer's content) shows a byte nobody wrote, except
    zeros and undefined bytes;
(e) the view never changes on a primary write;
(f) every allocated range of a qcow2 layer is cluster-aligned.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from harness import ops
from harness.model import PROFILES, Model, Profile
from harness.model import messages as msg
from harness.model.build import secondary_model
from harness.model.disks import Disk
from harness.model.extents import UNDEF, ZERO
from harness.observe import IO_OK, QMP_OK, Crashed, Data, IoResult, OneOf, qmp_error, status
from harness.units import KiB

PATTERNS = (0x11, 0x22, 0x33, 0xAB, 0xFF)

sizes = st.sampled_from([256 * KiB, 512 * KiB + 4 * KiB])
clusters = st.sampled_from([4 * KiB, 64 * KiB])
hidden_clusters = st.sampled_from([4 * KiB, 64 * KiB, 128 * KiB])
offsets = st.one_of(
    st.integers(0, 600 * KiB),
    st.integers(0, 150).map(lambda k: k * 4 * KiB),
    st.integers(0, 9).map(lambda k: k * 64 * KiB),
    st.integers(0, 9).map(lambda k: k * 64 * KiB - 512),
)
lengths = st.one_of(
    st.integers(1, 200 * KiB),
    st.sampled_from([1, 512, 4 * KiB, 64 * KiB, 128 * KiB]),
)
patterns = st.sampled_from(PATTERNS)


def to_bytes(data: Data, size: int) -> bytearray:
    """Data from a full read -> bytes; undefined bytes must not occur here."""
    buf = bytearray(size)
    pos = 0
    for off, n, pat in data:
        assert off == pos, data
        assert pat is not None, f"undefined bytes in a read at {off:#x}+{n:#x}"
        if pat:
            buf[off : off + n] = bytes([pat]) * n
        pos = off + n
    assert pos == size
    return buf


def alloc_runs(disk: Disk) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in disk.data.allocated(0, disk.size):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


class SecondaryMachine(RuleBasedStateMachine):
    m: Model
    profile: Profile

    @initialize(
        profile=st.sampled_from(PROFILES),
        size=sizes,
        active_cluster=clusters,
        hidden_cluster=hidden_clusters,
        secondary_cluster=clusters,
    )
    def setup(
        self,
        profile: Profile,
        size: int,
        active_cluster: int,
        hidden_cluster: int,
        secondary_cluster: int,
    ) -> None:
        self.profile = profile
        self.size = size
        self.m = secondary_model(
            profile,
            size=size,
            active_cluster=active_cluster,
            hidden_cluster=hidden_cluster,
            secondary_cluster=secondary_cluster,
        )
        assert self.m.apply(ops.Start(primary=False)) == QMP_OK
        self.phase = "running"  # running | done_failover | done_plain | failover_failed | dead
        self.guest = bytearray(size)  # the view expected through rep
        self.sec: bytearray | None = bytearray(size)  # the secondary disk (None: unknown)
        self.masks = {p: bytearray(size) for p in PATTERNS}  # where each pattern was written

    # ---- helpers

    def span(self, off: int, length: int) -> tuple[int, int]:
        off %= self.size
        return off, max(1, min(length, self.size - off))

    def view(self) -> Data:
        obs = self.m.apply(ops.Read(0, self.size))
        assert isinstance(obs, IoResult) and obs.ok and obs.data is not None, obs
        return obs.data

    def secondary(self) -> Data:
        obs = self.m.apply(ops.PrimaryRead(0, self.size))
        assert isinstance(obs, IoResult) and obs.ok and obs.data is not None, obs
        return obs.data

    def mark(self, off: int, n: int, pat: int) -> None:
        if pat in self.masks:
            self.masks[pat][off : off + n] = b"\x01" * n

    def check_written(self, off: int, n: int, val: int | None) -> None:
        """(d): a nonzero defined byte must have been written there with that pattern."""
        if val in (None, 0, UNDEF, ZERO):
            return
        assert val in self.masks, f"pattern {val:#x} never written"
        assert 0 not in self.masks[val][off : off + n], (
            f"{val:#x} read at [{off:#x}, {off + n:#x}) where it was not written"
        )

    def guest_write(self, off: int, n: int, pat: int, op: ops.Op) -> None:
        obs = self.m.apply(op)
        # before 6.1 a FAILOVER_FAILED write aborts QEMU when a run of it reaches the
        # secondary disk (allocated in neither active nor hidden); above it, it is written
        crashes = self.profile.failover_failed_write_crashes
        if self.phase == "failover_failed" and crashes and isinstance(obs, Crashed):
            self.phase = "dead"
            return
        assert obs == IO_OK
        self.mark(off, n, pat)
        self.guest[off : off + n] = bytes([pat]) * n
        if self.phase == "done_failover":
            assert self.sec is not None
            self.sec[off : off + n] = bytes([pat]) * n  # the file is the secondary disk now
        elif self.phase == "failover_failed":
            self.sec = None  # split by allocation: not shadowed

    # ---- guest I/O

    @precondition(lambda self: self.phase != "dead")
    @rule(off=offsets, length=lengths, pat=patterns)
    def write(self, off: int, length: int, pat: int) -> None:
        off, n = self.span(off, length)
        self.guest_write(off, n, pat, ops.Write(off, n, pat))

    @precondition(lambda self: self.phase != "dead")
    @rule(off=offsets, length=lengths)
    def write_zeroes(self, off: int, length: int) -> None:
        off, n = self.span(off, length)
        self.guest_write(off, n, 0, ops.WriteZeroes(off, n))

    @rule(off=offsets, length=lengths)
    def discard(self, off: int, length: int) -> None:
        off, n = self.span(off, length)
        before = {k: list(d.data.items()) for k, d in self.m.disks.items()}
        assert self.m.apply(ops.Discard(off, n)) == IO_OK
        assert {k: list(d.data.items()) for k, d in self.m.disks.items()} == before

    @precondition(lambda self: self.phase != "dead")
    @rule(off=offsets, length=lengths)
    def read(self, off: int, length: int) -> None:
        off, n = self.span(off, length)
        obs = self.m.apply(ops.Read(off, n))
        assert isinstance(obs, IoResult) and obs.ok and obs.data is not None
        pos = off
        for o, k, pat in obs.data:
            assert o == pos and pat is not None
            assert self.guest[o : o + k] == bytes([pat]) * k, f"read {o:#x}+{k:#x}"
            self.check_written(o, k, pat)
            pos = o + k
        assert pos == off + n

    @precondition(lambda self: self.phase != "dead")
    @rule()
    def status(self) -> None:
        obs = self.m.apply(ops.Status())
        assert not isinstance(obs, OneOf)  # always settled between rules
        new = self.profile.get_error_only_none
        want = {
            "running": status(None),
            "done_failover": status(None) if new else status(msg.NOT_RUNNING),
            "done_plain": status(msg.IO_ERROR) if new else status(msg.NOT_RUNNING),
            "failover_failed": status(msg.IO_ERROR) if new else status(msg.NOT_RUNNING),
        }[self.phase]
        assert obs == want

    # ---- the primary's writes, checkpoints, stops (while RUNNING)

    @precondition(lambda self: self.phase == "running")
    @rule(off=offsets, length=lengths, pat=patterns)
    def primary_write(self, off: int, length: int, pat: int) -> None:
        off, n = self.span(off, length)
        before = self.view()
        assert self.m.apply(ops.PrimaryWrite(off, n, pat)) == IO_OK
        self.mark(off, n, pat)
        assert self.sec is not None
        self.sec[off : off + n] = bytes([pat]) * n
        assert self.view() == before  # (e), and (c) with the invariant below

    @precondition(lambda self: self.phase == "running")
    @rule()
    def checkpoint(self) -> None:
        assert self.m.apply(ops.Checkpoint()) == QMP_OK
        assert len(self.m.disks["active"].data) == 0 and len(self.m.disks["hidden"].data) == 0
        assert self.view() == self.secondary()  # (a)
        assert self.sec is not None
        self.guest[:] = self.sec

    @precondition(lambda self: self.phase == "running")
    @rule()
    def plain_stop(self) -> None:
        obs = self.m.apply(ops.Stop(primary=False, failover=False))
        if self.profile.plain_stop_skips_empty:
            assert obs == qmp_error(msg.BACKUP_CANCELLED)
        else:
            assert obs == QMP_OK
            assert self.sec is not None
            self.guest[:] = self.sec  # the stop's checkpoint emptied active and hidden
        self.phase = "done_plain"

    @precondition(lambda self: self.phase == "running")
    @rule(fails=st.booleans())
    def failover(self, fails: bool) -> None:
        before = self.view()
        self.m.nodes[ops.REP].commit_fails = fails
        assert self.m.apply(ops.Stop(primary=False, failover=True)) == QMP_OK
        self.m.apply(ops.Settle())
        assert self.view() == before
        if fails:
            self.phase = "failover_failed"
            self.sec = None  # the commit's progress is unknown: undefined where dirty
        else:
            self.phase = "done_failover"
            assert self.secondary() == before  # (b)
            self.sec = bytearray(self.guest)

    # ---- invariants

    @invariant()
    def view_matches_shadow(self) -> None:
        if self.phase == "dead":
            return
        data = self.view()
        assert to_bytes(data, self.size) == self.guest  # (c): shadow changes on checkpoints only
        for off, n, pat in data:
            self.check_written(off, n, pat)  # (d)

    @invariant()
    def secondary_matches_shadow(self) -> None:
        data = self.secondary()
        for off, n, pat in data:
            self.check_written(off, n, pat)  # (d)
        if self.sec is not None and self.phase != "dead":
            assert to_bytes(data, self.size) == self.sec

    @invariant()
    def layers_hold_only_written_bytes(self) -> None:
        for disk in self.m.disks.values():
            for s, e, v in disk.data.items():
                self.check_written(s, e - s, v)  # (d)

    @invariant()
    def allocation_is_cluster_aligned(self) -> None:
        for disk in self.m.disks.values():
            if not (disk.allocates and disk.alloc_exact):
                continue
            for s, e in alloc_runs(disk):
                assert s % disk.cluster == 0, (disk.name, s, e)  # (f)
                assert e % disk.cluster == 0 or e == disk.size, (disk.name, s, e)


TestSecondaryMachine = SecondaryMachine.TestCase
TestSecondaryMachine.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)
