"""The version matrix: cases x QEMU builds, as Markdown and as a self-contained HTML page.

Built from JSON report records (harness.report.records).  A row is a case
without its build id; a column is one build (label + version).  A row whose
outcomes differ between builds is the interesting one: Markdown flags it with
"≠" and bold, HTML paints it and can hide the rows that agree.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import ReportPathError
from harness.report import records
from harness.words import plural, verb


@dataclass(frozen=True)
class Column:
    label: str  # the build's label (--qemu-dir as given, "PATH", ...)
    version: str

    @property
    def title(self) -> str:
        return f"QEMU {self.version}"


@dataclass
class Row:
    case: str
    cells: dict[Column, Mapping[str, Any]] = field(default_factory=dict)

    def outcome(self, col: Column) -> str:
        rec = self.cells.get(col)
        return str(rec["outcome"]) if rec else "not run"

    def differs(self, cols: Sequence[Column]) -> bool:
        return len({self.outcome(c) for c in cols}) > 1


@dataclass(frozen=True)
class Matrix:
    columns: list[Column]
    rows: list[Row]
    other: list[Mapping[str, Any]]  # records with no QEMU build (collection errors...)

    @property
    def differing(self) -> list[Row]:
        return [r for r in self.rows if r.differs(self.columns)]


def build_matrix(
    cases: Sequence[Mapping[str, Any]], order: Sequence[tuple[str, str]] = ()
) -> Matrix:
    """Rows and columns from records; `order`: (label, version) of the builds, in order."""
    given: list[Column] = [Column(label, version) for label, version in order]
    found: set[Column] = set()
    rows: dict[str, Row] = {}
    other = []
    for rec in cases:
        if rec.get("qemu_version") is None:
            other.append(rec)
            continue
        col = Column(str(rec.get("qemu_build") or ""), str(rec["qemu_version"]))
        found.add(col)
        rows.setdefault(str(rec["case"]), Row(str(rec["case"]))).cells[col] = rec
    # builds not named in `order` (a matrix drawn from reports): oldest version first
    rest = sorted(found - set(given), key=lambda c: (_version_key(c.version), c.label))
    return Matrix(given + rest, [rows[k] for k in sorted(rows)], other)


def write_matrix(out: Path, m: Matrix) -> str:
    """OUT/matrix.md and OUT/matrix.html; the line that says what they hold.
    ReportPathError when they cannot be written."""
    md, page = out / "matrix.md", out / "matrix.html"
    try:
        md.write_text(to_markdown(m))
        page.write_text(to_html(m))
    except OSError as e:
        raise ReportPathError(f"--out {out}: cannot write the matrix: {e.strerror}") from None
    differ = len(m.differing)
    return (
        f"matrix: {os.path.relpath(md)}, {os.path.relpath(page)}: {plural(len(m.rows), 'case')} "
        f"x {plural(len(m.columns), 'build')}, {plural(differ, 'row')} "
        f"{verb(differ, 'differs', 'differ')} between builds"
    )


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


_CELL_TEXT = {
    "passed": "pass",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "skip",
    "xfailed": "xfail",
    "xpassed": "XPASS",
    "not run": "-",
}


def _note(rec: Mapping[str, Any] | None) -> str:
    if not rec:
        return ""
    text = rec.get("reason") if rec["outcome"] in ("skipped", "xfailed", "xpassed") else None
    if rec["outcome"] in records.BAD:
        text = rec.get("divergence") or rec.get("message")
    return str(text or "")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _differ(m: Matrix) -> str:
    n = len(m.differing)
    return f"{plural(n, 'row')} {verb(n, 'differs', 'differ')}"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_markdown(m: Matrix, title: str = "QEMU replication conformance matrix") -> str:
    cols = m.columns
    out = [f"# {title}", ""]
    out.append(
        f"{plural(len(m.rows), 'case')} x {plural(len(cols), 'build')}; "
        f"**{_differ(m)}** between builds (marked ≠). Generated {_stamp()}."
    )
    out.append("")
    shown = records.OUTCOMES_SHOWN
    out.append("| build | version | " + " | ".join(_CELL_TEXT[o] for o in shown) + " |")
    out.append("|---|---|" + "---|" * len(records.OUTCOMES_SHOWN))
    for c in cols:
        counts = [sum(1 for r in m.rows if r.outcome(c) == o) for o in records.OUTCOMES_SHOWN]
        out.append(f"| `{c.label}` | {c.version} | " + " | ".join(map(str, counts)) + " |")
    out.append("")
    notes: dict[str, int] = {}
    out.append("| | case | " + " | ".join(c.title for c in cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    for row in m.rows:
        diff = row.differs(cols)
        cells = []
        for c in cols:
            rec = row.cells.get(c)
            text = _CELL_TEXT.get(row.outcome(c), row.outcome(c))
            note = _note(rec)
            if note:
                n = notes.setdefault(note, len(notes) + 1)
                text += f" [{n}]"
            cells.append(f"**{text}**" if diff else text)
        name = f"**`{row.case}`**" if diff else f"`{row.case}`"
        out.append(f"| {'≠' if diff else ''} | {name} | " + " | ".join(cells) + " |")
    if notes:
        out += ["", "## Notes", ""]
        out += [f"{n}. {_md_escape(text)}" for text, n in notes.items()]
    if m.other:
        out += ["", "## Not per build", ""]
        out += [f"- `{r['nodeid']}`: {r['outcome']} {_md_escape(_note(r))}" for r in m.other]
    return "\n".join(out) + "\n"


_STYLE = """
:root { --pass:#d8f0dc; --fail:#f6c9cc; --error:#e8a0a6; --skip:#e9ecef; --xfail:#e4dcf5;
        --xpass:#ffd8a8; --none:#ffffff; --diff:#fff1b8; --diffbar:#e8590c; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em;
       color:#212529; }
h1 { font-size: 1.35em; margin: 0 0 .3em; }
.meta { color:#555; margin-bottom: 1em; }
.totals, .matrix { border-collapse: collapse; margin-bottom: 1.2em; }
.totals td, .totals th { border:1px solid #ccc; padding: 3px 10px; text-align: right; }
.totals th:first-child, .totals td:first-child { text-align: left; }
.matrix th, .matrix td { border: 1px solid #d0d0d0; padding: 3px 10px; }
.matrix thead th { position: sticky; top: 0; background: #343a40; color: #fff; z-index: 1; }
.matrix td.case { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
.matrix td.o { text-align: center; font-weight: 600; min-width: 6em; }
tr.file td { background: #f1f3f5; font-weight: 600; font-size: 12.5px; color:#444; }
td.passed { background: var(--pass); color:#1e5128; }
td.failed { background: var(--fail); color:#8a1c24; }
td.error { background: var(--error); color:#6b0f17; }
td.skipped { background: var(--skip); color:#555; }
td.xfailed { background: var(--xfail); color:#4b3a80; }
td.xpassed { background: var(--xpass); color:#7a3b00; }
td.notrun { background: var(--none); color:#999; }
tr.differs td.case { background: var(--diff); font-weight: 700; }
tr.differs td.flag { background: var(--diffbar); color:#fff; font-weight:700; text-align:center; }
tr.differs td.o { outline: 2px solid var(--diffbar); outline-offset: -2px; }
td.flag { width: 1.6em; }
.legend span { display:inline-block; padding: 1px 8px; margin-right: 6px; border:1px solid #ccc; }
.notes li { margin-bottom: .3em; } .controls { margin: .6em 0; }
body.only-diff tr.same, body.only-diff tr.file:not(.has-diff) { display: none; }
"""

_SCRIPT = """
var only = document.getElementById('only');
function apply() { document.body.classList.toggle('only-diff', only.checked); }
only.addEventListener('change', apply);
if (location.hash === '#differs') { only.checked = true; apply(); }
"""


def to_html(m: Matrix, title: str = "QEMU replication conformance matrix") -> str:
    """The matrix as one self-contained page: the totals per build, the legend, a row
    per case (the cells' notes numbered below), and the results that are not per build."""
    esc = html.escape
    notes: dict[str, int] = {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{plural(len(m.rows), "case")} &times; '
        f"{plural(len(m.columns), 'build')} &mdash; "
        f"<strong>{_differ(m)} between builds</strong>. "
        f"Generated {_stamp()}.</p>",
        *_totals_html(m),
        _LEGEND,
        *_matrix_html(m, notes),
    ]
    if notes:
        parts.append('<h2>Notes</h2><ol class="notes">')
        parts += [f'<li id="n{n}">{esc(text)}</li>' for text, n in notes.items()]
        parts.append("</ol>")
    if m.other:
        parts.append("<h2>Not per build</h2><ul>")
        parts += [
            f"<li><code>{esc(str(r['nodeid']))}</code>: {esc(str(r['outcome']))} "
            f"{esc(_note(r))}</li>"
            for r in m.other
        ]
        parts.append("</ul>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)


def _totals_html(m: Matrix) -> list[str]:
    """The table of how many cases had each outcome, a row per build."""
    parts = ['<table class="totals"><tr><th>build</th><th>version</th>']
    parts += [f"<th>{_CELL_TEXT[o]}</th>" for o in records.OUTCOMES_SHOWN]
    parts.append("</tr>")
    for c in m.columns:
        parts.append(
            f"<tr><td><code>{html.escape(c.label)}</code></td><td>{html.escape(c.version)}</td>"
        )
        for o in records.OUTCOMES_SHOWN:
            n = sum(1 for r in m.rows if r.outcome(c) == o)
            parts.append(f'<td class="{o}">{n}</td>' if n else "<td>0</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return parts


# The cells' symbols explained, and the switch to the differing rows only.
_LEGEND = (
    '<div class="legend">'
    + "".join(
        f'<span class="{o}" style="background:var(--{v})">{_CELL_TEXT[o]} = {o}</span>'
        for o, v in (
            ("passed", "pass"),
            ("failed", "fail"),
            ("error", "error"),
            ("xfailed", "xfail"),
            ("xpassed", "xpass"),
            ("skipped", "skip"),
        )
    )
    + '<span style="background:var(--diff)"><b>≠</b> outcome differs between builds</span>'
    "</div>"
    '<div class="controls"><label><input type="checkbox" id="only"> '
    "show only the rows that differ (or open this page as matrix.html#differs)</label></div>"
)


def _matrix_html(m: Matrix, notes: dict[str, int]) -> list[str]:
    """The table of outcomes, a row per case under a row per file; the cells' notes are
    numbered in `notes` (text -> number) as they come."""
    esc = html.escape
    cols = m.columns
    parts = ['<table class="matrix"><thead><tr><th></th><th>case</th>']
    parts += [
        f'<th title="{esc(c.label)}">{esc(c.title)}<br><small>{esc(c.label)}</small></th>'
        for c in cols
    ]
    parts.append("</tr></thead><tbody>")
    current_file = None
    files_with_diff = {r.case.partition("::")[0] for r in m.differing}
    for row in m.rows:
        file, _, name = row.case.partition("::")
        if file != current_file:
            current_file = file
            css = "file has-diff" if file in files_with_diff else "file"
            parts.append(f'<tr class="{css}"><td colspan="{len(cols) + 2}">{esc(file)}</td></tr>')
        diff = row.differs(cols)
        parts.append(f'<tr class="{"differs" if diff else "same"}">')
        parts.append(f'<td class="flag">{"≠" if diff else ""}</td>')
        parts.append(f'<td class="case" title="{esc(row.case)}">{esc(name or row.case)}</td>')
        parts += [_cell_html(row, c, notes) for c in cols]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return parts


def _cell_html(row: Row, c: Column, notes: dict[str, int]) -> str:
    """One case's outcome on one build, its note (if any) numbered in `notes`."""
    o = row.outcome(c)
    note = _note(row.cells.get(c))
    ref = ""
    if note:
        n = notes.setdefault(note, len(notes) + 1)
        ref = f' <sup><a href="#n{n}">{n}</a></sup>'
    css = "notrun" if o == "not run" else o
    tip = f"{o}: {note}" if note else o
    text = html.escape(_CELL_TEXT.get(o, o))
    return f'<td class="o {css}" title="{html.escape(tip)}">{text}{ref}</td>'
