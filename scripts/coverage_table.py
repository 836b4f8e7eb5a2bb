"""Print the README's coverage table: seed functions and error messages -> the cases using them.

Messages are found statically: a test uses a message when its body or decorators
name `msg.X`/`messages.X`, directly or through a module-level table that does.
Run: .venv/bin/python scripts/coverage_table.py
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ROOT / "harness" / "model" / "messages.py"

# Seed functions (block/replication.c) -> the case files whose stories exercise them.
FUNCTIONS = {
    "replication_open": ["test_open.py"],
    "replication_close": ["test_blockers.py", "test_many_nodes.py"],
    "replication_co_readv": ["test_io_matrix.py", "test_unit_port.py"],
    "replication_co_writev": ["test_io_matrix.py", "test_unit_port.py", "test_geometry.py"],
    "replication_start": ["test_start.py", "test_unit_port.py", "test_many_nodes.py"],
    "replication_do_checkpoint / secondary_do_checkpoint": ["test_checkpoint.py", "test_faults.py"],
    "replication_get_error": ["test_status.py", "test_unit_port.py"],
    "replication_stop": ["test_stop_failover.py", "test_unit_port.py"],
    "replication_done (failover commit completion)": ["test_stop_failover.py", "test_faults.py"],
    "backup_job_completed / backup_job_cleanup": ["test_stop_failover.py", "test_status.py"],
}


# A helper whose text is built from another message covers that one too.
IMPLIED = {"node_busy": ["BLOCKER"]}
# Messages no QEMU build here can print: pinned by the model's unit tests instead.
MODEL_ONLY = {
    "SEED_CANNOT_EMPTY_ACTIVE": "QEMU < 5.1 only (5.1 prints `Failed to empty ...`)",
    "SEED_CANNOT_EMPTY_HIDDEN": "QEMU < 5.1 only (5.1 prints `Failed to empty ...`)",
}


def message_names() -> list[str]:
    tree = ast.parse(MESSAGES.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.FunctionDef):
            names.append(node.name)
    return names


def uses_in(path: Path, names: list[str]) -> dict[str, set[str]]:
    src = path.read_text()
    tree = ast.parse(src)
    alts = "|".join(map(re.escape, names))
    # msg.NAME, or "NAME" as the key of a table of texts (tests/model/test_messages.py)
    pat = re.compile(r"(?:\b(?:msg|messages)\.|\")(" + alts + r")\b")
    tables: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            seg = ast.get_source_segment(src, node) or ""
            found = set(pat.findall(seg))
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and found:
                    tables[t.id] = found
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
            found = set(pat.findall(ast.get_source_segment(src, node) or ""))
            if found:
                tables[node.name] = found
    out: dict[str, set[str]] = defaultdict(set)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            seg = "\n".join(ast.get_source_segment(src, d) or "" for d in node.decorator_list)
            seg += "\n" + (ast.get_source_segment(src, node) or "")
            found = set(pat.findall(seg))
            for name, msgs in tables.items():
                if re.search(r"\b" + re.escape(name) + r"\b", seg):
                    found |= msgs
            for m in found:
                out[m].add(f"{path.name}::{node.name}")
    return out


def main() -> int:
    names = message_names()
    uses: dict[str, set[str]] = defaultdict(set)
    for f in sorted((ROOT / "cases").glob("test_*.py")):
        for m, tests in uses_in(f, names).items():
            uses[m] |= tests
            for implied in IMPLIED.get(m, []):
                uses[implied] |= tests
    model_uses: dict[str, set[str]] = defaultdict(set)
    for f in sorted((ROOT / "tests" / "model").glob("test_*.py")):
        for m, tests in uses_in(f, names).items():
            model_uses[m] |= {f"tests/model/{t}" for t in tests}
    print("| seed function | cases |\n|---|---|")
    for fn, files in FUNCTIONS.items():
        print(f"| `{fn}` | {', '.join(f'`cases/{x}`' for x in files)} |")
    print("\n| message (harness/model/messages.py) | cases |\n|---|---|")
    empty = []
    for n in names:
        tests = sorted(uses.get(n, ()))
        note = ""
        if not tests and n in MODEL_ONLY:
            tests = sorted(model_uses.get(n, ()))
            note = f"{MODEL_ONLY[n]}; the model pins it: "
        if not tests:
            empty.append(n)
        shown = note + ", ".join(f"`{t}`" for t in tests[:3])
        more = f" (+{len(tests) - 3} more)" if len(tests) > 3 else ""
        print(f"| `{n}` | {shown}{more} |")
    if empty:
        print(f"\nno case uses: {', '.join(empty)}", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
