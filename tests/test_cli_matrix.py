"""`qrc matrix` over QEMU 7.2 and 10.0.13 (.qemu/10.0) for real (a row made to differ between them),
drawing it again from the JSON report, `qrc merge`, and the matrix's bad input."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import FLIPPED, FLIPPED_FILE, PINNED, fake_build, one_line, qrc

from harness.report import records


@pytest.fixture
def builds(tmp_path: Path) -> list[str]:
    if not (PINNED / "usr" / "bin" / "qemu-system-x86_64").exists():
        pytest.skip("no .qemu/10.0: run scripts/setup.sh")
    return [str(fake_build(tmp_path / "b72")), str(PINNED)]


def test_matrix_over_two_versions(tmp_path: Path, builds: list[str]) -> None:
    # the flipped expectation only on 10.0: the row differs between the builds
    args = ["matrix", "--qemu-dir", builds[0], "--qemu-dir", builds[1], "--out", "out"]
    r = qrc(
        *args, "-p", "no:xdist", FLIPPED_FILE, cwd=tmp_path, env={"QRC_SELFTEST_FLIP": "10.0.13"}
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(
        r"^== qrc matrix: 1 failed, 1 passed in \d+\.\d s \(2 results\) ==$", r.stdout, re.M
    )
    assert r.stdout.splitlines()[-1] == (
        "matrix: out/matrix.md, out/matrix.html: 1 case x 2 builds, 1 row differs between builds"
    )
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert re.search(
        rf"^\| ≠ \| \*\*`{re.escape(FLIPPED)}`\*\* \| \*\*pass\*\* \| \*\*FAIL \[1\]\*\* \|$",
        md,
        re.M,
    ), md
    assert "| QEMU 7.2." in md and "| QEMU 10.0.13 |" in md
    assert "(flipped by the test)" in md
    page = (tmp_path / "out" / "matrix.html").read_text()
    assert page.count('<tr class="differs">') == 1
    assert '<td class="o passed" title="passed">pass</td>' in page
    assert re.search(r'<td class="o failed" title="failed: [^"]*flipped by the test', page)
    assert "<link" not in page and "src=" not in page  # self-contained

    # the same matrix from the JSON report, with no run
    r = qrc("matrix", "--from-json", "reports/report.json", "--out", "again", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = (tmp_path / "again" / "matrix.md").read_text()
    strip = re.compile(r"Generated .* UTC\.")
    assert strip.sub("", again) == strip.sub("", md)


def test_merge_json_and_junit(tmp_path: Path) -> None:
    def shard(name: str, nodeid: str, outcome: str) -> None:
        rec = records.new_record(nodeid) | {"outcome": outcome}
        records.write_json(tmp_path / f"{name}.json", records.document([rec], 0, 1.0, []))
        (tmp_path / f"{name}.xml").write_text(
            f'<testsuites><testsuite name="pytest" tests="1"><testcase name="{nodeid}"/>'
            "</testsuite></testsuites>"
        )

    shard("a", "x::one", "passed")
    shard("b", "x::two", "failed")
    r = qrc("merge", "--out", "all.json", "a.json", "b.json", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "merged 2 reports into all.json\n")
    doc = json.loads((tmp_path / "all.json").read_text())
    assert [c["nodeid"] for c in doc["cases"]] == ["x::one", "x::two"]
    assert doc["summary"]["failed"] == 1
    r = qrc("merge", "--out", "all.xml", "a.xml", "b.xml", cwd=tmp_path)
    assert r.returncode == 0
    root = ET.parse(tmp_path / "all.xml").getroot()
    assert [t.get("name") for t in root.iter("testcase")] == ["x::one", "x::two"]
    r = qrc("merge", "--out", "all.txt", "a.json", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line(r) == "qrc: --out all.txt: name it .json (JSON reports) or .xml (JUnit)"
    r = qrc("merge", "--out", "x.json", "a.xml", cwd=tmp_path)
    assert r.returncode == 2 and one_line(r).startswith("qrc: a.xml: not a qrc JSON report")


def test_matrix_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    r = qrc("matrix", "--out", "file", cwd=tmp_path)
    assert r.returncode == 9
    assert one_line(r) == f"qrc: --out {tmp_path}/file: cannot write there: not a directory"
    r = qrc("matrix", "--from-json", "missing.json", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line(r) == "qrc: missing.json: No such file or directory"
    r = qrc("matrix", "--qemu-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert r.returncode == 3
    assert one_line(r) == f"qrc: --qemu-dir {tmp_path}/nowhere: no such directory"


def test_matrix_from_json_keeps_one_marker(tmp_path: Path) -> None:
    recs = [
        records.new_record(f"cases/a.py::test_{name}[{v}]")
        | {
            "case": f"cases/a.py::test_{name}",
            "qemu_version": v,
            "qemu_build": v,
            "outcome": "passed",
            "markers": markers,
        }
        for name, markers in (("fast", ["quick", "secondary"]), ("long", ["slow"]))
        for v in ("7.2.22", "10.0.2")
    ]
    records.write_json(tmp_path / "r.json", records.document(recs, 0, 1.0, []))
    r = qrc("matrix", "--from-json", "r.json", "--marker", "quick", "--out", "m", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "matrix: m/matrix.md, m/matrix.html: 1 case x 2 builds, 0 rows differ between builds\n"
    )
    md = (tmp_path / "m" / "matrix.md").read_text()
    assert "test_fast" in md and "test_long" not in md
    assert md.index("QEMU 7.2.22") < md.index("QEMU 10.0.2")  # oldest version first
    r = qrc("matrix", "--marker", "quick", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line(r) == "qrc: --marker filters --from-json reports; to run, select with -m"
