"""Worker pinning (harness/affinity.py): which CPU a worker takes, and QRC_PIN=0."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.affinity import ENV, pin, worker_index


def test_worker_index_is_xdist_s_number() -> None:
    assert worker_index("gw0") == 0
    assert worker_index("gw13") == 13
    assert worker_index("master") is None
    assert worker_index("gw") is None
    assert worker_index("7") is None


@pytest.fixture
def restored_affinity() -> Iterator[set[int]]:
    before = os.sched_getaffinity(0)
    yield before
    os.sched_setaffinity(0, before)


def test_pin_takes_one_of_the_allowed_cpus_round_robin(
    restored_affinity: set[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    cpus = sorted(restored_affinity)
    if len(cpus) < 2:
        assert pin(0) is None
        return
    for index in (0, 1, len(cpus) + 1):
        os.sched_setaffinity(0, restored_affinity)
        cpu = pin(index)
        assert cpu == cpus[index % len(cpus)]
        assert os.sched_getaffinity(0) == {cpu}


def test_pin_off(restored_affinity: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0")
    assert pin(0) is None
    assert os.sched_getaffinity(0) == restored_affinity
