"""Version profiles: the switches per release, and the version -> profile mapping."""

from __future__ import annotations

import dataclasses

import pytest

from harness.model import PROFILES, profile_for
from harness.model.profiles import SEED_4_1, V5_0, V5_1, V6_1, V7_2, V10_0, Profile, profile_named

# The notes' version table: (profile, ignore_after_failover, get_error_only_none,
# plain_stop_skips_empty, failed_to_empty_message, failover_failed_write_crashes,
# start_retry_after_bad_top_aborts, hmp_qemu_io_drains)
TABLE = [
    (SEED_4_1, False, False, False, False, True, True, False),
    (V5_0, True, True, False, False, True, True, False),
    (V5_1, True, True, True, True, True, True, False),
    (V6_1, True, True, True, True, False, True, False),
    (V7_2, True, True, True, True, False, True, False),
    (V10_0, True, True, True, True, False, True, True),
]
FIELDS = [
    "ignore_after_failover",
    "get_error_only_none",
    "plain_stop_skips_empty",
    "failed_to_empty_message",
    "failover_failed_write_crashes",
    "start_retry_after_bad_top_aborts",
    "hmp_qemu_io_drains",
]


def test_profiles_in_order() -> None:
    assert [p.name for p in PROFILES] == ["4.1", "5.0", "5.1", "6.1", "7.2", "10.0"]
    assert [p.version for p in PROFILES] == sorted(p.version for p in PROFILES)


def test_every_switch_is_tabled() -> None:
    names = {f.name for f in dataclasses.fields(Profile)} - {"name", "version"}
    assert names == set(FIELDS)


@pytest.mark.parametrize("row", TABLE, ids=[r[0].name for r in TABLE])
def test_switches(row: tuple[object, ...]) -> None:
    profile = row[0]
    assert isinstance(profile, Profile)
    assert {f: getattr(profile, f) for f in FIELDS} == dict(zip(FIELDS, row[1:], strict=True))


def test_7_2_and_10_0_differ_only_by_hmp_drain() -> None:
    a, b = dataclasses.asdict(V7_2), dataclasses.asdict(V10_0)
    diff = {k for k in a if a[k] != b[k]}
    assert diff == {"name", "version", "hmp_qemu_io_drains"}


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ((2, 8, 0), "4.1"),
        ((4, 1, 0), "4.1"),
        ((4, 2, 1), "4.1"),
        ((5, 0, 0), "5.0"),
        ((5, 0, 9), "5.0"),
        ((5, 1, 0), "5.1"),
        ((6, 0, 0), "5.1"),
        ((6, 1, 0), "6.1"),
        ((7, 1, 0), "6.1"),
        ((7, 2, 0), "7.2"),
        ((7, 2, 22), "7.2"),
        ((9, 2, 0), "7.2"),
        ((10, 0, 2), "10.0"),
        ((11, 0, 0), "10.0"),
    ],
)
def test_profile_for(version: tuple[int, int, int], name: str) -> None:
    assert profile_for(version).name == name


def test_profile_named() -> None:
    for p in PROFILES:
        assert profile_named(p.name) is p
    with pytest.raises(KeyError, match=r"no profile '9\.9'"):
        profile_named("9.9")


def test_at_least() -> None:
    assert V5_1.at_least(5, 1) and V5_1.at_least(5) and not V5_1.at_least(6)
    assert V10_0.at_least(7, 2) and not SEED_4_1.at_least(5)


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        V7_2.ignore_after_failover = False  # type: ignore[misc]
