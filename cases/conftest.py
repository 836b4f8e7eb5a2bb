"""Fixtures for conformance cases: a story on a fresh topology, torn down whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import pool
from harness.builds import QemuBuild
from harness.colo_story import ColoStory
from harness.images import Recipe
from harness.judge import judging_profile
from harness.machine import MachineSet
from harness.model import Profile
from harness.model.messages import Texts
from harness.model.profiles import Bug
from harness.pair import PairStory
from harness.probe import Probe
from harness.real import LiveTopology
from harness.story import Story
from harness.topology import Graph, standard
from harness.topology.pair import pair as pair_graph


def _label(qemu_build: tuple[QemuBuild, Probe], profile: Profile) -> str:
    return f"QEMU {qemu_build[1].version} ({qemu_build[0].system}), model profile {profile.name}"


@pytest.fixture
def profile(request: pytest.FixtureRequest, qemu_build: tuple[QemuBuild, Probe]) -> Profile:
    """The model's behaviour profile for the QEMU under test (`--profile NAME`: that one)."""
    return judging_profile(request.config.getoption("qrc_profile"), qemu_build[1].version_tuple)


@pytest.fixture
def machines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MachineSet]:
    """The case's QEMUs: from this worker's pool (harness.pool), or every one fresh under
    --fresh-qemu, QRC_FRESH_QEMU=1 or the case's marker fresh_qemu."""
    fresh = (
        request.config.getoption("fresh_qemu")
        or pool.fresh_by_environment()
        or request.node.get_closest_marker(pool.MARKER) is not None
    )
    with MachineSet(tmp_path, pool=None if fresh else pool.worker_pool()) as ms:
        yield ms


@pytest.fixture
def topologies() -> Iterator[list[LiveTopology]]:
    made: list[LiveTopology] = []
    yield made
    for t in made:
        t.close()


@dataclass
class _Maker:
    """Everything a story maker needs: one fresh topology per call, closed at teardown."""

    qemu_build: tuple[QemuBuild, Probe]
    profile: Profile
    machines: MachineSet
    topologies: list[LiveTopology]
    tmp_path: Path

    def story(self, graph: Graph, story: type[Story] = Story) -> Any:
        """A story on `graph` made real (QEMU first, then the model of the same value)."""
        label = _label(self.qemu_build, self.profile)
        s = story.open(graph, self.qemu_build[0], self.profile, self.machines, self.tmp_path, label)
        self.topologies.append(s.topo)
        return s


@pytest.fixture
def _maker(
    qemu_build: tuple[QemuBuild, Probe],
    profile: Profile,
    machines: MachineSet,
    topologies: list[LiveTopology],
    tmp_path: Path,
) -> _Maker:
    return _Maker(qemu_build, profile, machines, topologies, tmp_path)


@pytest.fixture
def secondary(_maker: _Maker) -> Callable[..., Story]:
    """make(recipe="secondary", **options) -> a Story on the secondary-only topology."""

    def make(recipe: Recipe | str = "secondary", **kw: Any) -> Story:
        return _maker.story(standard.secondary(recipe, **kw))

    return make


@pytest.fixture
def primary(_maker: _Maker) -> Callable[..., Story]:
    """make(recipe="primary-child") -> a Story on the primary-only topology."""

    def make(recipe: Recipe | str = "primary-child", **kw: Any) -> Story:
        return _maker.story(standard.primary(recipe, **kw))

    return make


@pytest.fixture
def primary_local(_maker: _Maker) -> Callable[..., Story]:
    """make(**options) -> a Story on a primary over a local qcow2 child (no NBD, no daemon)."""

    def make(**kw: Any) -> Story:
        return _maker.story(standard.primary_local(**kw))

    return make


@pytest.fixture
def pair(_maker: _Maker) -> Callable[..., PairStory]:
    """make(recipe=None, **options) -> a PairStory on a fresh COLO pair
    (harness.topology.pair)."""

    def make(recipe: Recipe | None = None, **kw: Any) -> PairStory:
        return _maker.story(pair_graph(recipe, **kw), PairStory)

    return make


@pytest.fixture
def colo(_maker: _Maker) -> Callable[..., ColoStory]:
    """make(recipe=None, **options) -> a ColoStory on a fresh COLO pair that COLO's
    migration drives (harness.topology.pair with colo=True)."""

    def make(recipe: Recipe | None = None, **kw: Any) -> ColoStory:
        return _maker.story(pair_graph(recipe, colo=True, **kw), ColoStory)

    return make


# ---- what the release under test says and what is known about it (its profile)


@pytest.fixture
def msg(profile: Profile) -> Texts:
    """QEMU's texts as the release under test prints them (`msg.NOT_RUNNING`, ...): the
    profile's, the ones the model answers with."""
    return profile.texts


@pytest.fixture
def xfail_bug(request: pytest.FixtureRequest) -> Callable[..., None]:
    """xfail_bug(profile.X, raises=None): the case states what QEMU should do, and the
    release's known bug X stops it: a strict expected failure with the bug's reason
    (its version range included). Nothing happens on a release without the bug."""

    def mark(bug: Bug | None, raises: type[BaseException] | None = None) -> None:
        if bug is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason, raises=raises))

    return mark


@pytest.fixture
def needs_bug(profile: Profile) -> Callable[[Bug | None], None]:
    """needs_bug(profile.X): the case pins what known bug X does; it is skipped on a
    release without the bug."""

    def check(bug: Bug | None) -> None:
        if bug is None:
            pytest.skip(f"QEMU {profile.name}: not a known bug of this release (the case pins it)")

    return check
