"""Version profiles: what changed in the replication filter, release by release.

A case states one expectation; the model asks the profile how the probed QEMU
version answers. Everything that differs between releases is a fact of a
profile: its texts (`texts`, harness.model.messages.Texts), its behaviour
switches, and its known bugs, so a case can be a strict expected failure that
turns red the day QEMU fixes the bug. Adding a release is one profile here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.model.bugs import (
    EJECTED_ACTIVE_COMMIT_CRASHES,
    EJECTED_HIDDEN_REOPEN_CRASHES,
    READ_ONLY_NOT_RESTORED,
    Bug,
)
from harness.model.messages import Texts

# Known bugs. `versions` begins with the oldest run release whose profile has the bug,
# then says which builds showed it and since when QEMU has it (the commit, found in
# QEMU's history: docs/upstream/ has one report per live bug). "Master" is QEMU's master
# of 2026-02-13 (ece408818d, 10.2.50), built from source and run (the mirror's tip of
# 2026-02-15 adds only a CI commit). The four replication bugs below are in every
# profile from the seed's on: for 4.1 that is not true of UNALIGNED_ZEROES_GARBAGE
# (4.2 on) and BLOCK_RESIZE_ABORTS (5.0 on), but 4.2 and older pick the seed's profile
# and no 4.x build is run; the seed keeps them rather than the model's answers for a
# QEMU without them (EIO for the unaligned write-zeroes), which nothing here checks.
_LIVE = "5.2, 7.2.22, 10.0.2, 10.0.13, 11.1.3 and master (ece408818d) seen"
START_RETRY_ABORTS = Bug(
    f"{_LIVE}; since 2.8 (29ff789060 'replication: Implement new driver for block "
    "replication', the driver's first commit; reachable over QMP since 2.9's "
    "xen-set-replication)",
    "replication_start sets s->blocker before the top_bs check and never clears it on "
    "that path, so a retried start trips error_setv's `*errp == NULL' assertion and QEMU "
    "aborts",
)
UNALIGNED_ZEROES_GARBAGE = Bug(
    f"{_LIVE}, and with qemu-io and blkdebug alone; since 4.2 (7a3f542fbdf 'block/io: "
    "refactor padding', checked on it and its parent)",
    "an unaligned write-zeroes on a primary replication node writes its head/tail sectors "
    "from an uninitialised buffer, the bytes it was asked to zero included "
    "(bdrv_padding_rmw_read returns before zero_mem: when the RMW read fails, and "
    "bdrv_co_do_zero_pwritev ignores that failure)",
)
ACTIVE_DISK_SNAPSHOT_ALLOWED = Bug(
    f"{_LIVE}; since 2.8 (29ff789060 blocks top-id's node only)",
    "only top-id's node is blocked; a snapshot of the active disk is allowed while "
    "replication runs, and checkpoints then empty the new overlay instead of the active disk",
)
BLOCK_RESIZE_ABORTS = Bug(
    f"{_LIVE}; since 5.0 (7607074f42 'blockdev: Allow resizing everywhere' dropped the "
    "first-non-filter check that refused it)",
    "block_resize of a replication node aborts QEMU (replication_child_perm never takes "
    "RESIZE on `file`, the filter forwards the truncate: bdrv_co_write_req_prepare: "
    "Assertion `child->perm & BLK_PERM_RESIZE' failed)",
)
# Seen on 5.2 (the only release of its range that is run).
BLOCK_STREAM_ABORTS = Bug(
    "5.2, fixed in 6.0 by 'stream: Don't crash when node permission is denied'",
    "block-stream of a replication node aborts QEMU: since 5.2 ('stream: Deal with "
    "filters') stream_start walks through the filter into its file's chain and adds each "
    "node there as the job's 'intermediate node' with &error_abort; the node's `file` edge "
    "uses WRITE, which the job does not share (Unexpected error in bdrv_check_update_perm())",
)
HMP_IO_DURING_COMMIT_HANGS = Bug(
    "5.2, seen under load now and then (not on 7.2 and later; 6.x not run)",
    "an HMP qemu-io on the replication node while the failover commit runs gets no reply: "
    "QEMU stops answering QMP and must be killed (the command's temporary BlockBackend "
    "drains the node at its end while the commit's mirror job runs; not root-caused)",
)
NBD_CLIENT_WRITE_AFTER_DROP_ABORTS = Bug(
    "5.2, seen with its qemu-io (not on 7.2 and later; 6.x not run)",
    "an NBD client whose export was deleted under it aborts on its next write instead of "
    "failing it: nbd_client_co_pwritev asserts `s->info.flags & NBD_FLAG_SEND_FUA' on a "
    "connection that no longer has the server's flags",
)
# COLO (migration/colo.c, migration/migration.c): facts of the migration that drives the
# filter, not of the filter.
COLO_PLAIN_MIGRATION = Bug(
    "10.0, 10.1: 10.0.0 to 10.0.6 and 10.1.0, since 4881411136 'migration: Always set "
    "DEVICE state'; fixed by 0b5bf4ea76 'migration: Fix transition to COLO state from "
    "precopy' in 10.2 and 10.0.7",
    "a migration with x-colo never enters COLO on the primary: migration_completion "
    "expects the state ACTIVE where precopy now stands in DEVICE, so the primary completes "
    "a plain migration (postmigrate) while the secondary starts replication, enters COLO "
    "and leaves it with COLO_EXIT reason error when the stream ends",
)
COLO_QUIT_CRASHES = Bug(
    "5.2, the one release of its range run; since 4.0 by the sources (892ae715b6 "
    "'migration: Cleanup during exit' made quit shut the stale file down); fixed in 6.2 "
    "by ac183dac96 'colo: fixed "
    "'Segmentation fault' when the simplex mode PVM poweroff'",
    "once the primary's COLO thread has ended, quit crashes QEMU now and then (SIGSEGV): "
    "colo_process_checkpoint closes the return path's QEMUFile without clearing "
    "s->rp_state.from_dst_file, and migration_shutdown's migrate_fd_cancel shuts the freed "
    "file down; the qcow2 metadata the primary still cached is lost with it",
)
COLO_TRANSACTION_ERROR_IGNORED = Bug(
    "5.2, 7.2.22, 10.0.13, 11.1.3 and master (ece408818d) seen (10.0.2 never enters "
    "COLO); since 2.8 (a91246c95f 'COLO: Send PVM state to secondary side when do "
    "checkpoint' set ret from qemu_file_get_error before the last two receives)",
    "a COLO checkpoint whose secondary dies after the primary sent the device state "
    "leaves the primary's VM stopped with COLO still running: "
    "colo_do_checkpoint_transaction's `ret` was set to 0 by the last successful call "
    "(qemu_file_get_error, later qemu_fflush), so failing to receive VMSTATE_RECEIVED or "
    "VMSTATE_LOADED returns 0 and colo_process_checkpoint waits for the next checkpoint "
    "instead of leaving COLO (no COLO_EXIT until a later request fails)",
)
COLO_TCG_VCPU_DEADLOCK = Bug(
    "5.2, 7.2.22, 10.0.13 seen (under TCG with a vCPU; not with KVM, not with -M none); "
    "since 4.2 (9458a9a1df 'memory: fix race between TCG and accesses to dirty bitmap' "
    "added the run_on_cpu that 3.1's 3f6df99d9d calls without the BQL); from 10.2 "
    "(c89d1c879a 'bql: Fix bql_locked status with condvar APIs') the race aborts instead "
    "(bql_update_status: Assertion `bql_locked() != locked' failed): master (ece408818d) "
    "8 of 12 runs; fixed by Lukas Straub's 'colo: Hold the BQL while sending ram state' "
    "(posted 2026-02-10, not on master of 2026-02-13; 11.1.3 has it)",
    "a COLO checkpoint may deadlock the primary after its STOP: "
    "colo_do_checkpoint_transaction drops the BQL before qemu_savevm_live_state, whose RAM "
    "bitmap sync calls TCG's tcg_log_global_after_sync -> run_on_cpu -> do_run_on_cpu, "
    "which waits on qemu_work_cond with the BQL's mutex it does not hold; pthread_cond_wait "
    "gives it back taken, so the COLO thread owns the BQL without knowing it, and its "
    "qemu_mutex_lock_iothread before vm_start blocks for good (the main loop with it: QMP "
    "stops answering; the secondary has loaded the checkpoint and runs). A race: only when "
    "the vCPU thread has not done the work when do_run_on_cpu first checks",
)
BLOCK_RESIZE_NULL_DEVICE = Bug(
    "5.2, 7.2.22 seen; since 2.1 by the sources (9c75e168bc 'block: check for RESIZE "
    "blocker in the QMP command, not bdrv_truncate()' names the device, NULL for a "
    "node-name); fixed in 9.0 "
    "by 9fe0753321 'blockdev: Fix block_resize error reporting for op blockers' "
    "(bisected: docs/bisect-block-resize.md)",
    "block_resize with node-name reports \"Device '(null)' is in use\"",
)


@dataclass(frozen=True, slots=True)
class Profile:
    """Behaviour switches of one QEMU release line (see replication-behaviour.md)."""

    name: str
    version: tuple[int, int, int]
    # QEMU's texts as this release prints them
    texts: Texts
    # 5.0: start/stop/checkpoint return silently in DONE and FAILOVER.
    ignore_after_failover: bool
    # 5.0: get_error fails only in NONE (seed: in every stage but RUNNING).
    get_error_only_none: bool
    # 5.1: backup job pointer cleared on cleanup: a plain secondary stop then fails
    # its checkpoint with "Backup job was cancelled unexpectedly" and leaves the
    # active and hidden disks as they were.
    plain_stop_skips_empty: bool
    # Before 6.1 the secondary disk is not a child of the replication node, only the
    # hidden disk's backing child, which holds no write permission: a FAILOVER_FAILED
    # write whose range reaches the secondary disk (a run allocated in neither the active
    # nor the hidden disk) trips bdrv_co_write_req_prepare's assertion and QEMU aborts;
    # a write wholly allocated above it goes to the active disk as later.
    failover_failed_write_crashes: bool
    # 5.2 ("stream: Deal with filters", 67acfd2188): block-stream of a filter streams into
    # the chain below it (bdrv_filter_or_cow_bs), so block-stream of the replication node
    # meets its `file` edge's permissions. Before, stream_start walks backing_bs() only,
    # and the replication node has no backing: nothing to stream, nothing refused.
    stream_looks_through_filters: bool
    # 6.0 ("storage-daemon: Call bdrv_close_all() on exit"): before, qemu-storage-daemon
    # exits without closing its nodes, so a qcow2 image it wrote loses the metadata still
    # in its cache. Not the filter's behaviour, but it decides where the harness hosts a
    # primary's NBD child: a daemon that loses data cannot hold a layer it checks.
    qsd_closes_images_on_exit: bool
    # 6.1 ("replication: Properly attach children", 3b78420bb1): start attaches the hidden
    # and secondary disks as the replication node's `hidden disk` and `secondary disk`
    # children (with WRITE), dropped only when a failover completes. Before, it copies the
    # active disk's and the hidden disk's backing BdrvChild pointers and the node's only
    # edge stays `file`; so a start refused at the top-id check also reopens the hidden
    # disk read-only again (later the `hidden disk` child's WRITE keeps it read-write).
    # (The same commit ends failover_failed_write_crashes.)
    start_attaches_children: bool
    # The driver of the filter a backup job inserts above its source (the replication's
    # backup job: above the secondary disk): "backup-top" (4.2 on; 4.1's backup job has no
    # filter, and no release before 6.1 shows it as an edge of the replication node),
    # "copy-before-write" from 6.2 ("block: rename backup-top to copy-before-write",
    # d003e0aece).
    backup_filter_driver: str
    # 8.0: attaching a child takes the graph's write lock, which begins a drained section
    # over every node of the process (bdrv_graph_wrlock -> bdrv_drain_all_begin_nopoll).
    # start attaches the hidden and secondary disks (6.1 on), so from 8.0 a start
    # restarts a throttled request queued on any node, related to it or not. (10.1's
    # bdrv_graph_wrlock_drained makes the drain explicit; the answer is the same.)
    start_drains_every_node: bool
    # 10.0: every HMP qemu-io drains the graph (releases throttled/held requests).
    hmp_qemu_io_drains: bool
    # 4.2 ('block/backup: insert backup-top filter'; the 5.0 profile here): the backup
    # job's filter keeps its target child (write on the hidden disk) until the job is
    # freed, after the completion callback in which replication cleans up; 4.1's backup
    # job let go of its target in its clean. (READ_ONLY_NOT_RESTORED is what it does.)
    cleanup_meets_backup_target: bool
    # 6.2 ('block/nbd: drop connection_co', 4ddb5d2fde): a drain no longer cuts an NBD
    # client's reconnect-delay short (5.2's nbd_client_co_drain_begin turned WAIT into
    # NOWAIT), so a QEMU whose primary node's NBD server is gone takes the whole
    # reconnect-delay to quit (its close's flush waits in it). Not the filter's: the NBD
    # client under the primary node.
    nbd_close_waits_reconnect_delay: bool
    # Known bugs (None: not in this release). The model predicts the first two.
    # A second start after "No top_bs or it is invalid" trips error_setv's assertion
    # (the blocker Error leaks) and QEMU aborts.
    start_retry_after_bad_top_aborts: Bug | None
    # An unaligned write-zeroes on a primary leaves its padded sectors undefined.
    unaligned_zeroes_garbage: Bug | None
    active_disk_snapshot_allowed: Bug | None
    block_resize_aborts: Bug | None
    # the texts' block_resize_names_blocker, as the bug it was
    block_resize_null_device: Bug | None
    # block-stream of a replication node (stream_looks_through_filters) aborts
    block_stream_aborts: Bug | None
    # Guest I/O through HMP qemu-io while a failover commit runs may hang QEMU: cases
    # that read right after a failover wait for the commit first where this is set.
    hmp_io_during_commit_hangs: Bug | None
    # Not the filter's: the NBD client (the harness's primary path is a qemu-io over NBD).
    nbd_client_write_after_drop_aborts: Bug | None
    # The hidden and secondary disks stay read-write after the backup job's cleanup (the
    # model predicts it from the writers attached then; cases stating the restore xfail).
    read_only_not_restored: Bug | None = None
    # Closing the backup job on an ejected read-only hidden disk crashes QEMU (SIGSEGV).
    ejected_hidden_reopen_crashes: Bug | None = None
    # A failover with an ejected active disk crashes QEMU (SIGFPE).
    ejected_active_commit_crashes: Bug | None = None

    # ---- COLO: the migration that drives the filter (harness.model.colo)
    # 11.x: x-colo needs the return-path capability ("Capability 'x-colo' requires
    # capability 'return-path'"). Before, it must stay off: COLO reads its messages from
    # the return path itself (qemu_file_get_return_path), and a return-path thread
    # reading the same channel takes them ("RP: Received invalid message"), so the
    # primary's migration fails and the secondary leaves COLO.
    colo_needs_return_path: bool = False
    # Before 6.2 (2b9f6bf36c "Changed the last-mode to none of first start COLO"):
    # query-colo-status's last-mode is set when COLO starts, to the mode itself; from
    # 6.2 only a failover sets it.
    colo_last_mode_at_start: bool = False
    # The primary completes a plain migration instead of entering COLO.
    colo_plain_migration: Bug | None = None
    # quit may crash the primary once its COLO thread has ended.
    colo_quit_crashes: Bug | None = None
    # a failed receive late in a checkpoint is not an error to the primary.
    colo_transaction_error_ignored: Bug | None = COLO_TRANSACTION_ERROR_IGNORED
    # a checkpoint may deadlock the primary under TCG with a vCPU (a race; 4.2 on, the
    # seed's 4.1 has not got it)
    colo_tcg_vcpu_deadlock: Bug | None = None

    # ---- why a case that states one side of a behaviour switch cannot run here
    # (None: it can)

    @property
    def without_plain_stop_report(self) -> str | None:
        """For cases stating what a plain stop answers and leaves behind (5.1 on)."""
        if self.plain_stop_skips_empty:
            return None
        return (
            f"QEMU {self.name}: a plain stop reports the cancelled backup job (and leaves "
            "the disks as they were) only since QEMU 5.1"
        )

    @property
    def without_stream_through_filters(self) -> str | None:
        """For cases stating what block-stream of the replication node meets (5.2 on)."""
        if self.stream_looks_through_filters:
            return None
        return (
            f"QEMU {self.name}: block-stream reaches the chain below a filter only since "
            "QEMU 5.2 (before, the replication node has nothing to stream)"
        )

    @property
    def without_ignore_after_failover(self) -> str | None:
        """For cases stating that requests after a failover are ignored (5.0 on)."""
        if self.ignore_after_failover:
            return None
        return (
            f"QEMU {self.name}: start/stop/checkpoint are ignored after failover only "
            "since QEMU 5.0"
        )

    @property
    def hmp_io_ends_failover(self) -> str | None:
        """For cases doing guest I/O over HMP qemu-io while a failover commit is held."""
        if not self.hmp_qemu_io_drains:
            return None
        return (
            f"QEMU {self.name}: every HMP qemu-io drains the graph, which lets the held "
            "commit finish, so guest I/O during FAILOVER cannot be observed through it"
        )


SEED_4_1 = Profile(
    name="4.1",
    version=(4, 1, 0),
    texts=Texts(
        failed_to_empty_message=False,
        block_resize_names_blocker=False,
        node_name_texts_quoted=False,
        perm_conflict_names_both=False,
        enum_error_names_parameter=False,
        backup_filter_prefix="Cannot set permissions for backup-top filter: ",
    ),
    ignore_after_failover=False,
    get_error_only_none=False,
    plain_stop_skips_empty=False,
    failover_failed_write_crashes=True,
    stream_looks_through_filters=False,
    qsd_closes_images_on_exit=False,
    start_attaches_children=False,
    backup_filter_driver="backup-top",
    start_drains_every_node=False,
    hmp_qemu_io_drains=False,
    cleanup_meets_backup_target=False,
    nbd_close_waits_reconnect_delay=False,
    start_retry_after_bad_top_aborts=START_RETRY_ABORTS,
    unaligned_zeroes_garbage=UNALIGNED_ZEROES_GARBAGE,
    active_disk_snapshot_allowed=ACTIVE_DISK_SNAPSHOT_ALLOWED,
    block_resize_aborts=BLOCK_RESIZE_ABORTS,
    block_resize_null_device=BLOCK_RESIZE_NULL_DEVICE,
    block_stream_aborts=None,
    hmp_io_during_commit_hangs=None,
    nbd_client_write_after_drop_aborts=None,
    colo_last_mode_at_start=True,
    colo_quit_crashes=COLO_QUIT_CRASHES,
)
V5_0 = replace(
    SEED_4_1,
    name="5.0",
    version=(5, 0, 0),
    ignore_after_failover=True,
    get_error_only_none=True,
    colo_tcg_vcpu_deadlock=COLO_TCG_VCPU_DEADLOCK,
    cleanup_meets_backup_target=True,
    read_only_not_restored=READ_ONLY_NOT_RESTORED,
)
V5_1 = replace(
    V5_0,
    name="5.1",
    version=(5, 1, 0),
    plain_stop_skips_empty=True,
    texts=replace(V5_0.texts, failed_to_empty_message=True),
    ejected_hidden_reopen_crashes=EJECTED_HIDDEN_REOPEN_CRASHES,
    ejected_active_commit_crashes=EJECTED_ACTIVE_COMMIT_CRASHES,
)
V5_2 = replace(
    V5_1,
    name="5.2",
    version=(5, 2, 0),
    stream_looks_through_filters=True,
    block_stream_aborts=BLOCK_STREAM_ABORTS,
    hmp_io_during_commit_hangs=HMP_IO_DURING_COMMIT_HANGS,
    nbd_client_write_after_drop_aborts=NBD_CLIENT_WRITE_AFTER_DROP_ABORTS,
)
V6_0 = replace(
    V5_2,
    name="6.0",
    version=(6, 0, 0),
    qsd_closes_images_on_exit=True,
    texts=replace(V5_2.texts, node_name_texts_quoted=True),
    block_stream_aborts=None,
)
V6_1 = replace(
    V6_0,
    name="6.1",
    version=(6, 1, 0),
    failover_failed_write_crashes=False,
    start_attaches_children=True,
    texts=replace(
        V6_0.texts,
        perm_conflict_names_both=True,
        backup_filter_prefix="Cannot append backup-top filter: ",
    ),
)
V6_2 = replace(
    V6_1,
    name="6.2",
    version=(6, 2, 0),
    backup_filter_driver="copy-before-write",
    nbd_close_waits_reconnect_delay=True,
    colo_last_mode_at_start=False,
    colo_quit_crashes=None,
    texts=replace(
        V6_1.texts, enum_error_names_parameter=True, backup_filter_prefix="Could not replace node: "
    ),
)
V7_2 = replace(
    V6_2,
    name="7.2",
    version=(7, 2, 0),
    hmp_io_during_commit_hangs=None,
    nbd_client_write_after_drop_aborts=None,
)
V8_0 = replace(
    V7_2,
    name="8.0",
    version=(8, 0, 0),
    start_drains_every_node=True,
    texts=replace(V7_2.texts, colo_not_in_mode=True),
)
V9_0 = replace(
    V8_0,
    name="9.0",
    version=(9, 0, 0),
    texts=replace(V8_0.texts, block_resize_names_blocker=True),
    block_resize_null_device=None,
)
V10_0 = replace(
    V9_0,
    name="10.0",
    version=(10, 0, 0),
    hmp_qemu_io_drains=True,
    colo_plain_migration=COLO_PLAIN_MIGRATION,
)
# 10.0.7: the stable backport of 0b5bf4ea76 (COLO_PLAIN_MIGRATION).
V10_0_7 = replace(V10_0, name="10.0.7", version=(10, 0, 7), colo_plain_migration=None)
# 10.1.0 has 4881411136 and not its fix (its stable releases were not checked).
V10_1 = replace(V10_0_7, name="10.1", version=(10, 1, 0), colo_plain_migration=COLO_PLAIN_MIGRATION)
# 10.2 ("block/monitor: Use hmp_handle_error to report error"): drive_add's errors,
# the filter's open refusals among them, print with HMP's "Error: " prefix; and
# 0b5bf4ea76 (COLO_PLAIN_MIGRATION).
V10_2 = replace(
    V10_1,
    name="10.2",
    version=(10, 2, 0),
    texts=replace(V10_1.texts, hmp_error_prefix="Error: "),
    colo_plain_migration=None,
)
# 11.1.3: x-colo requires return-path. The change is newer than QEMU's master of
# 2026-02-15 (it has not got it), so it is in 11.0 or 11.1; 11.0 was not run. So is the
# fix of EJECTED_HIDDEN_REOPEN_CRASHES (a stop with an ejected hidden disk answers).
# It also sends the RAM of a COLO checkpoint with the BQL held (COLO_TCG_VCPU_DEADLOCK
# fixed; seen in its colo_do_checkpoint_transaction, inlined in
# migrate_start_colo_process: bql_unlock after the RAM, no hang in 20 runs).
V11_1 = replace(
    V10_2,
    name="11.1",
    version=(11, 1, 0),
    colo_needs_return_path=True,
    colo_tcg_vcpu_deadlock=None,
    ejected_hidden_reopen_crashes=None,
)

PROFILES: tuple[Profile, ...] = (
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
)


def profile_for(version: tuple[int, int, int]) -> Profile:
    """The newest profile not newer than `version` (older than 4.1 gets the seed's); a
    stable release (10.0.7) counts, so 10.0.2 and 10.0.13 are judged apart."""
    chosen = SEED_4_1
    for p in PROFILES:
        if p.version <= version:
            chosen = p
    return chosen


def profile_named(name: str) -> Profile:
    for p in PROFILES:
        if p.name == name:
            return p
    raise KeyError(f"no profile {name!r}; known: {', '.join(p.name for p in PROFILES)}")
