"""COLO's calls into the filter (migration/colo.c), modelled once for every release.

COLO drives the replication nodes of each side through the `*_all` layer of that
process, as the Xen hooks do, but in its own order and with its own reaction to
an error:

- **start** (the migration with x-colo reaches COLO): the secondary's incoming
  thread calls `replication_start_all(SECONDARY)`, starts its VM (RESUME) and only
  then sends CHECKPOINT_READY; the primary, on READY, calls
  `replication_start_all(PRIMARY)` and starts its VM. An error ends that side's COLO
  thread (COLO_EXIT reason error) and leaves its VM stopped; the peer then waits
  for a message that never comes.
- **checkpoint** (x-checkpoint-delay's timer, or any `migrate-set-parameters
  x-checkpoint-delay`): the secondary stops its VM on the request, the primary stops
  its VM (both drain and flush) and calls `replication_do_checkpoint_all`, which does
  nothing on a primary node; the secondary, with the device state loaded, calls
  `replication_get_error_all`, then `replication_do_checkpoint_all`, then starts its
  VM; the primary starts its VM when the secondary says LOADED. An error on the
  secondary ends its COLO thread with its VM stopped, and the primary stays stopped
  waiting for LOADED. The primary's own replication error (its NBD link lost) is
  never asked for: COLO goes on without the secondary's copy.
- **failover** (`x-colo-lost-heartbeat` on one side): that side stops its VM if it
  runs, calls `replication_stop_all(failover=true)` (errors only printed), leaves
  COLO (mode none, reason request) and runs its VM again. The COLO_EXIT event's
  reason races the failover (the thread may leave its loop on the shut-down socket
  before the failover is marked completed), so either reason is allowed.

A side whose peer died notices it at its next receive: the secondary at once (it
waits for the next request), the primary at its next checkpoint.

Release differences are facts of the profile: the capabilities COLO needs
(`colo_needs_return_path`), 10.0.0 to 10.1's migration that never enters COLO on
the primary (`colo_plain_migration`), the texts, and `last-mode` before 6.2.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Protocol

from harness.model.profiles import Profile
from harness.observe import ColoSideState, ColoState, Observation, OneOf
from harness.topology.values import Mode

REQUEST = "request"
ERROR = "error"


class ColoMode(enum.Enum):
    """query-colo-status's mode (and last-mode)."""

    NONE = "none"
    PRIMARY = "primary"
    SECONDARY = "secondary"


class Wait(enum.Enum):
    """What a side's COLO thread is blocked on (harness.model.colo's module docstring).

    The primary's thread waits for the next checkpoint request (REQUEST: it does not
    notice a dead secondary) or, in a checkpoint, for a message of the secondary
    (READY, REPLY, LOADED: a dead secondary fails its receive). The secondary's thread
    always waits in a receive from the primary (MESSAGE)."""

    REQUEST = "request"
    READY = "ready"
    REPLY = "reply"
    LOADED = "loaded"
    MESSAGE = "message"


@dataclass(eq=False)
class ColoSide:
    """One QEMU's COLO state as query-colo-status, query-status and COLO_EXIT show it."""

    machine: str
    role: ColoMode
    mode: ColoMode = ColoMode.NONE
    last_mode: ColoMode = ColoMode.NONE
    # failover completed on this side: query-colo-status's reason is "request"
    failed_over: bool = False
    running: bool = False
    # what its COLO thread is blocked on; None: no thread (not started, or ended)
    waits: Wait | None = None
    # its COLO thread has ended (it emits COLO_EXIT once)
    exited: bool = False
    # the COLO_EXIT reasons this side may have emitted since the last observation
    # (more than one: racing, any of them), None: no event
    pending_exit: tuple[str, ...] | None = None
    # its VM's STOP and RESUME events since the last observation
    runs: list[str] = field(default_factory=list)
    gone: bool = False
    # its end of the migration stream is closed: it died, or its failover shut it down
    hung_up: bool = False

    @property
    def in_loop(self) -> bool:
        """Its COLO thread runs."""
        return self.waits is not None

    def stop_vm(self) -> None:
        """vm_stop_force_state(RUN_STATE_COLO): STOP if the VM ran."""
        if self.running:
            self.running = False
            self.runs.append("STOP")

    def start_vm(self) -> None:
        """vm_start: RESUME if the VM was stopped."""
        if not self.running:
            self.running = True
            self.runs.append("RESUME")

    def leave_loop(self, reasons: tuple[str, ...]) -> None:
        """Its COLO thread ends: one COLO_EXIT with one of `reasons`."""
        if self.exited:
            return
        self.waits = None
        self.exited = True
        self.pending_exit = reasons


