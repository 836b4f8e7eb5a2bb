"""First light: the secondary's basic life, compared step by step with the model."""

import pytest

from harness.ops import Checkpoint, PrimaryWrite, Read, Settle, Start, Status, Stop, Write

pytestmark = [pytest.mark.quick, pytest.mark.secondary]


def test_secondary_life(secondary):
    s = secondary()
    s.run(Status(), Write(0, 65536, 0x11), Start(primary=False), Status())
    s.run(Write(0, 4096, 0x22), Read(0, 8192), PrimaryWrite(0, 4096, 0x33), Read(0, 8192))
    s.check_layers_live()
    s.run(Checkpoint(), Read(0, 8192), Stop(primary=False, failover=True), Status(), Settle())
    s.run(Status(), Read(0, 8192))
    s.finish()


@pytest.mark.primary
def test_primary_life(primary):
    s = primary()
    s.run(Status(machine="primary"))
    s.run(Write(0, 65536, 0x11), Start(primary=True, machine="primary"), Status(machine="primary"))
    s.run(Write(0, 65536, 0x22), Write(100, 1000, 0x44), Read(0, 4096))
    s.run(Checkpoint(machine="primary"), Stop(primary=True, machine="primary"))
    s.run(Status(machine="primary"), Write(0, 512, 0x55))
    s.finish()
