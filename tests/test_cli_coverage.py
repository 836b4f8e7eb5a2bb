"""`qrc coverage` for real: a build without gcov data is one line and exit code 16, before
anything runs or after a run that wrote no counts; on a build tree configured with
--enable-gcov (QRC_GCOV_BUILD=DIR, e.g. QEMU 7.2 built from source) the figures and the
unreached lines, every case in a fresh QEMU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_helpers import fake_build, one_line, qrc

from harness.errors import NoCoverageData

SMOKE = "cases/test_smoke.py"


def test_not_a_build_tree(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")  # QEMU's binaries, no build.ninja
    r = qrc("coverage", "--qemu-dir", str(build), cwd=tmp_path)
    assert r.returncode == NoCoverageData.exit_code == 16
    assert one_line(r) == (
        f"qrc: {build}: not a QEMU build tree (no build.ninja); coverage needs one "
        "configured with --enable-gcov"
    )
    assert not (tmp_path / "reports").exists()  # nothing ran


def test_a_build_tree_without_gcov(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    (build / "build.ninja").write_text("")
    (build / "libblock.fa.p").mkdir()
    (build / "libblock.fa.p" / "block_replication.c.o").write_text("")
    r = qrc("coverage", "--qemu-dir", str(build), cwd=tmp_path)
    assert r.returncode == 16
    assert "no gcov data for block/replication.c" in one_line(r)


def test_a_run_that_wrote_no_counts(tmp_path: Path) -> None:
    """Notes, but binaries that write no counts (the installed QEMU): the cases run, and
    then the one line says so."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    build = fake_build(tmp_path / "build")
    (build / "build.ninja").write_text("")
    (build / "libblock.fa.p").mkdir()
    src = tmp_path / "replication.c"
    src.write_text("int f(void) { return 0; }\n")
    subprocess.run(
        ["gcc", "--coverage", "-c", str(src), "-o", "libblock.fa.p/block_replication.c.o"],
        cwd=build,
        check=True,
        timeout=60,
    )
    r = qrc("coverage", "--qemu-dir", str(build), "--progress", "none", SMOKE, cwd=tmp_path)
    assert r.returncode == 16, r.stdout + r.stderr
    assert "passed" in r.stdout
    assert one_line(r).startswith("qrc: the run wrote no counts under ")


GCOV_BUILD = os.environ.get("QRC_GCOV_BUILD")


@pytest.mark.skipif(not GCOV_BUILD, reason="QRC_GCOV_BUILD names no QEMU build tree with gcov")
def test_coverage_of_a_gcov_build(tmp_path: Path) -> None:
    assert GCOV_BUILD is not None
    args = ("--qemu-dir", GCOV_BUILD, "--progress", "none", "--report-dir", "rep", SMOKE)
    r = qrc("coverage", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    at = next(i for i, ln in enumerate(out) if ln.startswith("coverage (QEMU "))
    assert out[at + 1].startswith("  block/replication.c: lines ")
    assert out[at + 2].startswith("  replication.c: lines ")
    assert out[at + 3].startswith("lines no case reached (")
    assert out[at + 4].startswith("  block/replication.c:")
    doc = json.loads((tmp_path / "rep" / "coverage.json").read_text())
    files = {f["source"]: f for f in doc["files"]}
    assert 0 < files["block/replication.c"]["lines"]["hit"] < 376
    assert (tmp_path / "rep" / "coverage.txt").read_text().splitlines() == out[at:]
    # the fresh QEMUs wrote their counts under the report directory, not the build tree
    assert list((tmp_path / "rep" / "gcov").rglob("block_replication.c.gcda"))
