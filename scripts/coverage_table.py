"""Print the README's coverage table: seed functions and error messages -> the cases using
them, and the quick set's cases among them (the default run must pin every row).

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
    "replication_close": ["test_blockers.py", "test_many_nodes.py", "test_close_during_commit.py"],
    "replication_co_readv": ["test_io_matrix.py", "test_unit_port.py"],
    "replication_co_writev": [
        "test_io_matrix.py",
        "test_unit_port.py",
        "test_geometry.py",
        "test_failover_failed_writes.py",
    ],
    "replication_start": [
        "test_start.py",
        "test_unit_port.py",
        "test_many_nodes.py",
        "test_start_users.py",
    ],
    "replication_do_checkpoint / secondary_do_checkpoint": [
        "test_checkpoint.py",
        "test_faults.py",
        "test_ejected.py",
    ],
    "replication_get_error": ["test_status.py", "test_unit_port.py"],
    "replication_stop": ["test_stop_failover.py", "test_unit_port.py"],
    "replication_done (failover commit completion)": ["test_stop_failover.py", "test_faults.py"],
    "backup_job_completed / backup_job_cleanup": [
        "test_stop_failover.py",
        "test_status.py",
        "test_read_only.py",
    ],
    # COLO's calls into the filter (migration/colo.c), driven by its migration
    "COLO start: replication_start_all, secondary then primary": ["test_colo_migration.py"],
    "COLO checkpoint: replication_get_error_all, replication_do_checkpoint_all": [
        "test_colo_migration.py",
        "test_colo_failover.py",
    ],
    "COLO failover: replication_stop_all(failover) at x-colo-lost-heartbeat": [
        "test_colo_failover.py"
    ],
}


# A helper whose text is built from another message covers that one too.
IMPLIED = {
    "node_busy": ["BLOCKER"],
    "colo_not_enabled": ["COLO_FEATURE_DISABLED", "COLO_NOT_IN_MODE"],
}
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


def _is_quick(src: str) -> bool:
    return bool(re.search(r"\bQUICK\b|mark\.quick\b", src))


def _params(node: ast.AST, src: str) -> list[tuple[str, bool]]:
    """(source, quick) of every pytest.param(...) call under `node`."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "param":
            seg = ast.get_source_segment(src, n) or ""
            marks = [k for k in n.keywords if k.arg == "marks"]
            quick = any(_is_quick(ast.get_source_segment(src, k.value) or "") for k in marks)
            out.append((seg, quick))
    return out


