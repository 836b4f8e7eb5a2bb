"""An NBD link that comes back (issue 23, list A item 4): the primary's replication node
over an NBD client of the secondary side's export, the export removed and added again
(block-export-del hard, block-export-add) or its server restarted (nbd-server-stop,
nbd-server-start on the same socket), the client with or without a reconnect-delay.

What the model says (harness.model.lifecycle): while the link is down a write waits
up to the reconnect-delay for the client to reconnect, then fails (without one it fails
at once); the primary stores the error and reports success either way. Once the export
is back the client reconnects on its own schedule, which AwaitReconnect waits for
(writing until the export holds the write); a write still waiting in its reconnect-delay
when the export comes back is held until the client has reconnected, and arrives.

Facts pinned here (5.2, 7.2, 10.0, 11.1):
- A write sent while the link is down with a reconnect-delay, the export back while
  it waits: it arrives, and no error is stored (the status stays clean).
- Without a reconnect-delay, or once the delay has run out, the write is lost and the
  status says `I/O error occurred` until the primary is stopped; the client reconnects
  by itself (within a few seconds of the export's return) and later writes arrive.
- Every write that arrived is in the secondary side's image (checked offline at the end),
  and none that was lost.
- A QEMU whose primary node's NBD server is gone quits at once on 5.2, and only after
  the client's reconnect-delay from 6.2 on (its close's flush waits in it; a drain no
  longer cuts it short: profile.nbd_close_waits_reconnect_delay). So the cases quit the
  primary while its link is up.
"""

from __future__ import annotations

import time

import pytest

from harness.faults import AwaitReconnect, LinkDown, LinkUp, LinkUpDuringWrite
from harness.observe import IO_OK, QMP_OK, status
from harness.ops import PRIMARY, Quit, Start, Status, Stop, Write
from harness.units import KiB

QUICK = pytest.mark.quick
pytestmark = [pytest.mark.primary, pytest.mark.faults]

CL = 64 * KiB
# how the link goes and comes back: (LinkDown's mode, LinkUp's mode)
WAYS = {"export": ("hard", "export"), "server": ("server", "server")}


def started(primary, delay: int):
    s = primary(reconnect_delay=delay)
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Write(0, CL, 0x21), IO_OK)
    return s


def finish(s) -> None:
    """The primary quits first (while its link is up), then the offline checks."""
    s.expect(Quit(machine=PRIMARY), QMP_OK)
    s.finish()


@pytest.mark.parametrize("way", [pytest.param("export", marks=QUICK), "server"])
def test_a_write_waits_for_the_link_within_its_reconnect_delay(primary, way):
    down, up = WAYS[way]
    s = started(primary, delay=10)
    s.expect(LinkDown(mode=down), QMP_OK)
    s.expect(LinkUpDuringWrite(mode=up, offset=CL, length=CL, pattern=0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    s.expect(Write(2 * CL, CL, 0x23), IO_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    finish(s)  # offline: the image has all three writes


@pytest.mark.parametrize("way", ["export", "server"])
def test_a_write_past_its_reconnect_delay_is_lost(primary, msg, way):
    down, up = WAYS[way]
    s = started(primary, delay=1)
    s.expect(LinkDown(mode=down), QMP_OK)
    s.expect(Write(CL, CL, 0x22), IO_OK)  # waits a second, then fails: stored
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(LinkUp(mode=up), QMP_OK)
    s.expect(AwaitReconnect(2 * CL, CL, 0x23), IO_OK)
    s.expect(Write(3 * CL, CL, 0x24), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))  # until a stop
    s.expect(Stop(primary=True, machine=PRIMARY), QMP_OK)
    s.expect(Status(machine=PRIMARY), status(None))
    finish(s)  # offline: the writes at 0, 2 CL and 3 CL, not the one at CL


@pytest.mark.quick
def test_without_a_reconnect_delay_a_write_does_not_wait(primary, msg):
    s = started(primary, delay=0)
    s.expect(LinkDown(mode="hard"), QMP_OK)
    # the write fails at once, before the export is back: lost, stored
    s.expect(LinkUpDuringWrite(offset=CL, length=CL, pattern=0x22), IO_OK)
    s.expect(Status(machine=PRIMARY), status(msg.IO_ERROR))
    s.expect(AwaitReconnect(2 * CL, CL, 0x23), IO_OK)
    s.expect(Write(3 * CL, CL, 0x24), IO_OK)
    finish(s)


@pytest.mark.parametrize("down", ["hard", "server"])
def test_quit_with_the_link_down(primary, profile, down):
    """The primary quits cleanly either way; from 6.2 it takes the reconnect-delay."""
    delay = 2
    s = started(primary, delay=delay)
    s.expect(LinkDown(mode=down), QMP_OK)
    began = time.monotonic()
    s.expect(Quit(machine=PRIMARY), QMP_OK)
    took = time.monotonic() - began
    if profile.nbd_close_waits_reconnect_delay:
        assert delay <= took < delay + 2, took
    else:
        assert took < 1, took
    s.finish()
