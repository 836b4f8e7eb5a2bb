"""`qrc export` against real QEMU: a case exported on the installed QEMU (PATH's, 7.2 on
Debian 12) and its reproduce.py run on that build and on another release (.qemu/11.1,
through its own loader): 0 where QEMU does what the model expects, 1 with the difference
printed where a release answers otherwise (a text changed, a known bug fixed), and a
case that cannot be exported is one line and exit 13. The reproducer leaves no process
and no file. The exported iotest runs under QEMU's own ./check when QRC_IOTESTS_TREE
names a configured and built QEMU source tree (its build/ directory holds the build).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.builds import QemuBuild, find_build
from harness.export.command import repro_env
from tests.cli_helpers import ROOT, one_line, qrc
from tests.qemu_helpers import alive

pytestmark = [pytest.mark.needs_qemu, pytest.mark.timeout(240)]

SMOKE = "cases/test_smoke.py::test_secondary_life"
# drive_add's errors carry HMP's "Error: " prefix from 10.2 on
DRIVE_ADD = "cases/test_open.py::test_drive_add_refused[7.2.22-no-mode]"
# a strict expected failure on 7.2: block_resize names "Device '(null)'" (fixed in 9.0)
NULL_DEVICE = "cases/test_blockers.py::test_block_resize_names_the_blocker[7.2.22-rep]"
# a live bug (5.0 to master): block_resize of a replication node aborts QEMU
ABORT = (
    "cases/test_blockers.py::test_block_resize_of_the_replication_node_does_not_crash[7.2.22-none]"
)
COLO = "cases/test_colo_migration.py::test_lost_heartbeat_outside_colo"
ELEVEN = ROOT / ".qemu" / "11.1"


def _system() -> QemuBuild:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEMU_", "QSD_"))}
    try:
        build = find_build(None, env)
    except Exception as e:
        pytest.skip(f"no installed QEMU: {e}")
    version = subprocess.run([build.system, "--version"], capture_output=True, text=True).stdout
    if "version 7.2." not in version:
        pytest.skip("these cases' node ids are the system QEMU's, 7.2")
    return build


def _eleven() -> QemuBuild:
    if not (ELEVEN / "usr" / "bin" / "qemu-system-x86_64").exists():
        pytest.skip(f"{ELEVEN} is not there (scripts/setup.sh fetches it)")
    return find_build(str(ELEVEN), {})


def export(case: str, out: Path) -> subprocess.CompletedProcess[str]:
    _system()
    env = {"PATH": os.environ.get("PATH", "")}
    return qrc("export", case, "--out", str(out), cwd=ROOT, env=env)


def exported(case: str, out: Path, says: int) -> Path:
    """`case` exported into `out`; its reproduce.py, run by qrc export on the build, said
    what the case did (`says`: 0 for a pass, 1 for a failure)."""
    r = export(case, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"reproduce.py on this build: exit {says} (as the case)" in r.stdout, r.stdout
    return out


def reproduce(out: Path, build: QemuBuild, tmp: Path) -> tuple[int, str, float]:
    """reproduce.py's exit status, output and time on `build`; what it left is checked:
    no file in its TMPDIR, no process of its own."""
    tmp.mkdir()
    env = repro_env(build, {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(tmp)})
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(out / "reproduce.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    assert list(tmp.iterdir()) == [], f"reproduce.py left files: {list(tmp.iterdir())}"
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert not [p for p in children if alive(int(p))], "reproduce.py left processes"
    return proc.returncode, output, took


def test_a_passing_case_reproduces_on_its_build_and_on_another(tmp_path: Path) -> None:
    out = exported(SMOKE, tmp_path / "smoke", 0)
    code, output, took = reproduce(out, _system(), tmp_path / "t72")
    assert code == 0, output
    assert output.rstrip().splitlines()[-1].startswith("PASS")
    assert took < 20, took
    code, output, _ = reproduce(out, _eleven(), tmp_path / "t111")
    assert code == 0, output
    test = out / "tests/qemu-iotests/tests/replication-secondary-life"
    assert os.access(test, os.X_OK) and test.with_name(test.name + ".out").exists()


def test_a_release_that_answers_otherwise_is_the_first_difference(tmp_path: Path) -> None:
    out = exported(DRIVE_ADD, tmp_path / "drive-add", 0)
    code, output, _ = reproduce(out, _eleven(), tmp_path / "t")
    assert code == 1, output
    assert "FAIL at the case: secondary: drive_add" in output
    assert '"Missing the option mode\\n"' in output  # expected: 7.2's text
    assert "Error: Missing the option mode" in output  # got: 11.1.3's


def test_a_strict_expected_failure_reproduces_the_bug_until_it_is_fixed(tmp_path: Path) -> None:
    out = exported(NULL_DEVICE, tmp_path / "null-device", 1)
    code, output, _ = reproduce(out, _system(), tmp_path / "t72")
    assert code == 1, output
    assert "Device '(null)' is in use" in output
    code, output, _ = reproduce(out, _eleven(), tmp_path / "t111")  # fixed in 9.0
    assert code == 0, output


def test_a_case_that_cannot_be_exported_is_one_line(tmp_path: Path) -> None:
    r = export(COLO, tmp_path / "colo")
    assert r.returncode == 13, r.stdout + r.stderr
    assert "COLO's migration" in one_line(r)
    assert not (tmp_path / "colo").exists()
    r = export("cases/test_smoke.py::test_no_such_case", tmp_path / "none")
    assert r.returncode == 5 and "no case matched" in one_line(r)
    r = export("cases/test_smoke.py", tmp_path / "two")
    assert r.returncode == 2 and "selects 2 cases" in one_line(r)


def test_the_iotest_passes_check_in_a_build_tree(tmp_path: Path) -> None:
    tree = os.environ.get("QRC_IOTESTS_TREE")
    if not tree or not (Path(tree) / "build" / "tests" / "qemu-iotests" / "check").exists():
        pytest.skip("QRC_IOTESTS_TREE does not name a built QEMU source tree")
    results = {}
    for case, name, says in ((SMOKE, "replication-secondary-life", 0), (ABORT, None, 1)):
        tests = exported(case, tmp_path / (name or "bug"), says) / "tests/qemu-iotests/tests"
        name = name or next(p.name for p in tests.iterdir() if not p.name.endswith(".out"))
        dest = Path(tree) / "tests" / "qemu-iotests" / "tests"
        try:
            for f in (name, f"{name}.out"):
                shutil.copy2(tests / f, dest / f)
            check = subprocess.run(
                ["./check", "-qcow2", name],
                cwd=Path(tree) / "build" / "tests" / "qemu-iotests",
                capture_output=True,
                text=True,
                timeout=180,
            )
        finally:
            for f in (name, f"{name}.out"):
                (dest / f).unlink(missing_ok=True)
        results[name] = check
    smoke = results.pop("replication-secondary-life")
    assert smoke.returncode == 0 and "Passed all 1 iotests" in smoke.stdout, smoke.stdout
    (bug,) = results.values()
    assert bug.returncode != 0, bug.stdout
    assert "+the case: secondary: block_resize: QEMU died (SIGABRT)" in bug.stdout, bug.stdout


def test_the_runtime_reads_an_nbd_export_as_qemu_serves_it(tmp_path: Path) -> None:
    """The reproducer's own NBD client (harness.export.rt_io.NbdReader): the bytes of a
    real export, holes included, with and without NBD_CMD_FLAG_DF."""
    from harness.export.rt_io import NbdReader
    from harness.machine import Machine
    from tests.qemu_helpers import qcow2

    build = _system()
    img = qcow2(build, tmp_path / "a.qcow2", "1M")
    io = [*build.command(build.io), "-f", "qcow2", "-c", "write -P 0x5a 4096 4096", img]
    subprocess.run(io, check=True, capture_output=True)
    with Machine.launch(build, tmp_path, "m") as m:
        m.qmp_ok("blockdev-add", driver="qcow2", **{"node-name": "a"}, file={"driver": "file",
                 "filename": img})  # fmt: skip
        sock = m.sock_path("nbd.sock")
        m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        m.qmp_ok("block-export-add", type="nbd", id="e", name="a", **{"node-name": "a"})
        for flags in (0, 4):
            reader = NbdReader(sock, "a", flags)
            try:
                assert reader.read(0, 12288) == bytes(4096) + b"\x5a" * 4096 + bytes(4096)
            finally:
                reader.close()
