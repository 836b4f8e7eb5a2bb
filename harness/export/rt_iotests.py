"""An exported iotest's QEMU processes: iotests' VM (qemu-system, QMP through vm.qmp) and
QemuStorageDaemon; its log, printed (a unittest-style iotest's output): a line per
check, the expected answer when QEMU gives it, else QEMU's answer, so that `./check`
shows a difference as a diff of the test's .out.

Part of the runtime `qrc export` copies into the iotest: Python's standard library and
iotests (passed in as a module: `make_run(iotests)`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from typing import Any

from harness.export.rt_answers import Answer, Expect, Gone, Reply
from harness.export.rt_io import signal_name
from harness.export.rt_run import Machines, Run, core_limit


class Stopped(Exception):
    """The test stops at its first difference (what follows would only repeat it)."""


class IotestsMachines(Machines):
    """iotests.VM for qemu-system (its stdout and stderr in its log file, where HMP
    qemu-io prints), iotests.QemuStorageDaemon for the storage daemon."""

    def __init__(self, iotests: Any) -> None:
        self.iotests = iotests
        self.vms: dict[str, Any] = {}
        self.qsds: dict[str, Any] = {}
        self.dead: dict[str, Gone] = {}

    def launch(self, name: str, kind: str, args: list[str]) -> None:
        if kind == "system":
            vm = self.iotests.VM(path_suffix=f"-{name}")
            vm.add_args(*args)
            vm.launch()
            self.vms[name] = vm
        else:
            self.qsds[name] = self.iotests.QemuStorageDaemon(*args, instance_id=name, qmp=True)

    def _log_path(self, name: str) -> str:
        path = getattr(self.vms[name], "_qemu_log_path", None)  # where QEMUMachine logs
        if not path:
            raise RuntimeError("iotests' VM keeps no log file: cannot read HMP qemu-io's text")
        return str(path)

    def _gone(self, name: str, sig: int | None = None) -> Gone:
        if name in self.dead:
            return self.dead[name]
        if name in self.qsds:
            qsd = self.qsds.pop(name)
            if sig is not None:
                qsd.stop(kill_signal=sig)
            status = -sig if sig is not None else None
            gone = Gone(signal_name(status), status, "")
        else:
            vm = self.vms[name]
            if sig is not None:
                os.kill(vm.get_pid(), sig)
            with self.iotests.change_log_level("qemu.machine"), contextlib.suppress(Exception):
                vm.wait()
            status = vm.exitcode()
            gone = Gone(signal_name(status), status, vm.get_log() or "")
        self.dead[name] = gone
        return gone

    def qmp(self, name: str, cmd: str, args: dict[str, Any], timeout: float) -> Answer:
        if name in self.dead:
            return self.dead[name]
        target = self.vms.get(name) or self.qsds[name]
        try:
            with self.iotests.change_log_level("qemu.qmp"):
                return Reply(dict(target.qmp(cmd, args)))
        except Exception:
            return self._gone(name)

    def stdout_mark(self, name: str) -> int:
        return os.path.getsize(self._log_path(name))

    def stdout_since(self, name: str, mark: int) -> str:
        with open(self._log_path(name), "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def kill(self, name: str, sig: str) -> Answer:
        if name in self.vms:
            core_limit(self.vms[name].get_pid(), sig)
        return self._gone(name, int(signal.Signals[sig]))

    def quit(self, name: str) -> Answer:
        if name in self.qsds:
            self.qsds.pop(name).stop()
            return Reply({"return": {}})
        vm = self.vms[name]
        with self.iotests.change_log_level("qemu.machine"), contextlib.suppress(Exception):
            vm.shutdown()
        self.dead[name] = Gone(signal_name(vm.exitcode()), vm.exitcode(), vm.get_log() or "")
        return Reply({"return": {}}) if vm.exitcode() == 0 else self.dead[name]

    def close(self) -> None:
        for name in list(self.vms):
            if name not in self.dead:
                self.quit(name)
        for name in list(self.qsds):
            self.quit(name)


class LogRun(Run):
    """A Run whose checks are lines of a log: the expected answer when QEMU gives it,
    else QEMU's (and the test stops there)."""

    def __init__(self, log: Any, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.log = log

    def passed(self, label: str, expect: Expect) -> None:
        self.log(f"{label}: {expect.render()}")

    def differs(self, label: str, expect: Expect, got: Answer) -> None:
        self.log(f"{label}: {got.render()}")
        raise Stopped(label)


def make_run(iotests: Any) -> LogRun:
    """The Run of an iotest: images in a directory of iotests' test_dir, sockets in one
    of its sock_dir (of TMPDIR where that is too long for them), qemu-img and qemu-io as
    iotests runs them."""
    tmp = tempfile.mkdtemp(prefix="replication-", dir=iotests.test_dir)
    # unix socket paths hold 107 bytes: "$SOCK/MACHINE/nbd.sock" must fit
    base = iotests.sock_dir if len(iotests.sock_dir) <= 60 else None
    sock = tempfile.mkdtemp(prefix="repl-", dir=base)
    return LogRun(
        lambda line: print(line, flush=True),
        tmp,
        sock,
        IotestsMachines(iotests),
        list(iotests.qemu_img_args),
        list(iotests.qemu_io_args_no_fmt),
        dict(os.environ),
    )
