#!/usr/bin/env bash
# Idempotent setup: system QEMU (apt), the project venv, and QEMU 10.0
# unpacked from bookworm-backports into .qemu/10.0, so that every run can
# exercise both QEMU versions.  Quiet when everything is already in place:
# one summary line.  Exit 10 (SetupError) with one line when it cannot help.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export DEBIAN_FRONTEND=noninteractive  # never prompt (CI=true or not)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

PINNED=.qemu/10.0
MODDIR_REL=usr/lib/x86_64-linux-gnu/qemu
SUITE=bookworm
BACKPORT_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils qemu-block-extra)

say() { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: %s\n' "$*" >&2; exit 10; }
is_root() { [ "$(id -u)" = 0 ]; }

LOG=$(mktemp -t qrc-setup.XXXXXX)
WORK=""
cleanup() { rm -f "$LOG"; if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
# Run a noisy step with its output in the log; show the log's tail only on failure.
quietly() {
    local what=$1; shift
    if ! "$@" >"$LOG" 2>&1; then
        tail -n 20 "$LOG" >&2
        fail "$what failed (see the output above)"
    fi
}

qemu_version() {  # "7.2.22" from `qemu-system-x86_64 --version`, or nothing
    "$@" --version 2>/dev/null | sed -n '1s/^QEMU emulator version \([0-9][0-9.]*\).*/\1/p'
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || fail "apt-get is not available: install $* yourself"
    if [ "$APT_UPDATED" = 0 ]; then
        quietly "apt-get update" apt-get update
        APT_UPDATED=1
    fi
    say "installing $*"
    quietly "apt-get install $*" apt-get install -y --no-install-recommends "$@"
}

# --- 1. system QEMU ---------------------------------------------------------
SYSTEM_BINS=(qemu-system-x86_64 qemu-img qemu-io qemu-nbd qemu-storage-daemon)
missing_bins() { local b; for b in "${SYSTEM_BINS[@]}"; do command -v "$b" >/dev/null || echo "$b"; done; }
if [ -n "$(missing_bins)" ]; then
    if ! is_root; then
        fail "QEMU is not installed and this is not root: run as root, or apt-get install qemu-system-x86 qemu-utils"
    fi
    apt_install qemu-system-x86 qemu-utils
    [ -z "$(missing_bins)" ] || fail "still missing after install: $(missing_bins | paste -sd ' ')"
fi
SYSTEM_VERSION=$(qemu_version qemu-system-x86_64)
[ -n "$SYSTEM_VERSION" ] || fail "qemu-system-x86_64 --version does not run"

# One setup at a time (CI jobs and parallel shells share .qemu and .venv).
{ mkdir -p .qemu && exec 9>.qemu/setup.lock; } 2>/dev/null ||
    fail "cannot write $ROOT/.qemu: run as the owner of the checkout"
flock 9

# --- 2. the venv -------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv >>"$LOG" 2>&1; then
        rm -rf .venv
        is_root || fail "python3 -m venv does not work and this is not root: apt-get install python3-venv"
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

# --- 3. QEMU 10.0 in .qemu/10.0 ------------------------------------------------
# The mirror URI of the main archive entry for $SUITE (not security, not
# backports), from deb822 .sources files or one-line .list files.
mirror_uri() {
    local etc=${1:-/etc/apt} f
    for f in "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (uri != "" && deb && enabled && has) { print uri; found = 1; exit }
                uri = ""; deb = 0; enabled = 1; has = 0
            }
            BEGIN { enabled = 1 }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:"   { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "suites:"  { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
            tolower($1) == "enabled:" { if (tolower($2) == "no") enabled = 0 }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in "$etc"/sources.list "$etc"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '!done && $1 == "deb" && $3 == suite { print $2; done = 1 }'
    done
}

pinned_ok() {
    [ -x "$PINNED/usr/bin/qemu-system-x86_64" ] &&
        [[ "$(qemu_version "$PINNED/usr/bin/qemu-system-x86_64")" == 10.0.* ]]
}

fetch_pinned() {
    command -v apt-get >/dev/null || fail "cannot fetch QEMU 10.0: apt-get is not available"
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ "$codename" = "$SUITE" ] || fail "cannot fetch QEMU 10.0: this is not Debian $SUITE ($codename)"
    local uri
    uri=$(mirror_uri | awk 'NR == 1')
    [ -n "$uri" ] || fail "cannot fetch QEMU 10.0: no apt source for suite $SUITE in /etc/apt"
    say "fetching QEMU 10.0 from $SUITE-backports"

    WORK=$(mktemp -d -t qrc-q10.XXXXXX)
    local d=$WORK/apt
    mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/cache" "$d/etc/preferences.d" "$WORK/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $SUITE-backports main" \
        >"$d/etc/sources.list"
    # apt drops privileges to _apt for downloads: let it write where it downloads.
    if is_root && id _apt >/dev/null 2>&1; then
        chmod 755 "$WORK"
        chown -R _apt "$d/lists/partial" "$d/archives/partial" "$WORK/debs"
    fi
    local opts=(
        -o "Dir::Etc::SourceList=$d/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::Cache::Archives=$d/archives"
        -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$d/etc/preferences.d"
    )
    is_root || opts+=(-o Debug::NoLocking=1)
    quietly "apt-get update ($SUITE-backports)" apt-get "${opts[@]}" update
    local v
    v=$(apt-cache "${opts[@]}" madison qemu-system-x86 |
        awk -F'|' -v s="$SUITE-backports" '
            !done && $3 ~ s { gsub(/ /, "", $2); if ($2 ~ /^1:10\.0\./) { print $2; done = 1 } }')
    [ -n "$v" ] || fail "cannot fetch QEMU 10.0: $SUITE-backports has no qemu-system-x86 10.0.x any more"
    local pkgs=() p
    for p in "${BACKPORT_PKGS[@]}"; do pkgs+=("$p=$v"); done
    (cd "$WORK/debs" && quietly "apt-get download" apt-get "${opts[@]}" download "${pkgs[@]}")

    rm -rf "$PINNED.partial"
    mkdir -p "$PINNED.partial"
    local deb
    for deb in "$WORK"/debs/*.deb; do
        quietly "dpkg -x $(basename "$deb")" dpkg -x "$deb" "$PINNED.partial"
    done
    [[ "$(QEMU_MODULE_DIR=$ROOT/$PINNED.partial/$MODDIR_REL \
        qemu_version "$PINNED.partial/usr/bin/qemu-system-x86_64")" == 10.0.* ]] ||
        fail "unpacked QEMU in $PINNED.partial does not report version 10.0"
    # Swap in whole: readers see the old tree or the new one, never half of one.
    if [ -e "$PINNED" ]; then
        mv "$PINNED" "$PINNED.old.$$"
    fi
    mv -T "$PINNED.partial" "$PINNED"
    rm -rf "$PINNED.old.$$"
}

pinned_ok || fetch_pinned
PINNED_VERSION=$(qemu_version "$PINNED/usr/bin/qemu-system-x86_64")

say "QEMU $SYSTEM_VERSION (system), QEMU $PINNED_VERSION ($PINNED), venv ready"
