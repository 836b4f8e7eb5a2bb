"""qrc export without QEMU: a recording's body (harness.export.plan), the kinds of case
that cannot be exported, the expectation of a call a case failed on, and the files
written (harness.export.writer): standalone, no path of this machine, the iotest's form
and its .out."""

from __future__ import annotations

import ast
import sys
from typing import Any

import pytest

from harness.errors import NotExportable
from harness.export import writer
from harness.export.plan import Plan, plan

TMP = "/tmp/qrc-export-abc/pt/test_x0"
SOCK = "/tmp/qrc-export-abc/qrc-sock1"


def _qmp(cmd: str, args: dict[str, Any], reply: Any, **kw: Any) -> dict[str, Any]:
    return {"e": "qmp", "machine": "m1", "cmd": cmd, "args": args, "reply": reply, **kw}


def _step(n: int, op: dict[str, Any], kind: str, expected: dict[str, Any]) -> dict[str, Any]:
    return {
        "e": "step",
        "step": f"story1.{n}",
        "op": op,
        "type": kind,
        "describe": f"{kind} {n}",
        "expected": expected,
        "actual": expected,
    }


OK = {"t": "qmp", "ok": True, "value": {}, "class": None, "desc": None}
END = {"e": "call-end", "outcome": "passed", "kind": None, "exc": None, "message": ""}


def recording(*events: dict[str, Any], end: dict[str, Any] = END, **extra: Any) -> dict[str, Any]:
    launch = {
        "e": "launch",
        "machine": "m1",
        "name": "secondary",
        "kind": "system",
        "args": [],
        "machine_type": "none",
        "sockdir": SOCK,
    }
    return {
        "case": {"nodeid": "cases/test_x.py::test_y[7.2.22-a]", "tmp_path": TMP, "doc": "A."},
        "events": [launch, *events, end],
        "threads": [],
        **extra,
    }


STORY = recording(
    {
        "e": "images",
        "layers": [
            {
                "path": f"{TMP}/images/a.qcow2",
                "format": "qcow2",
                "size": 1 << 20,
                "cluster_size": None,
                "backing": None,
                "contents": [[0, 4096, 17]],
            }
        ],
    },
    _qmp("blockdev-add", {"filename": f"{TMP}/images/a.qcow2"}, {"return": {}}, ctx={"setup": 1}),
    _qmp("nbd-server-start", {"path": f"{SOCK}/nbd.sock"}, {"return": {}}, ctx={"setup": 1}),
    _qmp("xen-set-replication", {"enable": True}, {"return": {}}, ctx={"step": "story1.0"}),
    _step(0, {"op": "start"}, "Start", OK),
    _qmp(
        "human-monitor-command",
        {"command-line": 'qemu-io rep "read -P 17 -s 0 -l 4096 0 8192"'},
        {"return": ""},
        stdout="read 8192/8192 bytes at offset 0\n",
        ctx={"step": "story1.1"},
    ),
    _step(
        1,
        {"op": "read", "offset": 0, "length": 8192, "node": "rep"},
        "Read",
        {"t": "io", "ok": True, "errno": None, "data": [[0, 4096, 17], [4096, 4096, None]]},
    ),
    {"e": "allocation", "machine": "m1", "node": "active", "expected": [[0, 65536]]},
    _qmp("query-named-block-nodes", {}, {"return": [{"node-name": "rep"}]}),
    _qmp("block_resize", {"node-name": "rep"}, {"error": {"class": "GenericError", "desc": "x"}}),
)


def test_a_story_becomes_calls_in_order_with_placeholders() -> None:
    p = plan(STORY)
    body = "\n".join(p.body)
    expected_in_order = [
        "r.launch('secondary')",
        "r.image('$TMP/images/a.qcow2', 'qcow2', 0x100000, contents=[(0x0, 0x1000, 0x11)])",
        "r.setup('secondary', 'blockdev-add', {'filename': '$TMP/images/a.qcow2'})",
        "{'path': '$SOCK/secondary/nbd.sock'}",
        "r.step('step 1: Start 0')",
        "r.qmp('secondary', 'xen-set-replication', {'enable': True}, RET({}))",
        "r.hmp_read(",
        "DATA((0x0, 0x1000, 0x11), (0x1000, 0x1000, None))",
        "r.allocation('secondary', 'active', ALLOCATED((0x0, 0x10000)))",
        "r.qmp('secondary', 'query-named-block-nodes', {}, ANY_RETURN())",
        "r.qmp('secondary', 'block_resize', {'node-name': 'rep'}, ERR('GenericError', 'x'))",
    ]
    at = -1
    for text in expected_in_order:
        where = body.find(text)
        assert where > at, f"{text!r} missing or out of order in:\n{body}"
        at = where
    assert "/tmp/" not in body and p.steps == 2 and p.outcome == "passed"


