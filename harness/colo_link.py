"""COLO on real QEMU: the pair's migration with x-colo, its checkpoints and failovers.

QEMU shows COLO through QMP alone: `migrate-incoming`/`migrate` with the x-colo
capability start it, any `migrate-set-parameters x-checkpoint-delay` makes the
primary take a checkpoint at once (colo_checkpoint_delay_set), and
`x-colo-lost-heartbeat` fails a side over. None of them answers when the work is
done, so each step waits (with a deadline) until the pair has settled by what QEMU
shows: STOP/RESUME and COLO_EXIT events, query-colo-status, query-migrate, a process
that died. Then it observes each living side (harness.observe.ColoState) for the
model to judge. A pair that does not settle in time is a hang (DeadlineExceeded).

Events are read here and nowhere else while COLO runs, each machine's since the
last observation; they stay in the machine's transcript.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.machine import Machine
from harness.observe import ColoSideState, ColoState, Observation, compare
from harness.poll import DeadlineExceeded

# One checkpoint per request: the timer's own checkpoints come a day later.
CHECKPOINT_DELAY_MS = 24 * 3600 * 1000
SETTLE_DEADLINE = 10.0
# what the primary prints when a COLO message it waits for does not come
RECEIVE_FAILED = "Can't receive COLO message"
_PAUSE_MAX = 0.005


class ColoLink:
    """The migration between a COLO pair's two QEMUs, driven and watched over QMP.

    Each step takes the model's expected observation as a hint, like a read: it stops
    waiting as soon as QEMU shows it (a request nobody serves changes nothing, and
    nothing else would say when to stop looking). Without it, a step waits for what
    COLO always ends with (the RESUME of the primary, a COLO_EXIT, a death), so a QEMU
    that differs is reported at once, not at the deadline.
    """

    def __init__(self, primary: Machine, secondary: Machine, return_path: bool) -> None:
        self.primary = primary
        self.secondary = secondary
        self.return_path = return_path
        self.uri = f"unix:{secondary.sock_path('migrate.sock')}"
        # events since the last observation, per machine
        self.pending: dict[str, list[dict[str, Any]]] = {primary.name: [], secondary.name: []}
        # machines whose COLO thread has ended (a COLO_EXIT seen, ever)
        self.exited: set[str] = set()

    def sides(self) -> tuple[Machine, Machine]:
        return (self.primary, self.secondary)

    # ---- the steps

    def start(self, expected: Observation) -> Observation:
        """Migrate with x-colo; wait until each side runs its VM in COLO or has left."""
        caps = [{"capability": "x-colo", "state": True}]
        if self.return_path:
            caps.append({"capability": "return-path", "state": True})
        for m in self.sides():
            m.qmp_ok("migrate-set-capabilities", capabilities=caps)
        self.primary.qmp_ok("migrate-set-parameters", **{"x-checkpoint-delay": CHECKPOINT_DELAY_MS})
        self.secondary.qmp_ok("migrate-incoming", uri=self.uri)
        self.primary.qmp_ok("migrate", uri=self.uri)
        return self._settle(self._started, expected, "COLO to start on both sides")

    def _started(self) -> bool:
        p, s = self.primary, self.secondary
        if not (p.alive() and s.alive()):
            return True
        s_ok, s_exit = self._saw(s, "RESUME"), self._saw(s, "COLO_EXIT")
        p_ok, p_exit = self._saw(p, "RESUME"), self._saw(p, "COLO_EXIT")
        if p_exit:
            return s_ok or s_exit
        if s_ok and p_ok:
            return True
        if not s_exit:
            return False
        # the secondary left: the primary ran a plain migration to its end, or waits in
        # COLO for a READY that never comes
        return p_ok or self._migration_status(p) in ("completed", "failed", "cancelled")

    def checkpoint(
        self, expected: Observation, kill: tuple[Machine, Callable[[], object]] | None = None
    ) -> Observation:
        """Request a checkpoint on the primary; wait until its VM runs again or a side
        leaves COLO (a dead primary takes no request). `kill`: (victim, what kills it):
        the victim dies as soon as the other side's VM has stopped for the checkpoint;
        then wait until the survivor has resumed or left COLO."""
        p = self.primary
        if not p.alive():
            return self.observe()
        self._pump()
        before = self._count(p, "RESUME")
        p.qmp_ok("migrate-set-parameters", **{"x-checkpoint-delay": CHECKPOINT_DELAY_MS})
        if kill is not None:
            return self._interrupted(kill, expected)
        return self._settle(
            lambda: (
                self._count(p, "RESUME") > before
                or any(self._saw(m, "COLO_EXIT") for m in self.sides())
                or not (p.alive() and self.secondary.alive())
            ),
            expected,
            "the checkpoint to complete",
        )

    def _interrupted(
        self, kill: tuple[Machine, Callable[[], object]], expected: Observation
    ) -> Observation:
        victim, kill_it = kill
        survivor = self.secondary if victim is self.primary else self.primary
        stops = self._count(survivor, "STOP")
        self._wait(
            lambda: self._count(survivor, "STOP") > stops or not self._checkpointing(),
            f"{survivor.name}'s VM to stop for the checkpoint",
        )
        resumes = self._count(survivor, "RESUME")
        stderr = survivor.stderr_path.stat().st_size
        kill_it()

        def ended() -> bool:
            if not survivor.alive() or self._saw(survivor, "COLO_EXIT"):
                return True
            if survivor is self.secondary:
                return False  # its receive fails at once, whatever it got done
            # the primary: its VM runs again, or its transaction failed (printed) and its
            # thread carries on (COLO_TRANSACTION_ERROR_IGNORED)
            return self._count(survivor, "RESUME") > resumes or _printed_since(
                survivor, stderr, RECEIVE_FAILED
            )

        return self._settle(ended, expected, f"{survivor.name} to settle after the kill")

    def _checkpointing(self) -> bool:
        """Can a requested checkpoint begin: both sides alive and in COLO, neither's COLO
        thread ended?"""
        p = self.primary
        if not (p.alive() and self.secondary.alive()) or self.exited:
            return False
        return self._colo_mode(p) == "primary"

    def lost_heartbeat(self, machine: Machine, expected: Observation) -> Observation:
        """x-colo-lost-heartbeat on `machine`: QEMU's error, or, once the side has left
        COLO and runs its VM again, the pair's state."""
        res = machine.qmp("x-colo-lost-heartbeat")
        if not res.ok:
            return res

        def done() -> bool:
            if not machine.alive():
                return True
            if machine.name not in self.exited:
                return False
            return self._colo_mode(machine) == "none" and self._running(machine)

        return self._settle(done, expected, f"{machine.name} to fail over")

    # ---- observing

    def observe(self) -> ColoState:
        """Each living side's state and events since the last observation (taken)."""
        state = self._snapshot()
        for m in self.sides():
            self.pending[m.name].clear()
        return state

    def _snapshot(self) -> ColoState:
        """query-colo-status and query-status of each living side, then the events it
        sent before answering: one round trip after an event elsewhere, every event
        emitted before that one is read too."""
        queried = []
        for m in self.sides():
            if m.alive():
                queried.append((m, m.qmp_ok("query-colo-status"), self._running(m)))
        self._pump()
        sides = []
        for m, st, running in queried:
            evs = [e["event"] for e in self.pending[m.name]]
            exits = [e for e in self.pending[m.name] if e["event"] == "COLO_EXIT"]
            reason = exits[0].get("data", {}).get("reason") if len(exits) == 1 else None
            sides.append(
                ColoSideState(
                    m.name,
                    st["mode"],
                    st["last-mode"],
                    st["reason"],
                    running,
                    tuple(e for e in evs if e in ("STOP", "RESUME")),
                    reason if len(exits) <= 1 else f"{len(exits)} COLO_EXIT events",
                )
            )
        return ColoState(tuple(sides))

    # ---- QEMU's side of it

    def _pump(self) -> None:
        for m in self.sides():
            if m.alive():
                evs = m.events()
                self.pending[m.name] += evs
                if any(e["event"] == "COLO_EXIT" for e in evs):
                    self.exited.add(m.name)

    def _saw(self, m: Machine, event: str) -> bool:
        return self._count(m, event) > 0

    def _count(self, m: Machine, event: str) -> int:
        return sum(1 for e in self.pending[m.name] if e["event"] == event)

    @staticmethod
    def _colo_mode(m: Machine) -> str:
        return str(m.qmp_ok("query-colo-status")["mode"])

    @staticmethod
    def _running(m: Machine) -> bool:
        return bool(m.qmp_ok("query-status")["running"])

    @staticmethod
    def _migration_status(m: Machine) -> str | None:
        st = m.qmp_ok("query-migrate").get("status")
        return None if st is None else str(st)

    def _settle(self, settled: Callable[[], bool], expected: Observation, what: str) -> Observation:
        """Poll until QEMU shows `expected` or `settled` holds, then observe; a hang past
        SETTLE_DEADLINE (naming what the model expected and what QEMU showed last)."""
        last: list[ColoState] = []

        def done() -> bool:
            last[:] = [self._snapshot()]
            return compare(expected, last[0]) is None or settled()

        try:
            self._wait(done, what)
        except DeadlineExceeded as e:
            shown = last[0].describe() if last else "nothing"
            raise DeadlineExceeded(
                f"{e.what}; the model expected {expected.describe()}; QEMU showed {shown}",
                SETTLE_DEADLINE,
            ) from None
        return self.observe()

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        """Poll (events first) until `done`; a hang past SETTLE_DEADLINE."""
        end = time.monotonic() + SETTLE_DEADLINE
        pause = 0.0002
        while True:
            self._pump()
            if done():
                return
            if time.monotonic() >= end:
                seen = {m.name: [e["event"] for e in self.pending[m.name]] for m in self.sides()}
                raise DeadlineExceeded(f"{what} (events seen: {seen})", SETTLE_DEADLINE)
            time.sleep(pause)
            pause = min(pause * 2, _PAUSE_MAX)


def _printed_since(m: Machine, offset: int, text: str) -> bool:
    """Has `m` written `text` to its stderr past byte `offset`?"""
    with open(m.stderr_path, "rb") as f:
        f.seek(offset)
        return text.encode() in f.read()
