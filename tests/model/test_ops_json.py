"""Operations: JSON round trip for every kind, and malformed records."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from harness import ops
from harness.errors import TraceError

SAMPLES: list[ops.Op] = [
    ops.Write(0x10000, 0x200, 0x5A),
    ops.Write(1, 2, 3, node="other"),
    ops.WriteZeroes(512, 4096),
    ops.Discard(0, 1 << 40),
    ops.Flush(),
    ops.Flush(node="x"),
    ops.Read(0, 65536),
    ops.PrimaryWrite(123, 456, 0xFF),
    ops.PrimaryRead(0, 1 << 20),
    ops.PrimaryWriteZeroes(100, 1000),
    ops.PrimaryDiscard(0, 65536),
    ops.Start(primary=False),
    ops.Start(primary=True, failover=False, machine=ops.PRIMARY),
    ops.Stop(primary=False, failover=True),
    ops.Checkpoint(),
    ops.Status(machine="m"),
    ops.Settle(),
]


def auto_sample(cls: type[ops.Op]) -> ops.Op:
    """An instance of any registered operation, its required fields filled by type."""
    args: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING:
            continue
        typ = str(f.type)
        if "bool" in typ:
            args[f.name] = True
        elif "int" in typ:
            args[f.name] = 0x1234
        else:
            args[f.name] = "x"
    return cls(**args)


AUTO = [auto_sample(c) for c in ops.OPS]


def test_core_kinds_registered() -> None:
    assert {type(o) for o in SAMPLES} <= set(ops.OPS)
    assert {c.kind for c in ops.OPS} >= {
        "write",
        "write_zeroes",
        "discard",
        "flush",
        "read",
        "primary_write",
        "primary_read",
        "start",
        "stop",
        "checkpoint",
        "status",
        "settle",
    }
    assert len({c.kind for c in ops.OPS}) == len(ops.OPS)


@pytest.mark.parametrize("op", AUTO, ids=lambda o: o.kind)
def test_round_trip_every_registered_kind(op: ops.Op) -> None:
    assert ops.from_json(json.loads(json.dumps(op.to_json()))) == op


@pytest.mark.parametrize("op", SAMPLES, ids=lambda o: o.describe())
def test_round_trip(op: ops.Op) -> None:
    rec = op.to_json()
    assert rec["op"] == op.kind
    assert ops.from_json(rec) == op
    assert ops.from_json(json.loads(json.dumps(rec))) == op


def test_defaults_fill_in() -> None:
    assert ops.from_json({"op": "write", "offset": 0, "length": 1, "pattern": 2}) == ops.Write(
        0, 1, 2, node=ops.REP
    )
    assert ops.from_json({"op": "status"}) == ops.Status(machine=ops.SECONDARY)


def test_to_json_shape() -> None:
    assert ops.Stop(primary=False, failover=True).to_json() == {
        "op": "stop",
        "primary": False,
        "failover": True,
        "machine": "secondary",
    }


@pytest.mark.parametrize(
    ("rec", "match"),
    [
        (None, "not an operation record"),
        ([], "not an operation record"),
        ("write", "not an operation record"),
        ({}, "not an operation record"),
        ({"op": 3}, "not an operation record"),
        ({"op": "frobnicate"}, "unknown operation 'frobnicate'"),
        ({"op": "flush", "bogus": 1}, r"unknown field\(s\) \['bogus'\]"),
        ({"op": "write", "offset": 0, "length": 1}, "operation 'write'"),
        ({"op": "start"}, "operation 'start'"),
    ],
)
def test_malformed(rec: Any, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        ops.from_json(rec)


def test_trace_error_exit_code() -> None:
    assert TraceError.exit_code == 8


@pytest.mark.parametrize(
    "rec",
    [
        {"op": "write", "offset": "0x10", "length": 1, "pattern": 2},
        {"op": "write", "offset": 0, "length": 1, "pattern": None},
        {"op": "start", "primary": "yes"},
    ],
)
def test_wrong_field_types_rejected(rec: dict[str, Any]) -> None:
    with pytest.raises(TraceError):
        ops.from_json(rec)


@pytest.mark.parametrize("op", SAMPLES, ids=lambda o: o.describe())
def test_describe_is_one_line(op: ops.Op) -> None:
    text = op.describe()
    assert text and "\n" not in text


def test_ops_are_hashable_and_frozen() -> None:
    assert len(set(SAMPLES)) == len(SAMPLES)
    with pytest.raises(AttributeError):
        ops.Write(0, 1, 2).offset = 5  # type: ignore[misc]
