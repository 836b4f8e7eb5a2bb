"""One QEMU process per worker and build, reused by every case that needs only a fresh graph.

Launching `qemu-system-x86_64 -M none` and quitting it costs about 45 ms of CPU, more
than a whole case's QMP work. A case that builds its graph in a QEMU which is in the
state a fresh one starts in sees what it would see in a fresh one; so between cases the
QEMU's graph is torn down and QEMU is asked whether it is pristine (harness.pristine),
and only then does the next case get it. Otherwise a fresh one is started.

- `MachineSet.launch` asks `Pool.take` first. Only a qemu-system without extra
  arguments comes from the pool; a storage daemon, or a QEMU with arguments of its
  own, is launched fresh and quit as before. `take` checks the idle QEMU it picks
  (`leftovers`: nothing may be left, by QEMU's own answers, see harness.pristine) and
  quits it if anything is; it launches a new one when none is idle.
- `MachineSet.shutdown_all` offers each machine back (`Pool.give_back`). A machine is
  reused only when the case left it connected, running and never signalled (a kill, a
  SIGSTOP: the transcript says so), and when `teardown` undid its graph without
  refusal (exports, NBD server, replication, nodes, objects: see harness.pristine).
  Anything else (a dead or hung QEMU, a job, a node QEMU will not delete) returns
  False, and the set quits it as it always did.
- The case's handle on the process (`PooledMachine`) is its own: its name, transcript,
  log directory (the case's; stdout.log and stderr.log hold what QEMU printed during the
  case only), and events (those still unread at the end go into its transcript). Once
  given back it behaves as a machine that quit cleanly (not alive, exit status 0, any
  command answers that it is not running), so reports and layer checks read it as they
  read a fresh QEMU after `quit`.

`--fresh-qemu` (pytest), `QRC_FRESH_QEMU=1` (environment) and the marker `fresh_qemu`
(a case that needs a fresh process's own state) turn the pool off: every machine is
launched and quit, as before the pool. The pool keeps at most IDLE_PER_BUILD idle
QEMUs per build and IDLE_TOTAL in all (least recently used quit first), and quits
them when the session ends; they die with the worker in any case (their parent-death
signal).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.machine import Kind, Machine, MachineError, Runstate
from harness.pristine import Fresh, TeardownRefused, fresh_state, leftovers, teardown
from harness.process import Build
from harness.tmp import private_dir

ENV = "QRC_FRESH_QEMU"
LOG_ENV = "QRC_POOL_LOG"
MARKER = "fresh_qemu"
IDLE_PER_BUILD = 2
IDLE_TOTAL = 10


def fresh_by_environment(environ: Mapping[str, str] | None = None) -> bool:
    """QRC_FRESH_QEMU set to anything but "", "0", "no", "false": a fresh QEMU per case."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return value.strip().lower() not in ("", "0", "no", "false")


@dataclass(eq=False)
class _Slot:
    """One pooled process: the Machine that launched it (its process state) and what it
    answered when fresh."""

    machine: Machine
    fresh: Fresh
    key: tuple[str, str]
    served: int = 0
    handle: PooledMachine | None = None


class PooledMachine(Machine):
    """A case's handle on a pooled QEMU process (see the module's docstring)."""

    _slot: _Slot
    _released: bool
    _case_stdout: Path
    _case_stderr: Path
    _pool_stdout: Path
    _pool_stderr: Path
    _marks: tuple[int, int]

    @classmethod
    def adopt(cls, slot: _Slot, workdir: Path, name: str) -> PooledMachine:
        h = cls.__new__(cls)
        state = dict(slot.machine.__dict__)
        pool_out, pool_err = state.pop("stdout_path"), state.pop("stderr_path")
        h.__dict__.update(state)
        h.name = name
        h.logdir = workdir / name
        h.logdir.mkdir(parents=True, exist_ok=True)
        h.transcript = []
        h._t0 = time.monotonic()
        h._slot = slot
        h._released = False
        h._pool_stdout, h._pool_stderr = pool_out, pool_err
        h._case_stdout, h._case_stderr = h.logdir / "stdout.log", h.logdir / "stderr.log"
        h._marks = (_size(pool_out), _size(pool_err))
        slot.served += 1
        slot.handle = h
        h._record(
            {
                "event": f"from the pool: pid {h.pid}, case {slot.served} of this QEMU "
                f"(launched as {slot.machine.name}; harness.pool)"
            }
        )
        h._sync_logs()
        return h

    # ---- logs: the case's part of what QEMU printed, in the case's log directory

    def _sync_logs(self) -> None:
        if self._released:
            return
        for src, dst, mark in (
            (self._pool_stdout, self._case_stdout, self._marks[0]),
            (self._pool_stderr, self._case_stderr, self._marks[1]),
        ):
            with contextlib.suppress(OSError), open(src, "rb") as f, open(dst, "wb") as out:
                f.seek(mark)
                shutil.copyfileobj(f, out)

    @property
    def stdout_path(self) -> Path:
        self._sync_logs()
        return self._case_stdout

    @stdout_path.setter
    def stdout_path(self, value: Path) -> None:
        self._case_stdout = value

    @property
    def stderr_path(self) -> Path:
        self._sync_logs()
        return self._case_stderr

    @stderr_path.setter
    def stderr_path(self, value: Path) -> None:
        self._case_stderr = value

    # ---- once given back: a machine that quit cleanly

    def release(self) -> None:
        """The case is done with this process, which stays in the pool."""
        self._sync_logs()
        self._released = True
        self.state = Runstate.CLOSED
        self._slot.handle = None

    def alive(self) -> bool:
        return not self._released and super().alive()

    @property
    def returncode(self) -> int | None:
        return 0 if self._released else super().returncode

    def kill(self, sig: int = 9) -> None:
        if not self._released:
            super().kill(sig)

    def wait_exit(self, timeout: float) -> int:
        return 0 if self._released else super().wait_exit(timeout)

    def stopped(self) -> bool:
        return not self._released and super().stopped()

    def _force_kill(self) -> None:
        if not self._released:
            super()._force_kill()

    def _release(self) -> None:
        if not self._released:
            self._sync_logs()
            super()._release()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _signalled(m: Machine) -> bool:
    """The harness sent this machine a signal (Machine.kill records it)."""
    return any(str(e.get("event", "")).startswith("sent ") for e in m.transcript)


