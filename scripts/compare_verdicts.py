"""Compare the verdicts of two JSON reports (pytest --qrc-json, qrc run's report.json).

    python scripts/compare_verdicts.py A.json B.json

A verdict is a case's outcome on one QEMU build (passed, failed, error, skipped, xfailed,
xpassed). Prints, per QEMU version, how many cases each report has and how many agree,
then every case whose verdict differs and every case only one report has; for cases that
failed in both, a different first line of the failure is listed as a note (not counted:
a message may name a pid or a path). Exit status 0 when every verdict agrees, 1 when any
differs or a case is missing from one report, 2 when a report cannot be read.

Written for issue 13: the whole suite run with the QEMU pool and with --fresh-qemu must
give the same verdicts on every build.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Mapping[str, Any]]:
    """nodeid -> record of a JSON report."""
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "cases" not in doc:
        raise ValueError(f"{path}: not a qrc JSON report")
    return {str(r["nodeid"]): r for r in doc["cases"]}


def compare(
    a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    versions: dict[str, Counter[str]] = {}
    differ, only_a, only_b, notes = [], [], [], []
    for nodeid in sorted(set(a) | set(b)):
        ra, rb = a.get(nodeid), b.get(nodeid)
        version = str((ra or rb or {}).get("qemu_version") or "-")
        count = versions.setdefault(version, Counter())
        if ra is None:
            only_b.append(nodeid)
            count["only in B"] += 1
            continue
        if rb is None:
            only_a.append(nodeid)
            count["only in A"] += 1
            continue
        count["both"] += 1
        if ra["outcome"] != rb["outcome"]:
            differ.append(
                (nodeid, ra["outcome"], rb["outcome"], ra.get("message"), rb.get("message"))
            )
            count["differ"] += 1
        elif ra["outcome"] in ("failed", "error") and ra.get("message") != rb.get("message"):
            notes.append((nodeid, ra.get("message"), rb.get("message")))
    return {
        "versions": versions,
        "differ": differ,
        "only_a": only_a,
        "only_b": only_b,
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="report A")
    ap.add_argument("b", type=Path, help="report B")
    args = ap.parse_args(argv)
    try:
        a, b = load(args.a), load(args.b)
    except (OSError, ValueError, KeyError) as e:
        print(f"compare_verdicts: {e}", file=sys.stderr)
        return 2
    r = compare(a, b)
    print(f"A: {args.a} ({len(a)} cases)\nB: {args.b} ({len(b)} cases)")
    for version, c in sorted(r["versions"].items()):
        agree = c["both"] - c["differ"]
        extra = "".join(f", {c[k]} {k}" for k in ("only in A", "only in B") if c[k])
        print(f"  QEMU {version}: {c['both']} in both, {agree} agree, {c['differ']} differ{extra}")
    for nodeid, va, vb, ma, mb in r["differ"]:
        print(f"DIFFERS {nodeid}: A {va}, B {vb}")
        for side, m in (("A", ma), ("B", mb)):
            if m:
                print(f"    {side}: {m}")
    for nodeid in r["only_a"]:
        print(f"ONLY IN A {nodeid}")
    for nodeid in r["only_b"]:
        print(f"ONLY IN B {nodeid}")
    for nodeid, ma, mb in r["notes"]:
        print(f"note: {nodeid} failed in both, with other messages:\n    A: {ma}\n    B: {mb}")
    same = not (r["differ"] or r["only_a"] or r["only_b"])
    print("verdicts: identical" if same else "verdicts: DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
