"""A picture of the layers by cluster, model beside QEMU (self-contained HTML + SVG).

People would rather look than read `qemu-img map` JSON: every layer (active,
hidden, secondary, ...) gets two grids of cells, the model's on the left and
QEMU's on the right.  A cell is one cluster (or, for big disks, an equal run of
clusters); the model's cells are coloured by the byte pattern they hold, QEMU's
by whether the layer allocates them, and a cell where the two sides' allocation
differs has a red frame on both sides.  Hovering a cell names its byte range.

Pure functions of plain data (`LayerPicture`): the plugin gathers the data, this
module only draws, so it is tested without QEMU.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.model.extents import UNDEF

Range = tuple[int, int]  # [start, end)

# At most this many cells per grid: a 1 TiB disk must not become 16 M rectangles.
MAX_CELLS = 1024
COLUMNS = 32
CELL = 14  # px, including the gap (BIG_CELL for small grids)
BIG_CELL = 22
GAP = 2

UNALLOCATED = "#f4f4f4"
UNDEFINED = "#9e9e9e"
QEMU_ALLOCATED = "#3d6fb6"
ZERO = "#aab7bf"
DIFF = "#d62728"


@dataclass(frozen=True)
class LayerPicture:
    """One layer as both sides see it."""

    name: str
    size: int
    cluster: int
    fmt: str
    # the model's allocated pieces: (start, end, value); value UNDEF = undefined bytes
    model: Sequence[tuple[int, int, int]]
    # QEMU's allocated ranges, None when they could not be asked
    qemu: Sequence[Range] | None
    # how QEMU's side was obtained ("live: HMP qemu-io map", "qemu-img map", or why not)
    qemu_source: str
    # False when allocation is not comparable (raw layer, or the model gave up predicting it)
    compare: bool = True


@dataclass(frozen=True)
class StoryPicture:
    title: str
    headline: str
    layers: Sequence[LayerPicture]


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping, adjacent ranges joined; empty ranges dropped."""
    out: list[Range] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Intersection of two merged range lists."""
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """a minus b, both merged."""
    out: list[Range] = []
    j = 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def differences(model: Sequence[Range], qemu: Sequence[Range]) -> list[Range]:
    """Byte ranges allocated on exactly one side."""
    m, q = merge(model), merge(qemu)
    return merge(subtract(m, q) + subtract(q, m))


def _covered(ranges: Sequence[Range], starts: Sequence[int], lo: int, hi: int) -> int:
    """Bytes of [lo, hi) inside the merged `ranges` (`starts`: their start offsets)."""
    total = 0
    i = max(bisect.bisect_right(starts, lo) - 1, 0)
    while i < len(ranges) and ranges[i][0] < hi:
        s, e = ranges[i]
        total += max(0, min(e, hi) - max(s, lo))
        i += 1
    return total


def _values(
    pieces: Sequence[tuple[int, int, int]], starts: Sequence[int], lo: int, hi: int
) -> dict[int, int]:
    """value -> bytes of [lo, hi) holding it, in the model's pieces."""
    weight: dict[int, int] = {}
    i = max(bisect.bisect_right(starts, lo) - 1, 0)
    while i < len(pieces) and pieces[i][0] < hi:
        s, e, v = pieces[i]
        n = min(e, hi) - max(s, lo)
        if n > 0:
            weight[v] = weight.get(v, 0) + n
        i += 1
    return weight


def _shown(weight: Mapping[int, int]) -> int:
    """The value a cell is painted with: the commonest written pattern, so that a
    4 KiB write in a cluster otherwise copied up as zeroes still shows (-1: none)."""
    written = {v: n for v, n in weight.items() if v not in (0, UNDEF)}
    pool = written or weight
    return max(pool, key=lambda v: (pool[v], -v)) if pool else -1


def pattern_colour(value: int) -> str:
    """A stable colour per byte pattern (0x00 grey, undefined darker grey)."""
    if value == UNDEF:
        return UNDEFINED
    if value == 0:
        return ZERO
    hue = (value * 137) % 360
    return f"hsl({hue}, 62%, 52%)"


def pattern_name(value: int) -> str:
    return "undefined" if value == UNDEF else f"0x{value:02x}"


def human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class _Cell:
    lo: int
    hi: int
    model_bytes: int
    model_value: int
    model_values: Mapping[int, int]
    qemu_bytes: int | None
    differs: bool


