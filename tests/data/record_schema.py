"""Re-record a schema file here: `.venv/bin/python tests/data/record_schema.py
[--qemu-dir DIR] OUT.json` (no --qemu-dir: iotests' variables, then PATH).

The files are real query-version + query-qmp-schema answers, one schema
entry per line so that a re-recording diffs readably.
"""

from __future__ import annotations

import argparse
import json
import os

from harness.builds import find_build
from harness.probe import fetch_schema


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu-dir")
    ap.add_argument("out")
    args = ap.parse_args()
    version, schema = fetch_schema(find_build(args.qemu_dir, os.environ))
    entries = ",\n".join("  " + json.dumps(e, sort_keys=True) for e in schema)
    with open(args.out, "w") as f:
        f.write(f'{{"query-version": {json.dumps(version, sort_keys=True)},\n')
        f.write(f' "query-qmp-schema": [\n{entries}\n]}}\n')


if __name__ == "__main__":
    main()
