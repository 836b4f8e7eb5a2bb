"""Version profiles: the switches per release, and the version -> profile mapping."""

from __future__ import annotations

import dataclasses

import pytest

from harness.model import PROFILES, profile_for
from harness.model.profiles import (
    SEED_4_1,
    V5_0,
    V5_1,
    V5_2,
    V6_0,
    V6_1,
    V6_2,
    V7_2,
    V8_0,
    V9_0,
    V10_0,
    V10_0_7,
    V10_1,
    V10_2,
    V11_1,
    Bug,
    Profile,
    profile_named,
)

# The notes' version table: (profile, ignore_after_failover, get_error_only_none,
# plain_stop_skips_empty, failover_failed_write_crashes, stream_looks_through_filters,
# qsd_closes_images_on_exit, start_attaches_children, backup_filter_driver,
# start_drains_every_node, hmp_qemu_io_drains,
# texts.failed_to_empty_message, texts.block_resize_names_blocker,
# texts.node_name_texts_quoted, texts.perm_conflict_names_both,
# texts.enum_error_names_parameter, texts.backup_filter_prefix)
T, F = True, False
BT, CBW = "backup-top", "copy-before-write"
SET = "Cannot set permissions for backup-top filter: "
APPEND = "Cannot append backup-top filter: "
REPLACE = "Could not replace node: "
TABLE = [
    (SEED_4_1, F, F, F, T, F, F, F, BT, F, F, F, F, F, F, F, SET),
    (V5_0, T, T, F, T, F, F, F, BT, F, F, F, F, F, F, F, SET),
    (V5_1, T, T, T, T, F, F, F, BT, F, F, T, F, F, F, F, SET),
    (V5_2, T, T, T, T, T, F, F, BT, F, F, T, F, F, F, F, SET),
    (V6_0, T, T, T, T, T, T, F, BT, F, F, T, F, T, F, F, SET),
    (V6_1, T, T, T, F, T, T, T, BT, F, F, T, F, T, T, F, APPEND),
    (V6_2, T, T, T, F, T, T, T, CBW, F, F, T, F, T, T, T, REPLACE),
    (V7_2, T, T, T, F, T, T, T, CBW, F, F, T, F, T, T, T, REPLACE),
    (V8_0, T, T, T, F, T, T, T, CBW, T, F, T, F, T, T, T, REPLACE),
    (V9_0, T, T, T, F, T, T, T, CBW, T, F, T, T, T, T, T, REPLACE),
    (V10_0, T, T, T, F, T, T, T, CBW, T, T, T, T, T, T, T, REPLACE),
    (V10_0_7, T, T, T, F, T, T, T, CBW, T, T, T, T, T, T, T, REPLACE),
    (V10_1, T, T, T, F, T, T, T, CBW, T, T, T, T, T, T, T, REPLACE),
    (V10_2, T, T, T, F, T, T, T, CBW, T, T, T, T, T, T, T, REPLACE),
    (V11_1, T, T, T, F, T, T, T, CBW, T, T, T, T, T, T, T, REPLACE),
]
# COLO's switches: (profile, colo_needs_return_path, colo_last_mode_at_start,
# texts.colo_not_in_mode)
COLO_TABLE = [
    (SEED_4_1, F, T, F),
    (V5_0, F, T, F),
    (V5_1, F, T, F),
    (V5_2, F, T, F),
    (V6_0, F, T, F),
    (V6_1, F, T, F),
    (V6_2, F, F, F),
    (V7_2, F, F, F),
    (V8_0, F, F, T),
    (V9_0, F, F, T),
    (V10_0, F, F, T),
    (V10_0_7, F, F, T),
    (V10_1, F, F, T),
    (V10_2, F, F, T),
    (V11_1, T, F, T),
]
COLO_FIELDS = ["colo_needs_return_path", "colo_last_mode_at_start"]
FIELDS = [
    "ignore_after_failover",
    "get_error_only_none",
    "plain_stop_skips_empty",
    "failover_failed_write_crashes",
    "stream_looks_through_filters",
    "qsd_closes_images_on_exit",
    "start_attaches_children",
    "backup_filter_driver",
    "start_drains_every_node",
    "hmp_qemu_io_drains",
]
TEXT_SWITCHES = [
    "colo_not_in_mode",
    "failed_to_empty_message",
    "block_resize_names_blocker",
    "node_name_texts_quoted",
    "perm_conflict_names_both",
    "enum_error_names_parameter",
]
# the texts' per-release words that are not switches (hmp_error_prefix: below)
TEXT_WORDS = ["backup_filter_prefix"]
# Known bugs: the profiles that have each one (all known releases but where noted).
BUGS = {
    "start_retry_after_bad_top_aborts": PROFILES,
    "unaligned_zeroes_garbage": PROFILES,
    "active_disk_snapshot_allowed": PROFILES,
    "block_resize_aborts": PROFILES,
    "block_resize_null_device": (SEED_4_1, V5_0, V5_1, V5_2, V6_0, V6_1, V6_2, V7_2, V8_0),
    "block_stream_aborts": (V5_2,),
    "hmp_io_during_commit_hangs": (V5_2, V6_0, V6_1, V6_2),
    "nbd_client_write_after_drop_aborts": (V5_2, V6_0, V6_1, V6_2),
    "colo_plain_migration": (V10_0, V10_1),
    "colo_quit_crashes": (SEED_4_1, V5_0, V5_1, V5_2, V6_0, V6_1),
    "colo_transaction_error_ignored": PROFILES,
    # 4.2 (9458a9a1df) to the fix that 11.1.3 has: 5.0 up to 11.1
    "colo_tcg_vcpu_deadlock": PROFILES[PROFILES.index(V5_0) : PROFILES.index(V11_1)],
    # the backup filter's target child (4.2, the 5.0 profile) and from 6.1 the children
    "read_only_not_restored": PROFILES[PROFILES.index(V5_0) :],
    # 3cdc69d31b (5.1) to the fix that 11.1.3 has
    "ejected_hidden_reopen_crashes": PROFILES[PROFILES.index(V5_1) : PROFILES.index(V11_1)],
    # 9c60a5d197 (5.1) on
    "ejected_active_commit_crashes": PROFILES[PROFILES.index(V5_1) :],
}
# What start, the backup job's cleanup and a quit meet in the graph: (profile,
# cleanup_meets_backup_target, nbd_close_waits_reconnect_delay)
GRAPH_FIELDS = ["cleanup_meets_backup_target", "nbd_close_waits_reconnect_delay"]
GRAPH_TABLE = [(p, p is not SEED_4_1, p.version >= (6, 2, 0)) for p in PROFILES]


