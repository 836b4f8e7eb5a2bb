#!/usr/bin/env bash
# The quick conformance set against real QEMU, through `qrc run` (pytest -n auto -m quick,
# a progress display, a closing summary, reports/junit.xml, reports/report.json and the
# artifacts of failed cases in reports/artifacts/).  Extra arguments go to `qrc run`
# (--qemu-dir DIR, --all, ...) and through it to pytest.  Exit code: qrc's (README).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
exec .venv/bin/qrc run --report-dir reports "$@"
