"""Opening a replication node: every open-time error, exactly, on every path; and what a
successful open looks like in the graph.

replication_open (7.2 = 10.0) opens `file` first, then checks, in order: mode missing,
mode primary with top-id, mode secondary without top-id, any other mode. Only then
does it register the node for the *_all commands (replication_new), so a failed open
leaves no replication state behind: the machine's status stays `{"error": false}`, and
the image is released (the same file opens again at once).

Three paths:
- blockdev-add: QAPI's schema answers first (BlockdevOptionsReplication: `mode` is a
  required ReplicationMode enum, `top-id` an optional string, `file` required), so the
  driver's own "Missing the option mode" / "should be primary or secondary" are
  unreachable there; the two top-id errors are the driver's.
- HMP drive_add (if=none): no schema; the mode texts are the driver's, the `file` and
  unknown-option texts the block layer's.
- qemu-io with a `json:{...}` filename: no schema either; qemu-io prints
  `qemu-io: can't open device <filename>: <text>` on stderr and exits 1.
The texts are the release's, as its profile words them (`msg`); they are identical in
QEMU 7.2.22 and 10.0.2.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from harness.drive import drive_add
from harness.graph import block_job_nodes, node_info, node_names, rep_edges
from harness.images import Recipe, build_chain
from harness.observe import IO_EIO, QMP_OK, QmpResult, qmp_error, status
from harness.ops import PRIMARY, REP, SECONDARY, Read, Start, Status

QUICK = pytest.mark.quick

NO_REPLICATION_NODE = status(None)  # no replication state registered on the machine
MISSING = object()  # "leave this option out"


@pytest.fixture
def disk(qemu_build, tmp_path):
    """One 1 MiB qcow2 image (no backing): the file of the node under test."""
    rec = Recipe.from_dict({"layers": {"disk": {"size": "1M"}}}, source="<open: one disk>")
    return build_chain(qemu_build[0], rec, tmp_path / "images")


@pytest.fixture
def machine(qemu_build, machines):
    return machines.launch(qemu_build[0], SECONDARY)


def file_opts(disk) -> dict[str, Any]:
    """The file as an inline qcow2 without node names (drive_add and json: reuse it)."""
    return {"driver": "qcow2", "file": {"driver": "file", "filename": str(disk.path("disk"))}}


def rep_opts(disk, **options: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"driver": "replication", "file": file_opts(disk)}
    for k, v in options.items():
        key = k.replace("_", "-")
        if v is MISSING:
            opts.pop(key, None)
        else:
            opts[key] = v
    return opts


def assert_nothing_left(m, msg, disk, options: dict[str, Any]) -> None:
    """A failed open leaves no node and no replication state; the image is free again."""
    assert node_names(m) == set()
    assert m.qmp("query-xen-replication-status") == NO_REPLICATION_NODE
    mode = options.get("mode") if options.get("mode") in ("primary", "secondary") else "primary"
    good = rep_opts(disk, node_name=REP, mode=mode)
    if mode == "secondary":
        good["top-id"] = REP
    assert m.qmp("blockdev-add", **good) == QMP_OK
    assert m.qmp("query-xen-replication-status") == status(msg.NOT_RUNNING)


# ---- blockdev-add: the schema first, then the driver

SCHEMA_CASES = [
    pytest.param({}, lambda msg: msg.SCHEMA_MISSING_MODE, id="no-mode", marks=QUICK),
    pytest.param(
        {"mode": "bogus"}, lambda msg: msg.schema_bad_mode("bogus"), id="mode-bogus", marks=QUICK
    ),
    pytest.param({"mode": ""}, lambda msg: msg.schema_bad_mode(""), id="mode-empty"),
    pytest.param(
        {"mode": "Primary"}, lambda msg: msg.schema_bad_mode("Primary"), id="mode-capitalised"
    ),
    pytest.param({"mode": 0}, lambda msg: msg.schema_bad_type("mode"), id="mode-not-a-string"),
    pytest.param(
        {"mode": "secondary", "top_id": 5},
        lambda msg: msg.schema_bad_type("top-id"),
        id="top-id-int",
    ),
    pytest.param(
        {"mode": "primary", "foo": "bar"},
        lambda msg: msg.schema_unexpected("foo"),
        id="unknown-option",
    ),
    pytest.param(
        {"mode": "primary", "file": MISSING}, lambda msg: msg.SCHEMA_MISSING_FILE, id="no-file"
    ),
    pytest.param(
        {"mode": "primary", "top_id": REP}, lambda msg: msg.PRIMARY_TOP_ID, id="primary-top-id"
    ),
    pytest.param(
        {"mode": "primary", "top_id": ""}, lambda msg: msg.PRIMARY_TOP_ID, id="primary-empty-top-id"
    ),
    pytest.param(
        {"mode": "secondary"}, lambda msg: msg.MISSING_TOP_ID, id="secondary-no-top-id", marks=QUICK
    ),
    # `file` is opened before any mode check: its error wins over the driver's
    pytest.param(
        {"mode": "primary", "top_id": "x", "file": "no-such-node"},
        lambda msg: msg.cannot_find("no-such-node"),
        id="file-error-before-top-id",
    ),
    pytest.param(
        {"mode": "secondary", "file": "no-such-node"},
        lambda msg: msg.cannot_find("no-such-node"),
        id="file-error-before-missing-top-id",
    ),
    # ... but the schema answers before the file is opened
    pytest.param(
        {"mode": "bogus", "file": "no-such-node"},
        lambda msg: msg.schema_bad_mode("bogus"),
        id="schema-before-file",
    ),
]


@pytest.mark.secondary
@pytest.mark.parametrize(("options", "text"), SCHEMA_CASES)
def test_blockdev_add_refused(machine, msg, disk, options, text):
    opts = rep_opts(disk, node_name=REP, **options)
    assert machine.qmp("blockdev-add", **opts) == qmp_error(text(msg))
    assert_nothing_left(machine, msg, disk, options)


# ---- HMP drive_add: no schema, the driver's own texts

DRIVE_CASES = [
    pytest.param({}, lambda msg: msg.MISSING_MODE, id="no-mode", marks=QUICK),
    pytest.param({"mode": "bogus"}, lambda msg: msg.BAD_MODE, id="mode-bogus", marks=QUICK),
    pytest.param({"mode": ""}, lambda msg: msg.BAD_MODE, id="mode-empty"),
    pytest.param({"mode": "Primary"}, lambda msg: msg.BAD_MODE, id="mode-capitalised"),
    pytest.param(
        {"mode": "SECONDARY", "top_id": REP}, lambda msg: msg.BAD_MODE, id="mode-upper-case"
    ),
    pytest.param(
        {"mode": "primary", "top_id": REP}, lambda msg: msg.PRIMARY_TOP_ID, id="primary-top-id"
    ),
    pytest.param(
        {"mode": "primary", "top_id": ""}, lambda msg: msg.PRIMARY_TOP_ID, id="primary-empty-top-id"
    ),
    pytest.param(
        {"mode": "secondary"}, lambda msg: msg.MISSING_TOP_ID, id="secondary-no-top-id", marks=QUICK
    ),
    # "missing mode" is checked before the top-id rules, and a bad mode after them
    pytest.param({"top_id": REP}, lambda msg: msg.MISSING_MODE, id="no-mode-with-top-id"),
    pytest.param(
        {"mode": "bogus", "top_id": REP}, lambda msg: msg.BAD_MODE, id="mode-bogus-with-top-id"
    ),
    pytest.param(
        {"mode": "primary", "foo": "bar"},
        lambda msg: msg.unsupported_option("foo"),
        id="unknown-option",
    ),
    pytest.param(
        {"mode": "bogus", "file": MISSING},
        lambda msg: msg.DRIVE_MISSING_FILE,
        id="no-file-before-mode",
        marks=QUICK,  # the filter's own open of its file refuses (a path of replication_open)
    ),
]


@pytest.mark.secondary
@pytest.mark.parametrize(("options", "text"), DRIVE_CASES)
def test_drive_add_refused(machine, msg, disk, options, text):
    opts = rep_opts(disk, id="drv", **options)
    assert drive_add(machine, opts) == msg.hmp_error(text(msg))
    assert_nothing_left(machine, msg, disk, options)


@pytest.mark.quick
@pytest.mark.secondary
def test_drive_add_file_error_before_mode(machine, msg, disk, tmp_path):
    """The file is opened first: a missing image beats a missing mode."""
    missing = str(tmp_path / "no-such-image.qcow2")
    opts = {
        "id": "drv",
        "driver": "replication",
        "file.driver": "qcow2",
        "file.file.filename": missing,
    }
    assert drive_add(machine, opts) == msg.hmp_error(msg.could_not_open(missing))
    assert_nothing_left(machine, msg, disk, {})


# ---- qemu-io json:{...}: no schema either

JSON_CASES = [
    pytest.param({}, lambda msg: msg.MISSING_MODE, id="no-mode"),
    pytest.param({"mode": "bogus"}, lambda msg: msg.BAD_MODE, id="mode-bogus"),
    pytest.param(
        {"mode": "primary", "top-id": REP}, lambda msg: msg.PRIMARY_TOP_ID, id="primary-top-id"
    ),
    pytest.param(
        {"mode": "secondary"}, lambda msg: msg.MISSING_TOP_ID, id="secondary-no-top-id", marks=QUICK
    ),
    pytest.param(
        {"mode": "primary", "foo": "bar"},
        lambda msg: msg.unsupported_option("foo"),
        id="unknown-option",
    ),
]


def _qemu_io(build, filename: str, *commands: str) -> subprocess.CompletedProcess[str]:
    argv = build.command(build.io)
    for c in commands:
        argv += ["-c", c]
    return subprocess.run(
        [*argv, filename], capture_output=True, text=True, env=build.env(), timeout=30
    )


@pytest.mark.secondary
@pytest.mark.parametrize(("options", "text"), JSON_CASES)
def test_qemu_io_json_refused(qemu_build, msg, disk, options, text):
    filename = "json:" + json.dumps({"driver": "replication", "file": file_opts(disk), **options})
    r = _qemu_io(qemu_build[0], filename, "read 0 512")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"qemu-io: can't open device {filename}: {text(msg)}\n"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"mode": "primary"}, id="primary", marks=pytest.mark.primary),
        pytest.param(
            {"mode": "secondary", "top-id": "x"},
            id="secondary",
            marks=[pytest.mark.secondary, QUICK],
        ),
    ],
)
def test_qemu_io_json_opens(qemu_build, disk, options):
    """Both modes open; with no start every read and write is refused with EIO (qemu-io
    exits 1 because its commands failed, with nothing on stderr)."""
    filename = "json:" + json.dumps({"driver": "replication", "file": file_opts(disk), **options})
    r = _qemu_io(qemu_build[0], filename, "read 0 512", "write 0 512")
    assert (r.returncode, r.stderr) == (1, "")
    assert r.stdout == "read failed: Input/output error\nwrite failed: Input/output error\n"


# ---- successful opens: the node, its children, its state


@pytest.mark.quick
@pytest.mark.secondary
def test_open_secondary(secondary, msg):
    """blockdev-add of the standard secondary: the node's only child is `file` -> active
    (hidden disk and secondary disk become children only at start), the replication
    state is registered and not running, and I/O is refused."""
    s = secondary()
    m = s.topo.machine(SECONDARY)
    assert rep_edges(m) == {"file": "active"}
    info = node_info(m, REP)
    assert (info["drv"], info["ro"], info["backing_file_depth"]) == ("replication", False, 3)
    filename = json.loads(info["file"].removeprefix("json:"))
    assert (filename["mode"], filename["top-id"]) == ("secondary", REP)
    # the hidden disk is opened as a backing node (read-only until start reopens it)
    assert node_info(m, "hidden")["ro"] is True
    assert node_info(m, "active")["ro"] is False
    assert block_job_nodes(m) == 0
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    s.finish()


@pytest.mark.quick
@pytest.mark.primary
def test_open_primary(primary, msg):
    """blockdev-add of the primary over NBD: `file` -> the NBD client node; not running."""
    s = primary()
    m = s.topo.machine(PRIMARY)
    assert rep_edges(m) == {"file": "nbd-child"}
    info = node_info(m, REP)
    assert (info["drv"], info["ro"]) == ("replication", False)
    assert "top-id" not in json.loads(info["file"].removeprefix("json:"))
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    s.finish()


@pytest.mark.secondary
@pytest.mark.parametrize(
    "top_id",
    [
        pytest.param("", id="empty"),
        pytest.param("no-such-node", id="none", marks=QUICK),
        pytest.param("active", id="active"),
        pytest.param("secondary", id="sec"),
    ],
)
def test_open_accepts_any_top_id(secondary, msg, top_id):
    """top-id is only looked up at start: open takes any string, even "" or a
    non-root node's name; the start then answers "No top_bs or it is invalid"."""
    s = secondary(top_id=top_id)
    assert rep_edges(s.topo.machine(SECONDARY)) == {"file": "active"}
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Start(primary=False), qmp_error(msg.BAD_TOP))
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_drive_add_secondary(secondary, msg):
    """drive_add (the original unit test's path): BlockBackend `repblk` on the node."""
    s = secondary(drive_id="repblk", top_id="repblk")
    m = s.topo.machine(SECONDARY)
    blocks = {b["device"]: b for b in m.qmp_ok("query-block")}
    assert blocks["repblk"]["inserted"]["node-name"] == REP
    assert blocks["repblk"]["inserted"]["drv"] == "replication"
    assert rep_edges(m) == {"file": "active"}
    s.expect(Status(), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    s.finish()


@pytest.mark.quick
@pytest.mark.primary
def test_drive_add_primary(primary_local, msg):
    """drive_add of a primary over a local qcow2 child, as test-replication.c opens it."""
    s = primary_local(drive_id="primary-id", size="1M")
    m = s.topo.machine(PRIMARY)
    blocks = {b["device"]: b for b in m.qmp_ok("query-block")}
    assert blocks["primary-id"]["inserted"]["node-name"] == REP
    assert rep_edges(m) == {"file": "child"}
    s.expect(Status(machine=PRIMARY), status(msg.NOT_RUNNING))
    s.expect(Read(0, 4096), IO_EIO)
    s.finish()


@pytest.mark.quick
@pytest.mark.secondary
def test_failed_open_between_good_ones(machine, msg, disk, tmp_path, qemu_build):
    """A failed open among good ones changes nothing: the *_all list holds only the nodes
    that opened (a bad one would make status or start fail on it)."""
    other = build_chain(
        qemu_build[0],
        Recipe.from_dict({"layers": {"disk": {"size": "1M"}}}, source="<second disk>"),
        tmp_path / "other",
    )
    ok = rep_opts(disk, node_name="p1", mode="primary")
    assert machine.qmp("blockdev-add", **ok) == QMP_OK
    bad = rep_opts(other, node_name="p2", mode="primary", top_id="x")
    assert machine.qmp("blockdev-add", **bad) == qmp_error(msg.PRIMARY_TOP_ID)
    assert {n for n in node_names(machine) if not n.startswith("#")} == {"p1"}
    assert machine.qmp("query-xen-replication-status") == status(msg.NOT_RUNNING)
    assert machine.qmp("xen-set-replication", enable=True, primary=True) == QMP_OK
    assert machine.qmp("query-xen-replication-status") == QmpResult(True, {"error": False})
