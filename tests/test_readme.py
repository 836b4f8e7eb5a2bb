"""The README's generated tables are what the cases really are: the coverage table (no row
empty, each pinned by a quick case) and the paths table (each path taken by a quick case)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name)], capture_output=True, text=True, check=False
    )


def _block(marker: str) -> str:
    """The README's text between <!-- MARKER:start --> and <!-- MARKER:end -->."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"<!-- {marker}:start -->\n") + len(f"<!-- {marker}:start -->\n")
    return readme[start : readme.index(f"<!-- {marker}:end -->")].strip()


def test_coverage_table_is_current_and_complete() -> None:
    proc = _script("coverage_table.py")
    assert proc.returncode == 0, f"rows without a case: {proc.stderr.strip()}"
    assert _block("coverage") == proc.stdout.strip(), (
        "README coverage table is stale: run scripts/coverage_table.py and paste its output"
    )


def test_paths_table_is_current_and_quick() -> None:
    proc = _script("quick_paths.py")
    assert proc.returncode == 0, proc.stderr.strip()
    assert _block("paths") == proc.stdout.strip(), (
        "README paths table is stale: run scripts/quick_paths.py and paste its output"
    )


def test_paths_checker_tells_quick_from_not() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import quick_paths
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert quick_paths.is_quick("test_start.py::test_start_bad_top_id[names-nothing]") is True
    assert quick_paths.is_quick("test_start.py::test_start_bad_top_id[empty]") is False
    assert quick_paths.is_quick("test_geometry.py::test_failover_story") is False  # one is
    assert quick_paths.is_quick("test_smoke.py::test_secondary_life") is True  # its module
    assert quick_paths.is_quick("test_start.py::test_start_bad_top_id[no-such-id]") is None
    assert quick_paths.is_quick("test_no_such_file.py::test_x") is None
