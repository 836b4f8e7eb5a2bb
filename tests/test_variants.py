"""Proof of power: deliberately wrong models, each caught by the differential runner.

Each `test_variant_*` breaks the reference model in one place (monkeypatching its
classes for the test's duration only; harness/model itself is never edited), runs the
differential runner in its CI profile (ci_groups(), seed 0: the configuration the
suite runs) against real QEMU 7.2 (the PATH build: iotests' variables, then PATH) and
requires a divergence. A variant that survives fails its test. The time until the
first divergence (before hypothesis shrinks it) is printed and recorded as a junit
property; there is no timing assertion.

The trace tests: each trace recorded from a diverging variant run (tests/data/trace-*.json:
the secondary-only topology, the COLO pair, the two-node machine) replays with
replay_main to the same result on 7.2 and 10.0 (the correct model agrees with QEMU; with
the variant patched in it diverges again, at the recorded place or, for a trace recorded
before the policy read the guest views of its kind, at the views sooner), and a malformed or
truncated trace file gets exit code 8 and one line on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builds import QemuBuild, find_build, known_builds
from harness.differential.replay import replay_main
from harness.differential.results import RunResult
from harness.differential.runner import run_groups
from harness.differential.settings import Options
from harness.differential.specs import ci_groups
from harness.errors import TraceError
from harness.model import Profile, colo, profile_for
from harness.model import messages as msg
from harness.model import replication as rep
from harness.model.colo import Colo
from harness.model.disks import copy_range, make_empty, write_layer
from harness.model.quorum import QuorumNode
from harness.model.replication import EIO, Backup, ReplicationNode, Stage
from harness.model.system import Model
from harness.observe import IO_EIO, IO_OK, Observation
from harness.probe import Probe, probe, replication_verdict
from harness.topology.values import Mode

pytestmark = [pytest.mark.differential]

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
RECORDED = DATA / "trace-variant-write-zeroes-ignored.json"
RECORDED_PAIR = DATA / "trace-variant-pair-write-zeroes-ignored.json"
RECORDED_NODES = DATA / "trace-variant-all-walk-oldest-first.json"


@pytest.fixture(scope="module")
def qemu72() -> tuple[QemuBuild, Probe]:
    """The PATH build (QEMU 7.2 here), as `qrc` finds it without --qemu-dir."""
    build = find_build(None, os.environ)
    found = probe(build)
    verdict = replication_verdict(found)
    if verdict is not None:
        pytest.skip(verdict)
    return build, found


def _catch(
    qemu72: tuple[QemuBuild, Probe],
    tmp_path: Path,
    record_property: object,
    name: str,
    profile: Profile | None = None,
) -> RunResult:
    """Run the CI configuration against the (patched) model; the variant must diverge."""
    build, found = qemu72
    prof = profile or profile_for(found.version_tuple)
    t0 = time.perf_counter()
    # QRC_VARIANT_SEED: check the variants under another seed of the same CI profile.
    # Finding the divergence is the point here: shrinking gets 3 s, not the CI profile's
    # 12 (14 variants x 12 s of shrinking were most of the default run's time).
    options = Options(seed=int(os.environ.get("QRC_VARIANT_SEED", "0")), shrink_seconds=3)
    results = run_groups(
        build,
        found.version,
        prof,
        tmp_path,
        ci_groups(),
        options=options,
        trace_dir=tmp_path / "traces",
    )
    total = time.perf_counter() - t0
    before = 0.0
    for res in results:
        if res.failure is not None:
            assert res.first_failure_s is not None
            caught = before + res.first_failure_s
            line = (
                f"variant {name}: caught after {caught:.2f} s in group {res.group} "
                f"({res.examples} examples there; {total:.1f} s with shrinking); "
                f"trace {res.trace}"
            )
            print(line)
            record_property(f"variant-{name}", f"{caught:.2f}")  # type: ignore[operator]
            return res
        before += res.wall_s
    summary = "; ".join(r.summary() for r in results)
    pytest.fail(f"variant {name} survived the CI profile: {summary}", pytrace=False)


# ---- the variants


def test_variant_checkpoint_keeps_hidden(qemu72, tmp_path, record_property, monkeypatch):
    """secondary_do_checkpoint forgets to empty the hidden disk."""

    def do_checkpoint(self: ReplicationNode) -> str | None:
        if self.backup is None:
            return msg.BACKUP_CANCELLED
        self.backup.copied.clear()
        assert self.active is not None
        make_empty(self.active)
        return None

    monkeypatch.setattr(ReplicationNode, "_do_checkpoint", do_checkpoint)
    _catch(qemu72, tmp_path, record_property, "checkpoint_keeps_hidden")


def test_variant_cbw_4k_granularity(qemu72, tmp_path, record_property, monkeypatch):
    """Copy-before-write in 4 KiB clusters instead of max(64 KiB, hidden's cluster)."""
    monkeypatch.setattr(rep, "BACKUP_CLUSTER_MIN", 4096)
    _catch(qemu72, tmp_path, record_property, "cbw_4k_granularity")


def test_variant_cbw_hidden_cluster(qemu72, tmp_path, record_property, monkeypatch):
    """Copy-before-write at the hidden disk's own cluster size (no 64 KiB minimum)."""
    start_secondary = ReplicationNode._start_secondary

    def patched(self: ReplicationNode, top_valid: bool) -> str | None:
        err = start_secondary(self, top_valid)
        if err is None and self.hidden is not None:
            self.backup = Backup(cluster=self.hidden.cluster)
        return err

    monkeypatch.setattr(ReplicationNode, "_start_secondary", patched)
    _catch(qemu72, tmp_path, record_property, "cbw_hidden_cluster")


def test_variant_primary_errors_not_swallowed(qemu72, tmp_path, record_property, monkeypatch):
    """The primary reports its child's write errors instead of storing them."""
    write = ReplicationNode.write

    def patched(self: ReplicationNode, start: int, end: int, val: int) -> str | None:
        if self.mode is Mode.PRIMARY and self.io_status() >= 0 and not self.link_up:
            self.error = True
            return EIO
        return write(self, start, end, val)

    monkeypatch.setattr(ReplicationNode, "write", patched)
    _catch(qemu72, tmp_path, record_property, "primary_errors_not_swallowed")


def test_variant_failover_failed_writes_to_active(qemu72, tmp_path, record_property, monkeypatch):
    """In FAILOVER_FAILED every write goes to the active disk (no split by allocation)."""
    write = ReplicationNode.write

    def patched(self: ReplicationNode, start: int, end: int, val: int) -> str | None:
        if self.mode is Mode.SECONDARY and self.stage is Stage.FAILOVER_FAILED:
            assert self.active is not None
            write_layer(self.active.chain(), 0, start, end, val)
            return None
        return write(self, start, end, val)

    monkeypatch.setattr(ReplicationNode, "write", patched)
    _catch(qemu72, tmp_path, record_property, "failover_failed_writes_to_active")


def test_variant_commit_ignores_hidden(qemu72, tmp_path, record_property, monkeypatch):
    """The failover commit copies only what the active disk holds (the hidden disk's old
    data, copied before the primary's writes, is not rolled back into the secondary)."""
    commit = ReplicationNode._commit

    def patched(self: ReplicationNode) -> None:
        active, secondary = self.active, self.secondary
        assert active is not None and secondary is not None
        if self.commit_fails:
            commit(self)
            return
        saved = [(s, e, v) for s, e, v in secondary.data.items()]
        commit(self)
        # redo the copy from the active disk alone
        secondary.data.clear()
        for s, e, v in saved:
            secondary.data.set(s, e, v)
        for s, e in active.data.allocated(0, secondary.size):
            copy_range([active], [secondary], s, e)

    monkeypatch.setattr(ReplicationNode, "_commit", patched)
    _catch(qemu72, tmp_path, record_property, "commit_ignores_hidden")


def test_variant_get_error_ignores_stage(qemu72, tmp_path, record_property, monkeypatch):
    """get_error answers from `error` alone, never 'Block replication is not running'."""

    def get_error(self: ReplicationNode) -> str | None:
        return msg.IO_ERROR if self.error else None

    monkeypatch.setattr(ReplicationNode, "get_error", get_error)
    _catch(qemu72, tmp_path, record_property, "get_error_ignores_stage")


def test_variant_start_forgets_checkpoint(qemu72, tmp_path, record_property, monkeypatch):
    """Start does not run the initial checkpoint (stale active/hidden data stays)."""

    def no_checkpoint(self: ReplicationNode) -> str | None:
        return None

    monkeypatch.setattr(ReplicationNode, "_start_checkpoint", no_checkpoint)
    _catch(qemu72, tmp_path, record_property, "start_forgets_checkpoint")


def test_variant_discard_really_discards(qemu72, tmp_path, record_property, monkeypatch):
    """A guest discard drops the range from the node's top layer (QEMU: a no-op)."""

    def discard(self: Model, op: object) -> Observation:
        node = self.nodes[op.node]  # type: ignore[attr-defined]
        if node.io_status() >= 0 and node.mode is Mode.SECONDARY:
            node.file.data.set(op.offset, op.offset + op.length, None)  # type: ignore[attr-defined]
        return IO_OK

    monkeypatch.setattr(Model, "_discard", discard)
    _catch(qemu72, tmp_path, record_property, "discard_really_discards")


def _write_zeroes_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    def write_zeroes(self: Model, op: object) -> Observation:
        node = self._io_node(op.node)  # type: ignore[attr-defined]
        if isinstance(node, QuorumNode):
            return IO_OK  # vote-threshold 1: the local disk's success carries it
        return IO_OK if node.io_status() >= 0 else IO_EIO

    monkeypatch.setattr(Model, "_write_zeroes", write_zeroes)


def test_variant_write_zeroes_ignored(qemu72, tmp_path, record_property, monkeypatch):
    """A guest write-zeroes answers like a write but writes nothing."""
    _write_zeroes_ignored(monkeypatch)
    _catch(qemu72, tmp_path, record_property, "write_zeroes_ignored")


def test_variant_plain_stop_empties(qemu72, tmp_path, record_property):
    """A plain stop (failover=false) still runs its checkpoint: success, disks emptied
    (5.0's behaviour; 5.1 and later answer 'Backup job was cancelled unexpectedly')."""
    found = qemu72[1]
    prof = dataclasses.replace(profile_for(found.version_tuple), plain_stop_skips_empty=False)
    _catch(qemu72, tmp_path, record_property, "plain_stop_empties", prof)


def test_variant_commit_never_fails(qemu72, tmp_path, record_property, monkeypatch):
    """The failover commit always succeeds (an I/O error in the commit is ignored)."""
    # the blkdebug fault over the secondary disk (a FailingWrites of the topology) is
    # ignored by the commit
    monkeypatch.setattr(rep, "_commit_refused", lambda secondary, dirty: False)
    _catch(qemu72, tmp_path, record_property, "commit_never_fails")


def test_variant_checkpoint_keeps_copied_map(qemu72, tmp_path, record_property, monkeypatch):
    """The checkpoint empties the disks but forgets to re-arm copy-before-write (the
    backup's copied clusters are not reset), so a cluster copied before the checkpoint
    is not copied again."""

    def do_checkpoint(self: ReplicationNode) -> str | None:
        if self.backup is None:
            return msg.BACKUP_CANCELLED
        assert self.active is not None and self.hidden is not None
        make_empty(self.active)
        make_empty(self.hidden)
        return None

    monkeypatch.setattr(ReplicationNode, "_do_checkpoint", do_checkpoint)
    _catch(qemu72, tmp_path, record_property, "checkpoint_keeps_copied_map")


def _all_walk_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(self: Model, machine: str, fn: Callable[[ReplicationNode], str | None]) -> str | None:
        for node in self.machine(machine).nodes:  # QEMU: newest first (QLIST_INSERT_HEAD)
            err = fn(node)
            if err is not None:
                return err
        return None

    monkeypatch.setattr(Model, "_walk", walk)


def test_variant_all_walk_oldest_first(qemu72, tmp_path, record_property, monkeypatch):
    """xen-set-replication, xen-colo-do-checkpoint and query-xen-replication-status walk
    the replication nodes oldest first (QEMU: newest first), stopping at the first error.
    Only a machine with several nodes shows it: the many-nodes group."""
    _all_walk_oldest_first(monkeypatch)
    res = _catch(qemu72, tmp_path, record_property, "all_walk_oldest_first")
    assert res.group == "many-nodes", res.summary()


# ---- variants only COLO's migration shows (the colo group: harness.model.colo)


def _colo_checkpoint(get_error: bool, secondary: bool) -> Callable[[Colo], None]:
    """Colo._checkpoint, asking the secondary's error (`get_error`) and checkpointing its
    replication (`secondary`) or not."""

    def checkpoint(self: Colo) -> None:
        p, s = self.primary, self.secondary
        if p.gone or p.waits is not colo.Wait.REQUEST:
            return
        if s.gone:
            p.leave_loop((colo.ERROR,))
            return
        if not s.in_loop:
            p.waits = colo.Wait.REPLY
            return
        s.stop_vm()
        p.stop_vm()
        err = self.filter.checkpoint_all(p.machine)
        if err is not None:
            p.leave_loop((colo.ERROR,))
            return
        if get_error:
            err = self.filter.get_error_all(s.machine)
        if err is None and secondary:
            err = self.filter.checkpoint_all(s.machine)
        if err is not None:
            s.leave_loop((colo.ERROR,))
            p.waits = colo.Wait.LOADED
            return
        s.start_vm()
        p.start_vm()

    return checkpoint


def test_variant_colo_primary_notices_death_at_once(qemu72, tmp_path, record_property, monkeypatch):
    """The primary notices a dead secondary at once (QEMU: only at its next checkpoint or
    its own failover, its thread waiting for a request): its COLO_EXIT comes with the
    death, never on request."""
    hang_up = Colo._hang_up

    def patched(self: Colo, side: colo.ColoSide) -> None:
        hang_up(self, side)
        if side is self.secondary and side.gone and self.primary.waits is colo.Wait.REQUEST:
            self.primary.leave_loop((colo.ERROR,))

    monkeypatch.setattr(Colo, "_hang_up", patched)
    res = _catch(qemu72, tmp_path, record_property, "colo_primary_notices_death_at_once")
    assert res.group == "colo", res.summary()


def test_variant_colo_checkpoint_keeps_secondary_writes(
    qemu72, tmp_path, record_property, monkeypatch
):
    """COLO's checkpoint leaves the secondary's replication alone (no
    replication_do_checkpoint_all there): the secondary VM's writes survive it."""
    monkeypatch.setattr(Colo, "_checkpoint", _colo_checkpoint(get_error=True, secondary=False))
    res = _catch(qemu72, tmp_path, record_property, "colo_checkpoint_keeps_secondary_writes")
    assert res.group == "colo", res.summary()


def test_variant_colo_primary_started_first(qemu72, tmp_path, record_property, monkeypatch):
    """COLO starts the primary's replication before the secondary's (QEMU: the secondary
    first, the primary once the secondary is READY): seen where the secondary cannot
    start (colo-refused), whose primary would then run replication."""

    def start(self: Colo) -> Observation:
        self.started = True
        p, s = self.primary, self.secondary
        s.mode, p.mode = colo.ColoMode.SECONDARY, colo.ColoMode.PRIMARY
        p.waits, s.waits = colo.Wait.READY, colo.Wait.MESSAGE
        primary_err = self.filter.start_all(p.machine, Mode.PRIMARY)
        if self.filter.start_all(s.machine, Mode.SECONDARY) is not None:
            s.leave_loop((colo.ERROR,))
            return self.observe()
        s.start_vm()
        if primary_err is not None:
            p.leave_loop((colo.ERROR,))
            return self.observe()
        p.start_vm()
        p.waits = colo.Wait.REQUEST
        return self.observe()

    monkeypatch.setattr(Colo, "start", start)
    res = _catch(qemu72, tmp_path, record_property, "colo_primary_started_first")
    assert res.group == "colo", res.summary()


def test_variant_colo_failover_skips_stop_all(qemu72, tmp_path, record_property, monkeypatch):
    """x-colo-lost-heartbeat leaves COLO without replication_stop_all(failover): no
    commit on the secondary, the primary's node still running."""

    def lost_heartbeat(self: Colo, machine: str) -> str | None:
        side = self.side(machine)
        if side.mode is colo.ColoMode.NONE:
            return self.profile.texts.colo_not_enabled
        side.stop_vm()
        side.last_mode, side.mode = side.mode, colo.ColoMode.NONE
        side.failed_over = True
        side.start_vm()
        side.leave_loop((colo.REQUEST, colo.ERROR))
        peer = self.secondary
        if peer is not side and not peer.gone and peer.in_loop:
            peer.leave_loop((colo.ERROR,))
        return None

    monkeypatch.setattr(Colo, "lost_heartbeat", lost_heartbeat)
    res = _catch(qemu72, tmp_path, record_property, "colo_failover_skips_stop_all")
    assert res.group == "colo", res.summary()


# ---- traces and replay


def _replayable_builds() -> list[tuple[str, str]]:
    """(version, --qemu-dir) of every installed build that can run replication."""
    out = []
    for b in known_builds(ROOT):
        found = probe(b)
        if replication_verdict(found) is not None:
            continue
        qemu_dir = (
            str(ROOT / b.label)
            if not Path(b.label).is_absolute() and (ROOT / b.label).is_dir()
            else str(Path(b.system).parent.parent)
        )
        out.append((found.version, qemu_dir))
    return out


BUILDS = _replayable_builds()


# (recorded trace, the variant it was recorded from, where the variant's replay diverges
# when not where it was recorded). The two-node trace was recorded when only the pair
# read the guest views back: its start answers the same error on both sides, but QEMU
# started rep (the walk is newest first) where the variant's model did not, and the
# views read after the start show it, one operation before the recorded divergence.
RECORDINGS = [
    pytest.param(RECORDED, _write_zeroes_ignored, None, id="secondary"),
    pytest.param(RECORDED_PAIR, _write_zeroes_ignored, None, id="pair"),
    pytest.param(
        RECORDED_NODES, _all_walk_oldest_first, "guest views after operation 1", id="many-nodes"
    ),
]


@pytest.mark.parametrize("trace,variant,now", RECORDINGS)
@pytest.mark.parametrize(("version", "qemu_dir"), BUILDS, ids=[v for v, _ in BUILDS])
def test_recorded_trace_replays_the_same_on_every_build(
    version, qemu_dir, trace, variant, now, capsys, monkeypatch
):
    """Each trace was recorded (and shrunk) from a run of a variant on 7.2: the
    write-zeroes-ignored variant on the secondary-only topology and on the COLO pair (its
    divergence is in the guest views the policy reads after an operation), the
    oldest-first walk on the two-node machine. With the correct model QEMU agrees (0);
    with the variant patched in it diverges again (1), at the recorded place, or where
    `now` says (the policy reads more since it was recorded: sooner)."""
    recorded = json.loads(trace.read_text())
    assert recorded["divergence"] is not None and recorded["operations"]
    assert replay_main(str(trace), qemu_dir) == 0
    out = capsys.readouterr().out
    assert f"replay: QEMU {version} agrees with the model" in out, out
    variant(monkeypatch)
    assert replay_main(str(trace), qemu_dir) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    where = recorded["divergence"]["where"]
    place = f"{where} (as recorded)" if now is None else f"{now} (recorded: {where})"
    assert first == f"replay: QEMU {version} diverges from the model at {place}", out
    # a diverging replay keeps its logs for the bisector; this one was provoked: remove them
    kept = [
        ln.removeprefix("replay: logs kept in ")
        for ln in out.splitlines()
        if ln.startswith("replay: logs kept in ")
    ]
    assert len(kept) == 1 and Path(kept[0]).is_dir(), out
    shutil.rmtree(kept[0])


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_malformed_trace_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{this is not json\n")
    assert replay_main(str(bad), None) == TraceError.exit_code == 8
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"qrc: trace {bad}: not valid JSON"), line


def test_truncated_trace_exit_code(tmp_path, capsys):
    cut = tmp_path / "cut.json"
    text = RECORDED.read_text()
    cut.write_text(text[: len(text) // 2])
    assert replay_main(str(cut), None) == 8
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"qrc: trace {cut}: truncated"), line


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("operations"),
        lambda d: d["operations"].append({"op": "no_such_op"}),
        lambda d: d["operations"][1].update(offset="zero"),
        lambda d: d["expected"].pop(),
        lambda d: d.update(recipe={"layers": {}}),
        lambda d: d.update(format="something else"),
        lambda d: d["topology"].update(kind="no-such-kind"),
        lambda d: d["topology"].update(kind="many-nodes"),
    ],
    ids=[
        "no-operations",
        "unknown-op",
        "bad-field",
        "short-expected",
        "bad-recipe",
        "not-a-trace",
        "unknown-kind",
        "recipe-not-of-its-kind",
    ],
)
def test_structurally_malformed_trace_exit_code(tmp_path, capsys, damage):
    d = json.loads(RECORDED.read_text())
    damage(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    assert replay_main(str(bad), None) == 8
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"qrc: trace {bad}: "), line


def test_missing_build_exit_code(tmp_path, capsys):
    """No binaries where --qemu-dir points: 125, git bisect's 'cannot test this'."""
    assert replay_main(str(RECORDED), str(tmp_path / "nothing")) == 125
    _one_line(capsys.readouterr().err)
