"""pytest plugin (registered by the root conftest.py): a dead worker's files are removed.

A pytest-xdist worker that dies (killed, out of memory, QEMU took it down) cannot run
its own clean-up, and leaves its private directories in TMPDIR (template images, the
layer inspector's, QEMU socket directories: tens of MB each). The controller removes
them when it learns a worker went down, and once more at the end of the session
(harness.tmp.reclaim: only its own children's, and only once their owner has died).
"""

from __future__ import annotations

import os

import pytest

from harness.tmp import reclaim


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object | None) -> None:
    if error is not None:
        reclaim(os.getpid())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        reclaim(os.getpid())
