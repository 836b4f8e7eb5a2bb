#!/usr/bin/env bash
# The quick conformance set against real QEMU.  Extra arguments go to pytest.
# TODO: run `.venv/bin/qrc run "$@"` instead once the `qrc run` subcommand exists.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
mkdir -p reports

cmd=(.venv/bin/python -m pytest -n auto --junitxml=reports/junit-conformance.xml cases -m quick "$@")
echo "conformance: ${cmd[*]}"
rc=0
"${cmd[@]}" || rc=$?
if [ "$rc" = 5 ]; then
    # pytest's "no tests collected": a run that runs nothing is a failure here.
    echo "conformance: pytest collected no tests (exit 5): failing the run" >&2
    exit 1
fi
exit "$rc"
