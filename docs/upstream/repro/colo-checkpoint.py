#!/usr/bin/env python3
"""QEMU COLO: a primary whose secondary dies after the checkpoint's device state was
sent stays stopped in COLO: colo_do_checkpoint_transaction() returns 0 (ret was set by
the last successful call) when receiving COLO_MESSAGE_VMSTATE_RECEIVED or
COLO_MESSAGE_VMSTATE_LOADED fails, so colo_process_checkpoint() does not leave COLO.

Two QEMUs (-M none, no guest) migrate with x-colo. The secondary has COLO's disk graph
with a blkdebug node under its active disk; a blkdebug breakpoint on l1_update holds
the secondary's checkpoint in replication_do_checkpoint_all() (bdrv_make_empty of the
active disk), i.e. after it sent VMSTATE_RECEIVED and before VMSTATE_LOADED. A
checkpoint is requested; once the primary's VM has stopped for it, the secondary is
SIGKILLed. The primary must leave COLO (COLO_EXIT, reason error) so that management
can fail over; it prints the receive error and goes on waiting in COLO, VM stopped,
until a later checkpoint request fails.

Binaries: $QEMU_PROG and $QEMU_IMG_PROG (as in iotests), else qemu-system-x86_64 and
qemu-img from PATH (built with --enable-replication and COLO, the default). Exit 0:
QEMU behaves; 1: the bug, the first difference printed; 2: cannot run. Takes a few
seconds.
"""

# ---- a minimal QMP machine (Python standard library only) -------------------------
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

QEMU = os.environ.get("QEMU_PROG") or shutil.which("qemu-system-x86_64")
QEMU_IMG = os.environ.get("QEMU_IMG_PROG") or shutil.which("qemu-img")
TIMEOUT = 10.0


class CannotRun(Exception):
    """The reproducer cannot run here (exit 2)."""


class Died(Exception):
    """QEMU exited (or closed its monitor) instead of answering."""


