"""JSON records from phase reports, the report file, merging shards, and the matrix (no QEMU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.report import records
from harness.report.matrix import build_matrix, to_html, to_markdown


@pytest.mark.parametrize(
    ("nodeid", "case"),
    [
        ("cases/a.py::test_x[7.2.22]", "cases/a.py::test_x"),
        ("cases/a.py::test_x[7.2.22-secondary-512]", "cases/a.py::test_x[secondary-512]"),
        ("cases/a.py::test_x[plain-7.2.22]", "cases/a.py::test_x[plain]"),
        ("cases/a.py::test_x[a-7.2.22-b]", "cases/a.py::test_x[a-b]"),
        ("cases/a.py::test_x[17.2.221]", "cases/a.py::test_x[17.2.221]"),
        ("tests/t.py::test_y", "tests/t.py::test_y"),
    ],
)
def test_case_key_drops_the_build_id(nodeid: str, case: str) -> None:
    assert records.case_key(nodeid, "7.2.22") == case
    assert records.case_key(nodeid, None) == nodeid


def _rep(when: str, outcome: str, **kw: Any) -> pytest.TestReport:
    rep = pytest.TestReport(
        "cases/a.py::test_x[7.2.22]",
        ("cases/a.py", 1, "test_x"),
        {},
        outcome,  # type: ignore[arg-type]
        kw.pop("longrepr", None),
        when,  # type: ignore[arg-type]
        duration=kw.pop("duration", 0.25),
        user_properties=kw.pop("props", []),
    )
    for k, v in kw.items():
        setattr(rep, k, v)
    return rep


def _fold(*reports: pytest.TestReport) -> dict[str, Any]:
    rec = records.new_record(reports[0].nodeid)
    for r in reports:
        records.update(rec, r)
    return rec


PROPS = [
    ("case", "cases/a.py::test_x"),
    ("qemu_version", "7.2.22"),
    ("qemu_build", "PATH"),
    ("markers", "quick,secondary"),
]


def test_passed_record() -> None:
    rec = _fold(
        _rep("setup", "passed", props=PROPS), _rep("call", "passed"), _rep("teardown", "passed")
    )
    assert rec["outcome"] == "passed" and rec["when"] == "call"
    assert rec["duration"] == 0.75
    assert rec["markers"] == ["quick", "secondary"] and rec["qemu_version"] == "7.2.22"
    assert rec["case"] == "cases/a.py::test_x"


def test_skip_xfail_failure_and_teardown_error() -> None:
    skip = _fold(_rep("setup", "skipped", longrepr=("f.py", 3, "Skipped: needs 10.0")))
    assert (skip["outcome"], skip["reason"]) == ("skipped", "needs 10.0")
    xf = _fold(_rep("setup", "passed"), _rep("call", "skipped", wasxfail="QEMU bug (7.2)"))
    assert (xf["outcome"], xf["reason"]) == ("xfailed", "QEMU bug (7.2)")
    msg = [("message", "Divergence: model expected X"), ("divergence", "model expected X")]
    failed = _fold(_rep("setup", "passed"), _rep("call", "failed", longrepr="E   boom", props=msg))
    assert failed["outcome"] == "failed" and failed["divergence"] == "model expected X"
    assert failed["message"] == "Divergence: model expected X"
    plain = _fold(_rep("call", "failed", longrepr="def f():\nE   AssertionError: 1 != 2\nmore"))
    assert plain["message"] == "AssertionError: 1 != 2"
    teardown = _fold(_rep("call", "passed"), _rep("teardown", "failed", longrepr="E   leak"))
    assert (teardown["outcome"], teardown["when"]) == ("error", "teardown")
    both = _fold(_rep("call", "failed", longrepr="E   a"), _rep("teardown", "failed"))
    assert both["outcome"] == "failed"
    crash = _fold(_rep("???", "failed", longrepr="worker crashed"))
    assert crash["outcome"] == "failed"


def test_write_load_and_merge(tmp_path: Path) -> None:
    a = records.new_record("x::t[7.2.22]") | {"outcome": "passed", "qemu_version": "7.2.22"}
    b = records.new_record("x::t[10.0.2]") | {"outcome": "failed", "qemu_version": "10.0.2"}
    records.write_json(tmp_path / "a.json", records.document([a], 0, 1.5, ["-m", "quick"]))
    records.write_json(tmp_path / "b.json", records.document([b], 1, 2.5, []))
    docs = [records.load(tmp_path / n) for n in ("a.json", "b.json")]
    merged = records.merge_reports(docs)
    assert merged["summary"]["passed"] == 1 and merged["summary"]["failed"] == 1
    assert merged["exitstatus"] == 1 and [r["nodeid"] for r in merged["cases"]] == [
        "x::t[10.0.2]",
        "x::t[7.2.22]",
    ]
    assert list(tmp_path.glob(".tmp-*")) == []
    (tmp_path / "bad.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a qrc JSON report"):
        records.load(tmp_path / "bad.json")


def _rec(case: str, version: str, outcome: str, **kw: Any) -> dict[str, Any]:
    label = "PATH" if version.startswith("7") else ".qemu/10.0"
    return records.new_record(f"{case}[{version}]") | {
        "case": case,
        "qemu_version": version,
        "qemu_build": label,
        "outcome": outcome,
        **kw,
    }


def test_matrix_rows_columns_and_differences() -> None:
    cases = [
        _rec("cases/a.py::test_same", "7.2.22", "passed"),
        _rec("cases/a.py::test_same", "10.0.2", "passed"),
        _rec("cases/a.py::test_bug", "7.2.22", "xfailed", reason="QEMU bug (7.2): X"),
        _rec("cases/a.py::test_bug", "10.0.2", "passed"),
        _rec("cases/b.py::test_only72", "7.2.22", "failed", divergence="model expected A"),
        records.new_record("cases/broken.py") | {"outcome": "error", "message": "ImportError"},
    ]
    m = build_matrix(cases, [(".qemu/10.0", "10.0.2"), ("PATH", "7.2.22")])
    assert [c.version for c in m.columns] == ["10.0.2", "7.2.22"]
    assert [r.case for r in m.rows] == [
        "cases/a.py::test_bug",
        "cases/a.py::test_same",
        "cases/b.py::test_only72",
    ]
    assert [r.case for r in m.differing] == ["cases/a.py::test_bug", "cases/b.py::test_only72"]
    assert m.rows[2].outcome(m.columns[0]) == "not run"
    md = to_markdown(m)
    assert "| ≠ | **`cases/a.py::test_bug`** | **pass** | **xfail [1]** |" in md
    assert "|  | `cases/a.py::test_same` | pass | pass |" in md
    assert "1. QEMU bug (7.2): X" in md and "2. model expected A" in md
    assert "`cases/broken.py`: error ImportError" in md
    page = to_html(m)
    assert page.count('<tr class="differs">') == 2 and page.count('<tr class="same">') == 1
    assert '<td class="o xfailed" title="xfailed: QEMU bug (7.2): X">' in page
    assert "<script" in page and "src=" not in page  # self-contained
