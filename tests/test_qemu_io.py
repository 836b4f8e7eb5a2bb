"""qemu-io commands and their strict parsing: the core against canned output (no QEMU),
then HMP qemu-io against real QEMU (both installed builds), byte-exact reads included."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness import qemu_io
from harness.builds import QemuBuild, known_builds
from harness.machine import Machine, MachineSet
from harness.observe import (
    EIO,
    IO_EIO,
    IO_OK,
    NOT_DUMPED,
    Data,
    IoResult,
    data_differences,
    data_from_bytes,
)
from harness.qemu_io import GuestIO, QemuIoSession, UnexpectedOutput, parse_dump
from tests.qemu_helpers import qcow2

ROOT = Path(__file__).resolve().parents[1]
BUILDS = known_builds(ROOT)
K = 1024
STATS = "4 KiB, 1 ops; 00.00 sec (1.815 MiB/sec and 464.7564 ops/sec)"


def _version(build: QemuBuild) -> str:
    env = {**os.environ, **build.env()}
    out = subprocess.run(
        [*build.command(build.system), "--version"], capture_output=True, text=True, env=env
    )
    m = re.search(r"version (\d+\.\d+\.\d+)", out.stdout)
    return m[1] if m else build.label


with_builds = pytest.mark.parametrize("build", BUILDS, ids=[_version(b) for b in BUILDS])


# ---- the core, against canned output


class Canned(QemuIoSession):
    """A session that answers from a script and records the commands."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.commands: list[str] = []

    def _run(self, command: str) -> str:
        self.commands.append(command)
        return self.answers.pop(0)


def dump_text(offset: int, buf: bytes) -> str:
    """What `read -v` prints for `buf` (qemu-io's dump_buffer)."""
    lines = []
    for i in range(0, len(buf), 16):
        chunk = buf[i : i + 16]
        hexes = "".join(f"{b:02x} " for b in chunk)
        text = "".join(chr(b) if chr(b).isalnum() and b < 128 else "." for b in chunk)
        lines.append(f"{offset + i:08x}:  {hexes} {text}")
    return "\n".join(lines) + "\n"


def test_write_ok_and_error() -> None:
    s = Canned(
        f"wrote 4096/4096 bytes at offset 512\n{STATS}\n", "write failed: No space left on device\n"
    )
    assert s.write(512, 4096, 0xAB) == IO_OK
    assert s.write(0, 4096, 1) == IoResult(False, "No space left on device")
    assert s.commands == ["write -P 171 512 4096", "write -P 1 0 4096"]


@pytest.mark.parametrize(
    "output",
    [
        "",  # nothing: the result line is missing
        f"wrote 4096/4096 bytes at offset 0\n{STATS}\n",  # another request's offset
        f"wrote 512/4096 bytes at offset 512\n{STATS}\n",  # short write
        "wrote 4096/4096 bytes at offset 512\n",  # no statistics line
        f"wrote 4096/4096 bytes at offset 512\n{STATS}\nwrote 1/1 bytes at offset 0\n{STATS}\n",
        "write failed: Input/output error\nwrite failed: Input/output error\n",
        "length cannot exceed 2147483136 without -n, given 10000000000\n",
        f"qemu-io: warning\nwrote 4096/4096 bytes at offset 512\n{STATS}\n",
    ],
)
def test_unexpected_output_raises_and_quotes(output: str) -> None:
    with pytest.raises(UnexpectedOutput) as exc:
        Canned(output).write(512, 4096, 1)
    assert "write -P 1 512 4096" in str(exc.value)
    assert isinstance(exc.value, AssertionError)
    for line in output.splitlines():
        assert repr(line) in str(exc.value)


def test_zeroes_discard_flush() -> None:
    s = Canned(
        f"wrote 512/512 bytes at offset 0\n{STATS}\n",
        f"discard 512/512 bytes at offset 0\n{STATS}\n",
        "discard failed: Input/output error\n",
        "",
        "flush: something\n",
    )
    assert s.write_zeroes(0, 512) == IO_OK
    assert s.discard(0, 512) == IO_OK
    assert s.discard(0, 512) == IO_EIO
    assert s.flush() == IO_OK
    with pytest.raises(UnexpectedOutput):
        s.flush()
    assert s.commands[:2] == ["write -z 0 512", "discard 0 512"]


