"""A broken environment is nobody's divergence (harness.environment): the decisions on
made-up filesystems and errors first (no process), then real QEMU, `qrc run` and
`qrc bisect` on a small full tmpfs (as root; skipped where mounting is not allowed)."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import installed, qrc

import harness.bisect
import harness.cli
from harness import environment
from harness.bisect import verdict
from harness.builds import known_builds
from harness.environment import Space, check_binaries, from_answer, from_exception, from_failure
from harness.errors import BISECT_ABORT, EnvironmentBroken
from harness.images import ImageError
from harness.machine import MachineSet
from harness.qemu_io import GuestIO
from harness.report import records
from harness.report.display import summary_text
from harness.report.runner import RunResult, exit_code
from tests.qemu_helpers import qcow2

FULL = Space(Path("/mnt/full"), 4096, 16 << 20, 1000, 4096)
ROOMY = Space(Path("/"), 10 << 30, 100 << 30, 10**6, 10**7)
ENOSPC_TEXT = os.strerror(errno.ENOSPC)
FULL_LINE = f"{ENOSPC_TEXT}: /mnt/full has 4.0 KiB free of 16.0 MiB"


@pytest.fixture
def disks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Space]:
    """os.statvfs made up: a path under /mnt/full is on FULL, any other on ROOMY."""
    table = {"/mnt/full": FULL}

    def of(cls: type[Space], path: Path | str) -> Space:
        return next((s for p, s in table.items() if str(path).startswith(p)), ROOMY)

    monkeypatch.setattr(Space, "of", classmethod(of))
    return table


# ---- QEMU's answers


def test_qemu_saying_no_space_is_the_environment_when_the_disk_is_full(disks: object) -> None:
    desc = 'Failed to empty json:{"driver": "qcow2"}: ' + ENOSPC_TEXT
    broken = from_answer(desc, "/mnt/full/case/m")
    assert isinstance(broken, EnvironmentBroken) and str(broken) == FULL_LINE
    # the same answer with room on every disk (an injected error) is QEMU's
    assert from_answer(desc, "/roomy/case/m") is None
    quota = from_answer(f"write failed: {os.strerror(errno.EDQUOT)}", "/mnt/full/x")
    assert str(quota).startswith(f"{os.strerror(errno.EDQUOT)}: /mnt/full has")


def test_no_file_descriptors_is_the_environment_at_once(disks: object) -> None:
    emfile = from_answer(f"Could not open 'x': {os.strerror(errno.EMFILE)}", "/roomy")
    enfile = from_answer(f"Could not open 'x': {os.strerror(errno.ENFILE)}", "/roomy")
    assert str(emfile).startswith(f"{os.strerror(errno.EMFILE)} (QEMU's answer); the harness")
    assert str(enfile).startswith(f"{os.strerror(errno.ENFILE)} (QEMU's answer)")


def test_other_answers_stand(disks: object) -> None:
    for text in ("Input/output error", "Device '(null)' is in use", ""):
        assert from_answer(text, "/mnt/full") is None


# ---- the harness's own I/O, and any failure


def test_the_kernel_saying_no_space_is_the_environment(disks: object) -> None:
    e = OSError(errno.ENOSPC, ENOSPC_TEXT, "/mnt/full/case/images/active.qcow2")
    assert str(from_exception(e)) == FULL_LINE
    # wherever it is among the causes, or in an exception group (hypothesis)
    try:
        try:
            raise e
        except OSError as inner:
            raise ImageError("qemu-img create: ...") from inner
    except ImageError as outer:
        assert str(from_exception(outer)) == FULL_LINE
        assert str(from_exception(ExceptionGroup("run", [ValueError(), outer]))) == FULL_LINE
    fds = from_exception(OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
    assert str(fds).startswith(f"{os.strerror(errno.EMFILE)}: the harness has ")
    assert from_exception(FileNotFoundError(errno.ENOENT, "x")) is None
    assert from_exception(AssertionError("a case's own assert")) is None


def test_a_case_failing_on_a_nearly_full_disk_has_no_verdict(disks: object) -> None:
    failure = AssertionError("Divergence: offline layer check failed")
    assert str(from_failure(failure, "/mnt/full/case")) == (
        "nearly full: /mnt/full has 4.0 KiB free of 16.0 MiB"
    )
    assert from_failure(failure, "/roomy/case") is None


def test_nearly_full_is_blocks_or_inodes() -> None:
    assert FULL.full and not ROOMY.full
    assert Space(Path("/"), environment.NEAR_FULL - 1, 1 << 40, 10**6, 10**7).full
    inodes = Space(Path("/"), 10 << 30, 1 << 40, 10, 10**6)
    assert inodes.full and inodes.describe().endswith("and 10 of 1000000 inodes")
    assert Space.of(tempfile.gettempdir()) is not None


def test_a_binary_gone_is_the_environment(tmp_path: Path) -> None:
    present = tmp_path / "qemu-img"
    present.write_text("")
    check_binaries(present, "relative/is/not/checked")
    with pytest.raises(EnvironmentBroken, match=r"/gone: the build's binary is gone$"):
        check_binaries(present, tmp_path / "gone")


# ---- what the run says: one line, exit code 15, bisect aborts


def _result(*cases: dict[str, object]) -> RunResult:
    doc = records.document(list(cases), 1, 1.0, [])
    d = Path("/r")
    return RunResult(1, doc, 1.0, d, d / "pytest.log", d / "junit.xml", d / "j", d / "a")


def test_the_run_says_so_in_one_line_and_exits_15() -> None:
    def rec(nodeid: str, outcome: str, **more: object) -> dict[str, object]:
        return records.new_record(nodeid) | {"outcome": outcome, "when": "call", **more}

    result = _result(
        rec("a", "error", environment=FULL_LINE, message=f"EnvironmentBroken: {FULL_LINE}"),
        rec("b", "error", environment=FULL_LINE),
        rec("c", "passed"),
        rec("d", "failed", message="Divergence: X"),
    )
    lines = summary_text(result, []).splitlines()
    env = [ln for ln in lines if "environment" in ln]
    assert env == [f"environment broken, no verdict for 2 results (not QEMU's doing): {FULL_LINE}"]
    assert "  FAILED d" in lines and not [ln for ln in lines if ln.startswith("  ERROR")]
    assert exit_code(result) == EnvironmentBroken.exit_code == 15
    v = verdict(result, False, "QEMU 7.2.22 at /b")
    assert v.code == BISECT_ABORT and FULL_LINE in v.line


def test_qrc_itself_on_a_full_disk_says_one_line(
    disks: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, ENOSPC_TEXT, "/mnt/full/qrc-bisect-x/pytest.log")

    monkeypatch.setattr(harness.cli, "fetch", full)
    assert harness.cli.main(["fetch"]) == 15
    assert capsys.readouterr().err == f"qrc: the environment failed the run: {FULL_LINE}\n"
    monkeypatch.setattr(harness.bisect, "find_build", full)
    assert harness.cli.main(["bisect", "--qemu-dir", "/nowhere"]) == BISECT_ABORT
    assert capsys.readouterr().err == (
        f"qrc bisect: the environment failed the run: {FULL_LINE} (aborting the bisection: 128)\n"
    )


# ---- for real: a small tmpfs that fills up


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted at the end; skipped without root or where mount fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, leave: int = 0) -> None:
    """Fill the filesystem of `where` until at most `leave` bytes are free."""
    with open(where / "filler", "wb") as f:
        chunk = b"\xff" * (256 << 10)
        try:
            while os.statvfs(where).f_bavail * os.statvfs(where).f_frsize > leave:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.mark.needs_qemu
def test_qemu_writing_to_a_full_disk_is_no_divergence(
    small_tmpfs: Path, machines: MachineSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU's own answer, `write failed: No space left on device`, on the full TMPDIR."""
    monkeypatch.setattr(tempfile, "tempdir", str(small_tmpfs))
    build = known_builds(Path(__file__).resolve().parents[1])[0]
    m = machines.launch(build, "m")
    image = qcow2(build, small_tmpfs / "disk.qcow2")
    file = {"driver": "file", "filename": image, "cache": {"no-flush": True}}
    m.qmp_ok("blockdev-add", driver="qcow2", **{"node-name": "disk"}, file=file)
    fill(small_tmpfs)
    with pytest.raises(EnvironmentBroken, match=rf"^{ENOSPC_TEXT}: {small_tmpfs} has "):
        GuestIO(m, "disk").write(0, 4 << 20, 0x11)


@pytest.mark.needs_qemu
@pytest.mark.timeout(240)
def test_qrc_run_and_bisect_on_a_full_tmpdir(small_tmpfs: Path, tmp_path: Path) -> None:
    installed("qemu-system-x86_64")
    fill(small_tmpfs, leave=1 << 20)
    env = {"TMPDIR": str(small_tmpfs)}
    case = ["-k", "test_secondary_life", "--progress", "none"]
    r = qrc("run", *case, "--report-dir", "rep", cwd=tmp_path, env=env)
    assert r.returncode == 15, r.stdout + r.stderr
    said = [ln for ln in r.stdout.splitlines() if ln.startswith("environment broken")]
    assert len(said) == 1 and f"{small_tmpfs} has " in said[0], r.stdout
    assert "Divergence" not in r.stdout and "Errno" not in r.stdout
    r = qrc("bisect", "--qemu-dir", "/usr", *case, cwd=tmp_path, env=env)
    assert r.returncode == 128, r.stdout + r.stderr
    assert r.stderr.startswith("qrc bisect: ") and f"{small_tmpfs} has " in r.stderr
    assert r.stderr.rstrip().endswith("(aborting the bisection: 128)")
