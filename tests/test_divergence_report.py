"""A divergence report costs seconds whatever its size (issue 15).

A deliberately wrong model (patched for the test only, as tests/test_variants.py does)
makes a 256 MiB region of a secondary's disk differ: its guest writes of 256 MiB or more
store the next byte pattern. Real QEMU then disagrees with it over all 256 MiB, once in a
live read and once in the offline layer check; each report must name the first
differing byte and what QEMU has there. How long a report takes is measured in
benchmarks/divergence.py (no timing is asserted here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.builds import QemuBuild, find_build
from harness.machine import MachineSet
from harness.model import profile_for
from harness.model.replication import ReplicationNode
from harness.ops import Read, Start, Write
from harness.probe import probe, replication_verdict
from harness.story import Divergence, Story
from harness.topology import standard
from harness.units import MiB

REGION = 256 * MiB
# Not a round offset: the report must name this byte, not a chunk boundary.
AT = 33 * MiB + 4096
GOOD, WRONG = 0x77, 0x78
FIRST_RANGE = f"[{AT:#x}+{REGION:#x}] expected 0x{WRONG:02x}, QEMU has 0x{GOOD:02x}"


@contextmanager
def wrong_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variant: a guest write of REGION bytes or more stores the next pattern."""
    write = ReplicationNode.write

    def patched(self: ReplicationNode, start: int, end: int, val: int) -> str | None:
        if end - start >= REGION:
            val = (val + 1) & 0xFF
        return write(self, start, end, val)

    monkeypatch.setattr(ReplicationNode, "write", patched)
    yield


def secondary_story(build: QemuBuild, machines: MachineSet, workdir: Path) -> Story:
    """A running secondary on a 512 MiB chain, REGION bytes of GOOD written at AT."""
    found = probe(build)
    verdict = replication_verdict(found)
    if verdict is not None:
        pytest.skip(verdict)
    profile = profile_for(found.version_tuple)
    graph = standard.secondary(standard.secondary_chain("512M", "64k"))
    s = Story.open(graph, build, profile, machines, workdir)
    s.run(Start(primary=False), Write(AT, REGION, GOOD))
    return s


def live_report(s: Story) -> str:
    """The Divergence of a whole-disk read (the model expects WRONG over the region)."""
    with pytest.raises(Divergence) as caught:
        s.do(Read(0, 512 * MiB))
    return str(caught.value)


def offline_report(s: Story) -> str:
    """The Divergence of the offline layer check (the active disk holds the region)."""
    with pytest.raises(Divergence) as caught:
        s.finish()
    return str(caught.value)


@pytest.fixture
def build() -> QemuBuild:
    return find_build(None, os.environ)


@pytest.mark.needs_qemu
@pytest.mark.timeout(120)
def test_live_read_report_names_the_first_differing_byte(
    build: QemuBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MachineSet(tmp_path) as ms, wrong_model(monkeypatch):
        s = secondary_story(build, ms, tmp_path)
        t = time.perf_counter()
        report = live_report(s)
        print(f"live 256 MiB divergence reported in {time.perf_counter() - t:.2f} s")
        s.topo.close()
    assert FIRST_RANGE in report, report


@pytest.mark.needs_qemu
@pytest.mark.timeout(120)
def test_offline_layer_report_names_the_first_differing_byte(
    build: QemuBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MachineSet(tmp_path) as ms, wrong_model(monkeypatch):
        s = secondary_story(build, ms, tmp_path)
        t = time.perf_counter()
        report = offline_report(s)
        print(f"offline 256 MiB divergence reported in {time.perf_counter() - t:.2f} s")
        s.topo.close()
    assert "offline layer check failed" in report
    assert f"active: ok, data [{AT:#x}+{REGION:#x}]=0x{GOOD:02x}" in report, report
    assert FIRST_RANGE in report, report
