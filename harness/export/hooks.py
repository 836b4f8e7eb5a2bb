"""The recorder's wrappers around the harness's entry points (see harness.export.recorder).

Each wrapper calls the original and records what happened; none changes a result. Methods
are wrapped on their class; a module-level function is rebound wherever a module holds
it (`rebind`: again once the case modules are imported, which took the name at import).
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from harness import machine, nbd_reader, pair, qemu_io, qemu_io_process, story
from harness.export.recorder import Recording, observation
from harness.images import builder
from harness.real import topology

_functions: list[tuple[Callable[..., Any], Callable[..., Any]]] = []


def rebind(rec: Recording) -> None:
    """Every module attribute still bound to an original function: the wrapper. And a
    differential run's session, if the case's module imported it: recorded as such."""
    session = sys.modules.get("harness.differential.session")
    if session is not None and not hasattr(session.Session, "_recorded"):

        def make(orig: Any) -> Any:
            def w(self: Any, *a: Any, **kw: Any) -> None:
                rec.emit({"e": "differential"})
                orig(self, *a, **kw)

            return w

        _wrap_method(session.Session, "__init__", make)
        session.Session._recorded = True
    for mod in list(sys.modules.values()):
        names = getattr(mod, "__dict__", None)
        if not isinstance(names, dict):
            continue
        for orig, wrapper in _functions:
            for k, v in list(names.items()):
                if v is orig:
                    setattr(mod, k, wrapper)


def _wrap_function(orig: Callable[..., Any], make: Callable[..., Any]) -> None:
    wrapper = functools.wraps(orig)(make(orig))
    _functions.append((orig, wrapper))


def _wrap_in(module: Any, name: str, make: Callable[..., Any]) -> None:
    """Only `module`'s binding of `name` (other callers keep the original)."""
    orig = getattr(module, name)
    setattr(module, name, functools.wraps(orig)(make(orig)))


def _wrap_method(cls: type, name: str, make: Callable[..., Any]) -> None:
    orig = cls.__dict__[name]
    if isinstance(orig, classmethod):
        setattr(cls, name, classmethod(functools.wraps(orig.__func__)(make(orig.__func__))))
    elif isinstance(orig, staticmethod):
        setattr(cls, name, staticmethod(functools.wraps(orig.__func__)(make(orig.__func__))))
    else:
        setattr(cls, name, functools.wraps(orig)(make(orig)))


def install(rec: Recording) -> None:
    _machines(rec)
    _sessions(rec)
    _stories(rec)
    _images(rec)
    rebind(rec)


# ---- QEMU processes


def _machines(rec: Recording) -> None:
    M = machine.Machine

    def launch(orig: Any) -> Any:
        def w(
            cls: Any,
            build: Any,
            workdir: Any,
            name: str,
            kind: str = "system",
            args: Any = (),
            timeout: float = 10.0,
            machine_type: str = "none",
        ) -> Any:
            with rec.context(None):
                m = orig(cls, build, workdir, name, kind, args, timeout, machine_type)
            rec.emit(
                {
                    "e": "launch",
                    "machine": rec.name(m, "m"),
                    "name": name,
                    "kind": kind,
                    "args": list(args),
                    "machine_type": machine_type,
                    "sockdir": str(m.sockdir),
                }
            )
            return m

        return w

    def exchange(orig: Any) -> Any:
        def w(self: Any, cmd: str, args: dict[str, Any], deadline: float) -> Any:
            if rec.quiet:
                return orig(self, cmd, args, deadline)
            ev: dict[str, Any] = {
                "e": "qmp",
                "machine": rec.name(self, "m"),
                "cmd": cmd,
                "args": args,
            }
            hmp = cmd == "human-monitor-command"
            mark = self.stdout_mark() if hmp else 0
            try:
                reply = orig(self, cmd, args, deadline)
            except machine.MachineDied as e:
                ev["died"] = {"rc": e.returncode, "signal": e.signal, "stderr": e.stderr_tail}
                rec.emit(ev)
                raise
            except machine.MachineHung:
                ev["hung"] = True
                rec.emit(ev)
                raise
            ev["reply"] = reply
            if hmp:
                ev["stdout"] = self.stdout_since(mark)
            rec.emit(ev)
            return reply

        return w

    def kill(orig: Any) -> Any:
        def w(self: Any, sig: int = 9) -> Any:
            import signal as signals

            rec.emit(
                {"e": "kill", "machine": rec.name(self, "m"), "signal": signals.Signals(sig).name}
            )
            return orig(self, sig)

        return w

    def shutdown(orig: Any) -> Any:
        def w(self: Any) -> Any:
            running = self.state is machine.Runstate.RUNNING
            with rec.context(None):
                orig(self)
            if running:
                rec.emit({"e": "quit", "machine": rec.name(self, "m"), "rc": self.returncode})

        return w

    _wrap_method(M, "launch", launch)
    _wrap_method(M, "_exchange", exchange)
    _wrap_method(M, "kill", kill)
    _wrap_method(M, "shutdown", shutdown)


