"""pytest plumbing shared by cases/ and tests/: which QEMU builds to run, and leak checks.

Build selection, first match wins: `--qemu-dir DIR` (repeatable), iotests'
variables (QEMU_PROG, ...), PATH; `--all-builds` runs against every installed
build (PATH's QEMU and each release `qrc fetch` unpacked into .qemu/<release>),
which is what the project's own test command does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest

from harness.affinity import pin, worker_index
from harness.builds import QemuBuild, find_build, known_builds
from harness.errors import HarnessError
from harness.judge import named_profile
from harness.layer_inspector import inspector_pids
from harness.pool import MARKER, close_worker_pool, idle_pids
from harness.probe import Probe, probe, replication_verdict

ROOT = Path(__file__).resolve().parent


class _Unrewritten(importlib.abc.MetaPathFinder):
    """Imports these packages the ordinary way, ahead of pytest's assertion rewriter.

    pytest rewrites every module of a distribution that has a pytest plugin, hypothesis
    included, and with PYTHONDONTWRITEBYTECODE it cannot cache the result: each process
    importing hypothesis (a worker collecting the differential cases, the controller's
    terminal summary, where hypothesis's plugin imports it) spent about 0.5 s rewriting
    some 75 modules. Their asserts are not our checks.
    """

    def __init__(self, *packages: str) -> None:
        self.packages = frozenset(packages)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, path, target)


if not any(isinstance(f, _Unrewritten) for f in sys.meta_path):
    sys.meta_path.insert(0, _Unrewritten("hypothesis"))

# JSON report, per-failure artifacts and progress events (used by `qrc run`); a dead
# worker's private directories removed by the controller.
pytest_plugins = ["harness.report.plugin", "harness.reclaim"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qrc", "QEMU replication conformance")
    group.addoption(
        "--qemu-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="QEMU build to test: install prefix, unpacked packages or build tree (repeatable)",
    )
    group.addoption(
        "--all-builds",
        action="store_true",
        help="run against every installed build (PATH's QEMU and each .qemu/<release>)",
    )
    group.addoption(
        "--full-on",
        choices=("all", "ends"),
        default="all",
        help="which builds run every case: all of them (default), or only the oldest and "
        "the newest release, the others the quick set (CI's budget)",
    )
    group.addoption(
        "--profile",
        dest="qrc_profile",
        default=None,
        metavar="NAME",
        help="judge every build against this release's model profile (e.g. 9.0) instead of "
        "the one its probed version picks",
    )
    group.addoption(
        "--fresh-qemu",
        action="store_true",
        dest="fresh_qemu",
        help="a fresh QEMU for every case (also QRC_FRESH_QEMU=1): no QEMU serves two "
        "cases, even when it answers that it is pristine (harness.pool)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A build named on the command line is checked once, here: a bad --qemu-dir is one
    usage line, not one collection error per case module; so is an unknown --profile."""
    config.addinivalue_line(
        "markers", f"{MARKER}: the case gets fresh QEMU processes, never pooled ones"
    )
    name = config.getoption("qrc_profile")
    if name is not None:
        try:
            named_profile(name)
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
    if config.getoption("--qemu-dir") or config.getoption("--all-builds"):
        _selected(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        index = worker_index(str(workerinput.get("workerid", "")))
        if index is not None:
            pin(index)


def _selected(config: pytest.Config) -> list[tuple[QemuBuild, Probe]]:
    cached = getattr(config, "_qrc_builds", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    dirs: list[str] = config.getoption("--qemu-dir")
    try:
        if dirs:
            builds = [find_build(d, os.environ) for d in dirs]
        elif config.getoption("--all-builds"):
            builds = known_builds(ROOT)
        else:
            builds = [find_build(None, os.environ)]
        selected = [(b, probe(b)) for b in builds]
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from None
    config._qrc_builds = selected  # type: ignore[attr-defined]
    return selected


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qemu_build" in metafunc.fixturenames:
        selected = _selected(metafunc.config)
        metafunc.parametrize(
            "qemu_build",
            selected,
            ids=[p.version for _, p in selected],
            indirect=True,
            scope="session",
        )


def _quick_only_builds(config: pytest.Config) -> set[str]:
    """The ids (probed versions) of the builds that run only the quick set (--full-on)."""
    if config.getoption("--full-on") != "ends":
        return set()
    selected = sorted(_selected(config), key=lambda bp: bp[1].version_tuple)
    return {p.version for _, p in selected[1:-1]}


# Cases outside the default run: a flaky QEMU hang of their own (cases/test_colo_vcpu.py).
# They run when -m names the marker, when their file is named, or with this variable set.
OPT_IN_MARKER = "colo_vcpu"
OPT_IN_ENV = "QRC_COLO_VCPU"


def _opted_in(config: pytest.Config, item: pytest.Item) -> bool:
    """Was OPT_IN_MARKER's `item` asked for: by -m, by its file, or by OPT_IN_ENV?"""
    if OPT_IN_MARKER in (config.getoption("markexpr", "") or ""):
        return True
    if os.environ.get(OPT_IN_ENV, "").strip().lower() not in ("", "0", "no", "false"):
        return True
    path = Path(str(item.path))
    for arg in config.args:
        named = Path(arg.split("::")[0])
        if (named if named.is_absolute() else Path(config.invocation_params.dir, named)) == path:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """OPT_IN_MARKER's cases leave the run unless asked for (_opted_in). `--full-on
    ends`: the builds between the oldest and the newest keep only their quick cases.
    Under xdist, hand out `slow` cases first (longest-first scheduling): a multi-second
    case dealt last keeps one worker busy while the others have nothing left to do.
    Serial runs keep the files' order."""
    opt_out = [i for i in items if i.get_closest_marker(OPT_IN_MARKER) and not _opted_in(config, i)]
    if opt_out:
        config.hook.pytest_deselected(items=opt_out)
        dropped = set(opt_out)
        items[:] = [i for i in items if i not in dropped]
    quick_only = _quick_only_builds(config)
    if quick_only:
        keep, drop = [], []
        for item in items:
            spec = getattr(item, "callspec", None)
            build = spec.params.get("qemu_build") if spec is not None else None
            if (
                build is not None
                and build[1].version in quick_only
                and item.get_closest_marker("quick") is None
            ):
                drop.append(item)
            else:
                keep.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def qemu_build(request: pytest.FixtureRequest) -> tuple[QemuBuild, Probe]:
    """(build, probe) of the QEMU under test; skips when it cannot run replication."""
    build, found = request.param
    verdict = replication_verdict(found)
    if verdict is not None:
        pytest.skip(verdict)
    return build, found  # type: ignore[no-any-return]


def _child_pids() -> list[str]:
    """Pids whose parent is this process: each thread's /proc children list (a few small
    reads), or where the kernel lacks those files, every process's stat (~2 ms)."""
    me = os.getpid()
    try:
        tids = os.listdir(f"/proc/{me}/task")
        pids: list[str] = []
        for tid in tids:
            with open(f"/proc/{me}/task/{tid}/children") as f:
                pids += f.read().split()
        return pids
    except FileNotFoundError:  # no CONFIG_PROC_CHILDREN: the parent is checked below
        return [e.name for e in os.scandir("/proc") if e.name.isdigit()]


def _loaded_binary(pid: str) -> str | None:
    """The program an ``ld-linux ... --library-path DIRS BINARY`` process runs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg == b"--library-path" and i + 2 < len(argv):
            return os.path.basename(argv[i + 2].decode(errors="replace"))
    return None


def _qemu_children() -> list[str]:
    """qemu-* processes whose parent is this pytest process (or worker)."""
    me = str(os.getpid())
    out = []
    for pid in _child_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = stat[stat.rindex(")") + 2 :].split()[1]
        if ppid == me and name.startswith("ld-linux"):
            # A release prefix's binary runs through its own loader: the
            # process is named after the loader, its argv names the binary.
            name = _loaded_binary(pid) or name
        if ppid == me and name.startswith("qemu"):
            out.append(f"{pid} {name}")
    return out


def pytest_sessionfinish(session: pytest.Session) -> None:
    close_worker_pool()  # the idle pooled QEMUs quit


@pytest.fixture(autouse=True)
def _no_qemu_left_behind() -> Iterator[None]:
    """Every test must end every QEMU it started (an idle pooled one is the pool's, not
    the test's); a leak fails the test that leaked."""
    yield
    keep = {str(p) for p in inspector_pids() | idle_pids()}
    left = [p for p in _qemu_children() if p.split()[0] not in keep]
    if left:
        pytest.fail(f"QEMU processes left running after the test: {', '.join(left)}")
