"""Sizes in bytes, named once: QEMU's sector and the binary units cases and the model use."""

SECTOR = 512  # BDRV_SECTOR_SIZE: blkdebug rules and request alignment count in it
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
