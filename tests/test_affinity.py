"""Worker pinning (harness/affinity.py): which CPU a worker takes, and QRC_PIN=0."""

from __future__ import annotations

import contextlib
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
    # an xdist worker is pinned already: start from every CPU the machine lets us use
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    if len(cpus) < 2:
        assert pin(0) is None
        pytest.skip("one CPU: nothing to pin to")
    for index in (0, 1, len(cpus) + 1):
        os.sched_setaffinity(0, allowed)
        cpu = pin(index)
        assert cpu == cpus[index % len(cpus)]
        assert os.sched_getaffinity(0) == {cpu}


def test_pin_off(restored_affinity: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0")
    assert pin(0) is None
    assert os.sched_getaffinity(0) == restored_affinity
