"""ExtentMap: examples, then a randomised comparison against a naive per-byte list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from harness.model.extents import UNDEF, ZERO, ExtentMap

SPACE = 96  # the naive model's address space
VALUES = (0, 1, 2, 0xFF, UNDEF, ZERO)


def check_invariants(m: ExtentMap) -> None:
    """Sorted, non-overlapping, non-empty extents; no two touching extents with equal value."""
    assert len(m.starts) == len(m.ends) == len(m.vals) == len(m)
    for k in range(len(m)):
        assert m.starts[k] < m.ends[k], (k, list(m.items()))
        if k:
            assert m.ends[k - 1] <= m.starts[k], ("overlap/unsorted", list(m.items()))
            if m.ends[k - 1] == m.starts[k]:
                assert m.vals[k - 1] != m.vals[k], ("unmerged neighbours", list(m.items()))


def naive_pieces(
    cells: list[int | None], start: int, end: int
) -> list[tuple[int, int, int | None]]:
    out: list[tuple[int, int, int | None]] = []
    for pos in range(start, end):
        v = cells[pos]
        if out and out[-1][2] == v and out[-1][1] == pos:
            out[-1] = (out[-1][0], pos + 1, v)
        else:
            out.append((pos, pos + 1, v))
    return out


def merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in runs:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def naive_allocated(cells: list[int | None], start: int, end: int) -> list[tuple[int, int]]:
    return merge_runs([(p, p + 1) for p in range(start, end) if cells[p] is not None])


def merged_pieces(
    pieces: list[tuple[int, int, int | None]],
) -> list[tuple[int, int, int | None]]:
    out: list[tuple[int, int, int | None]] = []
    for s, e, v in pieces:
        if out and out[-1][2] == v and out[-1][1] == s:
            out[-1] = (out[-1][0], e, v)
        else:
            out.append((s, e, v))
    return out


# ---- examples


def test_empty_map() -> None:
    m = ExtentMap()
    assert len(m) == 0
    assert m.pieces(0, 10) == [(0, 10, None)]
    assert m.allocated(0, 10) == []
    assert not m.is_mapped(0, 10)
    assert not m.any_mapped(0, 10)
    assert m.total() == 0


def test_set_merges_equal_neighbours() -> None:
    m = ExtentMap()
    m.set(0, 10, 1)
    m.set(20, 30, 1)
    m.set(10, 20, 1)
    assert list(m.items()) == [(0, 30, 1)]
    m.set(5, 25, 2)
    assert list(m.items()) == [(0, 5, 1), (5, 25, 2), (25, 30, 1)]
    m.set(5, 25, 1)
    assert list(m.items()) == [(0, 30, 1)]
    check_invariants(m)


def test_set_does_not_merge_different_values_or_gaps() -> None:
    m = ExtentMap()
    m.set(0, 10, 1)
    m.set(10, 20, 2)
    m.set(21, 30, 2)
    assert list(m.items()) == [(0, 10, 1), (10, 20, 2), (21, 30, 2)]


def test_empty_ranges_are_ignored() -> None:
    m = ExtentMap()
    m.set(5, 5, 1)
    m.set(7, 3, 1)
    assert len(m) == 0
    m.set(0, 10, 1)
    m.remove(4, 4)
    assert list(m.items()) == [(0, 10, 1)]


def test_remove_splits_and_trims() -> None:
    m = ExtentMap()
    m.set(0, 30, 1)
    m.remove(10, 20)
    assert list(m.items()) == [(0, 10, 1), (20, 30, 1)]
    m.remove(5, 25)
    assert list(m.items()) == [(0, 5, 1), (25, 30, 1)]
    m.remove(100, 200)
    assert list(m.items()) == [(0, 5, 1), (25, 30, 1)]
    m.remove(0, 100)
    assert len(m) == 0


def test_pieces_cover_exactly_with_gaps() -> None:
    m = ExtentMap()
    m.set(10, 20, 1)
    m.set(30, 40, UNDEF)
    assert m.pieces(0, 50) == [
        (0, 10, None),
        (10, 20, 1),
        (20, 30, None),
        (30, 40, UNDEF),
        (40, 50, None),
    ]
    assert m.pieces(15, 35) == [(15, 20, 1), (20, 30, None), (30, 35, UNDEF)]
    assert m.allocated(15, 35) == [(15, 20), (30, 35)]
    assert m.is_mapped(12, 18)
    assert not m.is_mapped(12, 31)
    assert m.any_mapped(19, 21)
    assert not m.any_mapped(20, 30)
    assert m.total() == 20


def test_copy_is_independent_and_clear_empties() -> None:
    m = ExtentMap()
    m.set(0, 10, 1)
    c = m.copy()
    c.set(0, 10, 2)
    assert list(m.items()) == [(0, 10, 1)]
    assert list(c.items()) == [(0, 10, 2)]
    m.clear()
    assert len(m) == 0 and list(c.items()) == [(0, 10, 2)]


def test_huge_offsets_cost_extents_not_bytes() -> None:
    m = ExtentMap()
    tib = 1 << 40
    m.set(tib - 10, tib, 3)
    m.set(0, 10, 3)
    assert len(m) == 2
    assert m.total() == 20
    assert m.pieces(0, tib) == [(0, 10, 3), (10, tib - 10, None), (tib - 10, tib, 3)]


def test_empty_query_has_no_pieces() -> None:
    m = ExtentMap()
    m.set(0, 2, 7)
    assert m.pieces(5, 5) == []
    assert m.pieces(1, 1) == []
    assert m.allocated(1, 1) == []


# ---- randomised comparison with a naive per-cell model

spans = st.tuples(st.integers(0, SPACE), st.integers(0, SPACE)).map(sorted)
# queries on non-empty ranges (see test_empty_query_has_no_pieces for s == e)
qspans = (
    st.tuples(st.integers(0, SPACE - 1), st.integers(1, SPACE))
    .map(sorted)
    .filter(lambda se: se[0] < se[1])
)


class ExtentMapVsNaive(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = ExtentMap()
        self.cells: list[int | None] = [None] * SPACE

    @rule(span=spans, val=st.sampled_from(VALUES))
    def set(self, span: list[int], val: int) -> None:
        s, e = span
        self.m.set(s, e, val)
        for p in range(s, e):
            self.cells[p] = val

    @rule(span=spans)
    def remove(self, span: list[int]) -> None:
        s, e = span
        self.m.remove(s, e)
        for p in range(s, e):
            self.cells[p] = None

    @rule(span=qspans)
    def queries(self, span: list[int]) -> None:
        s, e = span
        pieces = self.m.pieces(s, e)
        # exact cover of [s, e) ...
        pos = s
        for ps, pe, _ in pieces:
            assert ps == pos and pe > ps
            pos = pe
        assert pos == e
        # ... with the naive model's content
        assert merged_pieces(pieces) == naive_pieces(self.cells, s, e)
        assert merge_runs(self.m.allocated(s, e)) == naive_allocated(self.cells, s, e)
        assert self.m.is_mapped(s, e) == all(self.cells[p] is not None for p in range(s, e))
        assert self.m.any_mapped(s, e) == any(self.cells[p] is not None for p in range(s, e))

    @rule()
    def copy_and_clear(self) -> None:
        c = self.m.copy()
        assert list(c.items()) == list(self.m.items())
        c.clear()
        assert len(c) == 0

    @invariant()
    def matches_naive(self) -> None:
        check_invariants(self.m)
        assert list(self.m.items()) == [
            (s, e, v) for s, e, v in naive_pieces(self.cells, 0, SPACE) if v is not None
        ]
        assert self.m.total() == sum(v is not None for v in self.cells)


TestExtentMapVsNaive = ExtentMapVsNaive.TestCase
TestExtentMapVsNaive.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@settings(max_examples=200, deadline=None)
@given(
    writes=st.lists(st.tuples(spans, st.sampled_from(VALUES)), max_size=20),
    q=qspans,
)
def test_pieces_of_random_maps(writes: list[tuple[list[int], int]], q: list[int]) -> None:
    m = ExtentMap()
    cells: list[int | None] = [None] * SPACE
    for (s, e), v in writes:
        m.set(s, e, v)
        cells[s:e] = [v] * (e - s)
    check_invariants(m)
    s, e = q
    assert merged_pieces(m.pieces(s, e)) == naive_pieces(cells, s, e)