def test_read_verifies_each_defined_extent() -> None:
    ok = f"read 8192/8192 bytes at offset 4096\n{STATS}\n"
    s = Canned(ok, ok)
    expect: Data = ((4096, 1024, 1), (5120, 1024, None), (6144, 6144, 2))
    assert s.read(4096, 8192, expect) == IoResult(True, None, expect)
    assert s.commands == ["read -P 1 -s 0 -l 1024 4096 8192", "read -P 2 -s 2048 -l 6144 4096 8192"]


def test_read_mismatch_dumps_the_request() -> None:
    buf = b"\xaa" * 20 + b"\xbb" * 12
    s = Canned(
        "Pattern verification failed at offset 100, 32 bytes\n"
        f"read 32/32 bytes at offset 100\n{STATS}\n",
        dump_text(100, buf) + f"read 32/32 bytes at offset 100\n{STATS}\n",
    )
    res = s.read(100, 32, ((100, 32, 0xAA),))
    assert res == IoResult(True, None, ((100, 20, 0xAA), (120, 12, 0xBB)))
    assert s.commands[1] == "read -v 100 32"


def test_read_error_and_undefined_only() -> None:
    s = Canned("read failed: Input/output error\n", f"read 512/512 bytes at offset 0\n{STATS}\n")
    assert s.read(0, 512, ((0, 512, 7),)) == IO_EIO
    assert s.read(0, 512, ((0, 512, None),)) == IoResult(True, None, ((0, 512, None),))
    assert s.commands[1] == "read 0 512"


def test_verification_message_must_name_the_checked_range() -> None:
    s = Canned(
        "Pattern verification failed at offset 0, 512 bytes\n"
        f"read 1024/1024 bytes at offset 0\n{STATS}\n"
    )
    with pytest.raises(UnexpectedOutput):
        s.read(0, 1024, ((0, 512, None), (512, 512, 3)))


def test_expect_must_cover_the_request() -> None:
    with pytest.raises(ValueError):
        Canned().read(0, 1024, ((0, 512, 1),))
    with pytest.raises(ValueError):
        Canned().read(0, 1024, ((0, 512, 1), (600, 424, 1)))


def test_parse_dump_is_strict() -> None:
    buf = bytes(range(40))
    lines = dump_text(0x1000, buf).splitlines()
    assert parse_dump(lines, 0x1000, 40) == buf
    with pytest.raises(ValueError):
        parse_dump(lines, 0x1010, 40)  # wrong addresses
    with pytest.raises(ValueError):
        parse_dump(lines[:-1], 0x1000, 40)  # a line missing
    with pytest.raises(ValueError):
        parse_dump(lines, 0x1000, 41)  # last line too short for the length
    bad = [*lines[:-1], lines[-1].replace(" 27 ", " ")]
    with pytest.raises(ValueError):
        parse_dump(bad, 0x1000, 40)


class Disk(QemuIoSession):
    """A disk in memory answering `read -P ... -s REL -l LEN OFF N` and `read -v OFF N`."""

    def __init__(self, disk: bytearray) -> None:
        self.disk = disk
        self.commands: list[str] = []
        self.bytes_read = 0

    def _run(self, command: str) -> str:
        self.commands.append(command)
        w = command.split()
        off, n = int(w[-2]), int(w[-1])
        self.bytes_read += n
        tail = f"read {n}/{n} bytes at offset {off}\n{STATS}\n"
        if w[1] == "-v":
            return dump_text(off, bytes(self.disk[off : off + n])) + tail
        pat, rel, ln = int(w[2]), int(w[4]), int(w[6])
        if self.disk[off + rel : off + rel + ln] != bytes([pat]) * ln:
            return f"Pattern verification failed at offset {off + rel}, {ln} bytes\n" + tail
        return tail


