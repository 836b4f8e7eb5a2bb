"""HMP `drive_add`: the schema-less open path, and the only way to give a node a named
BlockBackend on `-M none` (top-id may name a BlockBackend)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.machine import Machine


def flatten(opts: Mapping[str, Any], prefix: str = "") -> list[str]:
    """blockdev options as `-drive` dotted keys (booleans on/off, commas in values doubled)."""
    out: list[str] = []
    for k, v in opts.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += flatten(v, key + ".")
        elif isinstance(v, bool):
            out.append(f"{key}={'on' if v else 'off'}")
        elif v is None:
            # "" means null here, but both versions warn that it is deprecated
            raise ValueError(f"{key}: null cannot be spelt in -drive options")
        else:
            out.append(f"{key}={str(v).replace(',', ',,')}")
    return out


def drive_add(m: Machine, opts: Mapping[str, Any]) -> str:
    """HMP `drive_add` of an if=none drive: its answer ("OK" or QEMU's error text)."""
    line = ",".join(["if=none", *flatten(opts)])
    return m.hmp(f"drive_add 0 {line}").rstrip("\r\n")
