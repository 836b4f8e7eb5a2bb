"""Waiting on an observable state with a deadline: the only way the harness waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness.verdicts import QemuHung

T = TypeVar("T")


class DeadlineExceeded(QemuHung):
    """The state polled for did not arrive in time: QEMU never reached it."""

    def __init__(self, what: str, deadline: float) -> None:
        super().__init__(f"gave up after {deadline:g} s waiting for {what}")
        self.what = what
        self.deadline = deadline


def poll(check: Callable[[], T | None], what: str, deadline: float = 30.0) -> T:
    """Call `check` until it returns something not None; fail after `deadline` seconds.

    Each check is itself a round trip to QEMU, so the pause between checks
    only stops a fast check from spinning; it never stands in for a state.
    """
    end = time.monotonic() + deadline
    pause = 0.0005
    while True:
        got = check()
        if got is not None:
            return got
        if time.monotonic() >= end:
            raise DeadlineExceeded(what, deadline)
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
