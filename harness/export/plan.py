"""From a recording (harness.export.recorder) to the body of an exported test: Python
statements on `r` (harness.export.rt_run.Run), one per thing the case did, in order.

- Set-up (the images a recipe built, the machines, the commands that built the graph,
  the sessions the harness opened): done as the case did; they must succeed.
- A story step: the operation, checked against what the model expected. A guest's
  request is made again from the operation, through what carried it (a read verifies
  each extent the model expects); a QMP step's commands are sent again and the last
  one's answer is the step's.
- A layer check (live, or offline after QEMU quit): the model's allocation and bytes.
- The case's own calls: made again and compared with what QEMU answered when the case
  ran (a query's value aside); where the case failed on one (a strict expected
  failure), with what the case wanted, as far as the recording says.

Paths of the machine that recorded become placeholders: "$TMP" (the case's directory)
and "$SOCK/NAME" (machine NAME's socket directory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import NotExportable
from harness.export.code import (
    as_recorded,
    call,
    expect,
    extents,
    hmp_io,
    lit,
    observed,
    ranges,
    same,
    substitute,
)

_IO_OPS = {"Write", "WriteZeroes", "Discard", "Flush", "Read"}
_PRIMARY_OPS = {"PrimaryWrite", "PrimaryRead", "PrimaryWriteZeroes", "PrimaryDiscard"}
_COLO_OPS = {"ColoStart", "ColoCheckpoint", "LostHeartbeat"}
_COLO_COMMANDS = {"migrate", "migrate-incoming", "x-colo-lost-heartbeat"}
_COMMANDS = {
    "Write": "write -P {pattern} {offset} {length}",
    "PrimaryWrite": "write -P {pattern} {offset} {length}",
    "WriteZeroes": "write -z {offset} {length}",
    "PrimaryWriteZeroes": "write -z {offset} {length}",
    "Discard": "discard {offset} {length}",
    "PrimaryDiscard": "discard {offset} {length}",
    "Flush": "flush",
}

Low = list[tuple[int, dict[str, Any]]]


@dataclass
class Plan:
    """An exported test's body and what it says about itself."""

    body: list[str]
    nodeid: str
    version: str
    profile: str
    doc: str
    outcome: str  # the case's on the exporting build: passed, failed, xfailed
    failure: str  # why it failed there, one line ("" if it passed)
    steps: int
    uses: set[str] = field(default_factory=set)  # "qsd": a storage daemon


