"""A test-only case for `qrc bisect`'s and the report plugin's tests (tests/test_cli_*.py).

Not collected by default (not named test_*.py); run it by node id.  It runs a
short story against a real QEMU.  With QRC_SELFTEST_FLIP=1 (or =VERSION: only
on that QEMU version, which makes a matrix row differ) the model's
expectation is deliberately flipped: its text for "start while running" is
changed, so QEMU's real answer diverges and the case fails against any real
build (the Divergence, QMP transcripts, trace and layer maps are all real).
"""

import dataclasses
import os

import pytest

from cases.conftest import _maker, machines, secondary, topologies  # noqa: F401  (fixtures)
from harness.judge import judging_profile
from harness.ops import PrimaryWrite, Start, Status, Write

FLIPPED_TEXT = "Block replication is running or done (flipped by the test)"


@pytest.fixture
def profile(request, qemu_build):
    """cases/conftest.py's profile, with the flipped text where QRC_SELFTEST_FLIP asks: the
    model and the case both read their texts from the profile."""
    p = judging_profile(request.config.getoption("qrc_profile"), qemu_build[1].version_tuple)
    if os.environ.get("QRC_SELFTEST_FLIP") in ("1", qemu_build[1].version):
        p = dataclasses.replace(p, texts=dataclasses.replace(p.texts, RUNNING_OR_DONE=FLIPPED_TEXT))
    return p


@pytest.mark.quick
@pytest.mark.secondary
def test_start_twice(secondary):  # noqa: F811
    s = secondary("secondary-1m")
    s.run(Status(), Start(primary=False), Write(0, 65536, 0x11), Write(196608, 4096, 0x5A))
    s.run(PrimaryWrite(458752, 131072, 0x33), Status())
    s.run(Start(primary=False))  # a second start: QEMU refuses it
    s.finish()
