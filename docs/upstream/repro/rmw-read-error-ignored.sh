#!/bin/sh
# An unaligned write whose read-modify-write read fails must fail; QEMU writes the
# padding buffer (uninitialised heap memory) instead and reports success.
# Replication-free: qemu-img, qemu-io and blkdebug only.
#
# blkdebug's align=4096 makes every write smaller than 4 KiB a read-modify-write in
# block/io.c; the inject-error rule fails the one read that follows the
# pwritev_rmw_head event, i.e. the padding read itself.
#
# Binaries: $QEMU_IMG_PROG and $QEMU_IO_PROG (as in iotests), else qemu-img and
# qemu-io from PATH.  Exit 0: QEMU failed the writes and left the image alone;
# 1: the bug (the first difference is printed); 2: cannot run.
QEMU_IMG=${QEMU_IMG_PROG:-qemu-img}
QEMU_IO=${QEMU_IO_PROG:-qemu-io}
dir=$(mktemp -d "${TMPDIR:-/tmp}/rmw-repro.XXXXXX") || exit 2
trap 'rm -rf "$dir"' EXIT INT TERM HUP
img=$dir/t.img

blkdebug() {  # $1: the image; a json: filename whose padding reads fail once
    printf 'json:{"driver":"blkdebug","align":4096,"inject-error":[{"event":"pwritev_rmw_head","iotype":"read","once":true}],"image":{"driver":"file","filename":"%s"}}' "$1"
}

status=0
for case in "write -z 0x1010 0x100" "write -P 0x11 0x1010 0x100"; do
    "$QEMU_IMG" create -f raw "$img" 1M >/dev/null || exit 2
    # The first write (aligned, no padding) leaves 0x5a in a freed buffer of 4 KiB,
    # which the padding buffer of the second one is likely to reuse.
    out=$("$QEMU_IO" -c "write -P 0x5a 0 0x1000" -c "$case" "$(blkdebug "$img")" 2>&1)
    case $out in
    *"wrote 4096/4096 bytes at offset 0"*) ;;
    *) printf 'cannot run: qemu-io said:\n%s\n' "$out"; exit 2 ;;
    esac
    if printf '%s\n' "$out" | grep -q "^write failed: Input/output error"; then
        # expected: the failed padding read fails the write, the image is untouched
        check=$("$QEMU_IO" -f raw -c "read -P 0 0x1000 0x1000" "$img" 2>&1)
        if printf '%s\n' "$check" | grep -q "Pattern verification failed"; then
            printf '%s: failed as expected, but changed 0x1000-0x2000 all the same\n' "$case"
            status=1
        else
            printf '%s: fails with EIO, image untouched (expected)\n' "$case"
        fi
        continue
    fi
    printf '%s: expected "write failed: Input/output error", got:\n%s\n' "$case" \
        "$(printf '%s\n' "$out" | sed -n 3p)"
    "$QEMU_IO" -f raw -c "read -v 0x1000 0x40" -c "read -v 0x1100 0x20" "$img" 2>&1 \
        | grep '^0000' | sed 's/^/    /'
    status=1
done
exit $status
