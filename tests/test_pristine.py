"""The QEMU pool against real QEMU (every installed build): a pristine QEMU serves the next
case; every kind of leftover is caught by QEMU's own answers and leads to a fresh QEMU.

Each plant is made the way a case would leave it, by hand over QMP: a block node, an
export, an NBD server, a throttle group, what a start refused for a bad top-id leaves
(its children attached, the node's blocker Error set), an op blocker the teardown cannot
lift (two running secondaries: the stop walk ends at the first node's answer), and a
job held by a throttle group. Planted in an idle pooled QEMU (as if a teardown had
missed it), `Pool.take` must find it and start a fresh QEMU; left by a case, the
teardown undoes what it can, and what it cannot makes `give_back` refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import pristine
from harness.builds import QemuBuild, known_builds
from harness.machine import Machine, MachineDied, MachineSet
from harness.pool import Pool, PooledMachine, fresh_by_environment
from tests.qemu_helpers import alive, qcow2

ROOT = Path(__file__).resolve().parents[1]
BUILDS = known_builds(ROOT)

with_builds = pytest.mark.parametrize("build", BUILDS, ids=[b.label for b in BUILDS])
pytestmark = [pytest.mark.needs_qemu, pytest.mark.timeout(120)]


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool()
    yield p
    p.close()


def _qcow2_node(build: QemuBuild, d: Path, name: str, **extra: object) -> dict[str, object]:
    path = qcow2(build, d / f"{name}.qcow2")
    return {
        "driver": "qcow2",
        "node-name": name,
        "file": {"driver": "file", "filename": path},
        **extra,
    }


def _nbd_server(m: Machine) -> None:
    m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": m.sock_path("nbd.sock")}})


def _secondary(m: Machine, build: QemuBuild, d: Path, name: str = "rep", top_id: str = "") -> None:
    """A secondary replication node NAME over NAME-act -> NAME-hid -> NAME-sec, NAME-sec
    exported over the machine's NBD server (started first)."""
    sec = f"{name}-sec"
    m.qmp_ok("blockdev-add", **_qcow2_node(build, d, sec))
    m.qmp_ok("block-export-add", type="nbd", id=f"e-{name}", writable=True, name=sec,
             **{"node-name": sec})  # fmt: skip
    hid = _qcow2_node(build, d, f"{name}-hid", backing=sec)
    act = _qcow2_node(build, d, f"{name}-act", backing=hid)
    m.qmp_ok(
        "blockdev-add",
        driver="replication",
        mode="secondary",
        file=act,
        **{"node-name": name, "top-id": top_id or name},
    )


# ---- the plants


def plant_node(m: Machine, build: QemuBuild, d: Path) -> str:
    m.qmp_ok("blockdev-add", driver="null-co", **{"node-name": "leftover"})
    return "block nodes: leftover"


def plant_export(m: Machine, build: QemuBuild, d: Path) -> str:
    m.qmp_ok("blockdev-add", driver="null-co", **{"node-name": "exported"})
    _nbd_server(m)
    m.qmp_ok("block-export-add", type="nbd", id="left-export", **{"node-name": "exported"})
    return "exports: left-export"


def plant_nbd_server(m: Machine, build: QemuBuild, d: Path) -> str:
    _nbd_server(m)
    return "an NBD server was running"


def plant_throttle_group(m: Machine, build: QemuBuild, d: Path) -> str:
    m.qmp_ok("object-add", **{"qom-type": "throttle-group", "id": "tg-left"})
    return "objects: tg-left"


def plant_refused_start(m: Machine, build: QemuBuild, d: Path) -> str:
    """A start refused for a bad top-id: the children it attached stay, s->blocker is set
    (the next start on that node aborts 7.2 and 10.0), and the node answers the walk."""
    _nbd_server(m)
    _secondary(m, build, d, top_id="no-such-node")
    refused = m.qmp("xen-set-replication", enable=True, primary=False)
    assert refused.desc == "No top_bs or it is invalid", refused
    return "the replication walk answers 'Block replication is not running'"


