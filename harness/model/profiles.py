"""Version profiles: what changed in the replication filter, release by release.

A case states one expectation; the model asks the profile how the probed QEMU
version answers. Known QEMU bugs are facts of a profile too, so a case can be
a strict expected failure that turns red the day QEMU fixes the bug.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Profile:
    """Behaviour switches of one QEMU release line (see replication-behaviour.md)."""

    name: str
    version: tuple[int, int, int]
    # 5.0: start/stop/checkpoint return silently in DONE and FAILOVER.
    ignore_after_failover: bool
    # 5.0: get_error fails only in NONE (seed: in every stage but RUNNING).
    get_error_only_none: bool
    # 5.1: backup job pointer cleared on cleanup: a plain secondary stop then fails
    # its checkpoint with "Backup job was cancelled unexpectedly" and leaves the
    # active and hidden disks as they were.
    plain_stop_skips_empty: bool
    # 5.1: "Failed to empty <file>: <strerror>" instead of "Cannot make ... empty".
    failed_to_empty_message: bool
    # Before 6.1 a write in FAILOVER_FAILED crashed QEMU.
    failover_failed_write_crashes: bool
    # Known bug: a second start after "No top_bs or it is invalid" trips
    # error_setv's assertion (the blocker Error leaks) and QEMU aborts.
    start_retry_after_bad_top_aborts: bool
    # 10.0: every HMP qemu-io drains the graph (releases throttled/held requests).
    hmp_qemu_io_drains: bool

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.version[:2] >= (major, minor)


SEED_4_1 = Profile(
    name="4.1",
    version=(4, 1, 0),
    ignore_after_failover=False,
    get_error_only_none=False,
    plain_stop_skips_empty=False,
    failed_to_empty_message=False,
    failover_failed_write_crashes=True,
    start_retry_after_bad_top_aborts=True,
    hmp_qemu_io_drains=False,
)
V5_0 = replace(
    SEED_4_1, name="5.0", version=(5, 0, 0), ignore_after_failover=True, get_error_only_none=True
)
V5_1 = replace(
    V5_0,
    name="5.1",
    version=(5, 1, 0),
    plain_stop_skips_empty=True,
    failed_to_empty_message=True,
)
V6_1 = replace(V5_1, name="6.1", version=(6, 1, 0), failover_failed_write_crashes=False)
V7_2 = replace(V6_1, name="7.2", version=(7, 2, 0))
V10_0 = replace(V7_2, name="10.0", version=(10, 0, 0), hmp_qemu_io_drains=True)

PROFILES: tuple[Profile, ...] = (SEED_4_1, V5_0, V5_1, V6_1, V7_2, V10_0)


def profile_for(version: tuple[int, int, int]) -> Profile:
    """The newest profile not newer than `version` (older than 4.1 gets the seed's)."""
    chosen = SEED_4_1
    for p in PROFILES:
        if p.version[:2] <= version[:2]:
            chosen = p
    return chosen


def profile_named(name: str) -> Profile:
    for p in PROFILES:
        if p.name == name:
            return p
    raise KeyError(f"no profile {name!r}; known: {', '.join(p.name for p in PROFILES)}")