class Vm:
    """One QEMU driven over a QMP unix socket it connects to at start-up."""

    def __init__(self, workdir, name, args=()):
        self.name = name
        path = os.path.join(workdir, name + ".qmp")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        argv = [
            QEMU,
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
            "unix:" + path,
            *args,
        ]
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            self.sock, _ = listener.accept()
        except OSError:
            self.proc.kill()
            raise CannotRun(f"{QEMU} did not start: {self.stderr()}") from None
        finally:
            listener.close()
        self.buf = b""
        self.events = []
        try:
            if self._read() is None:  # the greeting
                raise CannotRun("QEMU did not greet on its QMP socket")
            self.qmp("qmp_capabilities")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _read(self, timeout=TIMEOUT):
        """The next message; None when `timeout` passes first; Died at end of file."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Died(self.death())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def qmp(self, cmd, **args):
        """QEMU's answer: {"return": ...} or {"error": {...}}; Died if it died."""
        try:
            self.sock.sendall(json.dumps({"execute": cmd, "arguments": args}).encode())
        except (BrokenPipeError, ConnectionResetError):
            raise Died(self.death()) from None
        while True:
            msg = self._read()
            if msg is None:
                raise Died(f"no answer to {cmd} within {TIMEOUT:.0f} s")
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def ok(self, cmd, **args):
        got = self.qmp(cmd, **args)
        if "error" in got:
            raise CannotRun(f"{self.name}: {cmd} failed: {got['error']['desc']}")
        return got["return"]

    def hmp(self, line):
        """HMP's answer, and what it printed on stdout (older qemu-io commands)."""
        start = os.path.getsize(self.stdout_path)
        answer = self.ok("human-monitor-command", **{"command-line": line})
        with open(self.stdout_path, errors="replace") as f:
            f.seek(start)
            return answer + f.read()

    def wait_event(self, name, timeout=TIMEOUT):
        """The first event `name` not yet consumed, or None after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self._read(max(0.0, end - time.monotonic()))
            if msg is None:
                return None
            self.events.append(msg)

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read().strip()

    def death(self):
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return "QEMU closed its monitor but still runs"
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        return f"QEMU died ({how}): {self.stderr()}"


def qemu_img(*args):
    got = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True)
    if got.returncode != 0:
        raise CannotRun(f"qemu-img {' '.join(args)}: {got.stderr.strip()}")


def secondary_chain(workdir, size="64M"):
    """secondary.qcow2 <- hidden.qcow2 <- active.qcow2 (COLO's secondary images)."""
    paths = {n: os.path.join(workdir, n + ".qcow2") for n in ("secondary", "hidden", "active")}
    qemu_img("create", "-f", "qcow2", paths["secondary"], size)
    qemu_img(
        "create", "-f", "qcow2", "-F", "qcow2", "-b", paths["secondary"], paths["hidden"], size
    )
    qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", paths["hidden"], paths["active"], size)
    return paths


def open_secondary(vm, workdir, paths, top_id="rep", active_file=None):
    """COLO's secondary disk graph, as in docs/COLO-FT.txt (blockdev-add form):
    secondary disk (NBD-exported: replication needs it to have a BlockBackend),
    hidden disk over it, active disk over that, the replication node `rep` over the
    active disk."""

    def image(node, backing=None, file=None):
        opts = {
            "driver": "qcow2",
            "node-name": node,
            "file": file or {"driver": "file", "filename": paths[node]},
        }
        if backing is not None:
            opts["backing"] = backing
        vm.ok("blockdev-add", **opts)

    image("secondary")
    vm.ok(
        "nbd-server-start",
        addr={"type": "unix", "data": {"path": os.path.join(workdir, "nbd.sock")}},
    )
    got = vm.qmp(
        "block-export-add", type="nbd", id="exp", **{"node-name": "secondary"}, writable=True
    )
    if got.get("error", {}).get("class") == "CommandNotFound":  # before 5.2
        vm.ok("nbd-server-add", device="secondary", writable=True)
    elif "error" in got:
        raise CannotRun(f"block-export-add: {got['error']['desc']}")
    image("hidden", backing="secondary")
    image("active", backing="hidden", file=active_file)
    vm.ok(
        "blockdev-add",
        driver="replication",
        mode="secondary",
        **{"node-name": "rep"},
        **{"top-id": top_id},
        file="active",
    )


def run(main):
    """Exit 0 (QEMU behaves), 1 (the bug: first difference printed), 2 (cannot run);
    every QEMU and file this script made is gone whatever happens."""
    if not QEMU or not QEMU_IMG:
        print(
            "cannot run: set QEMU_PROG and QEMU_IMG_PROG, or put qemu-system-x86_64 "
            "and qemu-img on PATH"
        )
        sys.exit(2)
    workdir = tempfile.mkdtemp(prefix="qemu-repro-")
    vms = []

    def launch(name, args=()):
        vms.append(Vm(workdir, name, args))
        return vms[-1]

    status = 2
    try:
        status = main(workdir, launch)
    except CannotRun as e:
        print(f"cannot run: {e}")
    except Died as e:
        print(f"FAIL: QEMU died where this script did not expect it: {e}")
        status = 1
    finally:
        for vm in vms:
            if vm.proc.poll() is None:
                vm.proc.kill()
            vm.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(status)


def differ(step, expected, got):
    print(f"FAIL at {step}\n  expected: {expected}\n  got:      {got}")
    return 1


DAY_MS = 24 * 3600 * 1000  # x-checkpoint-delay: no timer checkpoint while we look


def colo_capabilities(vm):
    """x-colo, with return-path where this QEMU requires it (and only there: before,
    a return-path thread takes COLO's own messages)."""
    caps = [{"capability": "x-colo", "state": True}]
    got = vm.qmp("migrate-set-capabilities", capabilities=caps)
    if "error" in got and "return-path" in got["error"]["desc"]:
        caps.append({"capability": "return-path", "state": True})
        got = vm.qmp("migrate-set-capabilities", capabilities=caps)
    if "error" in got:
        raise CannotRun(f"x-colo: {got['error']['desc']}")
    return caps


def main(workdir, launch):
    paths = secondary_chain(workdir)
    sec = launch("secondary", ["-incoming", "defer"])
    pri = launch("primary")
    open_secondary(
        sec,
        workdir,
        paths,
        active_file={
            "driver": "blkdebug",
            "node-name": "active-dbg",
            "image": {"driver": "file", "filename": paths["active"]},
        },
    )
    caps = colo_capabilities(sec)
    pri.ok("migrate-set-capabilities", capabilities=caps)
    pri.ok("migrate-set-parameters", **{"x-checkpoint-delay": DAY_MS})
    uri = "unix:" + os.path.join(workdir, "migrate.sock")
    sec.ok("migrate-incoming", uri=uri)
    pri.ok("migrate", uri=uri)
    pri.wait_event("RESUME")
    sec.wait_event("RESUME")
    time.sleep(0.5)
    modes = (pri.ok("query-colo-status")["mode"], sec.ok("query-colo-status")["mode"])
    if modes != ("primary", "secondary"):
        raise CannotRun(
            f"COLO did not start: query-colo-status modes {modes}, primary's "
            f"migration {pri.ok('query-migrate').get('status')} (10.0.0 to "
            "10.0.6 and 10.1.0 complete a plain migration: a known bug)"
        )
    print("COLO running: primary and secondary")
    sec.hmp('qemu-io active "break l1_update held"')
    pri.events.clear()
    pri.ok("migrate-set-parameters", **{"x-checkpoint-delay": DAY_MS})  # one checkpoint now
    if not pri.wait_event("STOP"):
        raise CannotRun("the primary's VM did not stop for the checkpoint")
    time.sleep(1.0)  # the secondary is held at the breakpoint, after VMSTATE_RECEIVED
    sec.proc.kill()
    sec.proc.wait()
    print(
        "checkpoint requested; the primary's VM stopped; the secondary SIGKILLed "
        "before it sent VMSTATE_LOADED"
    )
    if pri.wait_event("RESUME", timeout=0):
        raise CannotRun(
            "the checkpoint completed before the secondary was killed "
            "(the blkdebug breakpoint did not hold it)"
        )
    exited = pri.wait_event("COLO_EXIT", timeout=5.0)
    if exited:
        print(f"primary: COLO_EXIT {exited['data']} (expected)")
        return 0
    colo = pri.ok("query-colo-status")
    running = pri.ok("query-status")["running"]
    said = [ln for ln in pri.stderr().splitlines() if "COLO" in ln]
    return differ(
        "the primary, 5 s after its secondary died in the checkpoint",
        "COLO_EXIT (reason error): COLO ends, management can fail over",
        f"no COLO_EXIT; query-colo-status {colo}; VM running: {running}; stderr: {said}",
    )


if __name__ == "__main__":
    run(main)
