"""Measuring for benchmarks/case_floor.py: CPU and wall phase by phase inside a process
(Meter, Phases, report: the floor's marks, and benchmarks/case_floor_hook.py's timing of
a pytest run), and whole processes measured from outside (run_child: wall, and the
process tree's CPU from os.wait4)."""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHILD_DEADLINE = 180.0

# ---------------------------------------------------------------------------------------
# CPU accounting of a process and its children, phase by phase


def _task_cpu(pid: int) -> float:
    """Seconds of CPU of a live process, all its threads (schedstat: nanoseconds)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


class Meter:
    """(wall, own CPU, children's CPU) now. Children's CPU is the waited-for children's
    (RUSAGE_CHILDREN) plus each live child's threads so far (/proc schedstat), so a
    QEMU's CPU is charged to the phase that spent it, not to the one that reaps it."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.samples = 0

    def children(self) -> list[int]:
        pids: list[int] = []
        try:
            tids = os.listdir(f"/proc/{self.me}/task")
        except OSError:
            return pids
        for tid in tids:
            try:
                with open(f"/proc/{self.me}/task/{tid}/children") as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                continue
        return pids

    def sample(self) -> tuple[float, float, float]:
        self.samples += 1
        wall = time.perf_counter()
        own = time.process_time()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        kids = ru.ru_utime + ru.ru_stime + sum(_task_cpu(p) for p in self.children())
        return wall, own, kids


class Phases:
    """Exclusive time per phase: a stack of phases, each sample charged to the top one."""

    def __init__(self, meter: Meter, first: str) -> None:
        self.meter = meter
        self.stack = [first]
        self.acc: dict[str, list[float]] = {}
        self.last = meter.sample()

    def _charge(self) -> None:
        now = self.meter.sample()
        row = self.acc.setdefault(self.stack[-1], [0.0, 0.0, 0.0, 0])
        for i in range(3):
            row[i] += now[i] - self.last[i]
        self.last = now

    def enter(self, label: str) -> None:
        self._charge()
        self.stack.append(label)
        self.acc.setdefault(label, [0.0, 0.0, 0.0, 0])[3] += 1

    def exit(self) -> None:
        self._charge()
        self.stack.pop()

    def switch(self, label: str) -> None:
        """End the current phase and start `label` at the same depth."""
        self._charge()
        self.stack[-1] = label
        self.acc.setdefault(label, [0.0, 0.0, 0.0, 0])[3] += 1

    def result(self) -> dict[str, dict[str, float]]:
        self._charge()
        return {
            k: {"wall": v[0], "cpu_own": v[1], "cpu_children": v[2], "cpu": v[1] + v[2]}
            for k, v in self.acc.items()
        }


STARTUP = "python start-up and imports"
EXIT = "exit: interpreter finalization (module teardown, GC)"


def report(ph: Phases, n: int = 50) -> dict[str, Any]:
    """The phases, how many samples they took and what one costs (measured here, after
    the last mark: `calibration` is what measuring it took, for the caller to subtract
    from the time it sees after the last mark)."""
    phases = ph.result()
    samples = ph.meter.samples
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        ph.meter.sample()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "phases": phases,
        "samples": samples,
        "sample_cpu": cpu / n,
        "calibration": {"wall": wall, "cpu": cpu},
    }


# ---------------------------------------------------------------------------------------
# Whole processes, measured from outside


def run_child(argv: Sequence[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Spawn, wait (with a deadline), and measure: wall and the process tree's CPU."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        env = {**env, "QRC_PHASES_T0": repr(time.monotonic())}
        t = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        fd = os.pidfd_open(proc.pid)
        try:
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            if not poll.poll(int(CHILD_DEADLINE * 1000)):
                os.killpg(proc.pid, signal.SIGKILL)
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            os.close(fd)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "wall": wall,
            "cpu": ru.ru_utime + ru.ru_stime,
            "cpu_user": ru.ru_utime,
            "cpu_sys": ru.ru_stime,
            "rc": proc.returncode,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }
