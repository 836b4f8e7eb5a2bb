"""Trace files: a self-contained record of one differential run, enough to replay it.

    {
      "format": "qrc-differential-trace", "format_version": 1,
      "qemu": "7.2.22",                      # the QEMU version that ran it
      "qemu_binary": "/usr/bin/qemu-system-x86_64",
      "profile": "7.2",                      # the model profile it ran under
      "topology": {"kind": "secondary", "name": "secondary-512", "poison": null},
                                             # kinds (harness.differential.kinds):
                                             # secondary, secondary-faults, primary,
                                             # pair, many-nodes
      "recipe": {...},                       # Recipe.to_dict()
      "seed": 0,                             # the runner's seed (null: unknown)
      "operations": [{"op": "start", ...}, ...],   # op.to_json(), in order
      "expected": [<observation>, ...],      # the model's answer to each operation
      "observed": [<observation>, ...],      # QEMU's answer to each operation
      "pending": null,                       # an operation whose checks failed
                                             # before it was applied (replayed last)
      "divergence": {"where": "operation 7", "report": "..."}   # or null
    }

Observations are encoded as {"io": {...}}, {"qmp": {...}}, {"crashed": {...}} or
{"one_of": [...]}; each also carries a readable "text". A file that is not such a
document, or is cut short, is refused with TraceError (exit code 8) and one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ops
from harness.differential import ops as _diff_ops  # noqa: F401  (registers LinkDown)
from harness.differential.kinds import TopologySpec, kind_named
from harness.differential.session import Session
from harness.errors import RecipeError, TraceError
from harness.images import Recipe
from harness.observe import (
    ColoSideState,
    ColoState,
    Crashed,
    IoResult,
    Observation,
    OneOf,
    QmpResult,
)
from harness.words import plural

FORMAT = "qrc-differential-trace"
FORMAT_VERSION = 1


# ---- observations


def observation_to_json(obs: Observation) -> dict[str, Any]:
    if isinstance(obs, IoResult):
        data = None if obs.data is None else [list(e) for e in obs.data]
        body: dict[str, Any] = {"io": {"ok": obs.ok, "errno": obs.errno, "data": data}}
    elif isinstance(obs, QmpResult):
        body = {
            "qmp": {
                "ok": obs.ok,
                "value": obs.value,
                "error_class": obs.error_class,
                "desc": obs.desc,
            }
        }
    elif isinstance(obs, Crashed):
        body = {"crashed": {"signal": obs.signal, "stderr_contains": obs.stderr_contains}}
    elif isinstance(obs, OneOf):
        body = {"one_of": [observation_to_json(a) for a in obs.allowed]}
    elif isinstance(obs, ColoState):
        body = {"colo": [dataclasses.asdict(side) for side in obs.sides]}
    else:
        raise TypeError(f"cannot encode observation {obs!r}")
    body["text"] = obs.describe()
    return body


def observation_from_json(d: Any, where: str) -> Observation:
    """Decode an observation; TraceError names `where` and what is wrong."""
    if not isinstance(d, dict):
        raise TraceError(f"{where}: not an observation record")
    try:
        if "io" in d:
            io = d["io"]
            data = io["data"]
            extents = None
            if data is not None:
                extents = tuple(_extent(e) for e in data)
            return IoResult(_bool(io["ok"]), _opt_str(io["errno"]), extents)
        if "qmp" in d:
            q = d["qmp"]
            return QmpResult(
                _bool(q["ok"]), q["value"], _opt_str(q["error_class"]), _opt_str(q["desc"])
            )
        if "crashed" in d:
            c = d["crashed"]
            return Crashed(_opt_str(c["signal"]), str(c["stderr_contains"]))
        if "one_of" in d:
            alts = d["one_of"]
            if not isinstance(alts, list):
                raise TypeError("one_of is not a list")
            return OneOf(tuple(observation_from_json(a, where) for a in alts))
        if "colo" in d:
            return ColoState(tuple(_colo_side(side) for side in d["colo"]))
    except (KeyError, TypeError, ValueError) as e:
        raise TraceError(f"{where}: malformed observation ({e})") from None
    raise TraceError(f"{where}: unknown observation kind {sorted(d)}")


def _colo_side(d: Any) -> ColoSideState:
    if not isinstance(d, dict):
        raise TypeError(f"{d!r} is not a COLO side")
    runs = d["runs"]
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise TypeError(f"bad runs {runs!r}")
    return ColoSideState(
        str(d["machine"]),
        str(d["mode"]),
        str(d["last_mode"]),
        str(d["reason"]),
        _bool(d["running"]),
        tuple(runs),
        _opt_str(d["exit"]),
    )


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{v!r} is not a boolean")
    return v


def _opt_str(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{v!r} is not a string")
    return v


def _extent(e: Any) -> tuple[int, int, int | None]:
    if (
        not isinstance(e, list)
        or len(e) != 3
        or not all(isinstance(x, int) for x in e[:2])
        or not (e[2] is None or isinstance(e[2], int))
    ):
        raise TypeError(f"bad extent {e!r}")
    return (e[0], e[1], e[2])


# ---- traces


@dataclass
class Trace:
    qemu: str
    profile: str
    spec: TopologySpec
    operations: list[ops.Op]
    expected: list[Observation]
    observed: list[Observation]
    qemu_binary: str = ""
    seed: int | None = None
    where: str | None = None
    report: str = ""
    # the operation whose checks failed before it was applied (replayed last)
    pending: ops.Op | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "qemu": self.qemu,
            "qemu_binary": self.qemu_binary,
            "profile": self.profile,
            "topology": self.spec.to_dict(),
            "recipe": self.spec.recipe.to_dict(),
            "seed": self.seed,
            "operations": [op.to_json() for op in self.operations],
            "expected": [observation_to_json(o) for o in self.expected],
            "observed": [observation_to_json(o) for o in self.observed],
            "pending": None if self.pending is None else self.pending.to_json(),
            "divergence": None
            if self.where is None
            else {"where": self.where, "report": self.report},
        }

    def write(self, path: Path) -> Path:
        """Write atomically (a reader never sees half a trace)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)
        return path


