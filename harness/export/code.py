"""Python source for an exported test's body: literals, calls on `r`, and the expected
answers (harness.export.rt_answers' constructors) of what the recorder wrote down."""

from __future__ import annotations

import pprint
import re
from typing import Any

from harness.errors import NotExportable

# a query's return value is read by the case itself (and holds ids, sizes, timings)
COMPARED_QUERIES = {"query-xen-replication-status"}


def lit(v: Any, indent: int = 8) -> str:
    """A Python literal of `v`, for an argument at column `indent`."""
    text = pprint.pformat(v, width=max(40, 96 - indent), sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def call(fn: str, *args: str) -> str:
    """`r.fn(args)` on one line, or one argument a line when that is too long."""
    one = f"    r.{fn}({', '.join(args)})"
    if len(one) <= 96 and "\n" not in one:
        return one
    inner = "".join(f"        {a},\n" for a in args)
    return f"    r.{fn}(\n{inner}    )"


def pattern(p: Any) -> str:
    return "None" if p is None else f"0x{p:02x}"


def extents(data: Any) -> str:
    return ", ".join(f"({o:#x}, {n:#x}, {pattern(p)})" for o, n, p in data)


def ranges(rs: Any) -> str:
    return ", ".join(f"({s:#x}, {e:#x})" for s, e in rs)


def expect(obs: dict[str, Any]) -> str:
    """The expected answer for an observation the recorder wrote (the model's)."""
    t = obs["t"]
    if t == "qmp":
        if not obs["ok"]:
            return f"ERR({obs['class']!r}, {obs['desc']!r})"
        return "SETTLED" if obs["value"] == "settled" else f"RET({lit(obs['value'], 12)})"
    if t == "io":
        if not obs["ok"]:
            return f"IO_ERROR({obs['errno']!r})"
        return "IO_OK" if obs["data"] is None else f"DATA({extents(obs['data'])})"
    if t == "crashed":
        return f"DIED({obs['signal']!r}, {obs['stderr']!r})"
    if t == "oneof":
        return "ONE_OF(" + ", ".join(expect(a) for a in obs["alts"]) + ")"
    if t == "colo":
        raise NotExportable("it drives COLO's migration (x-colo): its steps wait for events")
    raise NotExportable(f"an answer the export cannot state: {obs.get('describe')}")


def as_recorded(ev: dict[str, Any]) -> str:
    """What QEMU answered a QMP command when the case ran, as the expected answer (a
    query's value is not compared: the case read it for itself)."""
    if "died" in ev:
        return f"DIED({ev['died']['signal']!r})"
    if ev.get("hung"):
        return "ANSWERS()"
    reply = ev["reply"]
    if "error" in reply:
        return f"ERR({reply['error'].get('class')!r}, {reply['error'].get('desc')!r})"
    cmd = ev["cmd"]
    if cmd.startswith(("query-", "x-debug-", "qom-")) and cmd not in COMPARED_QUERIES:
        return "ANY_RETURN()"
    return f"RET({lit(reply['return'], 12)})"


def observed(ev: dict[str, Any]) -> dict[str, Any] | None:
    """A QMP event's answer as the recorder writes an observation (a QmpResult)."""
    reply = ev.get("reply")
    if not isinstance(reply, dict):
        return None
    if "error" in reply:
        err = reply["error"]
        return {
            "t": "qmp",
            "ok": False,
            "value": None,
            "class": err.get("class"),
            "desc": err.get("desc"),
        }
    return {"t": "qmp", "ok": True, "value": reply.get("return"), "class": None, "desc": None}


def same(a: Any, b: Any) -> bool:
    """Two observations alike (QEMU's automatic node names aside: #block123)."""
    norm = re.compile(r"#block\d+")
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    return norm.sub("#blockN", str(a)) == norm.sub("#blockN", str(b))


def hmp_io(cmdline: str) -> tuple[str, str] | None:
    """(node, command) of an HMP `qemu-io NODE "COMMAND"`."""
    m = re.fullmatch(r'qemu-io (\S+) "((?:[^"\\]|\\.)*)"', cmdline)
    if m is None:
        return None
    return m[1], m[2].replace('\\"', '"').replace("\\\\", "\\")


def substitute(v: Any, subs: list[tuple[str, str]]) -> Any:
    """`v` with each host path of `subs` replaced by its placeholder."""
    if isinstance(v, str):
        for old, new in subs:
            v = v.replace(old, new)
        return v
    if isinstance(v, list):
        return [substitute(x, subs) for x in v]
    if isinstance(v, dict):
        return {k: substitute(x, subs) for k, x in v.items()}
    return v