# ---- qemu-io sessions, NBD reads, tools


def _closing(rec: Recording, event: str, key: str, prefix: str) -> Callable[[Any], Any]:
    """A close() wrapper: what closing does inside is not recorded, the close is."""

    def make(orig: Any) -> Any:
        def w(self: Any) -> None:
            with rec.context(None):
                orig(self)
            rec.emit({"e": event, key: rec.name(self, prefix)})

        return w

    return make


def _sessions(rec: Recording) -> None:
    Q = qemu_io_process.InteractiveQemuIo

    def init(orig: Any) -> Any:
        def w(self: Any, build: Any, image_args: Any, **kw: Any) -> None:
            orig(self, build, image_args, **kw)
            rec.emit(
                {
                    "e": "session",
                    "session": rec.name(self, "s"),
                    "args": list(image_args),
                    "reconnect": bool(self.respawn_after_error),
                }
            )

        return w

    def run(orig: Any) -> Any:
        def w(self: Any, command: str) -> Any:
            ev = {"e": "session-cmd", "session": rec.name(self, "s"), "command": command}
            try:
                out = orig(self, command)
            except qemu_io.QemuIoError as e:
                rec.emit({**ev, "died": type(e).__name__, "output": e.output})
                raise
            rec.emit({**ev, "output": out})
            return out

        return w

    _wrap_method(Q, "__init__", init)
    _wrap_method(Q, "_run", run)
    _wrap_method(Q, "close", _closing(rec, "session-close", "session", "s"))

    R = nbd_reader.NbdReader

    def rinit(orig: Any) -> Any:
        def w(
            self: Any, path: str, export: str, timeout: float = 10.0, sparse: bool = False
        ) -> None:
            orig(self, path, export, timeout, sparse)
            rec.emit(
                {
                    "e": "reader",
                    "reader": rec.name(self, "r"),
                    "path": path,
                    "export": export,
                    "flags": self.flags,
                }
            )

        return w

    def rread(orig: Any) -> Any:
        def w(self: Any, offset: int, length: int, expect: Any, sparse: Any = None) -> Any:
            ev = {
                "e": "nbd-read",
                "reader": rec.name(self, "r"),
                "offset": offset,
                "length": length,
            }
            try:
                got = orig(self, offset, length, expect, sparse)
            except nbd_reader.NbdReaderError as e:
                rec.emit({**ev, "failed": str(e)})
                raise
            rec.emit({**ev, "result": observation(got)})
            return got

        return w

    _wrap_method(R, "__init__", rinit)
    _wrap_method(R, "read", rread)
    _wrap_method(R, "close", _closing(rec, "reader-close", "reader", "r"))

    orig_run = subprocess.run

    def tool_run(*args: Any, **kw: Any) -> Any:
        proc = orig_run(*args, **kw)
        argv = args[0] if args else kw.get("args")
        build = rec.case.get("build") or {}
        if rec.quiet or not isinstance(argv, (list, tuple)):
            return proc
        argv = [str(a) for a in argv]
        tool = next((a for a in argv if a in build.get("paths", ())), None)
        if tool is not None and tool.rsplit("/", 1)[-1] in ("qemu-img", "qemu-io"):
            rest = argv[argv.index(tool) + 1 :]
            out, err = proc.stdout, proc.stderr
            rec.emit(
                {
                    "e": "tool",
                    "tool": tool.rsplit("/", 1)[-1],
                    "args": rest,
                    "rc": proc.returncode,
                    "stdout": _text(out),
                    "stderr": _text(err),
                }
            )
        return proc

    subprocess.run = tool_run


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v if isinstance(v, str) else ""


# ---- stories: steps, set-up, checks