def _op(d: Any, where: str) -> ops.Op:
    """ops.from_json (it checks each field's type), naming the record on failure."""
    try:
        return ops.from_json(d)
    except TraceError as e:
        raise TraceError(f"{where}: {e}") from None


def _need(d: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in d:
        raise TraceError(f"{what}: missing {key!r}")
    v = d[key]
    if not isinstance(v, typ):
        raise TraceError(f"{what}: {key!r} has the wrong type ({type(v).__name__})")
    return v


def trace_from_json(d: Any, what: str = "trace") -> Trace:
    if not isinstance(d, dict):
        raise TraceError(f"{what}: not a JSON object")
    if d.get("format") != FORMAT:
        raise TraceError(f"{what}: not a differential trace (format {d.get('format')!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise TraceError(f"{what}: unsupported format_version {d.get('format_version')!r}")
    qemu = _need(d, "qemu", str, what)
    profile = _need(d, "profile", str, what)
    topo = _need(d, "topology", dict, what)
    try:
        kind = kind_named(_need(topo, "kind", str, f"{what}: topology"))
    except ValueError as e:
        raise TraceError(f"{what}: {e}") from None
    poison = topo.get("poison")
    if poison is not None and (not isinstance(poison, int) or isinstance(poison, bool)):
        raise TraceError(f"{what}: topology poison is not an offset")
    name = topo.get("name", "")
    if not isinstance(name, str):
        raise TraceError(f"{what}: topology name is not a string")
    recipe_d = _need(d, "recipe", dict, what)
    try:
        recipe = Recipe.from_dict(recipe_d, source=f"<{what}: recipe>")
    except RecipeError as e:
        raise TraceError(str(e)) from None
    try:
        spec = TopologySpec(kind, recipe, name, poison)
    except ValueError as e:
        raise TraceError(f"{what}: {e}") from None
    raw_ops = _need(d, "operations", list, what)
    operations = [_op(o, f"{what}: operations[{i}]") for i, o in enumerate(raw_ops)]
    raw_exp = _need(d, "expected", list, what)
    raw_obs = _need(d, "observed", list, what)
    if not len(raw_exp) == len(raw_obs) == len(operations):
        raise TraceError(
            f"{what}: {plural(len(operations), 'operation')} but "
            f"{plural(len(raw_exp), 'expected observation')} and {len(raw_obs)} observed"
        )
    expected = [observation_from_json(o, f"{what}: expected[{i}]") for i, o in enumerate(raw_exp)]
    observed = [observation_from_json(o, f"{what}: observed[{i}]") for i, o in enumerate(raw_obs)]
    seed = d.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TraceError(f"{what}: seed is not an integer")
    div = d.get("divergence")
    where, report = None, ""
    if div is not None:
        if not isinstance(div, dict):
            raise TraceError(f"{what}: divergence is not an object")
        where = _need(div, "where", str, f"{what}: divergence")
        report = _need(div, "report", str, f"{what}: divergence")
    binary = d.get("qemu_binary", "")
    pending = d.get("pending")
    return Trace(
        qemu=qemu,
        profile=profile,
        spec=spec,
        operations=operations,
        expected=expected,
        observed=observed,
        qemu_binary=binary if isinstance(binary, str) else "",
        seed=seed,
        where=where,
        report=report,
        pending=None if pending is None else _op(pending, f"{what}: pending"),
    )


def _cut_short(text: str) -> bool:
    """Does the text end inside a string or with brackets left open (a cut file)?"""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return in_string or depth > 0


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and validate a trace file; TraceError (one line) if it cannot be used."""
    p = Path(path)
    what = f"trace {p}"
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise TraceError(f"{what}: cannot read it ({reason})") from None
    if not text.strip():
        raise TraceError(f"{what}: empty file")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        cut = e.pos >= len(text.rstrip()) or (
            e.msg.startswith("Unterminated string") and _cut_short(text)
        )
        why = "truncated (the JSON ends early)" if cut else "not valid JSON"
        raise TraceError(f"{what}: {why}: {e.msg} at line {e.lineno} column {e.colno}") from None
    try:
        return trace_from_json(d, what)
    except TraceError as e:
        # ops.from_json's messages do not name the file
        msg = str(e)
        raise TraceError(msg if msg.startswith(what) else f"{what}: {msg}") from None


def session_trace(session: Session, qemu: str, seed: int | None, report: str = "") -> Trace:
    """The trace of `session` so far (where it failed, if it did)."""
    steps = session.operations()
    # an operation that failed while applied is in `steps`; one whose checks failed
    # before it was applied is not
    pending = session.pending
    if pending is not None and steps and steps[-1].op is pending:
        pending = None
    return Trace(
        qemu=qemu,
        profile=session.model.profile.name,
        spec=session.spec,
        operations=[s.op for s in steps],
        expected=[s.expected for s in steps],
        observed=[s.actual for s in steps],
        qemu_binary=session.build.system,
        seed=seed,
        where=session.where,
        report=report,
        pending=pending,
    )
