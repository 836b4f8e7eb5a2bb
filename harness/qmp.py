"""One synchronous QMP connection: qemu.qmp's QMPClient driven through its public
coroutines on an event loop of the connection's own, every call with a deadline.

harness.machine puts a process, a transcript and the verdicts around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.message import Message

# How long a disconnect may take.
CLOSE_DEADLINE = 10.0


class _QuietClient(QMPClient):
    """QMPClient without its eager pretty-printing: the base class's message hooks format
    every message (json.dumps, indent=2) for a debug log record even when debug logging
    is off, 0.3 ms of a 1.6 kB reply. With debug logging on they log as before.

    The hooks are the ones qemu.qmp's AsyncProtocol documents for subclasses, but their
    names are private: pyproject.toml pins the qemu.qmp releases checked, and
    tests/test_qmp_client.py fails if an upgrade stops calling them."""

    def _cb_outbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_outbound(msg)
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_inbound(msg)
        return msg


_T = TypeVar("_T")


class QmpConnection:
    """One QMP connection, driven synchronously: qemu.qmp's QMPClient, through its public
    coroutines, on an event loop of this connection's own (so two machines may be driven
    from two threads)."""

    def __init__(self, nickname: str) -> None:
        self.client = _QuietClient(nickname)
        self._loop = asyncio.new_event_loop()

    def _run(self, aw: Awaitable[_T], timeout: float | None) -> _T:
        """Run `aw` to its end; TimeoutError (and `aw` cancelled) after `timeout` s."""
        return self._loop.run_until_complete(asyncio.wait_for(aw, timeout))

    def listen(self, path: str) -> None:
        """Listen on the unix socket `path` (QEMU connects to it)."""
        self._run(self.client.start_server(path), None)

    def accept_unless_exited(self, pidfd: int, timeout: float) -> bool:
        """Accept QEMU's connection and negotiate; False if the process (its `pidfd`)
        exited before connecting. TimeoutError after `timeout` s."""
        return self._run(self._accept_race(pidfd), timeout)

    async def _accept_race(self, pidfd: int) -> bool:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        accepting = asyncio.ensure_future(self.client.accept())
        try:
            await asyncio.wait({accepting, exited}, return_when=asyncio.FIRST_COMPLETED)
            if accepting.done():
                accepting.result()
                return True
            return False
        finally:
            loop.remove_reader(pidfd)
            if not accepting.done():
                accepting.cancel()
                with contextlib.suppress(BaseException):
                    await accepting

    def command(self, cmd: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Run one command; QEMU's reply, {"return": ...} or {"error": {...}}.
        TimeoutError after `timeout` s; QMPError, OSError or EOFError if the connection
        broke."""
        msg = QMPClient.make_execute_msg(cmd, args or None)
        try:
            value = self._run(self.client.execute_msg(msg), timeout)
        except ExecuteError as e:
            return {"error": e.received["error"]}
        return {"return": value}

    def events(self) -> list[dict[str, Any]]:
        """The events received so far (and not yet taken), after letting the loop read
        what QEMU sent since the last command."""
        evs = self.client.events.clear()
        if not evs:
            self._run(asyncio.sleep(0), None)
            evs = self.client.events.clear()
        return [dict(ev) for ev in evs]

    def close(self, timeout: float = CLOSE_DEADLINE) -> None:
        """Disconnect (re-raising what broke the connection, if anything) and close the
        loop; TimeoutError after `timeout` s."""
        try:
            self._run(self.client.disconnect(), timeout)
        finally:
            self._loop.close()