def plant_op_blocker(m: Machine, build: QemuBuild, d: Path) -> str:
    """Two running secondaries: each top node carries replication's op blocker."""
    _nbd_server(m)
    _secondary(m, build, d, "old")
    _secondary(m, build, d, "new")
    m.qmp_ok("xen-set-replication", enable=True, primary=False)
    return "block nodes:"


def plant_held_job(m: Machine, build: QemuBuild, d: Path) -> str:
    """A block-stream job whose writes wait in a throttle group (bps-write 512)."""
    m.qmp_ok("object-add", **{"qom-type": "throttle-group", "id": "tg-hold",
                              "limits": {"bps-write": 512}})  # fmt: skip
    m.qmp_ok("blockdev-add", **_qcow2_node(build, d, "base"))
    m.hmp('qemu-io base "write -P 0x5a 0 1M"')
    top_file = {"driver": "file", "filename": qcow2(build, d / "top.qcow2")}
    m.qmp_ok(
        "blockdev-add",
        driver="qcow2",
        backing="base",
        file={"driver": "throttle", "throttle-group": "tg-hold", "file": top_file},
        **{"node-name": "top"},
    )
    m.qmp_ok("block-stream", device="top", **{"job-id": "held"})
    jobs = m.qmp_ok("query-jobs")
    assert [(j["id"], j["status"]) for j in jobs] == [("held", "running")], jobs
    return "jobs: stream held (running)"


PLANTS = [
    plant_node,
    plant_export,
    plant_nbd_server,
    plant_throttle_group,
    plant_refused_start,
    plant_op_blocker,
    plant_held_job,
]


def _idle(pool: Pool, build: QemuBuild, d: Path) -> int:
    """One case's worth of use, given back: the pid of the now idle pooled QEMU."""
    with MachineSet(d / "first", pool=pool) as ms:
        m = ms.launch(build, "secondary")
        pid = m.pid
    assert [s.machine.pid for s in pool.idle] == [pid]
    return pid


@with_builds
@pytest.mark.parametrize("plant", PLANTS, ids=[p.__name__[6:] for p in PLANTS])
def test_a_leftover_in_an_idle_qemu_means_a_fresh_one(
    build: QemuBuild, plant: Callable[..., str], pool: Pool, tmp_path: Path
) -> None:
    pid = _idle(pool, build, tmp_path)
    idle = pool.idle[0].machine
    expected = plant(idle, build, tmp_path)
    with MachineSet(tmp_path / "next", pool=pool) as ms:
        m = ms.launch(build, "secondary")
        assert m.pid != pid, "the QEMU with a leftover served the next case"
        assert not alive(pid), "the QEMU with a leftover was not quit"
        assert m.qmp_ok("query-named-block-nodes") == []
    (refusal,) = pool.refusals
    assert f"(pid {pid}): " in refusal and expected in refusal, refusal
    assert pool.stats() == {"launched": 2, "reused": 0, "idle": 1}


@with_builds
def test_a_pristine_qemu_serves_the_next_case(build: QemuBuild, pool: Pool, tmp_path: Path) -> None:
    """A case's secondary graph, started and left running, is torn down; the next case
    gets the same process, as its own machine: its transcript, logs and name."""
    with MachineSet(tmp_path / "a", pool=pool) as ms:
        first = ms.launch(build, "secondary")
        _nbd_server(first)
        _secondary(first, build, tmp_path)
        first.qmp_ok("xen-set-replication", enable=True, primary=False)
        first.hmp('qemu-io rep "write -P 0x11 0 64k"')
        pid = first.pid
    assert isinstance(first, PooledMachine)
    assert not first.alive() and first.returncode == 0, "a given-back machine reads as quit"
    with pytest.raises(MachineDied):
        first.qmp("query-status")
    assert (tmp_path / "a" / "secondary" / "stdout.log").read_text().startswith("wrote 65536")
    with MachineSet(tmp_path / "b", pool=pool) as ms:
        second = ms.launch(build, "primary")
        assert second.pid == pid and second.name == "primary"
        assert "from the pool" in second.transcript[0]["event"]
        assert (tmp_path / "b" / "primary" / "stdout.log").read_text() == ""
        assert second.qmp_ok("query-named-block-nodes") == []
    assert pool.refusals == [] and pool.stats() == {"launched": 1, "reused": 1, "idle": 1}