class ReplicationAll(Protocol):
    """The filter calls COLO makes: a machine's `*_all` layer (the Model's). Each
    returns the first error text, or None."""

    def start_all(self, machine: str, mode: Mode) -> str | None: ...

    def checkpoint_all(self, machine: str) -> str | None: ...

    def get_error_all(self, machine: str) -> str | None: ...

    def stop_all(self, machine: str, failover: bool) -> str | None: ...


@dataclass(eq=False)
class Colo:
    """The COLO pair's state and the filter calls each COLO step makes."""

    profile: Profile
    primary: ColoSide
    secondary: ColoSide
    filter: ReplicationAll
    started: bool = False

    @classmethod
    def pair(cls, profile: Profile, primary: str, secondary: str, filter: ReplicationAll) -> Colo:
        return cls(
            profile,
            ColoSide(primary, ColoMode.PRIMARY),
            ColoSide(secondary, ColoMode.SECONDARY),
            filter,
        )

    def sides(self) -> tuple[ColoSide, ColoSide]:
        return (self.primary, self.secondary)

    def side(self, machine: str) -> ColoSide:
        for s in self.sides():
            if s.machine == machine:
                return s
        raise KeyError(f"{machine} is not a side of the COLO pair")

    # ---- COLO's steps

    def start(self) -> Observation:
        """migrate with x-colo: the secondary starts, then the primary (COLO's order)."""
        if self.started:
            raise ValueError("COLO was started already: a pair migrates once")
        self.started = True
        p, s = self.primary, self.secondary
        s.mode = ColoMode.SECONDARY
        self._first_last_mode(s)
        if self.profile.colo_plain_migration is None:
            # the primary enters COLO at the end of its migration, before it waits
            # for the secondary's READY
            p.mode = ColoMode.PRIMARY
            self._first_last_mode(p)
        if p.mode is ColoMode.PRIMARY:
            p.waits = Wait.READY
        s.waits = Wait.MESSAGE
        err = self.filter.start_all(s.machine, Mode.SECONDARY)
        if err is not None:
            s.leave_loop((ERROR,))
            return self.observe()
        s.start_vm()
        if self.profile.colo_plain_migration is not None:
            # The primary completes a plain migration (its VM stays stopped), which the
            # secondary sees as its stream ending.
            s.leave_loop((ERROR,))
            return self.observe()
        err = self.filter.start_all(p.machine, Mode.PRIMARY)
        if err is not None:
            p.leave_loop((ERROR,))  # the secondary waits for a request that never comes
            return self.observe()
        p.start_vm()
        p.waits = Wait.REQUEST
        return self.observe()

    def _first_last_mode(self, side: ColoSide) -> None:
        if self.profile.colo_last_mode_at_start:
            side.last_mode = side.mode

    def checkpoint(self) -> Observation:
        """A checkpoint requested on the primary (migrate-set-parameters)."""
        self._checkpoint()
        return self.observe()

    def _checkpoint(self) -> None:
        p, s = self.primary, self.secondary
        if p.gone or p.waits is not Wait.REQUEST:
            return  # nobody waits for the request
        if s.hung_up:
            # the request cannot be sent: the primary's thread ends, its VM runs on
            p.leave_loop((ERROR,))
            return
        if not s.in_loop:
            # sent to a secondary whose thread ended: no REPLY comes
            p.waits = Wait.REPLY
            return
        s.stop_vm()
        p.stop_vm()
        err = self.filter.checkpoint_all(p.machine)
        if err is not None:
            p.leave_loop((ERROR,))  # the secondary waits for the device state
            return
        err = self.filter.get_error_all(s.machine)
        if err is None:
            err = self.filter.checkpoint_all(s.machine)
        if err is not None:
            s.leave_loop((ERROR,))
            p.waits = Wait.LOADED  # which never comes
            return
        s.start_vm()
        p.start_vm()

    def interruptions(self, victim: str) -> tuple[str, ...]:
        """How a checkpoint whose `victim` dies once the other side's VM stopped can
        end, by how far it got (QEMU's timing decides): `completed` (as far as the
        checkpoint goes without the death: the survivor's replication checkpoint and
        RESUME), `failed` (the survivor's COLO thread saw the error and ended),
        `ignored` (the profile's known bug: the primary's transaction fails receiving
        RECEIVED or LOADED and carries on, its VM stopped). A checkpoint that cannot
        begin is only the kill (`none`)."""
        p, s = self.primary, self.secondary
        if p.gone or p.waits is not Wait.REQUEST or s.gone or not s.in_loop:
            return ("none",)
        if victim == s.machine and self.profile.colo_transaction_error_ignored is not None:
            return ("completed", "failed", "ignored")
        return ("completed", "failed")

    def interrupted(self, victim: str, branch: str) -> None:
        """The checkpoint of `interruptions` as far as `branch`; the caller then kills
        the victim (`gone`, which the survivor notices)."""
        p, s = self.primary, self.secondary
        if branch == "none":
            return
        if branch == "completed":
            self._checkpoint()
            return
        s.stop_vm()
        p.stop_vm()
        if victim == s.machine:
            # the primary waits for RECEIVED or LOADED: failed, it ends; ignored, gone()
            # takes it back to its loop
            p.waits = Wait.LOADED
            if branch == "failed":
                p.leave_loop((ERROR,))

    def lost_heartbeat(self, machine: str) -> str | None:
        """x-colo-lost-heartbeat on `machine`: QEMU's error text, or None (then observe)."""
        side = self.side(machine)
        if side.mode is ColoMode.NONE:
            return self.profile.texts.colo_not_enabled
        # (a second request while the first one runs, "COLO failover is already
        # activated", cannot be seen: a failover leaves COLO before QMP answers again)
        side.stop_vm()
        self.filter.stop_all(machine, failover=True)
        side.last_mode = side.mode
        side.mode = ColoMode.NONE
        side.failed_over = True
        side.start_vm()
        side.leave_loop((REQUEST, ERROR))
        self._hang_up(side)  # the failover shuts its end of the stream down
        return None

    def quit_may_crash(self, machine: str) -> bool:
        """Does quit risk the profile's crash (the primary's COLO thread has ended)?"""
        return (
            self.profile.colo_quit_crashes is not None
            and machine == self.primary.machine
            and self.primary.exited
        )

    def gone(self, machine: str) -> None:
        """`machine` died or quit: its end of the stream closes (`_hang_up`)."""
        side = self.side(machine)
        side.gone = True
        side.waits = None
        self._hang_up(side)

    def _hang_up(self, side: ColoSide) -> None:
        """`side`'s end of the stream is closed: a peer blocked in a receive from it
        notices at once (the secondary always; the primary when it waits for READY,
        REPLY or LOADED), a primary waiting for a request at its next one."""
        side.hung_up = True
        peer = self.secondary if side is self.primary else self.primary
        if peer.waits is Wait.LOADED and self.profile.colo_transaction_error_ignored is not None:
            # COLO_TRANSACTION_ERROR_IGNORED: back to waiting for a request, VM stopped
            peer.waits = Wait.REQUEST
        elif peer.waits in (Wait.MESSAGE, Wait.READY, Wait.REPLY, Wait.LOADED):
            peer.leave_loop((ERROR,))

    # ---- observing

    def observe(self) -> Observation:
        """Each living side's state and the COLO_EXIT events since the last observation."""
        choices: list[list[ColoSideState]] = []
        for side in self.sides():
            if side.gone:
                continue
            reasons: tuple[str | None, ...] = side.pending_exit or (None,)
            side.pending_exit = None
            choices.append([self._state(side, r) for r in reasons])
            side.runs.clear()
        alts = tuple(ColoState(tuple(c)) for c in itertools.product(*choices))
        return alts[0] if len(alts) == 1 else OneOf(alts)

    def _state(self, side: ColoSide, exit_reason: str | None) -> ColoSideState:
        return ColoSideState(
            side.machine,
            side.mode.value,
            side.last_mode.value,
            REQUEST if side.failed_over else "none",
            side.running,
            tuple(side.runs),
            exit_reason,
        )
