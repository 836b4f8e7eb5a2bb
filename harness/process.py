"""Process control for the QEMU binaries a case runs: children that cannot outlive the
harness, the command line of a QEMU driven over QMP and its lean accelerator option, exits
waited for on a pidfd, a stopped process told from a running one.

Spawning and reaping are independent of what the process is: harness.machine (QEMU over
QMP) and harness.qemu_io_process (an interactive qemu-io) start and reap theirs here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol


class Build(Protocol):
    """What a launcher needs from a QEMU build (harness.builds.QemuBuild has it)."""

    @property
    def system(self) -> str | os.PathLike[str]: ...

    @property
    def io(self) -> str | os.PathLike[str]: ...

    @property
    def qsd(self) -> str | os.PathLike[str]: ...

    @property
    def label(self) -> str: ...

    def env(self) -> dict[str, str]: ...

    def command(self, binary: str | os.PathLike[str]) -> list[str]: ...

    def data_args(self) -> list[str]: ...


def build_env(build: Build) -> dict[str, str]:
    """The environment to run a build's binaries: ours plus what the build adds."""
    return {**os.environ, **build.env()}


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when the spawning thread dies, even if it died already."""

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_setpriv: list[str] | None = None


def pdeathsig_wrapper() -> list[str]:
    """`setpriv --pdeathsig KILL --` when util-linux's setpriv can do it, else [].

    A preexec_fn makes subprocess fork the whole Python process (page tables, then
    copy-on-write faults in the parent); exec'ing setpriv from a vfork is cheaper and
    sets the same parent-death signal before it execs QEMU (the pid stays QEMU's).
    """
    global _setpriv
    if _setpriv is None:
        path = shutil.which("setpriv")
        ok = (
            path is not None
            and subprocess.run(
                [path, "--pdeathsig", "KILL", "--", "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
            ).returncode
            == 0
        )
        _setpriv = [path, "--pdeathsig", "KILL", "--"] if ok and path else []
    return _setpriv


def spawn(
    argv: Sequence[str],
    env: dict[str, str],
    stdout: Any,
    stderr: Any,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a helper process in its own session that cannot outlive this Python process."""
    wrapper = pdeathsig_wrapper()
    return subprocess.Popen(
        [*wrapper, *argv],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        preexec_fn=None if wrapper else die_with_parent(os.getpid()),
        close_fds=True,
    )


# binary -> the -accel arguments it takes (asked once per process)
# qemu-system's machine type when no guest runs
NO_MACHINE = "none"
_lean_accel: dict[str, tuple[str, ...]] = {}
LEAN_ACCEL = ("-accel", "tcg,tb-size=1")


def lean_accel(build: Build) -> tuple[str, ...]:
    """`-accel tcg,tb-size=1` when the build accepts it, else nothing.

    -M none runs no guest code, and a 1 MiB TCG buffer instead of the default 1 GiB
    takes about a quarter off QEMU's start-up CPU (mapping and splitting it is not
    free). Builds without TCG, or older than the tb-size property (5.0), are asked
    once: a short QMP session that only quits tells whether the option is taken.
    """
    key = os.fspath(build.system)
    if key not in _lean_accel:
        _lean_accel[key] = LEAN_ACCEL if _quits(build, LEAN_ACCEL) else ()
    return _lean_accel[key]


# the QEMU programs a case drives over QMP
Kind = Literal["system", "qsd"]


def qmp_command(
    build: Build, kind: Kind, sock: os.PathLike[str], machine_type: str, args: Sequence[str]
) -> list[str]:
    """The command line of a QEMU driven over QMP, a client of our socket `sock`, then
    `args`: qemu-system (paused, no display or default devices; the lean accelerator
    unless `machine_type` runs a guest) or qemu-storage-daemon."""
    if kind == "system":
        argv = [*build.command(build.system), "-M", machine_type, "-nodefaults"]
        argv += ["-display", "none", "-S", *build.data_args()]
        if machine_type == NO_MACHINE:
            argv += list(lean_accel(build))
        argv += ["-qmp", f"unix:{sock}"]
    else:
        argv = [*build.command(build.qsd), "--chardev", f"socket,id=qmp0,path={sock}"]
        argv += ["--monitor", "chardev=qmp0"]
    return argv + list(args)


# binary -> whether it runs a guest under KVM here (asked once per process)
_kvm: dict[str, bool] = {}


def kvm_usable(build: Build) -> bool:
    """Can `build` run a guest under KVM on this machine: /dev/kvm opens read-write and
    the build starts with `-accel kvm` (which opens it and creates a VM). Asked once a
    binary."""
    key = os.fspath(build.system)
    if key not in _kvm:
        _kvm[key] = os.access("/dev/kvm", os.R_OK | os.W_OK) and _quits(build, ("-accel", "kvm"))
    return _kvm[key]


def _quits(build: Build, accel: Sequence[str]) -> bool:
    """Does qemu-system -M none with `accel` start and quit cleanly (a short QMP session
    on stdio)?"""
    argv = [*build.command(build.system), "-M", NO_MACHINE, "-nodefaults", "-display", "none"]
    argv += ["-S", *accel, "-qmp", "stdio"]
    script = b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    try:
        return (
            subprocess.run(
                argv,
                input=script,
                env=build_env(build),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # the real launch reports what is wrong with the binary


def wait_process(proc: subprocess.Popen[bytes], timeout: float, pidfd: int | None = None) -> int:
    """Popen.wait(timeout) without its polling sleeps (0.5 ms, doubling up to 50 ms: a
    process that exits just after a sleep began is seen late): a pidfd (`pidfd`, else one
    opened here) becomes readable the moment the process exits.
    subprocess.TimeoutExpired if it does not."""
    if proc.returncode is not None:
        return proc.returncode
    own = pidfd is None
    if pidfd is None:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return proc.wait(timeout)
    try:
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        if not p.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        if own:
            os.close(pidfd)
    return proc.wait()


def is_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP, a fault case's doing: it can answer nothing);
    False when it is running, gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] in "Tt"


class Child:
    """A process `spawn` started, with its pidfd (open until `close`): its exit waited
    for without polling, SIGKILL with a deadline, a SIGSTOP seen to take effect."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._pidfd: int | None = os.pidfd_open(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pidfd(self) -> int:
        """Readable once the process exits (ValueError after `close`)."""
        if self._pidfd is None:
            raise ValueError(f"pid {self.pid}: pidfd closed")
        return self._pidfd

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal) once it exited, else None."""
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stopped(self) -> bool:
        return is_stopped(self.proc.pid)

    def wait(self, timeout: float) -> int:
        """The exit status once it exits; subprocess.TimeoutExpired if it does not."""
        return wait_process(self.proc, timeout, self._pidfd)

    def kill(self, timeout: float) -> bool:
        """SIGKILL and reap, if it is still there; False if it still is after `timeout` s
        (stuck in the kernel)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        return True

    def signal(self, sig: int, timeout: float) -> bool:
        """Send `sig`. A SIGSTOP returns once the process has stopped (or died), so the
        caller knows its state: False if it has not within `timeout` s."""
        self.proc.send_signal(sig)
        if sig != signal.SIGSTOP:
            return True
        flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG  # the status stays Popen's
        end = time.monotonic() + timeout
        while os.waitid(os.P_PID, self.proc.pid, flags) is None:
            if time.monotonic() >= end:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Close the pidfd (waits open their own from then on)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
