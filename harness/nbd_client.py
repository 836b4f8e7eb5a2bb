"""The NBD client of the primary's I/O: an interactive qemu-io on the export.

The primary's writes reach the secondary disk only through its NBD export, so
the harness needs a fast NBD client: one qemu-io kept open (harness.qemu_io_process).

An NBD server that drops us is not announced by qemu-io: later requests just
fail with EIO. So after any I/O error an NbdSession treats the connection as
broken and opens a new one before the next command; the failing command's
result is still reported as observed, never retried.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote

from harness.nbd_reader import NbdReader
from harness.process import Build
from harness.qemu_io_process import InteractiveQemuIo


class NbdSession(InteractiveQemuIo):
    """Primary I/O into an NBD export over a unix socket; reconnects after a drop."""

    respawn_after_error = True

    def __init__(
        self,
        build: Build,
        socket_path: str,
        export: str,
        *,
        timeout: float = 10.0,
        spawn_attempts: int = 3,
        spawn_deadline: float = 5.0,
    ) -> None:
        self.socket_path = socket_path
        self.export = export
        uri = f"nbd+unix:///{quote(export, safe='')}?socket={quote(socket_path, safe='/')}"
        super().__init__(
            build,
            ["-f", "raw", uri],
            name=f"NBD client of {export!r}",
            timeout=timeout,
            spawn_attempts=spawn_attempts,
            spawn_deadline=spawn_deadline,
            # Many topologies never send a primary write: connect on first use.
            lazy=True,
        )
        # the checks' reads of the same export (harness.nbd_reader, RealSide.check_read):
        # the server may answer holes, as it may to qemu-io's NBD client
        self.checker = NbdReader(socket_path, export, timeout, sparse=True)

    def close(self) -> None:
        self.checker.close()
        super().close()

    @property
    def reconnects(self) -> int:
        return max(0, self.spawns - 1)

    def _before_retry(self, deadline: float) -> bool:
        """Poll (with the deadline) until the server's socket exists again."""
        delay = 0.001
        while time.monotonic() < deadline:
            if os.path.exists(self.socket_path):
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return False
