"""The machine launcher against real QEMU (both installed builds): life cycle, errors as
values, and crashes, hangs and aborts turned into failures that explain themselves."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.builds import QemuBuild, known_builds
from harness.machine import (
    Machine,
    MachineDied,
    MachineError,
    MachineHung,
    MachineSet,
    QmpCommandFailed,
)
from harness.observe import QmpResult
from tests.qemu_helpers import alive, qcow2

ROOT = Path(__file__).resolve().parents[1]
BUILDS = known_builds(ROOT)


def _version(build: QemuBuild) -> str:
    out = subprocess.run(
        [*build.command(build.system), "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, **build.env()},
    ).stdout
    m = re.search(r"version (\d+\.\d+\.\d+)", out)
    return m[1] if m else build.label


with_builds = pytest.mark.parametrize("build", BUILDS, ids=[_version(b) for b in BUILDS])
pytestmark = [pytest.mark.needs_qemu, pytest.mark.timeout(60)]


def secondary(m: Machine, d: Path, build: QemuBuild, top_id: str = "rep") -> None:
    """The by-hand secondary topology: sec exported over NBD, rep over active/hidden/sec."""
    m.qmp_ok(
        "blockdev-add",
        driver="qcow2",
        **{"node-name": "sec"},
        file={"driver": "file", "filename": qcow2(build, d / "sec.qcow2")},
    )
    m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": m.sock_path("nbd")}})
    m.qmp_ok(
        "block-export-add", type="nbd", id="exp", writable=True, name="sec", **{"node-name": "sec"}
    )
    m.qmp_ok(
        "blockdev-add",
        driver="replication",
        mode="secondary",
        **{"node-name": "rep", "top-id": top_id},
        file={
            "driver": "qcow2",
            "node-name": "active",
            "file": {"driver": "file", "filename": qcow2(build, d / "active.qcow2")},
            "backing": {
                "driver": "qcow2",
                "node-name": "hidden",
                "file": {"driver": "file", "filename": qcow2(build, d / "hidden.qcow2")},
                "backing": "sec",
            },
        },
    )


@with_builds
@pytest.mark.parametrize("kind", ["system", "qsd"])
def test_launch_and_quit(build: QemuBuild, kind: str, machines: MachineSet) -> None:
    m = machines.launch(build, "m", kind)  # type: ignore[arg-type]
    mode = stat.S_IMODE(os.stat(m.sockdir).st_mode)
    assert mode == 0o700
    assert m.sockdir.name.startswith("qrc-") and len(m.sock_path("nbd")) < 107
    assert m.alive()
    version = m.qmp_ok("query-version")
    assert isinstance(version["qemu"]["major"], int)
    m.shutdown()
    assert m.returncode == 0
    assert not m.alive() and not m.sockdir.exists()
    m.shutdown()  # idempotent
    assert (m.logdir / "stdout.log").exists() and (m.logdir / "stderr.log").exists()
    with pytest.raises(MachineDied, match="not running"):
        m.qmp("query-version")
    assert m.quit_hung is None


@with_builds
def test_quit_without_answer_is_kept_as_a_hang(
    build: QemuBuild, machines: MachineSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shutdown() never raises, and SIGKILLs a QEMU whose quit goes unanswered; the hang
    is kept for a caller that judges the quit (PairStory.quit raises it)."""
    m = machines.launch(build, "m")
    monkeypatch.setattr("harness.machine.QUIT_DEADLINE", 0)  # no answer can come in time
    m.shutdown()
    assert isinstance(m.quit_hung, MachineHung)
    assert "quit: no QMP reply" in m.quit_hung.summary
    assert m.returncode in (0, -signal.SIGKILL) and not alive(m.pid)