class Planner:
    """Walks the events of one recording; `body` is what it wrote."""

    def __init__(self) -> None:
        self.body: list[str] = []
        self.names: dict[str, str] = {}  # machine id -> its name in the body
        self.steps = 0
        self.uses: set[str] = set()
        self.dirs: set[str] = set()
        self.label = ""
        self.special: dict[int, str] = {}  # event index -> its expectation (the failure)

    def m(self, uid: str) -> str:
        return self.names.get(uid, uid)

    def say(self, label: str) -> None:
        """`r.step(label)`: the checks that follow belong to it."""
        if label != self.label:
            self.label = label
            self.body.append(call("step", repr(label[:200])))

    def add(self, fn: str, *args: str) -> None:
        self.body.append(call(fn, *args))

    # ---- events

    def walk(self, events: list[dict[str, Any]]) -> None:
        pending: dict[str, Low] = {}
        for i, ev in enumerate(events):
            ctx = ev.get("ctx") or {}
            if ev["e"] == "step":
                self.step(ev, pending.pop(ev["step"], []))
            elif "step" in ctx:
                pending.setdefault(ctx["step"], []).append((i, ev))
            else:
                self.plain(i, ev, ctx)
        for low in pending.values():  # a step cut short by an exception: as recorded
            self.body.append("    # a step the case did not finish (it raised): as recorded")
            for i, ev in low:
                self.plain(i, ev, {})

    def plain(self, i: int, ev: dict[str, Any], ctx: dict[str, Any]) -> None:
        e = ev["e"]
        if e == "images":
            self.images(ev)
        elif e == "launch":
            self.launch(ev)
        elif e == "qmp":
            self.qmp(i, ev, ctx)
        elif e == "kill":
            self.say(f"the case: {self.m(ev['machine'])}: kill -{ev['signal']}")
            sig = repr(ev["signal"])
            self.add("kill", repr(self.m(ev["machine"])), sig, f"DIED({sig})")
        elif e == "quit":
            self.add("quit", repr(self.m(ev["machine"])))
        elif e == "session":
            args = [lit(ev["args"])] + (["reconnect=True"] if ev["reconnect"] else [])
            self.add("open_session", repr(ev["session"]), *args)
        elif e == "session-cmd":
            self.say(f"the case: qemu-io {ev['session']}: {ev['command']}")
            want = self.special.get(i) or f"OUTPUT({ev.get('output', '')!r})"
            self.add("session_cmd", repr(ev["session"]), repr(ev["command"]), want)
        elif e == "session-close":
            self.add("close_session", repr(ev["session"]))
        elif e == "reader":
            where = (repr(ev["reader"]), repr(ev["path"]), repr(ev["export"]), str(ev["flags"]))
            self.add("open_reader", *where)
        elif e == "reader-close":
            self.add("close_reader", repr(ev["reader"]))
        elif e == "tool":
            self.mkdirs(ev["args"])
            self.say(f"the case: {ev['tool']} {' '.join(ev['args'])}")
            want = self.special.get(i) or f"EXITS({ev['rc']}, {ev['stdout']!r}, {ev['stderr']!r})"
            self.add("tool", repr(ev["tool"]), lit(ev["args"]), want)
        elif e == "allocation" and ev.get("expected") is not None:
            self.say("check: each layer's own allocation, live")
            want = f"ALLOCATED({ranges(ev['expected'])})"
            self.add("allocation", repr(self.m(ev["machine"])), repr(ev["node"]), want)
        elif e == "offline":
            self.offline(ev)
        # nbd-read outside a step: a read of the case's own, nothing to replay

    def images(self, ev: dict[str, Any]) -> None:
        for layer in ev["layers"]:
            self.mkdirs([layer["path"]])
            args = [repr(layer["path"]), repr(layer["format"]), hex(layer["size"])]
            if layer["cluster_size"] is not None:
                args.append(f"cluster_size={layer['cluster_size']:#x}")
            if layer["backing"] is not None:
                args.append(f"backing={tuple(layer['backing'])!r}")
            if layer["contents"]:
                args.append(f"contents=[{extents(layer['contents'])}]")
            self.add("image", *args)

    def mkdirs(self, args: list[str]) -> None:
        for a in args:
            if isinstance(a, str) and a.startswith("$TMP/") and "/" in a[5:]:
                d = a.rsplit("/", 1)[0]
                if d not in self.dirs:
                    self.dirs.add(d)
                    self.add("dirs", repr(d))

    def launch(self, ev: dict[str, Any]) -> None:
        if ev["machine_type"] != "none":
            raise NotExportable(
                f"machine {ev['name']} runs a guest with a vCPU (-M {ev['machine_type']}): "
                "its timing matters"
            )
        name = ev["name"]
        while name in self.names.values():
            name += "-2"
        self.names[ev["machine"]] = name
        args = [repr(name)]
        if ev["kind"] != "system":
            args.append(f"kind={ev['kind']!r}")
            self.uses.add(ev["kind"])
        if ev["args"]:
            args.append(f"args={tuple(ev['args'])!r}")
        self.add("launch", *args)

    def qmp(self, i: int, ev: dict[str, Any], ctx: dict[str, Any]) -> None:
        m, cmd, args = self.m(ev["machine"]), ev["cmd"], ev["args"]
        if cmd in _COLO_COMMANDS:
            raise NotExportable(f"it drives COLO's migration ({cmd}): its steps wait for events")
        answered = isinstance(ev.get("reply"), dict) and "return" in ev["reply"]
        if cmd == "human-monitor-command":
            line = args["command-line"]
            text = (ev.get("reply") or {}).get("return", "") + ev.get("stdout", "")
            if ctx.get("setup") and answered:
                self.add("setup_hmp", repr(m), repr(line), repr(text))
                return
            self.say(f"the case: {m}: {line}")
            want = self.special.get(i) or (f"OUTPUT({text!r})" if answered else as_recorded(ev))
            self.add("hmp", repr(m), repr(line), want)
            return
        if ctx.get("setup") and answered:
            self.add("setup", repr(m), repr(cmd), lit(args))
            return
        self.say(f"the case: {m}: {cmd}")
        self.add("qmp", repr(m), repr(cmd), lit(args), self.special.get(i) or as_recorded(ev))

    def offline(self, ev: dict[str, Any]) -> None:
        allocated = None if ev["map"] is None else f"ALLOCATED({ranges(ev['map'])})"
        data = f"DATA({extents(ev['extents'])})" if ev["extents"] else None
        if allocated is None and data is None:
            return
        self.say("check: each layer's file, offline (QEMU has quit)")
        self.add("offline", repr(ev["path"]), repr(ev["format"]), str(allocated), str(data))

    # ---- a story step

    def step(self, ev: dict[str, Any], low: Low) -> None:
        kind, op = ev["type"], ev["op"]
        if kind in _COLO_OPS:
            raise NotExportable("it drives COLO's migration (x-colo): its steps wait for events")
        self.steps += 1
        self.say(f"step {self.steps}: {ev['describe']}")
        want = expect(ev["expected"])
        rest: Low
        if kind in _IO_OPS | _PRIMARY_OPS:
            rest = self.io_step(op, kind, want, low, ev.get("via"))
        elif kind == "Settle":
            self.add("settle", repr(self.by_name(op["machine"], low)), want)
            rest = [x for x in low if x[1]["e"] != "qmp"]
        elif kind == "Kill":
            self.add("kill", repr(self.by_name(op["machine"], low)), repr(op["signal"]), want)
            rest = [x for x in low if x[1]["e"] != "kill"]
        elif kind in ("HoldCommit", "ReleaseCommit"):
            opts: list[Any] = next(
                (x["args"]["options"] for _, x in low if x.get("cmd") == "blockdev-reopen"), []
            )
            self.add("reopen", repr(self.by_name(op["machine"], low)), lit(opts), want)
            rest = [x for x in low if x[1]["e"] != "qmp"]
        elif any(x["e"] == "quit" for _, x in low):
            quit_ev = next(x for _, x in low if x["e"] == "quit")
            self.add("quit", repr(self.m(quit_ev["machine"])), want)
            rest = [x for x in low if x[1] is not quit_ev]
        else:
            rest = self.qmp_step(want, low)
        for i, x in rest:
            self.plain(i, x, {})

    def by_name(self, name: str, low: Low) -> str:
        """The machine of a step's own commands, else the one the operation names."""
        for _, x in low:
            if "machine" in x:
                return self.m(x["machine"])
        return name

    def io_step(self, op: dict[str, Any], kind: str, want: str, low: Low, via: Any) -> Low:
        """A guest's request: made again from the operation, through what carried it."""
        mine = [(i, x) for i, x in low if x["e"] in ("qmp", "session-cmd", "nbd-read")]
        first = mine[0][1] if mine else None
        how: tuple[str, ...]
        if first is not None and first["e"] == "nbd-read" and "result" in first:
            how = ("nbd", first["reader"])
        elif first is not None and first["e"] == "qmp":
            parsed = hmp_io(first["args"].get("command-line", ""))
            how = ("hmp", self.m(first["machine"]), parsed[0] if parsed else op.get("node", ""))
        elif first is not None and first["e"] == "session-cmd":
            how = ("session", first["session"])
        elif isinstance(via, dict) and "hmp" in via:
            how = ("hmp", self.m(via["hmp"]), via["node"])
        elif isinstance(via, dict) and "session" in via:
            how = ("session", via["session"])
        else:
            raise NotExportable(f"step {self.steps}: no record of how its request was made")
        where = [repr(x) for x in how[1:]]
        if kind in ("Read", "PrimaryRead"):
            fn = {"hmp": "hmp_read", "session": "session_read", "nbd": "nbd_read"}[how[0]]
            self.add(fn, *where, hex(op["offset"]), hex(op["length"]), want)
        elif how[0] == "nbd":
            raise NotExportable(f"step {self.steps}: a write through an NBD reader")
        else:
            fn = "hmp_io" if how[0] == "hmp" else "session_io"
            self.add(fn, *where, repr(_COMMANDS[kind].format(**op)), want)
        return [(i, x) for i, x in low if (i, x) not in mine]

    def qmp_step(self, want: str, low: Low) -> Low:
        """Its commands again; the last one's answer is the step's."""
        cmds = [x for _, x in low if x["e"] == "qmp"]
        if not cmds:
            self.body.append("    # (no QEMU command: the model's part only)")
            return low
        for i, x in low:
            if x["e"] != "qmp":
                self.plain(i, x, {})
                continue
            m, cmd = self.m(x["machine"]), x["cmd"]
            if x is not cmds[-1]:
                self.add("qmp", repr(m), repr(cmd), lit(x["args"]), as_recorded(x))
            elif cmd == "human-monitor-command":
                text = (x.get("reply") or {}).get("return", "") + x.get("stdout", "")
                said = f"OUTPUT({text!r})" if "reply" in x else want
                self.add("hmp", repr(m), repr(x["args"]["command-line"]), said)
            else:
                self.add("qmp", repr(m), repr(cmd), lit(x["args"]), want)
        return []

    # ---- where the case failed

    def failure(self, events: list[dict[str, Any]], end: dict[str, Any]) -> None:
        """The expectation of the case's own call it failed on (`special`)."""
        direct = [
            (i, ev)
            for i, ev in enumerate(events)
            if not ev.get("ctx") and ev["e"] in ("qmp", "session-cmd", "tool")
        ]
        if not direct:
            return
        i, ev = direct[-1]
        if end["kind"] == "died" and "died" in ev:
            self.special[i] = "ANSWERS()"
        elif end["kind"] == "assertion" and ev["e"] == "qmp":
            cmp = end.get("compare") or {}
            seen = observed(ev) or {}
            if same(cmp.get("left"), seen):
                self.special[i] = expect(cmp["right"])
            elif seen.get("desc") is not None and cmp.get("left") == seen["desc"]:
                # `assert got.desc == TEXT`: the same error class, with that text
                self.special[i] = f"ERR({seen['class']!r}, {cmp['right']!r})"
            else:
                why = (end["message"].splitlines() or ["?"])[0]
                self.special[i] = f"NOT({as_recorded(ev)}, {why!r})"


