#!/usr/bin/env bash
# Idempotent setup, the bootstrap only: the system's QEMU (apt), the project's
# venv, then `qrc fetch` (harness/fetch.py: every other Debian release of QEMU,
# pinned in harness/releases.py, unpacked into .qemu/<release>).  Quiet when all
# is in place: one summary line.  Exit 10 (SetupError) with one line when it
# cannot help.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive  # never prompt (CI=true or not)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: %s\n' "$*" >&2; exit 10; }
is_root() { [ "$(id -u)" = 0 ]; }

LOG=$(mktemp -t qrc-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT
# Run a noisy step with its output in the log; show the log's tail only on failure.
quietly() {
    local what=$1; shift
    if ! "$@" >"$LOG" 2>&1; then
        tail -n 20 "$LOG" >&2
        fail "$what failed (see the output above)"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || fail "apt-get is not available: install $* yourself"
    is_root || fail "$* not installed and this is not root: run as root, or apt-get install $*"
    if [ "$APT_UPDATED" = 0 ]; then
        quietly "apt-get update" apt-get update
        APT_UPDATED=1
    fi
    say "installing $*"
    quietly "apt-get install $*" apt-get install -y --no-install-recommends "$@"
}

# --- 1. the system's QEMU ------------------------------------------------------
BINS=(qemu-system-x86_64 qemu-img qemu-io qemu-nbd qemu-storage-daemon)
missing() { local b; for b in "${BINS[@]}"; do command -v "$b" >/dev/null || echo "$b"; done; }
if [ -n "$(missing)" ]; then
    apt_install qemu-system-x86 qemu-utils
    [ -z "$(missing)" ] || fail "still missing after install: $(missing | paste -sd ' ')"
fi
SYSTEM_VERSION=$(qemu-system-x86_64 --version 2>/dev/null |
    sed -n '1s/^QEMU emulator version \([0-9][0-9.]*\).*/\1/p')
[ -n "$SYSTEM_VERSION" ] || fail "qemu-system-x86_64 --version does not run"
# The release prefixes are unpacked with dpkg-deb.
command -v dpkg-deb >/dev/null || fail "dpkg-deb is not available: this is not Debian"

# One setup at a time (CI jobs and parallel shells share .qemu and .venv).
{ mkdir -p .qemu && exec 9>.qemu/setup.lock; } 2>/dev/null ||
    fail "cannot write $PWD/.qemu: run as the owner of the checkout"
flock 9

# --- 2. the venv -----------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv >>"$LOG" 2>&1; then
        rm -rf .venv
        apt_install python3-venv
        quietly "python3 -m venv" python3 -m venv .venv
    fi
fi
STAMP=.venv/.qrc-setup-stamp
want_stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want_stamp" ] || [ ! -x .venv/bin/qrc ]; then
    say "installing the project into .venv (pip install -e '.[dev]')"
    quietly "pip install" .venv/bin/python -m pip install -e '.[dev]'
    echo "$want_stamp" >"$STAMP"
fi

# --- 3. the other releases, each in .qemu/<release> --------------------------------
rc=0
.venv/bin/qrc fetch || rc=$?
[ "$rc" = 0 ] || exit "$rc"  # qrc has said its one line

say "QEMU $SYSTEM_VERSION (system), $(.venv/bin/python -c 'from harness.releases import FETCHED
print(", ".join(f".qemu/{r.name} ({r.upstream})" for r in FETCHED))'); venv ready"
