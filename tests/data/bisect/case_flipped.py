"""A test-only case for `qrc bisect`'s and the report plugin's tests (tests/test_cli_*.py).

Not collected by default (not named test_*.py); run it by node id.  It runs a
short story against a real QEMU.  With QRC_SELFTEST_FLIP=1 (or =VERSION: only
on that QEMU version, which makes a matrix row differ) the model's
expectation is deliberately flipped: its text for "start while running" is
changed, so QEMU's real answer diverges and the case fails against any real
build (the Divergence, QMP transcripts, trace and layer maps are all real).
"""

import os

import pytest

from cases.conftest import _maker, machines, profile, secondary, topologies  # noqa: F401  (fixtures)
from harness.model import messages as msg
from harness.ops import PrimaryWrite, Start, Status, Write

FLIPPED_TEXT = "Block replication is running or done (flipped by the test)"


@pytest.mark.quick
@pytest.mark.secondary
def test_start_twice(secondary, monkeypatch, qemu_build):  # noqa: F811
    flip = os.environ.get("QRC_SELFTEST_FLIP")
    if flip in ("1", qemu_build[1].version):
        monkeypatch.setattr(msg, "RUNNING_OR_DONE", FLIPPED_TEXT)
    s = secondary("secondary-1m")
    s.run(Status(), Start(primary=False), Write(0, 65536, 0x11), Write(196608, 4096, 0x5A))
    s.run(PrimaryWrite(458752, 131072, 0x33), Status())
    s.run(Start(primary=False))  # a second start: QEMU refuses it
    s.finish()