@with_builds
def test_qmp_error_is_a_value(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    res = m.qmp("blockdev-del", **{"node-name": "nope"})
    # the text is the release's ("Failed to find node with node-name='nope'" from 6.0)
    assert res.ok is False and res.value is None and res.error_class == "GenericError"
    assert res.desc is not None and "nope" in res.desc
    assert m.qmp("query-status").value["status"] == "prelaunch"
    with pytest.raises(QmpCommandFailed) as exc:
        m.qmp_ok("blockdev-del", **{"node-name": "nope"})
    assert exc.value.result.desc == res.desc
    assert "blockdev-del" in str(exc.value) and "command line:" in str(exc.value)
    # the transcript keeps every command and reply
    cmds = [e.get("cmd") for e in m.transcript if "cmd" in e]
    assert cmds == ["blockdev-del", "query-status", "blockdev-del"]
    assert '"node-name": "nope"' in m.transcript_text() and res.desc in m.transcript_text()


@with_builds
def test_hmp(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    assert m.hmp("info status").strip() == "VM status: paused (prelaunch)"


@with_builds
def test_sigkill_is_machine_died(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    m.kill(signal.SIGKILL)
    with pytest.raises(MachineDied) as exc:
        m.qmp("query-status")
    assert exc.value.signal == "SIGKILL"
    assert "killed by SIGKILL" in str(exc.value) and "query-status" in str(exc.value)
    assert m.returncode == -signal.SIGKILL and not alive(m.pid)
    assert issubclass(MachineDied, AssertionError)


@with_builds
def test_sigstop_is_machine_hung(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    m.kill(signal.SIGSTOP)
    with pytest.raises(MachineHung) as exc:
        m.execute("query-status", timeout=0.3)
    assert "no QMP reply within 0.3 s" in str(exc.value)
    assert m.returncode == -signal.SIGKILL and not alive(m.pid)


@with_builds
def test_abort_carries_signal_and_assertion(
    build: QemuBuild, machines: MachineSet, tmp_path: Path
) -> None:
    m = machines.launch(build, "secondary")
    secondary(m, tmp_path, build, top_id="nosuch")
    res = m.qmp("xen-set-replication", enable=True, primary=False)
    assert res == QmpResult(False, None, "GenericError", "No top_bs or it is invalid")
    with pytest.raises(MachineDied) as exc:
        m.qmp("xen-set-replication", enable=True, primary=False)
    e = exc.value
    assert e.signal == "SIGABRT"
    assert "Assertion `*errp == NULL' failed" in e.stderr_tail
    assert "killed by SIGABRT" in str(e) and "Assertion `*errp == NULL' failed" in str(e)
    assert "xen-set-replication" in str(e) and "connection lost" in m.transcript_text()


@with_builds
def test_exit_at_startup_is_reported_at_once(build: QemuBuild, machines: MachineSet) -> None:
    with pytest.raises(MachineDied) as exc:
        machines.launch(build, "bad", args=["-no-such-option"], timeout=20)
    # MachineDied, not MachineHung: the exit was seen, the accept deadline not waited for
    assert exc.value.returncode == 1 and exc.value.signal is None
    assert "-no-such-option" in exc.value.stderr_tail
    assert "exited before connecting" in str(exc.value)


@with_builds
def test_machine_set_shuts_down_on_exception(build: QemuBuild, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), MachineSet(tmp_path) as ms:
        a = ms.launch(build, "a")
        b = ms.launch(build, "b", "qsd")
        b.kill(signal.SIGSTOP)  # cannot answer quit: must be SIGKILLed without waiting
        raise RuntimeError("test failed")
    assert a.returncode == 0
    assert b.returncode == -signal.SIGKILL
    assert not alive(a.pid) and not alive(b.pid)
    assert not a.sockdir.exists() and not b.sockdir.exists()


@with_builds
def test_machine_set_kills_on_keyboard_interrupt(build: QemuBuild, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), MachineSet(tmp_path) as ms:
        a = ms.launch(build, "a")
        b = ms.launch(build, "b", "qsd")
        raise KeyboardInterrupt
    # SIGKILL at once, not quit: an interrupted run does not wait for anything
    assert a.returncode == -signal.SIGKILL and b.returncode == -signal.SIGKILL
    assert not a.sockdir.exists() and not b.sockdir.exists()


@with_builds
def test_wait_exit_and_failure_report(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    m.qmp_ok("query-status")
    m.kill(signal.SIGTERM)
    assert m.wait_exit(5) == 0  # QEMU exits cleanly on SIGTERM
    report = m.failure_report()
    assert "command line: " in report and str(build.system) in report
    assert "exit status 0" in report and "terminating on signal 15" in report
    assert "query-status" in report


@with_builds
def test_stdout_since_mark(build: QemuBuild, machines: MachineSet, tmp_path: Path) -> None:
    m = machines.launch(build, "m")
    m.qmp_ok(
        "blockdev-add",
        driver="qcow2",
        **{"node-name": "d"},
        file={"driver": "file", "filename": qcow2(build, tmp_path / "d.qcow2")},
    )
    mark = m.stdout_mark()
    assert m.hmp('qemu-io d "write -P 7 0 512"') == ""
    assert m.stdout_since(mark).startswith("wrote 512/512 bytes at offset 0\n")
    assert m.stdout_since(m.stdout_mark()) == ""


@with_builds
def test_many_round_trips_stay_in_order(build: QemuBuild, machines: MachineSet) -> None:
    """500 commands in a row each get their own reply (latency: benchmarks/harness.py)."""
    m = machines.launch(build, "m")
    for i in range(500):
        assert m.qmp("query-status").ok, i


def test_errors_are_assertion_errors() -> None:
    for cls in (MachineDied, MachineHung, QmpCommandFailed):
        assert issubclass(cls, MachineError) and issubclass(cls, AssertionError)


@with_builds
def test_events_are_collected(build: QemuBuild, machines: MachineSet) -> None:
    m = machines.launch(build, "m")
    m.qmp_ok("cont")
    m.qmp_ok("query-status")  # the event precedes this reply
    names = [e["event"] for e in m.events()]
    assert "RESUME" in names
    assert m.events() == []
    assert '"RESUME"' in m.transcript_text()


ORPHAN = """
import json, os, signal, sys
from pathlib import Path
from harness.builds import QemuBuild
from harness.machine import Machine
m = Machine.launch(QemuBuild(**json.loads(sys.argv[1])), Path(sys.argv[2]), "orphan")
print(m.pid, m.sockdir, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@with_builds
def test_qemu_dies_with_its_python_process(build: QemuBuild, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a worker killed outright takes its QEMU with it."""
    proc = subprocess.run(
        [sys.executable, "-c", ORPHAN, json.dumps(dataclasses.asdict(build)), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid_text, sockdir = proc.stdout.split()
    shutil.rmtree(sockdir, ignore_errors=True)  # nobody else will: its owner was killed
    try:
        fd = os.pidfd_open(int(pid_text))
    except ProcessLookupError:
        return  # already gone (and reaped)
    try:
        ready, _, _ = select.select([fd], [], [], 5.0)  # readable once the process exits
        assert ready, f"QEMU {pid_text} outlived the Python process that started it"
    finally:
        os.close(fd)