def test_profiles_in_order() -> None:
    assert [p.name for p in PROFILES] == [
        "4.1",
        "5.0",
        "5.1",
        "5.2",
        "6.0",
        "6.1",
        "6.2",
        "7.2",
        "8.0",
        "9.0",
        "10.0",
        "10.0.7",
        "10.1",
        "10.2",
        "11.1",
    ]
    assert [p.version for p in PROFILES] == sorted(p.version for p in PROFILES)


def test_every_switch_is_tabled() -> None:
    names = {f.name for f in dataclasses.fields(Profile)} - {"name", "version", "texts"}
    assert names == set(FIELDS) | set(COLO_FIELDS) | set(GRAPH_FIELDS) | set(BUGS)
    texts = {f.name for f in dataclasses.fields(V10_0.texts) if f.type == "bool"}
    assert texts == set(TEXT_SWITCHES)
    words = {f.name for f in dataclasses.fields(V10_0.texts) if f.name.islower()}
    assert words - texts == set(TEXT_WORDS) | {"hmp_error_prefix"}


@pytest.mark.parametrize("row", TABLE, ids=[r[0].name for r in TABLE])
def test_switches(row: tuple[object, ...]) -> None:
    profile = row[0]
    assert isinstance(profile, Profile)
    switches = [t for t in TEXT_SWITCHES if t != "colo_not_in_mode"]
    got = {f: getattr(profile, f) for f in FIELDS}
    got |= {f: getattr(profile.texts, f) for f in switches + TEXT_WORDS}
    assert got == dict(zip(FIELDS + switches + TEXT_WORDS, row[1:], strict=True))


@pytest.mark.parametrize("row", COLO_TABLE, ids=[r[0].name for r in COLO_TABLE])
def test_colo_switches(row: tuple[object, ...]) -> None:
    profile = row[0]
    assert isinstance(profile, Profile)
    got = [getattr(profile, f) for f in COLO_FIELDS] + [profile.texts.colo_not_in_mode]
    assert tuple(got) == row[1:]
    assert [r[0] for r in COLO_TABLE] == list(PROFILES)


@pytest.mark.parametrize("row", GRAPH_TABLE, ids=[r[0].name for r in GRAPH_TABLE])
def test_graph_switches(row: tuple[Profile, bool, bool]) -> None:
    profile, *switches = row
    assert [getattr(profile, f) for f in GRAPH_FIELDS] == switches


@pytest.mark.parametrize("field", sorted(BUGS))
def test_known_bugs(field: str) -> None:
    having = [p.name for p in PROFILES if getattr(p, field) is not None]
    assert having == [p.name for p in BUGS[field]]
    for p in PROFILES:
        bug = getattr(p, field)
        assert bug is None or isinstance(bug, Bug)
        # each strict expected failure names the releases the bug is known in, first a
        # release whose profile has it
        assert bug is None or bug.reason == f"QEMU bug ({bug.versions}): {bug.what}"
        assert bug is None or bug.versions.split(",")[0] in having