def placeholders(recording: dict[str, Any]) -> list[tuple[str, str]]:
    """Host paths -> placeholders, longest first."""
    subs: dict[str, str] = {}
    names: dict[str, str] = {}
    for ev in recording["events"]:
        if ev["e"] == "launch":
            name = ev["name"]
            while name in names.values():
                name += "-2"
            names[ev["machine"]] = name
            subs[ev["sockdir"]] = f"$SOCK/{name}"
    case = recording["case"]
    if case.get("tmp_path"):
        subs[case["tmp_path"]] = "$TMP"
    if recording.get("tmpdir"):
        subs[recording["tmpdir"]] = "$TMP/tmpdir"
    return sorted(subs.items(), key=lambda kv: -len(kv[0]))


def plan(recording: dict[str, Any]) -> Plan:
    """The body of the test a recording makes; NotExportable where it cannot be made."""
    case = recording["case"]
    if recording.get("threads"):
        raise NotExportable("it acts from several threads at once: its timing matters")
    subs = placeholders(recording)
    events = substitute(recording["events"], subs)
    ends = [i for i, ev in enumerate(events) if ev["e"] == "call-end"]
    if not ends:
        raise NotExportable("the case did not run to a result (no record of its end)")
    end = events[ends[0]]
    if end["outcome"] == "skipped" and not end.get("xfail"):
        why = str(end.get("skip") or end["message"]).removeprefix("Skipped: ")
        raise NotExportable(f"skipped on this build: {why}")
    if end["kind"] == "model-disagrees":
        raise NotExportable("the case's statement disagrees with the model: fix the case first")
    events = events[: ends[0]]
    if any(ev["e"] == "differential" for ev in events):
        raise NotExportable("a differential run: hypothesis draws its stories as it goes")
    if not any(ev["e"] in ("launch", "tool") for ev in events):
        raise NotExportable("it runs no QEMU binary")
    p = Planner()
    if end["outcome"] != "passed":
        p.failure(events, end)
    p.walk(events)
    first = (end["message"].splitlines() or [""])[0]
    return Plan(
        body=p.body,
        nodeid=case["nodeid"],
        version=(case.get("build") or {}).get("version", "?"),
        profile=case.get("profile") or "?",
        doc=case.get("doc") or "",
        outcome="xfailed" if end.get("xfail") else end["outcome"],
        failure="" if end["exc"] is None else f"{end['exc']}: {first}"[:300],
        steps=p.steps,
        uses=p.uses,
    )
