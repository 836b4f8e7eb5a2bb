"""Print the README's table of paths: what varies in a case's parameters, the paths it
takes through QEMU, and the quick case that takes each (the quick set's rule: every path
has one; a value that takes a path already listed needs none).

A path is a way through `replication.c` or through the machinery it leans on (the backup
job's copy-before-write, the failover's commit, the primary's quorum, the NBD server,
qcow2's make-empty, block jobs' op blockers) that another value of the same parameter
does not take. The cases are named `FILE::TEST[ID]` (ID: the parameter's id, without the
QEMU build's); `FILE::TEST` alone: the test is quick as a whole, or each of its
parameters is. Each is looked up in the case module itself (its marks as pytest sees
them), so a conditional mark counts as what it evaluates to.
Run: .venv/bin/python scripts/quick_paths.py (exit 1, on stderr: a case that is not
quick, or not there).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (what varies, the path, the quick case taking it)
PATHS: list[tuple[str, str, str]] = [
    (
        "the hidden disk's cluster against the copy granularity (64 KiB)",
        "below (512 B): 64 KiB copied",
        "test_checkpoint.py::test_copy_granularity[secondary-512-data]",
    ),
    ("", "equal (64 KiB)", "test_checkpoint.py::test_copy_granularity[secondary-data]"),
    (
        "",
        "above (2 MiB): a whole hidden cluster copied",
        "test_checkpoint.py::test_copy_granularity[secondary-2m-data]",
    ),
    (
        "what a copy-before-write finds",
        "data",
        "test_checkpoint.py::test_copy_granularity[secondary-data]",
    ),
    (
        "",
        "a zero cluster (copied as write-zeroes)",
        "test_faults.py::test_hidden_eio_during_copy_before_write",
    ),
    (
        "",
        "a zero cluster, then data (the copy cut where the zeroes end)",
        "test_checkpoint.py::test_copy_granularity[secondary-zero-data]",
    ),
    (
        "",
        "a cluster copied since the last checkpoint (no copy)",
        "test_checkpoint.py::test_hidden_keeps_oldest_data_until_checkpoint[secondary]",
    ),
    (
        "the disk's size against the backup cluster",
        "a multiple",
        "test_geometry.py::test_failover_story[64k]",
    ),
    (
        "",
        "not a multiple: a partial last cluster, copied again after every checkpoint",
        "test_checkpoint.py::test_partial_last_cluster_copied_after_every_checkpoint",
    ),
    ("top-id", "names nothing", "test_start.py::test_start_bad_top_id[names-nothing]"),
    (
        "",
        "a node that is not a root (rep, a quorum above it)",
        "test_start.py::test_start_bad_top_id[rep-under-quorum]",
    ),
    (
        "",
        "an unrelated root node",
        "test_start.py::test_start_bad_top_id[unrelated-root-node]",
    ),
    (
        "",
        "an unrelated BlockBackend",
        "test_start.py::test_start_bad_top_id[unrelated-blockbackend]",
    ),
    ("", "the node itself", "test_start.py::test_start_good_top_id[the-node-itself]"),
    (
        "",
        "a root above it (a quorum: the op blocker goes there)",
        "test_start.py::test_start_good_top_id[quorum-above]",
    ),
    (
        "the primary's replication child, to a quorum write",
        "accepts it",
        "test_colo_pair.py::test_pair_life[rep]",
    ),
    (
        "",
        "refuses it (stopped): the vote threshold decides",
        "test_colo_pair.py::test_primary_stop_then_writes_refused_by_the_child",
    ),
    (
        "the stage a secondary guest's request meets",
        "none, running, done, failover-failed",
        "test_io_matrix.py::test_stage_cells",
    ),
    (
        "",
        "failover (the commit in flight): writes through the commit's filter",
        "test_faults.py::test_failover_in_flight_guest_io[nbd]",
    ),
    (
        "the failover commit",
        "completes",
        "test_stop_failover.py::test_secondary_life_status[failover]",
    ),
    (
        "",
        "held in flight",
        "test_status.py::test_secondary_status_during_the_failover_commit",
    ),
    ("", "fails", "test_status.py::test_secondary_status_after_a_failed_commit"),
    (
        "who blocks an operation on a node",
        "the filter's op blocker (the top-id node)",
        "test_blockers.py::test_operation_while_running[blockdev-del-rep]",
    ),
    (
        "",
        "the backup job (its target, the hidden disk)",
        "test_blockers.py::test_operation_while_running[blockdev-del-hidden]",
    ),
    (
        "",
        "the hidden disk's backing edge (the secondary disk)",
        "test_blockers.py::test_operation_while_running[blockdev-del-secondary]",
    ),
    (
        "",
        "the failover commit (its source, intermediate and target nodes)",
        "test_blockers.py::test_failover_commit_blocks_its_nodes",
    ),
    (
        "the open's file",
        "an image that cannot be opened (refused before the filter's open)",
        "test_open.py::test_drive_add_file_error_before_mode",
    ),
    (
        "",
        "none at all (drive_add: the filter's own open of `file` refuses)",
        "test_open.py::test_drive_add_refused[no-file-before-mode]",
    ),
    (
        "the checkpoint's make-empty fails",
        "on the active disk (before the hidden disk's turn)",
        "test_faults.py::test_active_eio_on_secondary_writes",
    ),
    ("", "on the hidden disk", "test_faults.py::test_make_empty_eio_during_checkpoint"),
    (
        "how a check reads a guest's view",
        "HMP qemu-io",
        "test_checkpoint.py::test_copy_granularity[secondary-data]",
    ),
    (
        "",
        "the harness's NBD reader (every byte through rep), before start too",
        "test_io_matrix.py::test_export_read_before_start",
    ),
]


def _quick(marks: Iterable[Any]) -> bool:
    return any(getattr(m, "name", None) == "quick" for m in marks)


def _marks(obj: Any) -> list[Any]:
    marks = getattr(obj, "pytestmark", [])
    return list(marks) if isinstance(marks, (list, tuple)) else [marks]


def _param_id(p: Any) -> str:
    if getattr(p, "id", None):
        return str(p.id)
    values = p.values if hasattr(p, "values") else (p if isinstance(p, tuple) else (p,))
    return "-".join(str(v) for v in values)


def is_quick(case: str) -> bool | None:
    """Whether `case` (FILE::TEST[ID] or FILE::TEST) is in the quick set; None: no such case."""
    path, _, rest = case.partition("::")
    test, _, pid = rest.partition("[")
    try:
        module = importlib.import_module(f"cases.{Path(path).stem}")
    except ImportError:
        return None
    fn = getattr(module, test, None)
    if fn is None:
        return None
    marks = _marks(module) + _marks(fn)
    whole = _quick(mk for mk in marks if mk.name != "parametrize")
    params = {
        _param_id(p): _quick(getattr(p, "marks", ()))
        for mk in marks
        if mk.name == "parametrize"
        for p in mk.args[1]
    }
    if not pid:
        return whole or (bool(params) and all(params.values()))
    pid = pid.removesuffix("]")
    if pid not in params:
        return None
    return whole or params[pid]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    bad = []
    print("| what varies | path | quick case |\n|---|---|---|")
    for what, path, case in PATHS:
        quick = is_quick(case)
        if quick is None:
            bad.append(f"{case} (no such case)")
        elif not quick:
            bad.append(f"{case} (not quick)")
        print(f"| {what} | {path} | `{case}` |")
    if bad:
        print(f"\npaths without a quick case: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
