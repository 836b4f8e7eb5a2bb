#!/usr/bin/env python3
"""QEMU block replication: a replication start retried after "No top_bs or it is
invalid" aborts QEMU (error_setv: Assertion `*errp == NULL' failed).

The secondary's replication node names a top-id node that does not exist yet. The
first xen-set-replication fails, as it should; the second must fail the same way, and
once the named node exists a third must start replication. QEMU aborts on the second.

Binaries: $QEMU_PROG and $QEMU_IMG_PROG (as in iotests), else qemu-system-x86_64 and
qemu-img from PATH (built with --enable-replication). Exit 0: QEMU behaves; 1: the
bug, the first difference printed; 2: cannot run. Takes about a second.
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


BAD_TOP = "No top_bs or it is invalid"


def main(workdir, launch):
    paths = secondary_chain(workdir)
    vm = launch("secondary")
    # top-id names a quorum over rep, created only after the first attempt
    open_secondary(vm, workdir, paths, top_id="top")
    start = {"enable": True, "primary": False}
    got = vm.qmp("xen-set-replication", **start)
    if got.get("error", {}).get("class") == "CommandNotFound":
        raise CannotRun("this QEMU has no xen-set-replication (built without replication)")
    if got.get("error", {}).get("desc") != BAD_TOP:
        raise CannotRun(f"first start: expected the error {BAD_TOP!r}, got {got}")
    print(f"1st xen-set-replication: {BAD_TOP!r} (expected)")
    try:
        got = vm.qmp("xen-set-replication", **start)
    except Died as e:
        return differ(
            "the 2nd xen-set-replication (top-id still missing)", f"the error {BAD_TOP!r} again", e
        )
    if got.get("error", {}).get("desc") != BAD_TOP:
        return differ("the 2nd xen-set-replication", f"the error {BAD_TOP!r}", got)
    print(f"2nd xen-set-replication: {BAD_TOP!r} (expected)")
    vm.ok(
        "blockdev-add",
        driver="quorum",
        **{"node-name": "top"},
        children=["rep"],
        **{"vote-threshold": 1},
    )
    try:
        got = vm.qmp("xen-set-replication", **start)
    except Died as e:
        return differ("the 3rd xen-set-replication (top-id now valid)", "{}", e)
    if got != {"return": {}}:
        return differ("the 3rd xen-set-replication (top-id now valid)", "{}", got)
    status = vm.ok("query-xen-replication-status")
    if status.get("error"):
        return differ(
            "query-xen-replication-status after the 3rd start",
            "replication running, no error",
            status,
        )
    print("3rd xen-set-replication, with the top node created: started (expected)")
    return 0


if __name__ == "__main__":
    run(main)
