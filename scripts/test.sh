#!/usr/bin/env bash
# The project's own tests and the cases, against every known QEMU build (the
# system's 7.2 and each release `qrc fetch` unpacked into .qemu/<release>:
# --all-builds, an option of the root conftest.py; tests/ also iterate
# harness.builds.known_builds themselves).  Extra arguments go to
# pytest.  JUnit XML, the JSON report (one record per case and build, which
# .ci/run draws the version matrix from) and the artifacts of failed cases land
# in reports/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
mkdir -p reports

rc=0
rm -rf reports/artifacts-tests
# Every case on the oldest and the newest release, the quick set on the others (the
# budget); `bash scripts/test.sh --full-on all` runs every case on every build.
.venv/bin/python -m pytest -n auto --all-builds --full-on ends --junitxml=reports/junit-tests.xml \
    --qrc-json=reports/report-tests.json --qrc-artifacts=reports/artifacts-tests \
    tests cases "$@" || rc=$?
if [ "$rc" = 5 ]; then
    # pytest's "no tests collected": a run that runs nothing is a failure here.
    echo "test: pytest collected no tests (exit 5): failing the run" >&2
    exit 1
fi
exit "$rc"
