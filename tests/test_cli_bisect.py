"""`qrc bisect` for real: 0 on a build that passes, 1 when a case fails against a real
build (its expectation deliberately flipped, tests/data/bisect/case_flipped.py), 125 on
builds that cannot be tested, 128 (git aborts the bisection) when the command line is wrong."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cli_helpers import (
    FLIPPED,
    TOOLS,
    fake_build,
    installed,
    no_replication_build,
    one_line,
    probe_fails_build,
    qrc,
)

import harness.cli
import harness.differential.replay

SKIP_LINE = "qrc bisect: cannot test this build, skip (125): "


def test_good_build_exits_0(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "build")
    r = qrc("bisect", "--qemu-dir", "build", "--case", FLIPPED, "--progress", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.fullmatch(
        rf"qrc bisect: good \(0\): 1 selected result passes on QEMU 7\.2\.\d+ at "
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
    assert lines[0].startswith("qrc bisect: bad (1): 1 of 1 selected result fails on QEMU 7.2.")
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

    monkeypatch.setattr(harness.differential.replay, "replay_main", fake)
    argv = ["bisect", "--qemu-dir", build, "--trace", "t.json"]
    assert [harness.cli.main(argv) for _ in range(4)] == [0, 1, 125, 128]
    assert seen[0] == (str(Path("t.json").absolute()), build)
    assert capsys.readouterr().err.splitlines() == [
        "qrc bisect: replay of t.json exited with status 8 (aborting the bisection: 128)"
    ]


# ---- --build: the binaries are built before they are tested

BROKEN_LINE = "block/qcow2.c:1234: error: this commit does not build"


def ninja_tree(where: Path, broken: str | None = None, makefile: bool = False) -> Path:
    """A build tree without QEMU's sources: its build.ninja "builds" the five binaries
    as symlinks to the installed QEMU (PATH's), except `broken`, whose build fails. With
    `makefile`, a Makefile that hands its targets to ninja, as QEMU's build directory has."""
    where.mkdir(parents=True, exist_ok=True)
    lines = [
        "rule link",
        "  command = ln -sf $src $out",
        "rule broken",
        f"  command = echo 'compiling $out'; echo '{BROKEN_LINE}' >&2; exit 1",
    ]
    sources = {name: installed(name) for name in (*TOOLS, "qemu-system-x86_64")}
    sources["storage-daemon/qemu-storage-daemon"] = installed("qemu-storage-daemon")
    for target, src in sources.items():
        if target == broken:
            lines.append(f"build {target}: broken")
        else:
            lines += [f"build {target}: link", f"  src = {src}"]
    (where / "build.ninja").write_text("\n".join(lines) + "\n")
    if makefile:
        (where / "Makefile").write_text(
            "# QEMU's build directory: make hands its goals to ninja\n"
            "Makefile: ;\nFORCE: ;\n%: FORCE\n\tninja $@\n"
        )
    return where


@pytest.fixture
def with_ninja() -> None:
    installed("ninja")


@pytest.mark.parametrize("driver", ["ninja", "make"])
def test_build_tree_is_built_then_tested(tmp_path: Path, with_ninja: None, driver: str) -> None:
    if driver == "make":
        installed("make")
    tree = ninja_tree(tmp_path / "build", makefile=driver == "make")
    r = qrc("bisect", "--qemu-dir", "build", "--case", FLIPPED, "--progress", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    built, verdict = r.stdout.splitlines()
    assert re.fullmatch(
        rf"qrc bisect: built: build in \d+ s \({driver} -C build .*qemu-system-x86_64 qemu-img "
        r"qemu-io qemu-nbd storage-daemon/qemu-storage-daemon\)",
        built,
    ), built
    assert verdict.startswith("qrc bisect: good (0): 1 selected result passes on QEMU 7.2.")
    assert (tree / "storage-daemon" / "qemu-storage-daemon").is_symlink()
    assert r.stderr == ""


def test_the_build_does_not_see_the_bisected_repository(tmp_path: Path, with_ninja: None) -> None:
    """git bisect run exports GIT_DIR in a worktree: a build running git (QEMU's submodule
    update, meson's wrap download: git init, fetch, checkout) would work on the bisected
    repository itself. The build runs without git's location variables."""
    tree = ninja_tree(tmp_path / "build")
    ninja = (tree / "build.ninja").read_text()
    (tree / "build.ninja").write_text(
        ninja.replace("command = ln -sf $src $out", "command = ln -sf $src $out; env > env.txt")
    )
    r = qrc(
        "bisect", "--qemu-dir", "build", "--case", FLIPPED, "--progress", "none", cwd=tmp_path,
        env={"GIT_DIR": str(tmp_path / "repo.git"), "GIT_WORK_TREE": str(tmp_path),
             "GIT_CONFIG_COUNT": "0"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    seen = (tree / "env.txt").read_text().splitlines()
    assert not [v for v in seen if v.startswith(("GIT_DIR=", "GIT_WORK_TREE="))], seen
    assert "GIT_CONFIG_COUNT=0" in seen  # git's configuration from the environment stays


def test_a_build_that_fails_skips_the_commit(tmp_path: Path, with_ninja: None) -> None:
    ninja_tree(tmp_path / "build", broken="qemu-img")
    for explicit in ([], ["--build"]):
        r = qrc(
            "bisect", "--qemu-dir", "build", *explicit, "--case", FLIPPED, "--report-dir", "rep",
            cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 125, r.stdout + r.stderr
        assert r.stdout == ""
        err = r.stderr.splitlines()
        assert re.fullmatch(
            r"qrc bisect: cannot test this build, skip \(125\): the build failed \(ninja exited "
            r"with status 1 after \d+ s: ninja -C build qemu-system-x86_64 .*\); its last lines:",
            err[0],
        ), err[0]
        assert f"  {BROKEN_LINE}" in err
        assert any(line.startswith("  FAILED: qemu-img") for line in err), err
        assert err[-1] == f"the whole output: {tmp_path}/rep/build.log"
        log = (tmp_path / "rep" / "build.log").read_text()
        assert log.startswith("$ ninja -C build ") and BROKEN_LINE in log
    # without --report-dir the output goes to stderr only, and nothing is left behind
    r = qrc("bisect", "--qemu-dir", "build", "--case", FLIPPED, cwd=tmp_path)
    assert r.returncode == 125 and f"  {BROKEN_LINE}" in r.stderr.splitlines()
    assert "the whole output" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "rep"]


def test_no_build_tests_the_binaries_as_they_are(tmp_path: Path, with_ninja: None) -> None:
    fake_build(tmp_path / "build")  # the binaries an earlier build left
    ninja_tree(tmp_path / "build", broken="qemu-img")
    r = qrc(
        "bisect", "--qemu-dir", "build", "--no-build", "--case", FLIPPED, "--progress", "none",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("qrc bisect: good (0): ")


def test_build_needs_a_build_tree(tmp_path: Path) -> None:
    fake_build(tmp_path / "build")  # binaries, but neither build.ninja nor a Makefile
    r = qrc("bisect", "--qemu-dir", "build", "--build", "--case", FLIPPED, cwd=tmp_path)
    assert r.returncode == 128
    assert one_line(r) == (
        "qrc bisect: --build: build is not a build tree (no build.ninja, no Makefile that "
        "drives ninja) (aborting the bisection: 128)"
    )
    r = qrc("bisect", "--qemu-dir", "build", "--build", "--no-build", cwd=tmp_path)
    assert r.returncode == 128 and "not allowed with argument" in one_line(r)


# ---- --profile: one release's behaviour judges every build

RESIZE = "cases/test_blockers.py::test_block_resize_names_the_blocker"


def test_profile_judges_by_another_release(tmp_path: Path) -> None:
    """QEMU 7.2 reports "Device '(null)' is in use" for a busy node's block_resize: by its
    own profile that is the known bug (a strict xfail, so good), by 10.0's it is wrong."""
    fake_build(tmp_path / "build")

    def bisect(*more: str) -> subprocess.CompletedProcess[str]:
        return qrc(
            "bisect", "--qemu-dir", "build", "--case", RESIZE, "--progress", "none", *more,
            cwd=tmp_path,
        )  # fmt: skip

    r = bisect()
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.match(r"qrc bisect: good \(0\): 3 selected results pass on QEMU 7\.2\.", r.stdout)
    r = bisect("--profile", "10.0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.match(
        r"qrc bisect: bad \(1\): 3 of 3 selected results fail on QEMU 7\.2\.\d+ at \S+, judged "
        r"by model profile 10\.0\n",
        r.stdout,
    ), r.stdout
    assert "(null)" in r.stdout
    r = bisect("--profile", "10.0", "--find-fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("qrc bisect: old (0), not fixed: 3 of 3 selected results fail")
    r = bisect("--profile", "9.9")
    assert r.returncode == 128
    assert re.fullmatch(
        r"qrc bisect: --profile 9\.9: no such model profile \(known: 4\.1, .*, 10\.0, .*\) "
        r"\(aborting the bisection: 128\)",
        one_line(r),
    )
