"""The harness's own NBD reads (harness.nbd_reader) against real QEMU, every installed
build: exact bytes, a mismatch reported as the bytes read, the server's errors as
qemu-io prints them, holes, and why the checks of a replication node read every byte
(a sparse read of an unstarted one answers zeroes where a read fails)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builds import QemuBuild
from harness.differential.specs import sized
from harness.images import load_recipe
from harness.machine import Machine, MachineSet
from harness.model import profile_for
from harness.nbd_client import NbdSession
from harness.nbd_reader import NbdReader, NbdReaderError
from harness.observe import EIO, IoResult
from harness.ops import REP, SECONDARY
from harness.probe import probe
from harness.qemu_io import GuestIO
from harness.real import open_live
from harness.topology import standard
from harness.topology.standard import GUEST_EXPORT
from tests.qemu_helpers import alive, qcow2
from tests.test_nbd_client import export_node, with_builds

K = 1024
pytestmark = [pytest.mark.needs_qemu, pytest.mark.timeout(60)]


@pytest.fixture
def machine(build: QemuBuild, tmp_path: Path) -> Iterator[Machine]:
    """A QEMU exporting node `d` (a qcow2 file) as `d`."""
    ms = MachineSet(tmp_path)
    with ms:
        m = ms.launch(build, "server")
        export_node(m, qcow2(build, tmp_path / "d.qcow2", "4M"))
        yield m
    assert not [p for p in ms.pids if alive(p)]


@with_builds
def test_bytes_exact_and_a_mismatch_shows_what_was_read(machine: Machine) -> None:
    io = GuestIO(machine, "d")
    assert io.write(0, 64 * K, 0x5A).ok and io.write(8 * K, 1, 0x11).ok
    r = NbdReader(machine.sock_path("nbd"), "d")
    try:
        expect = ((0, 8 * K, 0x5A), (8 * K, 1, 0x11), (8 * K + 1, 56 * K - 1, 0x5A))
        assert r.read(0, 64 * K, expect) == IoResult(True, None, expect)
        # undefined bytes stay undefined; a wrong expectation comes back as the bytes read
        assert r.read(0, 8 * K, ((0, 4 * K, None), (4 * K, 4 * K, 0x5A))).data == (
            (0, 4 * K, None),
            (4 * K, 4 * K, 0x5A),
        )
        got = r.read(0, 16 * K, ((0, 16 * K, 0x5A),))
        assert got.data == ((0, 8 * K, 0x5A), (8 * K, 1, 0x11), (8 * K + 1, 8 * K - 1, 0x5A))
        # past the data: the image's unallocated rest reads as zeroes (holes or bytes)
        assert r.read(60 * K, 8 * K, None).data == ((60 * K, 4 * K, 0x5A), (64 * K, 4 * K, 0))
        assert NbdReader(machine.sock_path("nbd"), "d", sparse=True).read(
            64 * K, 64 * K, ((64 * K, 64 * K, 0),)
        ) == IoResult(True, None, ((64 * K, 64 * K, 0),))
    finally:
        r.close()


@with_builds
def test_errors_are_the_answer_and_a_broken_link_is_not(machine: Machine) -> None:
    r = NbdReader(machine.sock_path("nbd"), "d")
    # beyond the end of the export: the server's EINVAL, as qemu-io would print it
    got = r.read(4096 * K, 512, None)
    assert got == IoResult(False, "Invalid argument")
    with pytest.raises(NbdReaderError):
        NbdReader(machine.sock_path("nbd"), "no-such-export").read(0, 512, None)
    machine.qmp_ok("nbd-server-stop")
    with pytest.raises(NbdReaderError):
        r.read(0, 512, None)


@with_builds
def test_replication_node_read_through_not_around(build: QemuBuild, tmp_path: Path) -> None:
    """Before start rep fails every read (replication_co_readv). A sparse NBD read of
    it does not show that where nothing is allocated (the server answers a hole from
    block status without reading), which is why the checks read every byte (DF), and why
    qemu-io's NBD client (sparse) is not a guest of rep for reads."""
    graph = standard.secondary(sized(load_recipe("secondary")), checks_over_nbd=True)
    profile = profile_for(probe(build).version_tuple)
    ms = MachineSet(tmp_path)
    with ms:
        topo = open_live(graph, build, profile, ms, tmp_path)
        sock = topo.sockets[SECONDARY]
        whole, sparse = topo.checkers[REP], NbdReader(sock, GUEST_EXPORT, sparse=True)
        client = NbdSession(build, sock, GUEST_EXPORT)
        try:
            assert topo.guests[REP].read(0, 64 * K, None) == IoResult(False, EIO)
            assert whole.read(0, 64 * K, ((0, 64 * K, 0),)) == IoResult(False, EIO)
            zeroes = IoResult(True, None, ((0, 64 * K, 0),))
            assert sparse.read(0, 64 * K, ((0, 64 * K, 0),)) == zeroes
            assert client.read(0, 64 * K, ((0, 64 * K, 0),)) == zeroes
        finally:
            client.close()
            sparse.close()
            topo.close()
    assert not [p for p in ms.pids if alive(p)]
