"""A sorted, non-overlapping map of byte ranges to small integer values.

The model's disks are extent maps, so memory and time grow with the number of
extents written, never with the virtual size: a 1 TiB disk costs what a 64 MiB
one costs. Three parallel lists plus `bisect` keep the hot path (a 64 KiB
write or read) to a handful of C-level list operations.

Values: 0..255 a byte pattern, UNDEF for bytes QEMU does not define, ZERO for
an allocated range that reads as zeros without data (a qcow2 zero cluster).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

UNDEF = -1
ZERO = -2


class ExtentMap:
    """Ranges [start, end) -> value; absent ranges are unallocated."""

    __slots__ = ("ends", "starts", "vals")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.vals: list[int] = []

    def __len__(self) -> int:
        return len(self.starts)

    def copy(self) -> ExtentMap:
        m = ExtentMap()
        m.starts = self.starts[:]
        m.ends = self.ends[:]
        m.vals = self.vals[:]
        return m

    def items(self) -> Iterator[tuple[int, int, int]]:
        """(start, end, value) in order."""
        return zip(self.starts, self.ends, self.vals, strict=True)

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.vals.clear()

    def set(self, start: int, end: int, val: int) -> None:
        """Map [start, end) to `val`, replacing what was there, merging equal neighbours."""
        if start >= end:
            return
        starts, ends, vals = self.starts, self.ends, self.vals
        i = bisect_right(ends, start)  # first extent ending after start
        j = bisect_left(starts, end, i)  # first extent starting at or after end
        new_s = [start]
        new_e = [end]
        new_v = [val]
        if i < j:
            s0 = starts[i]
            if s0 < start:
                v0 = vals[i]
                if v0 == val:
                    new_s[0] = s0
                else:
                    new_s.insert(0, s0)
                    new_e.insert(0, start)
                    new_v.insert(0, v0)
            e1 = ends[j - 1]
            if e1 > end:
                v1 = vals[j - 1]
                if v1 == val:
                    new_e[-1] = e1
                else:
                    new_s.append(end)
                    new_e.append(e1)
                    new_v.append(v1)
        # merge with untouched neighbours that touch exactly
        if i > 0 and ends[i - 1] == new_s[0] and vals[i - 1] == new_v[0]:
            i -= 1
            new_s[0] = starts[i]
        if j < len(starts) and starts[j] == new_e[-1] and vals[j] == new_v[-1]:
            new_e[-1] = ends[j]
            j += 1
        starts[i:j] = new_s
        ends[i:j] = new_e
        vals[i:j] = new_v

    def remove(self, start: int, end: int) -> None:
        """Unmap [start, end)."""
        if start >= end:
            return
        starts, ends, vals = self.starts, self.ends, self.vals
        i = bisect_right(ends, start)
        j = bisect_left(starts, end, i)
        if i >= j:
            return
        new_s: list[int] = []
        new_e: list[int] = []
        new_v: list[int] = []
        if starts[i] < start:
            new_s.append(starts[i])
            new_e.append(start)
            new_v.append(vals[i])
        if ends[j - 1] > end:
            new_s.append(end)
            new_e.append(ends[j - 1])
            new_v.append(vals[j - 1])
        starts[i:j] = new_s
        ends[i:j] = new_e
        vals[i:j] = new_v

    def pieces(self, start: int, end: int) -> list[tuple[int, int, int | None]]:
        """Cover [start, end) exactly: (s, e, value) with None for unmapped gaps."""
        if start >= end:
            return []
        starts, ends, vals = self.starts, self.ends, self.vals
        i = bisect_right(ends, start)
        j = bisect_left(starts, end, i)
        out: list[tuple[int, int, int | None]] = []
        pos = start
        for k in range(i, j):
            s = starts[k]
            if s > pos:
                out.append((pos, s, None))
                pos = s
            e = ends[k]
            if e > end:
                e = end
            out.append((pos, e, vals[k]))
            pos = e
        if pos < end:
            out.append((pos, end, None))
        return out

    def allocated(self, start: int, end: int) -> list[tuple[int, int]]:
        """The mapped sub-ranges of [start, end)."""
        if start >= end:
            return []
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, start)
        j = bisect_left(starts, end, i)
        return [(max(starts[k], start), min(ends[k], end)) for k in range(i, j)]

    def is_mapped(self, start: int, end: int) -> bool:
        """True when every byte of [start, end) is mapped."""
        pos = start
        for s, e in self.allocated(start, end):
            if s > pos:
                return False
            pos = e
        return pos >= end

    def any_mapped(self, start: int, end: int) -> bool:
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, start)
        return i < len(starts) and starts[i] < end

    def total(self) -> int:
        """Mapped bytes."""
        return sum(e - s for s, e in zip(self.starts, self.ends, strict=True))