def test_block_resize_text_and_its_bug_agree() -> None:
    for p in PROFILES:
        assert p.texts.block_resize_names_blocker == (p.block_resize_null_device is None)


def test_neighbours_differ_only_where_a_release_changed() -> None:
    def diff(a: Profile, b: Profile) -> set[str]:
        da, db = dataclasses.asdict(a), dataclasses.asdict(b)
        return {k for k in da if da[k] != db[k]} - {"name", "version"}

    assert diff(SEED_4_1, V5_0) == {
        "ignore_after_failover",
        "get_error_only_none",
        "colo_tcg_vcpu_deadlock",
        "cleanup_meets_backup_target",
        "read_only_not_restored",
    }
    assert diff(V5_1, V5_2) == {
        "stream_looks_through_filters",
        "block_stream_aborts",
        "hmp_io_during_commit_hangs",
        "nbd_client_write_after_drop_aborts",
    }
    assert diff(V5_2, V6_0) == {"qsd_closes_images_on_exit", "texts", "block_stream_aborts"}
    assert diff(V6_0, V6_1) == {
        "failover_failed_write_crashes",
        "start_attaches_children",
        "texts",
    }
    assert diff(V6_1, V6_2) == {
        "backup_filter_driver",
        "nbd_close_waits_reconnect_delay",
        "texts",
        "colo_last_mode_at_start",
        "colo_quit_crashes",
    }
    assert diff(V6_2, V7_2) == {
        "hmp_io_during_commit_hangs",
        "nbd_client_write_after_drop_aborts",
    }
    assert diff(V7_2, V8_0) == {"start_drains_every_node", "texts"}
    assert diff(V8_0, V9_0) == {"texts", "block_resize_null_device"}
    assert diff(V9_0, V10_0) == {"hmp_qemu_io_drains", "colo_plain_migration"}
    assert diff(V10_0, V10_0_7) == {"colo_plain_migration"}
    assert diff(V10_0_7, V10_1) == {"colo_plain_migration"}
    assert diff(V10_1, V10_2) == {"texts", "colo_plain_migration"}
    assert diff(V10_2, V11_1) == {
        "colo_needs_return_path",
        "colo_tcg_vcpu_deadlock",
        "ejected_hidden_reopen_crashes",
    }
    assert V10_2.texts.hmp_error("x") == "Error: x" and V10_0.texts.hmp_error("x") == "x"


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ((2, 8, 0), "4.1"),
        ((4, 1, 0), "4.1"),
        ((4, 2, 1), "4.1"),
        ((5, 0, 0), "5.0"),
        ((5, 0, 9), "5.0"),
        ((5, 1, 0), "5.1"),
        ((5, 1, 1), "5.1"),
        ((5, 2, 0), "5.2"),
        ((6, 0, 0), "6.0"),
        ((6, 1, 0), "6.1"),
        ((6, 1, 1), "6.1"),
        ((6, 2, 0), "6.2"),
        ((7, 1, 0), "6.2"),
        ((7, 2, 0), "7.2"),
        ((7, 2, 22), "7.2"),
        ((8, 2, 0), "8.0"),
        ((9, 0, 0), "9.0"),
        ((9, 2, 0), "9.0"),
        ((10, 0, 2), "10.0"),
        ((10, 0, 6), "10.0"),
        ((10, 0, 7), "10.0.7"),
        ((10, 0, 13), "10.0.7"),
        ((10, 1, 0), "10.1"),
        ((10, 2, 0), "10.2"),
        ((11, 0, 0), "10.2"),
        ((11, 1, 3), "11.1"),
    ],
)
def test_profile_for(version: tuple[int, int, int], name: str) -> None:
    assert profile_for(version).name == name


def test_profile_named() -> None:
    for p in PROFILES:
        assert profile_named(p.name) is p
    with pytest.raises(KeyError, match=r"no profile '9\.9'"):
        profile_named("9.9")


def test_skip_reasons_follow_the_switches() -> None:
    """What a case skips on comes from the switches, and names the profile."""
    for p in PROFILES:
        assert (p.without_plain_stop_report is None) == p.plain_stop_skips_empty
        assert (p.without_ignore_after_failover is None) == p.ignore_after_failover
        assert (p.hmp_io_ends_failover is None) == (not p.hmp_qemu_io_drains)
        assert (p.without_stream_through_filters is None) == p.stream_looks_through_filters
    assert V5_0.without_plain_stop_report is not None
    assert V5_0.without_plain_stop_report.startswith("QEMU 5.0: ")
    assert V10_0.hmp_io_ends_failover == (
        "QEMU 10.0: every HMP qemu-io drains the graph, which lets the held commit finish, "
        "so guest I/O during FAILOVER cannot be observed through it"
    )


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        V7_2.ignore_after_failover = False  # type: ignore[misc]