def _step_ctx(rec: Recording, s: Any, op: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {"step": f"{rec.name(s, 'story')}.{len(s.steps)}"}
    with contextlib.suppress(Exception):  # not an I/O operation, or no session for it
        ctx["via"] = _transport(rec, s, op)
    return ctx


def _transport(rec: Recording, s: Any, op: Any) -> dict[str, Any] | None:
    from harness import ops
    from harness.qemu_io import GuestIO

    if isinstance(op, (ops.Write, ops.WriteZeroes, ops.Discard, ops.Flush, ops.Read)):
        g = s.topo.guests[op.node]
    elif isinstance(
        op, (ops.PrimaryWrite, ops.PrimaryRead, ops.PrimaryWriteZeroes, ops.PrimaryDiscard)
    ):
        g = s.topo.export_io
    else:
        return None
    if isinstance(g, GuestIO):
        return {"hmp": rec.name(g.machine, "m"), "node": g.node}
    return {"session": rec.name(g, "s")}


def _stories(rec: Recording) -> None:
    S = story.Story

    def stepping(orig: Any) -> Any:
        def w(self: Any, op: Any, *a: Any, **kw: Any) -> Any:
            with rec.context(_step_ctx(rec, self, op)):
                return orig(self, op, *a, **kw)

        return w

    def record(orig: Any) -> Any:
        def w(self: Any, op: Any, expected: Any, actual: Any, died: Any = None) -> Any:
            key = f"{rec.name(self, 'story')}.{len(self.steps)}"
            rec.emit(
                {
                    "e": "step",
                    "step": key,
                    "op": op.to_json(),
                    "type": type(op).__name__,
                    "describe": op.describe(),
                    "expected": observation(expected),
                    "actual": observation(actual),
                }
            )
            return orig(self, op, expected, actual, died)

        return w

    def within(ctx: dict[str, Any] | None) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def w(*a: Any, **kw: Any) -> Any:
                with rec.context(ctx):
                    return orig(*a, **kw)

            return w

        return make

    def act(orig: Any) -> Any:
        def w(s: Any, action: Any, real: Any, model: Any) -> Any:
            with rec.context(_step_ctx(rec, s, action)):
                return orig(s, action, real, model)

        return w

    def live_allocation(orig: Any) -> Any:
        def w(m: Any, node: str) -> Any:
            with rec.context(None):
                got = orig(m, node)
            s = next((x for x in reversed(story.stories()) if m in list(x.topo.machines)), None)
            want = None
            if s is not None:
                names = [k for k, v in s.topo.layer_nodes.items() if v == (m.name, node)]
                disk = s.model.disks[names[0]] if names else None
                if disk is not None:
                    want = list(story._merge(disk.data.allocated(0, disk.size)))
            rec.emit(
                {
                    "e": "allocation",
                    "machine": rec.name(m, "m"),
                    "node": node,
                    "expected": want,
                    "actual": got,
                }
            )
            return got

        return w

    offline: list[tuple[Any, ...]] = []

    def inspect_all(orig: Any) -> Any:
        def w(build: Any, layers: Any) -> Any:
            offline[:] = list(layers)
            with rec.context(None):
                return orig(build, layers)

        return w

    def offline_problems(orig: Any) -> Any:
        def w(disk: Any, real: Any, bad: Any) -> Any:
            path, fmt, want_map, extents = offline.pop(0) if offline else ("?", "?", False, ())
            want = list(story._merge(disk.data.allocated(0, disk.size))) if want_map else None
            rec.emit(
                {
                    "e": "offline",
                    "layer": disk.name,
                    "path": path,
                    "format": fmt,
                    "map": want,
                    "extents": [list(e) for e in extents],
                }
            )
            return orig(disk, real, bad)

        return w

    _wrap_method(S, "_real", stepping)
    _wrap_method(S, "check_view", stepping)
    _wrap_method(S, "record", record)
    _wrap_method(S, "open", within({"setup": True}))
    _wrap_method(S, "add_late", within({"setup": True}))
    _wrap_method(S, "check_layers_live", within({"check": True}))
    _wrap_method(S, "finish", within({"finish": True}))
    _wrap_method(S, "evidence", within(None))
    _wrap_method(S, "_offline_problems", offline_problems)
    _wrap_in(pair, "act", act)
    _wrap_in(story, "live_allocation", live_allocation)
    _wrap_in(story, "inspect_all", inspect_all)
    _wrap_function(topology.open_live, within({"setup": True}))


def _images(rec: Recording) -> None:
    def build_chain(orig: Any) -> Any:
        def w(build: Any, recipe: Any, workdir: Any, **kw: Any) -> Any:
            with rec.context(None):
                chain = orig(build, recipe, workdir, **kw)
            layers = []
            for layer in recipe.build_order():
                cl = chain.layers[layer.name]
                below = chain.layers[layer.backing] if layer.backing_file else None
                layers.append(
                    {
                        "path": str(cl.path),
                        "format": cl.format,
                        "size": cl.size,
                        "cluster_size": cl.cluster_size,
                        "backing": None if below is None else [below.path.name, below.format],
                        "contents": [[e.offset, e.length, e.pattern] for e in layer.contents],
                    }
                )
            rec.emit({"e": "images", "layers": layers})
            return chain

        return w

    _wrap_function(builder.build_chain, build_chain)
