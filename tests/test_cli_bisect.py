"""`qrc bisect` for real: 0 on a build that passes, 1 when a case fails against a real
build (its expectation deliberately flipped, tests/data/bisect/case_flipped.py), 125 on
builds that cannot be tested, 128 (git aborts the bisection) when the command line is wrong."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from cli_helpers import (
    FLIPPED,
    fake_build,
    no_replication_build,
    one_line,
    probe_fails_build,
    qrc,
)

import harness.cli

SKIP_LINE = "qrc bisect: cannot test this build, skip (125): "


def test_good_build_exits_0(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    r = qrc("bisect", "--qemu-dir", "build", "--case", FLIPPED, "--progress", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.fullmatch(
        rf"qrc bisect: good \(0\): 1 selected results pass on QEMU 7\.2\.\d+ at "
        rf"{build}/qemu-system-x86_64\n",
        r.stdout,
    )
    assert r.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]  # nothing left behind


def test_real_cases_by_keyword_exit_0(tmp_path: Path) -> None:
    fake_build(tmp_path / "build")
    r = qrc(
        "bisect",
        "--qemu-dir",
        "build",
        "-k",
        "test_secondary_life",
        "--progress",
        "none",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("qrc bisect: good (0): ")


def test_flipped_expectation_exits_1_with_artifacts(tmp_path: Path) -> None:
    fake_build(tmp_path / "build")
    r = qrc(
        "bisect",
        "--qemu-dir",
        "build",
        "--case",
        FLIPPED,
        "--report-dir",
        "rep",
        "--progress",
        "none",
        cwd=tmp_path,
        env={"QRC_SELFTEST_FLIP": "1"},
    )
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("qrc bisect: bad (1): 1 of 1 selected results fail on QEMU 7.2.")
    assert lines[1].startswith(f"  FAILED {FLIPPED}[7.2.")
    assert "(flipped by the test)" in lines[1]
    art = Path(lines[2].removeprefix("    artifacts: "))
    assert art.parent == tmp_path / "rep" / "artifacts"
    assert {p.name for p in art.iterdir()} >= {
        "failure.txt",
        "story-1.txt",
        "trace-1.json",
        "layers.html",
        "machines",
    }


@pytest.mark.parametrize("kind", ["no-replication", "missing", "not-executable", "empty", "probe"])
def test_untestable_builds_exit_125(tmp_path: Path, kind: str) -> None:
    where = tmp_path / "build"
    if kind == "no-replication":
        no_replication_build(where)
        why = r"QEMU 7\.2\.\d+ at .*/build/qemu-system-x86_64 has no replication block driver"
    elif kind == "missing":
        fake_build(where, leave_out="qemu-storage-daemon")
        why = "--qemu-dir build: build tree has qemu-system-x86_64 but not qemu-storage-daemon"
    elif kind == "not-executable":
        fake_build(where, not_executable="qemu-io")
        why = ".*/build/qemu-io: not executable"
    elif kind == "empty":
        where.mkdir()
        why = "--qemu-dir build: no qemu-system-x86_64 in"
    else:
        probe_fails_build(where)
        why = r".*/build/qemu-system-x86_64 exited with status 1 before connecting to QMP"
    r = qrc("bisect", "--qemu-dir", "build", "--case", FLIPPED, cwd=tmp_path)
    assert r.returncode == 125, r.stdout + r.stderr
    assert r.stdout == ""
    line = one_line(r)
    assert line.startswith(SKIP_LINE) and re.match(why, line[len(SKIP_LINE) :]), line


def test_bad_command_lines_abort_the_bisection(tmp_path: Path) -> None:
    fake_build(tmp_path / "build")
    (tmp_path / "file").write_text("")
    r = qrc("bisect", "--qemu-dir", "build", "--bogus", cwd=tmp_path)
    assert r.returncode == 128
    assert one_line(r) == "qrc bisect: unrecognized arguments: --bogus (see 'qrc bisect --help')"
    r = qrc("bisect", "-k", "x", cwd=tmp_path)
    assert r.returncode == 128
    assert one_line(r).startswith("qrc bisect: the following arguments are required: --qemu-dir")
    r = qrc("bisect", "--qemu-dir", "build", "-k", "a", "-m", "b", cwd=tmp_path)
    assert r.returncode == 128 and "not allowed with argument" in one_line(r)
    r = qrc("bisect", "--qemu-dir", "build", "--report-dir", "file/x", cwd=tmp_path)
    assert r.returncode == 128
    assert one_line(r) == (
        f"qrc bisect: --report-dir {tmp_path}/file/x: cannot write there: Not a directory "
        "(aborting the bisection: 128)"
    )
    r = qrc(
        "bisect",
        "--qemu-dir",
        "build",
        "--case",
        f"{FLIPPED}_nope",
        "--progress",
        "none",
        cwd=tmp_path,
    )
    assert r.returncode == 128  # pytest-xdist reports an unknown id as "no tests ran"
    assert one_line(r) == (
        "qrc bisect: the selection matched no case (aborting the bisection: 128)"
    )
    r = qrc(
        "bisect",
        "--qemu-dir",
        "build",
        "--case",
        FLIPPED,
        "--progress",
        "none",
        cwd=tmp_path,
        env={"PYTEST_ADDOPTS": "-k nothing_is_called_this"},
    )
    assert r.returncode == 128
    assert one_line(r) == (
        "qrc bisect: the selection matched no case (aborting the bisection: 128)"
    )
    r = qrc("bisect", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "git bisect run /path/to/.venv/bin/qrc bisect" in r.stdout


def test_trace_goes_through_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build = str(fake_build(tmp_path / "build"))
    answers = iter([0, 1, 125, 8])
    seen: list[tuple[str, str | None]] = []

    def fake(trace: str, qemu_dir: str | None) -> int:
        seen.append((trace, qemu_dir))
        return next(answers)

    monkeypatch.setattr(harness.cli, "_load_replay", lambda: fake)
    argv = ["bisect", "--qemu-dir", build, "--trace", "t.json"]
    assert [harness.cli.main(argv) for _ in range(4)] == [0, 1, 125, 128]
    assert seen[0] == (str(Path("t.json").absolute()), build)
    assert capsys.readouterr().err.splitlines() == [
        "qrc bisect: replay of t.json exited with status 8 (aborting the bisection: 128)"
    ]
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "harness.differential.replay", None)
    assert harness.cli.main(argv) == 128
    assert capsys.readouterr().err == (
        "qrc bisect: replay is not available yet (aborting the bisection: 128)\n"
    )
