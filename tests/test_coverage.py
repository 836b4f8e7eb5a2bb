"""`qrc coverage`'s parts without QEMU (harness.coverage): gcov's JSON read into figures and
unreached lines, the report, the notes found in a build tree, and the counts of a real
program built with gcc --coverage, written under GCOV_PREFIX and read back with gcov."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.coverage import (
    FileCoverage,
    counted,
    environment,
    find_notes,
    measure,
    parse,
    report_json,
    report_text,
    reset,
)
from harness.errors import NoCoverageData


def _line(n: int, count: int, *branches: int) -> dict[str, Any]:
    return {
        "line_number": n,
        "count": count,
        "branches": [{"count": c, "fallthrough": False, "throw": False} for c in branches],
    }


def _doc(lines: list[dict[str, Any]], functions: dict[str, int]) -> dict[str, Any]:
    fns = [{"name": n, "execution_count": c} for n, c in functions.items()]
    return {
        "current_working_directory": "/src/qemu/build",
        "files": [
            {"file": "../block/replication.c", "lines": lines, "functions": fns},
            # a header's inline function, compiled into the same object: not the source's
            {"file": "../include/qemu/iov.h", "lines": [_line(7, 0)], "functions": []},
        ],
    }


TEXT = ["int f(int x)", "{", "    if (x) {", "        return 1;", "    }", "    abort();", "}"]


def test_gcov_json_to_figures_and_unreached_lines() -> None:
    doc = _doc([_line(3, 2, 2, 0), _line(4, 2), _line(6, 0)], {"f": 2, "g": 0})
    f = parse([doc], "block/replication.c", TEXT)
    assert (f.lines_hit, len(f.lines)) == (2, 3)
    assert (f.branches_taken, f.branches_total) == (1, 2)
    assert (f.functions_hit, len(f.functions)) == (1, 2)
    assert f.missed() == [(6, "abort();")]
    assert f.impossible() == 1
    assert parse([doc], "replication.c").lines == {}  # no such file in this object


def test_objects_of_one_source_add_up() -> None:
    """A source built into two objects: counts and branches summed line by line."""
    a = _doc([_line(3, 1, 1, 0), _line(6, 0)], {"f": 1})
    b = _doc([_line(3, 1, 0, 1), _line(6, 0)], {"f": 1})
    f = parse([a, b], "block/replication.c", TEXT)
    assert f.lines == {3: 2, 6: 0}
    assert f.branches == {3: (1, 1)}
    assert f.functions == {"f": 2}


def test_report() -> None:
    f = FileCoverage("block/replication.c", {3: 1, 4: 0, 6: 0}, {3: (1, 0)}, {"f": 1}, TEXT)
    whole = FileCoverage("replication.c", {1: 1}, {}, {"g": 1}, ("x",))
    text = report_text([f, whole], "QEMU 7.2.0")
    assert text.splitlines() == [
        "coverage (QEMU 7.2.0):",
        "  block/replication.c: lines 33.3% (1/3), branches taken 50.0% (1/2), functions 1/1",
        "  replication.c: lines 100.0% (1/1), branches taken - (0/0), functions 1/1",
        "lines no case reached (2, 1 of them abort() of an impossible case):",
        "  block/replication.c:4: return 1;",
        "  block/replication.c:6: abort();",
    ]
    doc = report_json([f], "QEMU 7.2.0")
    assert doc["files"][0]["lines"] == {"hit": 1, "total": 3}
    assert doc["files"][0]["missed"][0] == {"line": 4, "text": "return 1;"}
    assert report_text([whole], "x").endswith("every line reached")


def test_notes_in_a_build_tree(tmp_path: Path) -> None:
    with pytest.raises(NoCoverageData, match="not a QEMU build tree"):
        find_notes(tmp_path)
    (tmp_path / "build.ninja").write_text("")
    (tmp_path / "libblock.fa.p").mkdir()
    (tmp_path / "libblock.fa.p" / "block_replication.c.o").write_text("")
    with pytest.raises(NoCoverageData, match="configure QEMU with --enable-gcov"):
        find_notes(tmp_path)
    for name in ("block_replication.c.gcno", "replication.c.gcno"):
        (tmp_path / "libblock.fa.p" / name).write_text("")
    (tmp_path / "tests.p").mkdir()  # the same source in a second target
    (tmp_path / "tests.p" / "replication.c.gcno").write_text("")
    found = find_notes(tmp_path)
    assert {s: [p.parent.name for p in ps] for s, ps in found.items()} == {
        "block/replication.c": ["libblock.fa.p"],
        "replication.c": ["libblock.fa.p", "tests.p"],
    }


PROGRAM = """\
#include <stdlib.h>

static int f(int x)
{
    if (x > 0) {
        return 1;
    }
    abort();
}

int main(int argc, char **argv)
{
    return f(argc) - 1;
}
"""


def test_counts_of_a_real_program(tmp_path: Path) -> None:
    """A 'block/replication.c' built as meson builds QEMU's (build/libblock.fa.p/...) with
    gcc --coverage, run twice with its counts under GCOV_PREFIX, read back with gcov."""
    if shutil.which("gcc") is None or shutil.which("gcov") is None:
        pytest.skip("gcc and gcov are not installed")
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "replication.c").write_text(PROGRAM)
    build = tmp_path / "build"
    (build / "libblock.fa.p").mkdir(parents=True)
    (build / "build.ninja").write_text("")
    obj = "libblock.fa.p/block_replication.c.o"
    for argv in (
        ["gcc", "--coverage", "-O0", "-c", "../block/replication.c", "-o", obj],
        ["gcc", "--coverage", obj, "-o", "prog"],
    ):
        subprocess.run(argv, cwd=build, check=True, timeout=60)
    notes = find_notes(build)
    counts = reset(tmp_path / "counts")
    assert not counted(counts)
    for _ in range(2):
        subprocess.run([build / "prog"], env=environment(counts), check=True, timeout=10)
    assert counted(counts)
    assert not list(build.rglob("*.gcda"))  # the build tree's own counts: untouched
    (f,) = measure(notes, counts, "gcov")
    assert f.source == "block/replication.c"
    assert f.lines[13] == 2  # main's return, run twice
    assert f.missed() == [(8, "abort();")]
    assert (f.branches_taken, f.branches_total) == (1, 2)
    assert f.functions == {"f": 2, "main": 2}
    assert json.loads(json.dumps(report_json([f], "prog")))["files"][0]["lines"]["total"] >= 4