@dataclass(eq=False)
class Pool:
    """The idle QEMUs of one process (a pytest worker), by build."""

    idle_per_build: int = IDLE_PER_BUILD
    idle_total: int = IDLE_TOTAL
    idle: list[_Slot] = field(default_factory=list)  # least recently used first
    launched: int = 0
    reused: int = 0
    # why a QEMU was not reused, newest last (the pool's own log, for tests and reports)
    refusals: list[str] = field(default_factory=list)
    _dir: Path | None = None

    def workdir(self) -> Path:
        if self._dir is None:
            self._dir = private_dir("qrc-pool-")
        return self._dir

    @staticmethod
    def key(build: Build) -> tuple[str, str]:
        return os.fspath(build.system), build.label

    def take(
        self,
        build: Build,
        workdir: Path,
        name: str,
        kind: Kind = "system",
        args: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> Machine | None:
        """A pristine qemu-system of `build` for a case, as machine `name`; None when the
        pool does not serve this kind of machine (the caller launches it fresh)."""
        if kind != "system" or args:
            return None
        key = self.key(build)
        while True:
            slot = next((s for s in reversed(self.idle) if s.key == key), None)
            if slot is None:
                break
            self.idle.remove(slot)
            h = PooledMachine.adopt(slot, workdir, name)
            found = self._not_pristine(h, slot.fresh)
            if not found:
                self.reused += 1
                return h
            self.refusals.append(f"{slot.machine.name} (pid {h.pid}): " + "; ".join(found))
            h.shutdown()
        self.launched += 1
        m = Machine.launch(build, self.workdir(), f"qemu-{self.launched}", timeout=timeout)
        try:
            fresh = fresh_state(m)
        except BaseException:
            m.shutdown()
            raise
        return PooledMachine.adopt(_Slot(m, fresh, key), workdir, name)

    @staticmethod
    def _not_pristine(m: Machine, fresh: Fresh) -> list[str]:
        """What QEMU says is left in `m` (harness.pristine.leftovers); [] when pristine."""
        if not m.alive():
            return [f"not running ({m.returncode})"]
        try:
            return leftovers(m, fresh)
        except MachineError as e:
            return [e.summary]

    def give_back(self, m: Machine) -> bool:
        """Take `m` back for another case if its graph can be undone and nothing else
        is left; False: the caller shuts it down (a plain quit, as without the pool)."""
        if not isinstance(m, PooledMachine) or m._released:
            return False
        slot = m._slot
        why = self._unusable(m)
        if not why:
            try:
                m.events()  # events nobody read: this case's, into its transcript
                teardown(m, slot.fresh)
            except TeardownRefused as e:
                why = f"teardown refused: {e}"
            except MachineError as e:
                why = f"teardown failed: {e.summary}"
        if why:
            self.refusals.append(f"{m.name} (pid {m.pid}): {why}")
            m._record({"event": f"not reused: {why} (harness.pool)"})
            return False
        m.release()
        self.idle.append(slot)
        self._trim()
        return True

    @staticmethod
    def _unusable(m: PooledMachine) -> str:
        if m.state is not Runstate.RUNNING:
            return "its QMP connection is closed (a command was cut short or QEMU died)"
        if not m.alive():
            return f"QEMU exited ({m.returncode})"
        if _signalled(m):
            return "the case sent it a signal"
        if m.stopped():
            return "stopped"
        return ""

    def _trim(self) -> None:
        while len(self.idle) > self.idle_total:
            self._quit(self.idle.pop(0))
        for slot in list(self.idle):
            same = [s for s in self.idle if s.key == slot.key]
            if len(same) > self.idle_per_build:
                self.idle.remove(same[0])
                self._quit(same[0])

    @staticmethod
    def _quit(slot: _Slot) -> None:
        slot.machine.shutdown()
        shutil.rmtree(slot.machine.logdir, ignore_errors=True)

    def idle_pids(self) -> set[int]:
        return {s.machine.pid for s in self.idle if s.machine.alive()}

    def close(self) -> None:
        """Quit every idle QEMU and remove the pool's directory."""
        while self.idle:
            self._quit(self.idle.pop())
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stats(self) -> dict[str, Any]:
        return {"launched": self.launched, "reused": self.reused, "idle": len(self.idle)}


_pool: Pool | None = None


def worker_pool() -> Pool:
    """This process's pool (one per pytest worker)."""
    global _pool
    if _pool is None:
        _pool = Pool()
    return _pool


def close_worker_pool() -> None:
    """Quit the idle QEMUs. With QRC_POOL_LOG=FILE, append what the pool did (launched,
    reused, why each QEMU was not reused) to FILE as one JSON line."""
    global _pool
    if _pool is not None:
        log = os.environ.get(LOG_ENV)
        if log:
            record = {"pid": os.getpid(), **_pool.stats(), "refusals": _pool.refusals}
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")
        _pool.close()
        _pool = None


def idle_pids() -> set[int]:
    """The idle pooled QEMUs of this process (not leaks: the pool quits them at the end)."""
    return set() if _pool is None else _pool.idle_pids()
