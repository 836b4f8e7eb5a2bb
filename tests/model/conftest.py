"""Model tests run no QEMU: the root conftest's per-test leak check (a scan of /proc
after every test) is replaced by a no-op here, which halves this directory's run time."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_qemu_left_behind() -> None:
    """Nothing to check: no test under tests/model starts a process."""
    return None