def cells(layer: LayerPicture) -> list[_Cell]:
    """The layer cut into at most MAX_CELLS equal runs of whole clusters."""
    cluster = max(layer.cluster, 1)
    clusters = max(-(-layer.size // cluster), 1)
    per = -(-clusters // MAX_CELLS)
    span = per * cluster
    pieces = sorted((s, e, v) for s, e, v in layer.model if e > s)
    pstarts = [p[0] for p in pieces]
    model = merge((s, e) for s, e, _ in pieces)
    mstarts = [r[0] for r in model]
    qemu = merge(layer.qemu) if layer.qemu is not None else None
    qstarts = [r[0] for r in qemu] if qemu is not None else []
    diff = differences(model, qemu) if qemu is not None and layer.compare else []
    dstarts = [r[0] for r in diff]
    out = []
    for lo in range(0, clusters * cluster, span):
        hi = min(lo + span, max(layer.size, lo + 1))
        weight = _values(pieces, pstarts, lo, hi)
        out.append(
            _Cell(
                lo,
                hi,
                _covered(model, mstarts, lo, hi),
                _shown(weight),
                weight,
                None if qemu is None else _covered(qemu, qstarts, lo, hi),
                _covered(diff, dstarts, lo, hi) > 0,
            )
        )
    return out


def _grid(layer: LayerPicture, cs: Sequence[_Cell], side: str) -> str:
    cols = min(COLUMNS, len(cs))
    rows = -(-len(cs) // cols)
    cell = BIG_CELL if len(cs) <= 2 * COLUMNS else CELL
    w, h = cols * cell + GAP, rows * cell + GAP
    parts = [
        f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(layer.name)} {side}">'
    ]
    for i, c in enumerate(cs):
        x, y = GAP + (i % cols) * cell, GAP + (i // cols) * cell
        size = cell - GAP
        if side == "model":
            fill = pattern_colour(c.model_value) if c.model_bytes else UNALLOCATED
            full = c.model_bytes == c.hi - c.lo
            held = ", ".join(
                f"{pattern_name(v)} x {n} B" for v, n in sorted(c.model_values.items())
            )
            what = (
                f"model: {held}"
                + ("" if full else f" ({c.model_bytes} of {c.hi - c.lo} bytes allocated)")
                if c.model_bytes
                else "model: not allocated"
            )
            partial = bool(c.model_bytes) and not full
        else:
            if c.qemu_bytes is None:
                fill, what, partial = "url(#unknown)", "QEMU: unknown", False
            else:
                fill = QEMU_ALLOCATED if c.qemu_bytes else UNALLOCATED
                partial = bool(c.qemu_bytes) and c.qemu_bytes != c.hi - c.lo
                what = (
                    "QEMU: allocated"
                    + (f" ({c.qemu_bytes} of {c.hi - c.lo} bytes)" if partial else "")
                    if c.qemu_bytes
                    else "QEMU: not allocated"
                )
        stroke = f'stroke="{DIFF}" stroke-width="2"' if c.differs else 'stroke="#ccc"'
        opacity = ' fill-opacity="0.55"' if partial else ""
        title = f"[{c.lo:#x}-{c.hi:#x}) {what}" + ("  ALLOCATION DIFFERS" if c.differs else "")
        parts.append(
            f'<rect x="{x}" y="{y}" width="{size}" height="{size}" fill="{fill}"{opacity} '
            f"{stroke}><title>{html.escape(title)}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _range_text(rs: Sequence[Range], limit: int = 8) -> str:
    shown = ", ".join(f"[{s:#x}-{e:#x})" for s, e in rs[:limit])
    return shown + (f" and {len(rs) - limit} more" if len(rs) > limit else "")


def layer_html(layer: LayerPicture) -> str:
    cs = cells(layer)
    per = (cs[0].hi - cs[0].lo) // max(layer.cluster, 1) if cs else 1
    unit = "cluster" if per == 1 else f"{per} clusters"
    head = (
        f"<h3>{html.escape(layer.name)} <small>{html.escape(layer.fmt)}, {human(layer.size)}, "
        f"{human(layer.cluster)} clusters; one cell = {unit}</small></h3>"
    )
    diff = (
        differences([(s, e) for s, e, _ in layer.model], layer.qemu)
        if layer.qemu is not None and layer.compare
        else []
    )
    if layer.qemu is None:
        verdict = f'<p class="note">QEMU side unavailable: {html.escape(layer.qemu_source)}</p>'
    elif not layer.compare:
        verdict = '<p class="note">allocation not compared (not predicted for this layer)</p>'
    elif diff:
        verdict = f'<p class="bad">allocation differs: {html.escape(_range_text(diff))}</p>'
    else:
        verdict = '<p class="good">allocation agrees</p>'
    values = sorted({v for _, _, v in layer.model})
    legend = " ".join(
        f'<span class="sw" style="background:{pattern_colour(v)}"></span>{pattern_name(v)}'
        for v in values
    )
    return (
        f'<section class="layer">{head}{verdict}'
        f'<div class="legend">{"patterns: " + legend if legend else "no data"}</div>'
        '<div class="pair">'
        f"<figure><figcaption>model</figcaption>{_grid(layer, cs, 'model')}</figure>"
        f"<figure><figcaption>QEMU ({html.escape(layer.qemu_source)})</figcaption>"
        f"{_grid(layer, cs, 'qemu')}</figure></div></section>"
    )


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1.2em 0 .2em; } h3 small { font-weight: normal; color: #666; }
.pair { display: flex; gap: 2.5em; flex-wrap: wrap; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; margin-bottom: 3px; }
.legend { font-size: 12px; color: #444; margin: 0 0 4px; }
.sw { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px;
      border: 1px solid #999; vertical-align: middle; }
.bad { color: #b00; font-weight: bold; margin: .2em 0; }
.good { color: #2a7a2a; margin: .2em 0; } .note { color: #666; margin: .2em 0; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }
"""

DEFS = (
    '<svg width="0" height="0" style="position:absolute"><defs>'
    '<pattern id="unknown" width="4" height="4" patternUnits="userSpaceOnUse">'
    '<path d="M0,4 l4,-4" stroke="#999" stroke-width="1"/></pattern></defs></svg>'
)


def page(title: str, stories: Sequence[StoryPicture]) -> str:
    """A whole self-contained HTML page for the stories of one case."""
    body = [f"<h1>{html.escape(title)}</h1>", DEFS]
    body.append(
        "<p>Left: the model's layers (colour = byte pattern, pale = unallocated). "
        "Right: QEMU's allocation (blue = allocated). "
        f'<span style="color:{DIFF}">Red frames</span>: allocation differs. '
        "Hover a cell for its byte range.</p>"
    )
    if not stories:
        body.append('<p class="note">This case made no Story: no layers to draw.</p>')
    for n, st in enumerate(stories, 1):
        body.append(f"<h2>Story {n}: {html.escape(st.title)}</h2>")
        if st.headline:
            body.append(f"<pre>{html.escape(st.headline)}</pre>")
        body += [layer_html(layer) for layer in st.layers]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