@with_builds
@pytest.mark.parametrize("plant", [plant_op_blocker, plant_held_job], ids=["op-blocker", "job"])
def test_what_the_teardown_cannot_undo_is_not_reused(
    build: QemuBuild, plant: Callable[..., str], pool: Pool, tmp_path: Path
) -> None:
    with MachineSet(tmp_path / "a", pool=pool) as ms:
        m = ms.launch(build, "secondary")
        plant(m, build, tmp_path)
        pid = m.pid
    # quit, as without the pool (10.0 and 11.1 answer it only after SIGKILL while a
    # throttled job holds them: the same without the pool)
    assert not alive(pid)
    (refusal,) = pool.refusals
    assert "teardown refused" in refusal, refusal
    assert pool.idle == []


@with_builds
def test_a_signalled_or_dead_qemu_is_not_reused(
    build: QemuBuild, pool: Pool, tmp_path: Path
) -> None:
    with MachineSet(tmp_path / "a", pool=pool) as ms:
        m = ms.launch(build, "secondary")
        m.kill(19)  # SIGSTOP
        m.kill(18)  # SIGCONT: it runs again, but a case did something to it
    with MachineSet(tmp_path / "b", pool=pool) as ms:
        m2 = ms.launch(build, "secondary")
        m2.kill()
        m2.wait_exit(10)
    assert [r.split(": ", 1)[1] for r in pool.refusals] == [
        "the case sent it a signal",
        "QEMU exited (-9)",
    ]
    assert pool.idle == []


@with_builds
def test_what_a_fresh_qemu_answers(build: QemuBuild, machines: MachineSet) -> None:
    """The six questions' answers on a fresh QEMU of every release: what `leftovers`
    takes for pristine (the texts are QEMU's: checked here per release)."""
    m = machines.launch(build, "fresh")
    fresh = pristine.fresh_state(m)
    assert fresh.graph
    assert pristine.leftovers(m, fresh) == []
    assert m.qmp("nbd-server-stop").desc == pristine.NBD_NOT_RUNNING
    assert m.qmp_ok("query-xen-replication-status") == pristine.NO_REPLICATION_ERROR
    objects = m.qmp("qom-list", path="/objects")
    assert objects.ok or objects.desc == "Device '/objects' not found"


def test_the_environment_switch() -> None:
    assert not fresh_by_environment({})
    assert not fresh_by_environment({"QRC_FRESH_QEMU": "0"})
    assert fresh_by_environment({"QRC_FRESH_QEMU": "1"})
    assert fresh_by_environment({"QRC_FRESH_QEMU": "yes"})


@pytest.mark.parametrize(
    ("how", "pooled"),
    [("", True), ("--fresh-qemu", False), ("QRC_FRESH_QEMU=1", False)],
    ids=["pooled", "option", "environment"],
)
def test_a_run_reuses_unless_told_not_to(how: str, pooled: bool, tmp_path: Path) -> None:
    """Two cases in one pytest run: the second reuses the first's QEMU, unless
    --fresh-qemu or QRC_FRESH_QEMU=1 says every case gets a fresh one."""
    log = tmp_path / "pool.jsonl"
    env = {**os.environ, "QRC_POOL_LOG": str(log), "QRC_REPEAT": "2"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "benchmarks"), env.get("PYTHONPATH")])
    )
    args = [sys.executable, "-m", "pytest", "-p", "case_repeat", "-p", "no:cacheprovider", "-q"]
    args += ["-n", "0", "cases/test_smoke.py::test_secondary_life"]
    if how.startswith("--"):
        args.append(how)
    elif how:
        key, _, value = how.partition("=")
        env[key] = value
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert "2 passed" in done.stdout, done.stdout + done.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if pooled:
        assert [(r["launched"], r["reused"], r["refusals"]) for r in records] == [(1, 1, [])]
    else:
        assert records == []  # no pool was ever made
