"""Observation values and `compare`: data with undefined bytes, spans, OneOf, crashes."""

from __future__ import annotations

from harness.observe import (
    IO_EIO,
    IO_OK,
    QMP_OK,
    Crashed,
    Difference,
    IoResult,
    OneOf,
    compare,
    data_differences,
    data_from_bytes,
    data_span,
    defined_extents,
    fmt_data,
    normalize,
    qmp_error,
    status,
)
from harness.units import KiB


def rd(*data: tuple[int, int, int | None]) -> IoResult:
    return IoResult(True, None, tuple(data))


def test_equal_data_matches() -> None:
    assert compare(rd((0, 4096, 1)), rd((0, 4096, 1))) is None


def test_undefined_expected_bytes_match_anything() -> None:
    exp = rd((0, 100, 1), (100, 412, None), (512, 512, 2))
    act = rd((0, 100, 1), (100, 12, 0), (112, 400, 0xEE), (512, 512, 2))
    assert compare(exp, act) is None
    assert (
        compare(rd((0, 64 * KiB, None)), rd(*data_from_bytes(0, bytes(range(256)) * 256))) is None
    )


def test_one_wrong_byte_anywhere_is_caught_with_its_range() -> None:
    exp = rd((0, 64 * KiB, 1))
    for pos in (0, 1, 4095, 32768, 64 * KiB - 1):
        buf = bytearray(b"\x01" * 64 * KiB)
        buf[pos] = 2
        diff = compare(exp, rd(*data_from_bytes(0, bytes(buf))))
        assert isinstance(diff, Difference)
        assert diff.details == [f"[{pos:#x}+0x1] expected 0x01, QEMU has 0x02"]
        assert f"[{pos:#x}+0x1]" in str(diff)


def test_wrong_byte_next_to_undefined_range() -> None:
    exp = rd((0, 10, None), (10, 10, 3))
    diff = compare(exp, rd((0, 10, 7), (10, 1, 4), (11, 9, 3)))
    assert diff is not None and diff.details == ["[0xa+0x1] expected 0x03, QEMU has 0x04"]


def test_span_mismatch_is_caught() -> None:
    diff = compare(rd((0, 4096, 1)), rd((0, 2048, 1)))
    assert diff is not None
    assert diff.details == ["span differs: expected (0, 4096), QEMU (0, 2048)"]
    diff = compare(rd((0, 4096, None)), rd((512, 4096, 0)))
    assert diff is not None and any("span differs" in d for d in diff.details)


def test_differences_are_limited() -> None:
    exp = tuple((i * 2, 1, 1) for i in range(20))
    act = tuple((i * 2, 1, 2) for i in range(20))
    diffs = data_differences(exp, act, limit=6)
    assert len(diffs) == 7 and diffs[-1] == "... and 14 more differing ranges (14 bytes)"


def test_io_results() -> None:
    assert compare(IO_OK, IO_OK) is None
    assert compare(IO_EIO, IoResult(False, "Input/output error")) is None
    assert compare(IO_OK, IO_EIO) is not None
    assert compare(IO_EIO, IoResult(False, "Permission denied")) is not None
    d = compare(IO_OK, rd((0, 1, 0)))
    assert d is not None and d.details == ["one side has data, the other none"]
    assert compare(IO_OK, QMP_OK) is not None


def test_qmp_results() -> None:
    assert compare(QMP_OK, QMP_OK) is None
    assert compare(qmp_error("x"), qmp_error("x")) is None
    assert compare(qmp_error("x"), qmp_error("y")) is not None
    assert compare(qmp_error("x"), qmp_error("x", "DeviceNotFound")) is not None
    assert compare(status(None), status("I/O error occurred")) is not None


def test_one_of() -> None:
    exp = OneOf((status("I/O error occurred"), status(None)))
    assert compare(exp, status(None)) is None
    assert compare(exp, status("I/O error occurred")) is None
    diff = compare(exp, status("Block replication is not running"))
    assert diff is not None and diff.details == ["no allowed outcome matched"]
    assert "one of:" in exp.describe()


def test_crashed() -> None:
    assert compare(Crashed("SIGABRT", "Assertion"), Crashed("SIGABRT", "x: Assertion y")) is None
    assert compare(Crashed(None), Crashed("SIGSEGV", "whatever")) is None
    assert compare(Crashed("SIGABRT"), Crashed("SIGSEGV")) is not None
    assert compare(Crashed(None, "needle"), Crashed("SIGABRT", "hay")) is not None
    assert compare(Crashed(None), IO_OK) is not None


def test_normalize_and_bytes() -> None:
    assert normalize([(0, 1, 1), (1, 2, 1), (3, 0, 5), (3, 1, None)]) == ((0, 3, 1), (3, 1, None))
    assert data_from_bytes(10, b"aab") == ((10, 2, 0x61), (12, 1, 0x62))
    assert data_from_bytes(0, b"") == ()
    assert data_span(()) == (0, 0)
    assert data_span(((5, 5, 1), (10, 5, 2))) == (5, 10)
    assert defined_extents([(0, 1, None), (1, 1, 3)]) == [(1, 1, 3)]


def test_descriptions() -> None:
    assert fmt_data(((0, 16, 1), (16, 16, None))) == "[0x0+0x10]=0x01 [0x10+0x10]=undefined"
    assert fmt_data(()) == "(empty)"
    assert "more extents" in fmt_data(tuple((i, 1, i % 2) for i in range(20)))
    assert IO_EIO.describe() == "error: Input/output error"
    assert qmp_error("x").describe() == "error GenericError: 'x'"
    assert "SIGABRT" in Crashed("SIGABRT", "a").describe()
