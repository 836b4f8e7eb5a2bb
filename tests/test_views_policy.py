"""What the differential session reads when (harness/differential/policy.py).

After an operation that can change a view: every view over what the model says the
operation could change, rounded out to the granule, and one sample (after a start QEMU
carried out, the head of every view too); whole views before a checkpoint or a failover
of the running node, and at the end. None of these reads is part of a trace. A change
QEMU makes that the model does not predict (planted here behind the model's back) is
caught by the samples within their bound, or at once by the whole views before a
checkpoint.

The pieces a view is read in (pair.read_pieces) need no QEMU; the rest runs on the
build under test (the PATH build unless --qemu-dir says otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ops
from harness.builds import QemuBuild
from harness.differential.kinds import TopologySpec
from harness.differential.policy import SAMPLE
from harness.differential.session import Session
from harness.differential.specs import pair_specs, secondary_specs
from harness.machine import MachineSet
from harness.model import profile_for
from harness.observe import IoResult, data
from harness.ops import REP
from harness.pair import DUMP_PIECE, read_pieces
from harness.probe import Probe
from harness.qemu_io import MAX_VERIFY_EXTENTS
from harness.topology.pair import PQ
from harness.units import KiB, MiB
from harness.verdicts import Divergence

# ---- the pieces of a view read (no QEMU)


def test_one_piece_per_pattern_each_over_its_own_extent() -> None:
    expected = data((0, 4096, 0x11), (4096, 100, 0x22), (4196, 60000, 0))
    assert read_pieces(expected, 0, 64196) == [(0, 4096), (4096, 100), (4196, 60000)]


def test_undefined_bytes_go_with_the_piece_before_them() -> None:
    expected = data((0, 512, None), (512, 1000, 0x11), (1512, 24, None), (1536, 512, 0x22))
    assert read_pieces(expected, 0, 2048) == [(0, 1536), (1536, 512)]
    assert read_pieces(data((0, 512, None)), 0, 512) == [(0, 512)]


def test_a_run_of_many_small_extents_is_one_dumped_piece() -> None:
    n = MAX_VERIFY_EXTENTS + 3
    small = [(i * 512, 512, i % 2) for i in range(n)]
    expected = data(*small, (n * 512, MiB, 0x33))
    assert n * 512 <= DUMP_PIECE
    assert read_pieces(expected, 0, n * 512 + MiB) == [(0, n * 512), (n * 512, MiB)]
    # as many as qemu-io still verifies one by one: one piece each
    few = data(*small[:MAX_VERIFY_EXTENTS])
    assert len(read_pieces(few, 0, MAX_VERIFY_EXTENTS * 512)) == MAX_VERIFY_EXTENTS


def test_a_read_expected_to_fail_is_one_piece() -> None:
    assert read_pieces(IoResult(False, "Input/output error"), 4096, MiB) == [(4096, MiB)]


# ---- the policy on real QEMU

pytestmark_qemu = pytest.mark.needs_qemu


def _spec(name: str) -> TopologySpec:
    return next(sp for sp in secondary_specs() if sp.name == name)


@pytest.fixture
def session(
    qemu_build: tuple[QemuBuild, Probe], tmp_path: Path
) -> Iterator[tuple[QemuBuild, Probe, Path]]:
    yield qemu_build[0], qemu_build[1], tmp_path


@contextlib.contextmanager
def _open(
    env: tuple[QemuBuild, Probe, Path], spec: TopologySpec, whole_views: bool = False
) -> Iterator[Session]:
    """A session on `spec`, closed (its qemu-io and QEMU processes ended) at the end."""
    build, found, tmp = env
    with MachineSet(tmp / "machines") as machines:
        s = Session(
            spec, build, profile_for(found.version_tuple), machines, tmp, whole_views=whole_views
        )
        try:
            yield s
        finally:
            s.close()


def _reads(s: Session, first: int, last: int | None = None) -> dict[str, list[tuple[int, int]]]:
    """The policy's reads among story.steps[first:last], per view, merged."""
    out: dict[str, list[tuple[int, int]]] = {}
    steps = s.story.steps
    for i in range(first, len(steps) if last is None else last):
        op = steps[i].op
        assert i in s.policy.steps, f"step {i} ({op.describe()}) is not the policy's"
        assert isinstance(op, ops.Read | ops.PrimaryRead)
        key = op.node if isinstance(op, ops.Read) else "export"
        out.setdefault(key, []).append((op.offset, op.offset + op.length))
    return {k: _merge(v) for k, v in out.items()}


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def _step(s: Session, op: ops.Op) -> tuple[int, int]:
    """Apply `op`; (index of its own step, index after the reads that follow it)."""
    before = len(s.story.steps)
    s.step(op)
    own = next(i for i in range(before, len(s.story.steps)) if i not in s.policy.steps)
    return own, len(s.story.steps)


