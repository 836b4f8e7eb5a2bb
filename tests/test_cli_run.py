"""`qrc run` for real (summary, JUnit, JSON, artifacts of a real divergence), its bad
input (one line, a distinct exit code each), `qrc --help`'s exit codes, and `qrc replay`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import (
    FLIPPED,
    FLIPPED_FILE,
    QRC,
    ROOT,
    fake_build,
    no_replication_build,
    one_line,
    qrc,
)

import harness.cli
import harness.differential.replay
import harness.errors
import harness.exit_codes
from harness.errors import HarnessError
from harness.report import records
from harness.report.display import summary_text
from harness.report.runner import RunResult

# pytest-xdist is not needed for one case: each run starts quicker without it
SERIAL = ("-p", "no:xdist")


def test_run_prints_progress_and_summary_and_writes_reports(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    r = qrc(
        "run", "--qemu-dir", str(build), "--progress", "lines", *SERIAL, FLIPPED_FILE, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert re.fullmatch(
        r"\[1/1 100% 0:\d\d\] passed  tests/data/bisect/case_flipped\.py::test_start_twice"
        r"\[7\.2\.\d+\] \(\d+\.\d\ds\)",
        lines[0],
    ), lines[0]
    assert re.fullmatch(r"== qrc run: 1 passed in \d+\.\d s \(1 result\) ==", lines[1])
    assert re.fullmatch(rf"QEMU: QEMU 7\.2\.\d+ \({build}/qemu-system-x86_64\)", lines[2])
    assert lines[3] == (
        "reports: reports/junit.xml, reports/report.json; pytest's output: reports/pytest.log"
    )
    suite = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) == 1
    doc = records.load(tmp_path / "reports" / "report.json")
    (rec,) = doc["cases"]
    assert rec["outcome"] == "passed" and rec["case"] == FLIPPED
    assert rec["qemu_version"].startswith("7.2.") and rec["qemu_build"] == str(build)
    assert rec["markers"] == ["quick", "secondary"] and rec["duration"] > 0


def test_run_failure_writes_artifacts(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    r = qrc(
        "run",
        "--qemu-dir",
        str(build),
        *SERIAL,
        "--report-dir",
        "out",
        FLIPPED_FILE,
        cwd=tmp_path,
        env={"QRC_SELFTEST_FLIP": "1"},
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^== qrc run: 1 failed in \d+\.\d s \(1 result\) ==$", r.stdout, re.M)
    assert "flipped by the test" in r.stdout
    (rec,) = records.load(tmp_path / "out" / "report.json")["cases"]
    assert rec["outcome"] == "failed" and rec["when"] == "call"
    assert "flipped by the test" in rec["divergence"]
    assert rec["message"].startswith("Divergence: model expected: error GenericError")
    art = Path(rec["artifacts"])
    assert art.parent == tmp_path / "out" / "artifacts"
    assert f"artifacts: out/artifacts/{art.name}" in r.stdout
    assert "Divergence" in (art / "failure.txt").read_text()
    trace = json.loads((art / "trace-1.json").read_text())
    assert len(trace["operations"]) == 7 and trace["recipe"] == "images/secondary-1m.toml"
    story = (art / "story-1.txt").read_text()
    assert "layer maps (model):" in story and "layer allocation (QEMU, live):" in story
    page = (art / "layers.html").read_text()
    for layer in ("secondary", "hidden", "active"):
        assert f"<h3>{layer} <small>qcow2, 1 MiB, 64 KiB clusters" in page
    assert page.count("QEMU (live: HMP qemu-io map)") == 3
    assert page.count("allocation agrees") == 3  # the text diverged, the layers agree
    machine = art / "machines" / "secondary"
    transcript = [json.loads(ln) for ln in (machine / "transcript.jsonl").read_text().splitlines()]
    assert any(e.get("cmd") == "xen-set-replication" for e in transcript)
    assert {p.name for p in machine.iterdir()} == {
        "transcript.jsonl",
        "stdout.log",
        "stderr.log",
        "command.txt",
    }
    assert (machine / "command.txt").read_text().startswith(f"{build}/qemu-system-x86_64 ")


# --- bad input: one line each, a distinct exit code each ---------------------------


def test_usage_errors(tmp_path: Path) -> None:
    r = qrc("run", "--progress", "sideways", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line(r).startswith("qrc run: argument --progress: invalid choice: 'sideways'")
    r = qrc("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and one_line(r).startswith("qrc: argument COMMAND: invalid choice")
    r = qrc("probe", "--bogus", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line(r) == "qrc probe: unrecognized arguments: --bogus (see 'qrc probe --help')"
    # an option neither qrc nor pytest knows: pytest's verdict, in one line
    r = qrc("run", *SERIAL, "--no-such-option", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert one_line(r) == "qrc: unrecognized arguments: --no-such-option"


def test_profile_judges_every_build(tmp_path: Path) -> None:
    """--profile NAME: the model expects that release's behaviour of every build (qrc run,
    qrc matrix, qrc bisect and pytest itself); an unknown name is one usage line."""
    build = fake_build(tmp_path / "build")
    resize = "cases/test_blockers.py::test_block_resize_names_the_blocker"
    args = ("--qemu-dir", str(build), "--all", "--progress", "none", *SERIAL)
    r = qrc("run", *args, resize, cwd=tmp_path)
    assert r.returncode == 0 and "3 xfailed" in r.stdout, r.stdout + r.stderr
    assert "--profile" not in r.stdout
    r = qrc("run", *args, "--profile", "10.0", resize, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"== qrc run: 3 failed in \d+\.\d s \(3 results\) ==", lines[0])
    assert lines[2] == "judged by model profile 10.0 (--profile), not each build's own"
    known = r"\(known: 4\.1, 5\.0, .*, 10\.0, .*\)"
    for command in ("run", "matrix"):
        r = qrc(command, "--profile", "9.9", cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert re.fullmatch(rf"qrc: --profile 9\.9: no such model profile {known}", one_line(r))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--profile", "9.9", resize],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert p.returncode == 4, p.stdout + p.stderr
    assert re.fullmatch(
        rf"ERROR: --profile 9\.9: no such model profile {known}", p.stderr.strip()
    ), p.stderr


def test_build_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = qrc("run", "--qemu-dir", str(empty), cwd=tmp_path)
    assert r.returncode == 3
    assert one_line(r).startswith(f"qrc: --qemu-dir {empty}: no qemu-system-x86_64 in {empty}")
    noexec = fake_build(tmp_path / "noexec", not_executable="qemu-img")
    r = qrc("run", "--qemu-dir", str(noexec), cwd=tmp_path)
    assert r.returncode == 4
    assert one_line(r) == f"qrc: {noexec}/qemu-img: not executable"
    missing = fake_build(tmp_path / "missing", leave_out="qemu-nbd")
    r = qrc("run", "--qemu-dir", str(missing), cwd=tmp_path)
    assert r.returncode == 12
    assert one_line(r) == (
        f"qrc: --qemu-dir {missing}: build tree has qemu-system-x86_64 but not qemu-nbd"
    )
    norep = no_replication_build(tmp_path / "norep")
    r = qrc("run", "--qemu-dir", str(norep), cwd=tmp_path)
    assert r.returncode == 6
    assert re.fullmatch(
        rf"qrc: QEMU 7\.2\.\d+ at {norep}/qemu-system-x86_64 has no replication block driver "
        r"\(built without --enable-replication\)",
        one_line(r),
    )
    assert not (tmp_path / "reports").exists()  # nothing ran


def test_no_case_and_unwritable_report_dir(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    r = qrc(
        "run", "--qemu-dir", str(build), *SERIAL, "-k", "no_such_case", FLIPPED_FILE, cwd=tmp_path
    )
    assert r.returncode == 5 and r.stdout == ""
    assert one_line(r) == (
        f"qrc: no case matched the selection (pytest's output: {tmp_path}/reports/pytest.log)"
    )
    (tmp_path / "file").write_text("")
    r = qrc("run", "--qemu-dir", str(build), "--report-dir", "file/reports", cwd=tmp_path)
    assert r.returncode == 9
    assert one_line(r) == (
        f"qrc: --report-dir {tmp_path}/file/reports: cannot write there: Not a directory"
    )


def test_pytest_internal_error(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(
        "def pytest_collection_modifyitems(items):\n    raise RuntimeError('boom')\n"
    )
    build = fake_build(tmp_path / "build")
    r = qrc(
        "run",
        "--qemu-dir",
        str(build),
        *SERIAL,
        "-p",
        "boom",
        FLIPPED_FILE,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert r.returncode == 14, r.stdout + r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"qrc: pytest had an internal error; see {tmp_path}/reports/pytest.log"
    )


def test_replay_calls_replay_main(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str | None]] = []

    def fake(trace: str, qemu_dir: str | None) -> int:
        calls.append((trace, qemu_dir))
        return 42

    monkeypatch.setattr(harness.differential.replay, "replay_main", fake)
    assert harness.cli.main(["replay", "t.json", "--qemu-dir", "b"]) == 42
    assert calls == [(str(Path("t.json").absolute()), "b")]


# --- the exit code table ------------------------------------------------------------


def _error_classes() -> list[type[HarnessError]]:
    return [
        c
        for c in vars(harness.errors).values()
        if isinstance(c, type) and issubclass(c, HarnessError) and c is not HarnessError
    ]


def test_every_error_has_its_own_documented_code(tmp_path: Path) -> None:
    codes = [c.exit_code for c in _error_classes()]
    assert len(codes) == len(set(codes)), sorted(codes)
    documented = dict(harness.exit_codes.EXIT_CODES)
    assert set(codes) <= set(documented)
    assert len(documented) == len(harness.exit_codes.EXIT_CODES)
    r = qrc("--help", cwd=tmp_path)
    assert r.returncode == 0
    for code, text in harness.exit_codes.EXIT_CODES + harness.exit_codes.BISECT_CODES:
        assert f"\n  {code:>3}  {text[:40]}" in r.stdout, (code, text)
    readme = (ROOT / "README.md").read_text()
    for code, _ in harness.exit_codes.EXIT_CODES + harness.exit_codes.BISECT_CODES:
        assert re.search(rf"^\| {code} \|", readme, re.M), f"README lacks exit code {code}"


def test_summary_groups_reasons() -> None:
    def rec(n: str, outcome: str, reason: str | None = None) -> dict[str, object]:
        return records.new_record(n) | {"outcome": outcome, "reason": reason}

    doc = records.document(
        [
            rec("a", "skipped", "needs 10.0"),
            rec("b", "skipped", "needs 10.0"),
            rec("c", "xfailed", "QEMU bug (7.2): X"),
            rec("d", "passed"),
            rec("e", "failed") | {"message": "Divergence: Y", "artifacts": "/r/artifacts/e"},
        ],
        1,
        3.0,
        [],
    )
    p = Path("/r")
    result = RunResult(1, doc, 3.04, p, p / "pytest.log", p / "junit.xml", p / "report.json", p)
    rel = os.path.relpath
    assert summary_text(result, [], "qrc run").splitlines() == [
        "== qrc run: 1 failed, 1 passed, 1 xfailed, 2 skipped in 3.0 s (5 results) ==",
        "QEMU: none",
        "failed (1):",
        "  FAILED e",
        "         Divergence: Y",
        f"         artifacts: {rel('/r/artifacts/e')}",
        "expected failures (1), by reason:",
        "     1  QEMU bug (7.2): X",
        "skipped (2), by reason:",
        "     2  needs 10.0",
        f"reports: {rel('/r/junit.xml')}, {rel('/r/report.json')}; "
        f"pytest's output: {rel('/r/pytest.log')}",
    ]


def test_shards_merge_to_the_whole_run(tmp_path: Path) -> None:
    """The README's sharding recipe: pytest-split's --splits/--group through `qrc run`,
    then `qrc merge`, gives exactly the unsharded run's cases, each once."""
    pytest.importorskip("pytest_split")
    target = ("-p", "no:xdist", "--progress", "none", "cases/test_status.py")
    whole = qrc("run", "--report-dir", "whole", *target, cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    for group in ("1", "2"):
        r = qrc(
            "run",
            "--report-dir",
            f"shard-{group}",
            "--splits",
            "2",
            "--group",
            group,
            *target,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    r = qrc(
        "merge", "--out", "merged.json", "shard-1/report.json", "shard-2/report.json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr

    def ids(path: str) -> list[str]:
        return [c["nodeid"] for c in records.load(tmp_path / path)["cases"]]

    one, two = ids("shard-1/report.json"), ids("shard-2/report.json")
    assert one and two and not set(one) & set(two)
    assert sorted(ids("merged.json")) == sorted(ids("whole/report.json"))


def test_ctrl_c_ends_with_a_line_and_partial_reports(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a run: the cases that finished are in junit.xml and
    report.json, the last line says how far it got, the exit code is 130, and nothing of
    the run is left in TMPDIR. The terminal's SIGINT goes to qrc's process group (pytest
    runs in one of its own, and qrc passes the Ctrl-C on)."""
    build = fake_build(tmp_path / "build")
    tmp = Path(tempfile.mkdtemp(prefix="qrcint-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TMPDIR"] = str(tmp)
    argv = [str(QRC), "run", "--qemu-dir", str(build), "--report-dir", "rep", "--progress"]
    argv += ["lines", "-n", "2", "--all", f"--basetemp={tmp_path / 'base'}"]
    argv += ["cases/test_faults.py", "cases/test_colo_pair.py"]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 240
        while len(seen) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if re.match(r"\[ *\d+/\d+ ", line):
                seen.append(line)
        assert len(seen) == 3, seen
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        assert proc.returncode == 130, out + err
        last = out.splitlines()[-1]
        m = re.fullmatch(
            r"qrc run: interrupted after (\d+) of (\d+) cases: (.+); partial reports in rep/",
            last,
        )
        assert m, out + err
        done, total = int(m[1]), int(m[2])
        assert 3 <= done < total, last
        doc = records.load(tmp_path / "rep" / "report.json")
        assert len(doc["cases"]) == done
        counts: dict[str, int] = {}
        for rec in doc["cases"]:
            counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
        order = ("failed", "error", "passed", "xfailed", "xpassed", "skipped")
        assert m[3] == ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
        suite = ET.parse(tmp_path / "rep" / "junit.xml").getroot()
        names = [c.get("name") for c in suite.iter("testcase")]
        assert sorted(names) == sorted(r["nodeid"].split("::")[-1] for r in doc["cases"])
        left = sorted(p.name for p in tmp.iterdir())
        assert left == [], f"the interrupted run left in TMPDIR: {left}"
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