def uses_in(path: Path, names: list[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """message -> the tests naming it, and message -> the quick ones among them.

    A test covers a message in the quick set when the test is marked quick (itself or
    its module), or when the message is in its body or a helper it calls and one of its
    parameters is quick, or when the message is in one of its quick parameters."""
    src = path.read_text()
    tree = ast.parse(src)
    alts = "|".join(map(re.escape, names))
    # msg.NAME, or "NAME" as the key of a table of texts (tests/model/test_messages.py)
    pat = re.compile(r"(?:\b(?:msg|messages)\.|\")(" + alts + r")\b")
    module_quick = False
    # name -> (messages anywhere in it, messages in its quick params, has quick params)
    tables: dict[str, tuple[set[str], set[str], bool]] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            seg = ast.get_source_segment(src, node) or ""
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
                module_quick = _is_quick(seg)
                continue
            found = set(pat.findall(seg))
            params = _params(node, src)
            quick_msgs = {m for ps, q in params if q for m in pat.findall(ps)}
            has_quick = any(q for _, q in params) or (not params and _is_quick(seg))
            for t in targets:
                if isinstance(t, ast.Name) and (found or has_quick):
                    tables[t.id] = (found, quick_msgs, has_quick)
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
            seg = ast.get_source_segment(src, node) or ""
            found = set(pat.findall(seg))
            if found or _is_quick(seg):
                # a helper's messages count wherever it is used; a helper that builds
                # a parameter table with quick entries makes its users quick
                tables[node.name] = (found, found, _is_quick(seg))
    out: dict[str, set[str]] = defaultdict(set)
    quick_out: dict[str, set[str]] = defaultdict(set)
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        decos = "\n".join(ast.get_source_segment(src, d) or "" for d in node.decorator_list)
        body = "\n".join(ast.get_source_segment(src, b) or "" for b in node.body)
        seg = decos + "\n" + body
        found = set(pat.findall(seg))
        marked = module_quick or any(
            _is_quick(ast.get_source_segment(src, d) or "")
            and not isinstance(d, ast.Call)  # @pytest.mark.quick, not a parametrize
            for d in node.decorator_list
        )
        params = [p for d in node.decorator_list for p in _params(d, src)]
        quick_params = {m for ps, q in params if q for m in pat.findall(ps)}
        some_quick = marked or any(q for _, q in params)
        param_msgs = {m for ps, _ in params for m in pat.findall(ps)}
        plain = set(pat.findall(body)) | (set(pat.findall(decos)) - param_msgs)
        for name, (msgs, quick_msgs, has_quick) in tables.items():
            if re.search(r"\b" + re.escape(name) + r"\b", seg):
                found |= msgs
                quick_params |= quick_msgs
                some_quick = some_quick or has_quick
                if not any(True for _ in _params_named(tree, name, src)):
                    plain |= msgs  # a helper, not a parameter table
        quick = found if marked else (plain | quick_params if some_quick else set())
        for m in found:
            out[m].add(f"{path.name}::{node.name}")
        for m in quick:
            quick_out[m].add(f"{path.name}::{node.name}")
    return out, quick_out


def _params_named(tree: ast.Module, name: str, src: str) -> list[tuple[str, bool]]:
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return _params(node, src)
    return []


def _shown(tests: list[str], limit: int = 3) -> str:
    more = f" (+{len(tests) - limit} more)" if len(tests) > limit else ""
    return ", ".join(f"`{t}`" for t in tests[:limit]) + more


def main() -> int:
    names = message_names()
    uses: dict[str, set[str]] = defaultdict(set)
    quick: dict[str, set[str]] = defaultdict(set)
    quick_files: dict[str, list[str]] = defaultdict(list)
    for f in sorted((ROOT / "cases").glob("test_*.py")):
        found, found_quick = uses_in(f, names + [k for k in IMPLIED if k not in names])
        for m, tests in found.items():
            uses[m] |= tests
            for implied in IMPLIED.get(m, []):
                uses[implied] |= tests
        for m, tests in found_quick.items():
            quick[m] |= tests
            for implied in IMPLIED.get(m, []):
                quick[implied] |= tests
        quick_files[f.name] = sorted({t for ts in found_quick.values() for t in ts})
    model_uses: dict[str, set[str]] = defaultdict(set)
    for f in sorted((ROOT / "tests" / "model").glob("test_*.py")):
        for m, tests in uses_in(f, names)[0].items():
            model_uses[m] |= {f"tests/model/{t}" for t in tests}
    empty: list[str] = []
    print("| seed function | cases | quick |\n|---|---|---|")
    for fn, files in FUNCTIONS.items():
        picks = [t for x in files for t in quick_files.get(x, [])[:1]]
        if not picks:
            empty.append(f"{fn} (quick)")
        print(f"| `{fn}` | {', '.join(f'`cases/{x}`' for x in files)} | {_shown(picks)} |")
    print("\n| message (harness/model/messages.py) | cases | quick |\n|---|---|---|")
    for n in names:
        tests = sorted(uses.get(n, ()))
        fast = sorted(quick.get(n, ()))
        note = ""
        if not tests and n in MODEL_ONLY:
            tests = sorted(model_uses.get(n, ()))
            note = f"{MODEL_ONLY[n]}; the model pins it: "
            fast = tests
        if not tests:
            empty.append(n)
        elif not fast:
            empty.append(f"{n} (quick)")
        print(f"| `{n}` | {note}{_shown(tests)} | {_shown(fast, 2)} |")
    if empty:
        print(f"\nno case uses: {', '.join(empty)}", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