SIZE = 4 * MiB
WHOLE = [(0, SIZE)]


@pytestmark_qemu
def test_after_a_write_its_clusters_on_every_view_and_one_sample(session) -> None:
    # 64 KiB clusters: a 64 KiB granule
    with _open(session, _spec("secondary")) as s:
        assert s.policy.granule == 64 * KiB
        own, end = _step(s, ops.Start(primary=False))
        # a start carried out: the head of every view, and the first sample (rep's,
        # from 0: inside the head)
        assert _reads(s, own + 1, end) == {REP: [(0, SAMPLE)], "export": [(0, SAMPLE)]}
        assert not s.policy.fresh
        own, end = _step(s, ops.Write(100_000, 5000, 0x33))
        reads = _reads(s, own + 1, end)
        cluster = (64 * KiB, 128 * KiB)
        # the second sample is the export's: its first extent (zeros), up to SAMPLE
        # bytes, merged with the write's cluster
        assert reads == {REP: [cluster], "export": [(0, SAMPLE)]}
        own, end = _step(s, ops.PrimaryWrite(3 * MiB + 1, 10, 0x44))
        reads = _reads(s, own + 1, end)
        cluster = (3 * MiB, 3 * MiB + 64 * KiB)
        # the third sample is rep's again: from where its first stopped, SAMPLE bytes of
        # the zeros after the guest's write
        assert reads == {REP: [(SAMPLE, 2 * SAMPLE), cluster], "export": [cluster]}
        # reads, status and flush: nothing read after them
        for op in (ops.Read(0, 512), ops.PrimaryRead(0, 512), ops.Status(), ops.Flush()):
            own, end = _step(s, op)
            assert end == own + 1
        assert [st.op for st in s.operations()][1:] == [
            ops.Write(100_000, 5000, 0x33),
            ops.PrimaryWrite(3 * MiB + 1, 10, 0x44),
            ops.Read(0, 512),
            ops.PrimaryRead(0, 512),
            ops.Status(),
            ops.Flush(),
        ]
        s.end()


@pytestmark_qemu
def test_whole_views_before_a_checkpoint_and_a_failover_and_at_the_end(session) -> None:
    with _open(session, _spec("secondary-512")) as s:
        _step(s, ops.Start(primary=False))
        _step(s, ops.Write(0, 4096, 0x11))
        _step(s, ops.PrimaryWrite(8192, 4096, 0x22))
        before = len(s.story.steps)
        own, end = _step(s, ops.Checkpoint())
        assert _reads(s, before, own) == {REP: WHOLE, "export": WHOLE}
        # after it: what the active and hidden disks held (rounded out), and a sample
        after = _reads(s, own + 1, end)
        assert after[REP][0] == (0, 64 * KiB) and after["export"][0] == (0, 64 * KiB)
        _step(s, ops.Write(0, 4096, 0x11))
        before = len(s.story.steps)
        own, _ = _step(s, ops.Stop(primary=False, failover=True))
        assert _reads(s, before, own) == {REP: WHOLE, "export": WHOLE}
        own, end = _step(s, ops.Settle())
        assert _reads(s, own + 1, end)[REP][0] == (0, 64 * KiB)
        before = len(s.story.steps)
        s.end()
        policy = [i for i in range(before, len(s.story.steps)) if i in s.policy.steps]
        assert _reads(s, policy[0], policy[-1] + 1) == {REP: WHOLE, "export": WHOLE}


@pytestmark_qemu
def test_a_plain_stop_reads_what_the_active_and_hidden_disks_held(session) -> None:
    with _open(session, _spec("secondary")) as s:
        _step(s, ops.Start(primary=False))
        _step(s, ops.Write(70_000, 100, 0x11))  # the active disk: [64 KiB, 128 KiB)
        _step(s, ops.PrimaryWrite(1 * MiB, 10, 0x22))  # copied first: hidden [1 MiB, +64 KiB)
        own, end = _step(s, ops.Stop(primary=False))
        reads = _reads(s, own + 1, end)
        held = [(64 * KiB, 128 * KiB), (MiB, MiB + 64 * KiB)]
        # and the fourth sample (the start's was the first), the export's: from where its
        # first one stopped, SAMPLE bytes of zeros
        assert reads == {REP: held, "export": [held[0], (SAMPLE, 2 * SAMPLE), held[1]]}
        s.end()