def test_big_mismatch_is_located_not_dumped_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request bigger than DUMP_LIMIT: probes find the differing run, byte-exactly; only
    a small window is dumped."""
    monkeypatch.setattr(qemu_io, "DUMP_LIMIT", 1024)
    monkeypatch.setattr(qemu_io, "PROBE_FIRST", 512)
    disk = bytearray(b"\x11" * 4096)
    disk[2600:2610] = b"\x22" * 10
    s = Disk(disk)
    res = s.read(0, 4096, ((0, 4096, 0x11),))
    assert res == IoResult(True, None, data_from_bytes(0, bytes(disk)))
    assert [c for c in s.commands if " -v " in c] == ["read -v 2600 256"]


def test_a_huge_divergence_costs_bounded_probes() -> None:
    """256 MiB that differ in every other 4 KiB: LOCATE_RANGES ranges located exactly, the
    rest counted in chunks; a bounded number of commands and bytes read."""
    size = 256 << 20
    disk = bytearray(b"\x11" * size)
    for off in range(64 << 10, size, 8 << 10):
        disk[off : off + 4096] = b"\x22" * 4096
    s = Disk(disk)
    res = s.read(0, size, ((0, size, 0x11),))
    assert res.ok and res.data is not None
    located = [e for e in res.data if e[2] == 0x22]
    assert located[0] == (64 << 10, 4096, 0x22)
    assert len(located) == qemu_io.LOCATE_RANGES
    assert any(p == NOT_DUMPED for _, _, p in res.data)
    assert len(s.commands) < 200
    assert s.bytes_read < 3 * size
    diffs = data_differences(((0, size, 0x11),), res.data)
    assert diffs[0] == "[0x10000+0x1000] expected 0x11, QEMU has 0x22"
    assert diffs[-1].endswith("QEMU has other bytes somewhere in it (not located)")


def test_located_extents_share_a_budget() -> None:
    """Reads sharing one Budget locate LOCATE_RANGES ranges between them; later mismatches
    cost a verification and a few chunk probes, never a dump."""
    disk = bytearray(b"\x11" * (8 << 16))
    for i in range(8):
        disk[i << 16] = 0x22
    s = Disk(disk)
    budget = qemu_io.Budget()
    results = [s.read(i << 16, 1 << 16, ((i << 16, 1 << 16, 0x11),), budget) for i in range(8)]
    dumps = [c for c in s.commands if " -v " in c]
    assert len(dumps) == qemu_io.LOCATE_RANGES
    assert results[0].data == ((0, 1, 0x22), (1, (1 << 16) - 1, 0x11))
    assert results[-1].data is not None and results[-1].data[0][2] == NOT_DUMPED
    assert budget.ranges == 0


def test_no_expectation_big_read_is_described_in_runs() -> None:
    disk = bytearray(b"\x00" * (4 << 20))
    disk[3 << 20 :] = b"\x33" * (1 << 20)
    s = Disk(disk)
    assert s.read(0, 4 << 20) == IoResult(True, None, ((0, 3 << 20, 0), (3 << 20, 1 << 20, 0x33)))


def test_node_names_are_checked() -> None:
    for bad in ["", "1abc", "a b", 'a"b', "a;b"]:
        with pytest.raises(ValueError):
            qemu_io.check_node_name(bad)
    assert qemu_io.check_node_name("rep-1.x_y") == "rep-1.x_y"


# ---- HMP qemu-io on real QEMU


def secondary(m: Machine, d: Path, build: QemuBuild) -> None:
    """The by-hand secondary topology (replication node `rep`, not started)."""
    sec = {"driver": "file", "filename": qcow2(build, d / "sec.qcow2")}
    m.qmp_ok("blockdev-add", driver="qcow2", file=sec, **{"node-name": "sec"})
    m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": m.sock_path("nbd")}})
    m.qmp_ok(
        "block-export-add", type="nbd", id="exp", writable=True, name="sec", **{"node-name": "sec"}
    )
    active = {"driver": "file", "filename": qcow2(build, d / "active.qcow2")}
    hidden = {"driver": "file", "filename": qcow2(build, d / "hidden.qcow2")}
    m.execute_ok(
        "blockdev-add",
        {
            "driver": "replication",
            "node-name": "rep",
            "mode": "secondary",
            "top-id": "rep",
            "file": {
                "driver": "qcow2",
                "node-name": "active",
                "file": active,
                "backing": {
                    "driver": "qcow2",
                    "node-name": "hidden",
                    "file": hidden,
                    "backing": "sec",
                },
            },
        },
    )


@pytest.fixture
def rig(build: QemuBuild, machines: MachineSet, tmp_path: Path) -> Machine:
    m = machines.launch(build, "secondary")
    secondary(m, tmp_path, build)
    return m


pytestmark = [pytest.mark.timeout(60)]


@with_builds
@pytest.mark.needs_qemu
def test_hmp_requests_ok(rig: Machine) -> None:
    io = GuestIO(rig, "sec")
    assert io.write(0, 64 * K, 0x11) == IO_OK
    assert io.write_zeroes(4 * K, 4 * K) == IO_OK
    assert io.discard(60 * K, 4 * K) == IO_OK
    assert io.flush() == IO_OK
    res = io.read(
        0,
        64 * K,
        ((0, 4 * K, 0x11), (4 * K, 4 * K, 0), (8 * K, 52 * K, 0x11), (60 * K, 4 * K, None)),
    )
    assert res.ok and res.data is not None and res.data[-1] == (60 * K, 4 * K, None)


@with_builds
@pytest.mark.needs_qemu
def test_hmp_eio_before_start_and_ok_after(rig: Machine) -> None:
    io = GuestIO(rig, "rep")
    assert io.write(0, 4 * K, 1) == IoResult(False, EIO)
    assert io.read(0, 4 * K) == IO_EIO
    assert io.read(0, 4 * K, ((0, 4 * K, 0),)) == IO_EIO
    rig.qmp_ok("xen-set-replication", enable=True, primary=False)
    assert io.write(0, 4 * K, 1) == IO_OK
    assert io.read(0, 8 * K, ((0, 4 * K, 1), (4 * K, 4 * K, 0))).ok


@with_builds
@pytest.mark.needs_qemu
def test_hmp_mismatch_reports_actual_bytes(rig: Machine) -> None:
    io = GuestIO(rig, "sec")
    assert io.write(8 * K, 4 * K, 0xAA) == IO_OK
    assert io.write(12 * K, 4 * K, 0xBB) == IO_OK
    right: Data = ((8 * K, 4 * K, 0xAA), (12 * K, 4 * K, 0xBB))
    assert io.read(8 * K, 8 * K, right) == IoResult(True, None, right)
    # a wrong expectation: the real bytes come back, byte-exact, from the dump
    wrong: Data = ((6 * K, 10 * K, 0xAA),)
    assert io.read(6 * K, 10 * K, wrong) == IoResult(
        True, None, ((6 * K, 2 * K, 0), (8 * K, 4 * K, 0xAA), (12 * K, 4 * K, 0xBB))
    )
    # undefined extents are not checked: a wrong guess there still passes
    loose: Data = ((8 * K, 4 * K, 0xAA), (12 * K, 4 * K, None))
    assert io.read(8 * K, 8 * K, loose) == IoResult(True, None, loose)
    # no expectation: the dump, at an unaligned offset with a partial last line
    assert io.read(12 * K - 5, 23) == IoResult(
        True, None, ((12 * K - 5, 5, 0xAA), (12 * K, 18, 0xBB))
    )


@with_builds
@pytest.mark.needs_qemu
def test_hmp_big_read_mismatch_is_exact(rig: Machine) -> None:
    io = GuestIO(rig, "sec")
    assert io.write(0, 2048 * K, 0x11) == IO_OK
    assert io.write(1028 * K + 7, 100, 0x22) == IO_OK
    res = io.read(0, 2048 * K, ((0, 2048 * K, 0x11),))
    assert res == IoResult(
        True,
        None,
        (
            (0, 1028 * K + 7, 0x11),
            (1028 * K + 7, 100, 0x22),
            (1028 * K + 107, 1020 * K - 107, 0x11),
        ),
    )


@with_builds
@pytest.mark.needs_qemu
def test_hmp_errors_fail_loudly(rig: Machine) -> None:
    with pytest.raises(UnexpectedOutput, match="Cannot find device"):
        GuestIO(rig, "nonode").flush()
    with pytest.raises(ValueError):
        GuestIO(rig, 'sec" "x')
    with pytest.raises(ValueError):
        GuestIO(rig, "sec").write(0, 3 << 30, 1)


@with_builds
@pytest.mark.needs_qemu
def test_hmp_text_complete_at_reply(rig: Machine) -> None:
    """200 times each: the text is complete when the QMP reply arrives (latency: benchmarks/)."""
    io = GuestIO(rig, "sec")
    n = 200
    for i in range(n):
        assert io.write((i % 16) * 64 * K, 64 * K, i % 256) == IO_OK
    for _ in range(n):
        assert io.read(0, 64 * K, ((0, 64 * K, 0xC0),)) == IoResult(
            True, None, ((0, 64 * K, 0xC0),)
        )
