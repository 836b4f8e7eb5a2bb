"""The README's coverage table is what the cases really use, and no row is empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_coverage_table_is_current_and_complete() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "coverage_table.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"rows without a case: {proc.stderr.strip()}"
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- coverage:start -->\n") + len("<!-- coverage:start -->\n")
    end = readme.index("<!-- coverage:end -->")
    assert readme[start:end].strip() == proc.stdout.strip(), (
        "README coverage table is stale: run scripts/coverage_table.py and paste its output"
    )
