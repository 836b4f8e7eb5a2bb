"""The COLO kinds of the differential (harness.differential.kinds): the COLO pair that
COLO's migration drives (harness.colo_story), plain, with its hidden disk failing its
writes, and with a secondary that cannot start. Each is one class; they register with
Kind when this module is imported (harness.differential's __init__ does)."""

from __future__ import annotations

from hypothesis import strategies as st

from harness import faults, ops
from harness.colo_story import ColoStory
from harness.differential.kinds import Kind, PairKind, TopologySpec
from harness.faults import FailingWrites, Kill, LinkDown
from harness.model import Model
from harness.ops import PRIMARY, REP, SECONDARY
from harness.pair import PairStory
from harness.topology import Graph, pair
from harness.topology.pair import PQ
from harness.units import KiB


class ColoKind(PairKind):
    """colo: the COLO pair driven by COLO's migration (harness.topology.pair with
    colo=True, harness.colo_story): replication starts with the migration (ColoStart),
    checkpoints are COLO's (ColoCheckpoint, now and then with a side SIGKILLed in the
    middle of it), a failover is a side taking over after its peer died (the secondary:
    SIGKILL of the primary, nbd-server-stop, x-colo-lost-heartbeat, the commit; the
    primary: SIGKILL of the secondary, x-colo-lost-heartbeat). The Xen hooks' start and
    stop are not drawn (the secondary's images are inactive until COLO starts); status
    is, on either side."""

    name = "colo"
    story = ColoStory
    # the Xen hooks' start and stop (COLO's are its steps)
    _XEN = frozenset({"start_other_mode", "start_with_failover", "stop"})

    def graph(self, spec: TopologySpec) -> Graph:
        return pair.pair(spec.recipe, colo=True)

    def set_up(self, story: PairStory, spec: TopologySpec) -> None:
        """COLO's set-up: replication0 over NBD hot-added to the primary's quorum (the
        migration comes with the first step, or later: a drawn `start`)."""
        story.auto_check = False
        story.connect()

    def allows(self, op_kind: str) -> bool:
        return op_kind not in self._XEN

    def starts(self) -> tuple[ops.Op, ...]:
        return (ops.ColoStart(),)

    def start(self, data: st.DataObject, model: Model) -> tuple[ops.Op, ...]:
        return self.starts()

    def guest_node(self, data: st.DataObject, model: Model, primary_vm: int = 1) -> str:
        """As the pair's, on a VM whose machine lives (a failover killed one); before
        COLO starts only the primary VM's (the secondary VM runs from the migration on,
        and until then its images are inactive: a write there trips
        bdrv_co_write_req_prepare's BDRV_O_INACTIVE assertion, seen on 10.0.2)."""
        colo = model.colo
        alive = (PQ,) * primary_vm if not model.machine(PRIMARY).gone else ()
        if colo is not None and colo.started and not model.machine(SECONDARY).gone:
            alive += (REP,)
        return data.draw(st.sampled_from(alive), label="guest")

    def command_side(self, data: st.DataObject, model: Model) -> tuple[bool, str]:
        """Either living side's (drawn)."""
        sides = [
            side for side in (True, False) if not model.machine(PRIMARY if side else SECONDARY).gone
        ]
        primary = data.draw(st.sampled_from(sides), label="primary side")
        return primary, PRIMARY if primary else SECONDARY

    def can_start(self, model: Model) -> bool:
        """A pair migrates once."""
        return model.colo is not None and not model.colo.started

    def checkpoints(self) -> tuple[ops.Op, ...]:
        return (ops.ColoCheckpoint(),)

    def interrupted_checkpoint(self, data: st.DataObject) -> tuple[ops.Op, ...]:
        victim = data.draw(st.sampled_from((PRIMARY, SECONDARY)), label="killed mid-checkpoint")
        return (ops.ColoCheckpoint(kill=victim),)

    def can_fail_over(self, model: Model, dirty_only: bool) -> bool:
        """Both sides in COLO (a side takes over from its dead peer)."""
        colo = model.colo
        return colo is not None and colo.primary.in_loop and colo.secondary.in_loop

    def failover(self, data: st.DataObject, link_up: bool) -> tuple[ops.Op, ...]:
        """The secondary takes over (most often) or the primary does."""
        if data.draw(st.sampled_from((True, True, False)), label="secondary takes over"):
            seq: tuple[ops.Op, ...] = (Kill(PRIMARY, "SIGKILL"),)
            if link_up:
                seq += (LinkDown(SECONDARY, faults.EXPORT_ID, "server"),)
            return (*seq, ops.LostHeartbeat(SECONDARY), ops.Settle())
        return (Kill(SECONDARY, "SIGKILL"), ops.LostHeartbeat(PRIMARY))


class ColoFaultsKind(ColoKind):
    """colo-faults: the COLO pair whose hidden disk fails its writes once the first one
    reached it (a FailingWrites under the hidden disk). Its set-up starts COLO and makes
    that first write (a primary write whose copy-before-write fails the backup job):
    the next checkpoint ends the secondary's COLO (replication_get_error_all)."""

    name = "colo-faults"

    def graph(self, spec: TopologySpec) -> Graph:
        return pair.pair(
            spec.recipe, colo=True, hidden_fault=FailingWrites("hidden-fault", "hidden", under=True)
        )

    def set_up(self, story: PairStory, spec: TopologySpec) -> None:
        super().set_up(story, spec)
        story.do(ops.ColoStart())
        story.do(ops.Write(0, 64 * KiB, 0xC0, node=PQ))

    def starts(self) -> tuple[ops.Op, ...]:
        return ()  # started by the set-up


class ColoRefusedKind(ColoKind):
    """colo-refused: the COLO pair whose secondary cannot start replication (its top-id
    names no node). Its set-up migrates: COLO's start leaves the secondary's COLO at
    once, and the primary waits in COLO for READY with its replication never started;
    what follows shows which side started what."""

    name = "colo-refused"

    def graph(self, spec: TopologySpec) -> Graph:
        return pair.pair(spec.recipe, colo=True, top_id="no-such-node")

    def set_up(self, story: PairStory, spec: TopologySpec) -> None:
        super().set_up(story, spec)
        story.do(ops.ColoStart())

    def starts(self) -> tuple[ops.Op, ...]:
        return ()  # started by the set-up


COLO_KIND = Kind.registry[ColoKind.name]
COLO_FAULTS_KIND = Kind.registry[ColoFaultsKind.name]
COLO_REFUSED_KIND = Kind.registry[ColoRefusedKind.name]
