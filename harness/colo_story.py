"""A story on the COLO pair driven by COLO's migration (harness.topology.pair with
`colo=True`): its life cycle as migration/colo.c and docs/COLO-FT.txt run it.

The graph is the Xen-path pair's (PairStory: quorums, the primary's replication node
over NBD, the secondary's active -> hidden -> secondary chain), with the secondary
waiting for the migration. The replication nodes are never started by hand: the
migration starts them (ColoStart), checkpoints them (ColoCheckpoint) and fails them
over (LostHeartbeat), and each of these steps is compared with the model's COLO
(harness.model.colo): each side's COLO mode, its VM's run state and STOP/RESUME
events, its COLO_EXIT; the data of both VMs' views and every live layer after each
step, as on the Xen path.
"""

from __future__ import annotations

import signal

from harness import ops
from harness.faults import Kill
from harness.model.profiles import Profile
from harness.observe import ColoSideState, Observation
from harness.ops import PRIMARY, SECONDARY
from harness.pair import PairStory
from harness.topology.pair import PREP


class ColoStory(PairStory):
    """A PairStory whose replication is driven by COLO's migration."""

    def migrate(self) -> Observation:
        """COLO-FT's order: the primary's replication node over NBD is added and put into
        its quorum, then the migration starts COLO on both sides."""
        if PREP not in self.model.nodes:
            self.connect()
        return self.do(ops.ColoStart())

    def colo_checkpoint(self) -> Observation:
        return self.do(ops.ColoCheckpoint())

    def lost_heartbeat(self, machine: str) -> Observation:
        return self.do(ops.LostHeartbeat(machine))

    def settle(self) -> None:
        """Wait for the secondary's failover commit; then its VM runs on the secondary
        disk (the inline active and hidden nodes are closed)."""
        self.do(ops.Settle())
        self.after_failover()

    def secondary_takes_over(self) -> None:
        """COLO-FT's "Secondary Failover": the primary is gone; the secondary stops its
        NBD server, fails over (its commit of active and hidden into the secondary disk
        runs), and its VM goes on on the secondary disk."""
        if PRIMARY not in self.topo.gone:
            self.do(Kill(PRIMARY, signal.Signals.SIGKILL.name))
        self.stop_nbd_server()
        self.lost_heartbeat(SECONDARY)
        self.settle()

    def primary_takes_over(self) -> None:
        """COLO-FT's "Primary Failover": the secondary is gone; the primary fails over (its
        replication node stops and refuses writes), then leaves its quorum with only the
        local disk: x-blockdev-change removes the child, blockdev-del deletes the node."""
        if SECONDARY not in self.topo.gone:
            self.do(Kill(SECONDARY, signal.Signals.SIGKILL.name))
        self.lost_heartbeat(PRIMARY)

    def finish(self) -> None:
        """Quit every living machine as a step (a quit can crash: the profile says when),
        then check every image offline."""
        for name in (PRIMARY, SECONDARY):
            if name not in self.topo.gone:
                self.quit(name)
        super().finish()


def in_colo(
    profile: Profile,
    machine: str,
    runs: tuple[str, ...] = (),
    *,
    running: bool = True,
    exit: str | None = None,
) -> ColoSideState:
    """What a case states of a side still in COLO (no failover yet): its mode by its
    role, last-mode as the release sets it at start, its VM, its STOP/RESUME events and
    COLO_EXIT in the step."""
    mode = "primary" if machine == PRIMARY else "secondary"
    last = mode if profile.colo_last_mode_at_start else "none"
    return ColoSideState(machine, mode, last, "none", running, runs, exit)