@pytestmark_qemu
def test_a_refused_command_is_followed_by_a_sample_only(session) -> None:
    with _open(session, _spec("secondary")) as s:
        own, end = _step(s, ops.Checkpoint())  # refused before start
        assert not s.story.steps[own].actual.ok  # type: ignore[attr-defined]
        # rep answers EIO before start: its sample is one request, of SAMPLE bytes
        assert _reads(s, own + 1, end) == {REP: [(0, SAMPLE)]}
        s.end()


@pytestmark_qemu
def test_the_previous_policy_reads_every_view_whole(session) -> None:
    with _open(session, _spec("secondary"), whole_views=True) as s:
        _step(s, ops.Start(primary=False))
        own, end = _step(s, ops.Write(0, 512, 0x11))
        assert _reads(s, own + 1, end) == {REP: WHOLE, "export": WHOLE}
        s.end()


@pytestmark_qemu
def test_the_pair_reads_both_vms_views_over_its_largest_cluster(session) -> None:
    mixed = next(sp for sp in pair_specs() if sp.name == "mixed")  # hidden: 2 MiB
    with _open(session, mixed) as s:
        assert s.policy.granule == 2 * MiB
        _step(s, ops.Start(primary=False))
        _step(s, ops.Start(primary=True, machine="primary"))
        own, end = _step(s, ops.Write(2 * MiB + 3, 100, 0x5A, node=PQ))
        reads = _reads(s, own + 1, end)
        assert reads[PQ][-1] == (2 * MiB, 4 * MiB) and reads[REP][-1] == (2 * MiB, 4 * MiB)
        s.end()


# ---- a change the model does not predict


def _plant(s: Session, offset: int, pattern: int) -> None:
    """A write QEMU makes that the model never hears of (straight to QEMU's rep)."""
    res = s.topo.guests[REP].write(offset, 4096, pattern)
    assert res.ok


@pytestmark_qemu
def test_an_unpredicted_change_is_found_by_the_samples_within_their_bound(session) -> None:
    with _open(session, _spec("secondary")) as s:
        _step(s, ops.Start(primary=False))
        _plant(s, 3 * MiB + 8192, 0x77)
        # writes far from it: only the samples pass over it. rep's view holds 2 extents
        # (the model's: the write's, zeros), so its samples sweep it in at most
        # SIZE/SAMPLE + 2; rep's turn comes every other operation
        bound = 2 * (SIZE // SAMPLE + 2)
        with pytest.raises(Divergence):
            for _ in range(bound):
                s.step(ops.Write(0, 512, 0x11))
        assert s.where is not None and s.where.startswith("guest views after operation ")
        n = int(s.where.rsplit(" ", 1)[1])
        print(f"planted change found at {s.where} (bound: operation {bound + 1})")
        assert n <= bound + 1


@pytestmark_qemu
def test_an_unpredicted_change_is_found_before_the_next_checkpoint(session) -> None:
    with _open(session, _spec("secondary")) as s:
        _step(s, ops.Start(primary=False))
        _step(s, ops.Write(0, 512, 0x11))
        # in the active disk's cluster the write allocated: no allocation of its own
        _plant(s, 8192, 0x66)
        with pytest.raises(Divergence):
            s.step(ops.Checkpoint())
        assert s.where == "guest views before operation 3"


@pytestmark_qemu
def test_an_unpredicted_write_where_the_model_holds_nothing_is_found_before_a_failover(
    session,
) -> None:
    """The whole view of rep is answered sparsely (holes where QEMU has nothing
    allocated): a write QEMU made where the model says nothing is allocated is data, so
    it is read through rep and compared (before a failover: no layer check comes first)."""
    with _open(session, _spec("secondary")) as s:
        _step(s, ops.Start(primary=False))
        _step(s, ops.Write(0, 512, 0x11))
        _plant(s, 3 * MiB + 8192, 0x66)
        with pytest.raises(Divergence) as caught:
            s.step(ops.Stop(primary=False, failover=True))
        assert s.where == "guest views before operation 3"
        assert "=0x66" in str(caught.value)