@pytest.mark.parametrize(
    ("events", "extra", "why"),
    [
        ([_step(0, {"op": "colo_start"}, "ColoStart", OK)], {}, "COLO's migration"),
        ([_qmp("migrate", {}, {"return": {}})], {}, "COLO's migration"),
        ([{"e": "differential"}], {}, "a differential run"),
        ([], {"threads": ["qrc-kill"]}, "several threads"),
    ],
    ids=["colo-step", "colo-command", "differential", "threads"],
)
def test_what_cannot_be_exported(events: list[Any], extra: dict[str, Any], why: str) -> None:
    with pytest.raises(NotExportable, match=why):
        plan(recording(*events, **extra))


def test_a_guest_and_a_skip_cannot_be_exported() -> None:
    rec = recording()
    rec["events"][0]["machine_type"] = "pc"
    with pytest.raises(NotExportable, match="vCPU"):
        plan(rec)
    skipped = {**END, "outcome": "skipped", "skip": "needs 10.0", "kind": "skip"}
    with pytest.raises(NotExportable, match=r"skipped on this build: needs 10\.0"):
        plan(recording(end=skipped))


def _failed(kind: str, **end: Any) -> dict[str, Any]:
    return {**END, "outcome": "skipped", "xfail": "QEMU bug", "kind": kind, "exc": "E", **end}


def test_the_call_a_case_failed_on_expects_what_the_case_wanted() -> None:
    died = _qmp("block_resize", {}, None, died={"signal": "SIGABRT", "rc": -6, "stderr": "a"})
    died.pop("reply")
    body = "\n".join(plan(recording(died, end=_failed("died"))).body)
    assert "ANSWERS()" in body, body
    ok = _qmp("blockdev-snapshot-sync", {}, {"return": {}})
    body = "\n".join(plan(recording(ok, end=_failed("assertion", message="assert not True"))).body)
    assert "NOT(RET({}), 'assert not True')" in body, body
    refused = _qmp("block_resize", {}, {"error": {"class": "GenericError", "desc": "(null)"}})
    end = _failed("assertion", compare={"left": "(null)", "right": "Node 'rep' is in use"})
    body = "\n".join(plan(recording(refused, end=end)).body)
    assert "ERR('GenericError', \"Node 'rep' is in use\")" in body, body


def _plan() -> Plan:
    return plan(STORY)


def test_reproduce_py_is_standalone() -> None:
    text = writer.reproduce_py(_plan())
    tree = ast.parse(text)
    imported = {
        (n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert "harness" not in text and "/tmp/qrc" not in text
    assert text.index("def test(r: Run)") < text.index("class Run:")  # the body first


def test_iotest_has_qemus_form_and_its_out_is_the_body_run_dry() -> None:
    text = writer.iotest(_plan(), "replication-y-a")
    assert text.startswith("#!/usr/bin/env python3\n# group: rw quick\n")
    assert 'iotests.main(\n        supported_fmts=["qcow2"]' in text
    assert "vm.qmp" not in text or "target.qmp(cmd, args)" in text
    out = writer.iotest_out(_plan())
    assert out.splitlines()[:2] == [
        'step 1: Start 0: {"return": {}}',
        "step 2: Read 1: ok, data [0x0+0x1000]=0x11 [0x1000+0x1000]=undefined",
    ]
    assert out.endswith(writer.UNITTEST_OK)
    assert writer.iotest_name("cases/t.py::test_start_refused[7.2.22-active-raw]") == (
        "replication-start-refused-active-raw"
    )
