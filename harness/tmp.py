"""Where our private directories go: TMPDIR when its path is short enough for sockets."""

from __future__ import annotations

import tempfile
from pathlib import Path

# sun_path holds 107 bytes; leave room for "/qrc-XXXXXXXX/nbd.sock" and friends.
MAX_BASE = 60


def private_dir(prefix: str = "qrc-") -> Path:
    """A fresh 0700 directory with a short path, under TMPDIR if short, else /tmp."""
    base = tempfile.gettempdir()
    if len(base) > MAX_BASE:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
