"""The layer-map picture: range arithmetic, cells, and the HTML/SVG page (no QEMU)."""

from __future__ import annotations

import html.parser
import re

from harness.model.extents import UNDEF
from harness.report import layer_map
from harness.report.layer_map import LayerPicture, StoryPicture

K64 = 65536


def test_merge_intersect_subtract_differences() -> None:
    assert layer_map.merge([(5, 9), (0, 2), (2, 3), (8, 12), (20, 20)]) == [(0, 3), (5, 12)]
    assert layer_map.intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert layer_map.subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert layer_map.subtract([(0, 10)], []) == [(0, 10)]
    assert layer_map.subtract([(0, 10)], [(0, 10)]) == []
    assert layer_map.differences([(0, 10)], [(0, 10)]) == []
    assert layer_map.differences([(0, 10), (30, 40)], [(5, 15)]) == [(0, 5), (10, 15), (30, 40)]


def _layer(**kw: object) -> LayerPicture:
    base: dict[str, object] = dict(
        name="active",
        size=16 * K64,
        cluster=K64,
        fmt="qcow2",
        model=[(0, K64, 0x11)],
        qemu=[(0, K64)],
        qemu_source="live: HMP qemu-io map",
    )
    base.update(kw)
    return LayerPicture(**base)  # type: ignore[arg-type]


def test_one_cell_per_cluster_and_differences_flagged() -> None:
    cs = layer_map.cells(_layer(qemu=[(0, K64), (3 * K64, 4 * K64)]))
    assert len(cs) == 16
    assert [c.differs for c in cs[:5]] == [False, False, False, True, False]
    assert cs[0].model_bytes == K64 and cs[0].qemu_bytes == K64 and cs[0].model_value == 0x11
    assert cs[3].model_bytes == 0 and cs[3].qemu_bytes == K64


def test_big_disk_is_bucketed() -> None:
    tib = 1 << 40
    cs = layer_map.cells(_layer(size=tib, model=[(tib - K64, tib, 0x22)], qemu=[]))
    assert len(cs) == layer_map.MAX_CELLS
    assert cs[-1].hi == tib and cs[-1].model_bytes == K64 and cs[-1].differs
    assert not any(c.differs for c in cs[:-1])


def test_written_pattern_wins_over_copied_up_zeroes() -> None:
    # a 4 KiB write into a cluster otherwise filled by COW with zeroes: show the write
    cs = layer_map.cells(_layer(model=[(0, 4096, 0x5A), (4096, K64, 0)]))
    assert cs[0].model_value == 0x5A
    assert dict(cs[0].model_values) == {0x5A: 4096, 0: K64 - 4096}


def test_no_comparison_when_not_predicted_or_unknown() -> None:
    assert not any(c.differs for c in layer_map.cells(_layer(qemu=[], compare=False)))
    unknown = layer_map.cells(_layer(qemu=None, qemu_source="qemu-img map failed"))
    assert all(c.qemu_bytes is None and not c.differs for c in unknown)


class _Checker(html.parser.HTMLParser):
    """Every opened element closed (void elements aside), in order."""

    VOID = frozenset({"meta", "br", "input", "path"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.rects = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "rect":
            self.rects += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_page_is_self_contained_and_shows_both_sides() -> None:
    diff = _layer(qemu=[(0, 2 * K64)])
    same = _layer(name="hidden", model=[], qemu=[])
    raw = _layer(name="secondary", fmt="raw", compare=False, model=[(0, K64, UNDEF)])
    text = layer_map.page(
        "case[7.2.22]", [StoryPicture("QEMU 7.2.22", "the last step", [diff, same, raw])]
    )
    checker = _Checker()
    checker.feed(text)
    assert checker.stack == []
    assert checker.rects == 3 * 2 * 16  # model and QEMU grids of 16 cells per layer
    assert "src=" not in text and 'href="http' not in text  # nothing fetched
    assert "allocation differs: [0x10000-0x20000)" in text
    assert "allocation agrees" in text
    assert "allocation not compared" in text
    assert text.count(f'stroke="{layer_map.DIFF}"') == 2  # the differing cell, on both sides
    assert "patterns: " in text and "0x11" in text and "undefined" in text
    assert re.search(r"<title>\[0x10000-0x20000\) QEMU: allocated\s+ALLOCATION DIFFERS", text)


def test_page_without_stories_says_so() -> None:
    assert "made no Story" in layer_map.page("x", [])


def test_pattern_colours_are_stable_and_distinct() -> None:
    assert layer_map.pattern_colour(0x11) == layer_map.pattern_colour(0x11)
    assert len({layer_map.pattern_colour(v) for v in range(1, 256)}) > 200
    assert layer_map.pattern_colour(UNDEF) == layer_map.UNDEFINED
    assert layer_map.human(1 << 40) == "1 TiB" and layer_map.human(512) == "512 B"
