"""Tests for ikeaudit.sources: capture files in, Frame and Anomaly records out.

Capture bytes are built here with struct, so every field a test pins is visible in
the test; the real captures of the project (and third-party ones when present) are
read at the end and compared with tshark's frame count.
"""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikeaudit.records import Anomaly, Frame
from ikeaudit.sources import MAX_CAPLEN, CaptureError, expand_capture_args, iter_capture

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113

PROJECT_PCAPS = Path(__file__).resolve().parent.parent / "pcaps"
THIRDPARTY = Path("/work/shared/pcaps/thirdparty")


# ---------------------------------------------------------------------------- builders


def pcap_header(endian: str = "<", nano: bool = False, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)


def pcap_record(
    seconds: int, fraction: int, data: bytes, endian: str = "<", wire_length: int | None = None
) -> bytes:
    wire = len(data) if wire_length is None else wire_length
    return struct.pack(endian + "IIII", seconds, fraction, len(data), wire) + data


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(block_type: int, body: bytes, endian: str = "<") -> bytes:
    body = pad4(body)
    length = 12 + len(body)
    return struct.pack(endian + "II", block_type, length) + body + struct.pack(endian + "I", length)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + pad4(value)


def end_of_options(endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", 0, 0)


def shb(endian: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def idb(linktype: int, endian: str = "<", options: bytes = b"", snaplen: int = 0) -> bytes:
    body = struct.pack(endian + "HHI", linktype, 0, snaplen)
    if options:
        body += options + end_of_options(endian)
    return block(1, body, endian)


def tsresol(byte: int, endian: str = "<") -> bytes:
    return option(9, bytes([byte]), endian)


def tsoffset(seconds: int, endian: str = "<") -> bytes:
    return option(14, struct.pack(endian + "q", seconds), endian)


def epb(
    interface: int,
    ticks: int,
    data: bytes,
    endian: str = "<",
    wire_length: int | None = None,
    caplen: int | None = None,
) -> bytes:
    header = struct.pack(
        endian + "IIIII",
        interface,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data) if caplen is None else caplen,
        len(data) if wire_length is None else wire_length,
    )
    return block(6, header + data, endian)


def obsolete_pb(interface: int, ticks: int, data: bytes, endian: str = "<") -> bytes:
    header = struct.pack(endian + "HHIIII", interface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(2, header + data, endian)


def spb(data: bytes, endian: str = "<", wire_length: int | None = None) -> bytes:
    wire = len(data) if wire_length is None else wire_length
    return block(3, struct.pack(endian + "I", wire) + data, endian)


def write(tmp_path: Path, content: bytes, name: str = "capture.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def read(path: Path) -> list[Frame | Anomaly]:
    return list(iter_capture(path))


def frames_of(records: list[Frame | Anomaly]) -> list[Frame]:
    return [r for r in records if isinstance(r, Frame)]


def anomalies_of(records: list[Frame | Anomaly]) -> list[Anomaly]:
    return [r for r in records if isinstance(r, Anomaly)]


def two_record_pcap() -> bytes:
    return pcap_header() + pcap_record(10, 1, b"\x01" * 60) + pcap_record(11, 2, b"\x02" * 70)


def two_packet_pcapng() -> bytes:
    return shb() + idb(LINKTYPE_ETHERNET) + epb(0, 5_000_000, b"\x01" * 60) + epb(0, 6_000_000, b"\x02" * 70)


# ---------------------------------------------------------------------------- pcap


@pytest.mark.parametrize(
    ("endian", "nano", "fraction", "expected"),
    [
        ("<", False, 250_000, 1_700_000_000.25),
        (">", False, 250_000, 1_700_000_000.25),
        ("<", True, 250_000_000, 1_700_000_000.25),
        (">", True, 250_000_000, 1_700_000_000.25),
    ],
    ids=["le-usec", "be-usec", "le-nsec", "be-nsec"],
)
def test_each_pcap_variant_gives_timestamps_linktype_data_and_numbers(
    tmp_path: Path, endian: str, nano: bool, fraction: int, expected: float
) -> None:
    content = (
        pcap_header(endian, nano, LINKTYPE_RAW)
        + pcap_record(1_700_000_000, fraction, b"\x45" * 20, endian)
        + pcap_record(1_700_000_001, fraction, b"\x60" * 40, endian, wire_length=1500)
    )
    records = read(write(tmp_path, content))
    assert records == [
        Frame(1, expected, LINKTYPE_RAW, b"\x45" * 20, 20),
        Frame(2, expected + 1, LINKTYPE_RAW, b"\x60" * 40, 1500),
    ]


def test_pcap_nanosecond_timestamp_keeps_sub_microsecond_digits(tmp_path: Path) -> None:
    content = pcap_header(nano=True) + pcap_record(100, 123_456_789, b"x")
    (frame,) = read(write(tmp_path, content))
    assert frame.timestamp == pytest.approx(100.123456789, abs=1e-9)


def test_pcap_linktype_drops_fcs_bits_in_the_upper_half(tmp_path: Path) -> None:
    with_fcs_length_4 = 0x44000000 | LINKTYPE_ETHERNET
    content = pcap_header(linktype=with_fcs_length_4) + pcap_record(1, 0, b"x")
    (frame,) = read(write(tmp_path, content))
    assert frame.linktype == LINKTYPE_ETHERNET


def test_pcap_with_only_a_header_yields_nothing(tmp_path: Path) -> None:
    assert read(write(tmp_path, pcap_header())) == []


# ---------------------------------------------------------------------------- pcapng


def test_pcapng_interfaces_keep_their_own_linktype_and_time_resolution(tmp_path: Path) -> None:
    content = (
        shb()
        + idb(LINKTYPE_ETHERNET, options=tsresol(9))  # 10^-9 s
        + idb(LINKTYPE_RAW, options=tsresol(0x80 | 10))  # 2^-10 s
        + epb(0, 1_700_000_000_123_456_789, b"\xaa" * 14, wire_length=1514)
        + epb(1, (1_700_000_000 << 10) + 512, b"\x45" * 20)
        + epb(0, 1_700_000_001_000_000_000, b"\xbb" * 14)
    )
    records = read(write(tmp_path, content))
    assert [(f.number, f.linktype, f.data, f.wire_length) for f in records] == [
        (1, LINKTYPE_ETHERNET, b"\xaa" * 14, 1514),
        (2, LINKTYPE_RAW, b"\x45" * 20, 20),
        (3, LINKTYPE_ETHERNET, b"\xbb" * 14, 14),
    ]
    assert records[0].timestamp == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert records[1].timestamp == 1_700_000_000.5
    assert records[2].timestamp == 1_700_000_001.0


def test_pcapng_default_resolution_is_microseconds(tmp_path: Path) -> None:
    content = shb() + idb(LINKTYPE_ETHERNET) + epb(0, 7_500_000, b"x")
    (frame,) = read(write(tmp_path, content))
    assert frame.timestamp == 7.5


def test_pcapng_tsoffset_is_added_to_every_timestamp(tmp_path: Path) -> None:
    content = shb() + idb(LINKTYPE_ETHERNET, options=tsoffset(1_000_000)) + epb(0, 2_500_000, b"x")
    (frame,) = read(write(tmp_path, content))
    assert frame.timestamp == 1_000_002.5


def test_pcapng_simple_packet_block_uses_interface_zero_snaplen_and_last_timestamp(tmp_path: Path) -> None:
    content = (
        shb()
        + idb(LINKTYPE_LINUX_SLL, snaplen=8)
        + spb(b"\x01" * 8, wire_length=100)  # before any timestamp: 0.0
        + epb(0, 3_000_000, b"\x02" * 8)
        + spb(b"\x03" * 8, wire_length=100)
    )
    records = read(write(tmp_path, content))
    assert records == [
        Frame(1, 0.0, LINKTYPE_LINUX_SLL, b"\x01" * 8, 100),
        Frame(2, 3.0, LINKTYPE_LINUX_SLL, b"\x02" * 8, 8),
        Frame(3, 3.0, LINKTYPE_LINUX_SLL, b"\x03" * 8, 100),
    ]


def test_pcapng_simple_packet_block_data_stops_at_original_length_not_padding(tmp_path: Path) -> None:
    content = shb() + idb(LINKTYPE_ETHERNET) + spb(b"\x07" * 5)
    (frame,) = read(write(tmp_path, content))
    assert frame.data == b"\x07" * 5


def test_pcapng_obsolete_packet_block_is_read(tmp_path: Path) -> None:
    content = shb() + idb(LINKTYPE_ETHERNET) + obsolete_pb(0, 4_000_000, b"\x09" * 30)
    assert read(write(tmp_path, content)) == [Frame(1, 4.0, LINKTYPE_ETHERNET, b"\x09" * 30, 30)]


def test_pcapng_other_blocks_are_skipped_without_taking_a_frame_number(tmp_path: Path) -> None:
    name_resolution = block(4, struct.pack("<HH", 0, 0))
    interface_statistics = block(5, struct.pack("<III", 0, 0, 0) + end_of_options())
    decryption_secrets = block(0x0A, struct.pack("<II", 0x544C534B, 5) + b"keys!")
    unknown = block(0x12345678, b"\xff" * 33)
    content = (
        shb()
        + name_resolution
        + idb(LINKTYPE_ETHERNET)
        + epb(0, 1_000_000, b"a")
        + interface_statistics
        + decryption_secrets
        + unknown
        + epb(0, 2_000_000, b"b")
    )
    records = read(write(tmp_path, content))
    assert [(r.number, r.data) for r in records] == [(1, b"a"), (2, b"b")]


def test_pcapng_custom_and_journal_blocks_take_a_frame_number_as_in_wireshark(tmp_path: Path) -> None:
    custom = block(0x00000BAD, struct.pack("<I", 32473) + b"custom data")
    custom_do_not_copy = block(0x40000BAD, struct.pack("<I", 32473) + b"more")
    journal = block(9, b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n")
    content = (
        shb()
        + idb(LINKTYPE_ETHERNET)
        + epb(0, 1_000_000, b"a")
        + custom
        + custom_do_not_copy
        + journal
        + epb(0, 2_000_000, b"b")
    )
    records = read(write(tmp_path, content))
    assert [(r.number, r.data) for r in records] == [(1, b"a"), (5, b"b")]


def test_pcapng_second_section_in_other_byte_order_has_its_own_interfaces(tmp_path: Path) -> None:
    content = (
        shb("<")
        + idb(LINKTYPE_ETHERNET, "<")
        + epb(0, 1_000_000, b"le", "<")
        + shb(">")
        + idb(LINKTYPE_RAW, ">", options=tsresol(3, ">"))
        + epb(0, 2_000, b"be", ">")
    )
    records = read(write(tmp_path, content))
    assert records == [
        Frame(1, 1.0, LINKTYPE_ETHERNET, b"le", 2),
        Frame(2, 2.0, LINKTYPE_RAW, b"be", 2),
    ]


def test_pcapng_big_endian_file_is_read(tmp_path: Path) -> None:
    content = shb(">") + idb(LINKTYPE_ETHERNET, ">") + epb(0, 1_500_000, b"\x01\x02\x03", ">")
    assert read(write(tmp_path, content)) == [Frame(1, 1.5, LINKTYPE_ETHERNET, b"\x01\x02\x03", 3)]


# ---------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("content", [two_record_pcap(), two_packet_pcapng()], ids=["pcap", "pcapng"])
def test_gzip_compressed_capture_is_detected_by_magic_not_name(tmp_path: Path, content: bytes) -> None:
    plain = read(write(tmp_path, content, "plain"))
    compressed = read(write(tmp_path, gzip.compress(content), "no-gz-suffix.pcap"))
    assert len(plain) == 2
    assert compressed == plain


def big_pcap(count: int = 400) -> bytes:
    records = b"".join(pcap_record(i, 0, os.urandom(200)) for i in range(count))
    return pcap_header() + records


def test_truncated_gzip_stream_yields_frames_then_one_capture_anomaly(tmp_path: Path) -> None:
    compressed = gzip.compress(big_pcap())
    records = read(write(tmp_path, compressed[: len(compressed) // 2]))
    assert all(isinstance(r, Frame) for r in records[:-1])
    assert len(records) > 1
    assert records[-1].kind == "capture"


def test_gzip_crc_mismatch_yields_a_capture_anomaly(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(two_record_pcap()))
    compressed[-8] ^= 0xFF  # CRC32 of the member
    records = read(write(tmp_path, bytes(compressed)))
    assert anomalies_of(records) == [records[-1]]
    assert records[-1].kind == "capture"
    assert "CRC" in records[-1].detail


def test_gzip_with_garbled_deflate_data_never_raises(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(big_pcap()))
    for position in range(len(compressed) // 3, len(compressed) - 20, 997):
        compressed[position] ^= 0x5A
    records = read(write(tmp_path, bytes(compressed)))
    assert isinstance(records[-1], Anomaly)
    assert records[-1].kind == "capture"


# ---------------------------------------------------------------------------- damage


@pytest.mark.parametrize("cut", [3, 10, 16, 30], ids=["in-header", "in-header-2", "after-header", "in-data"])
def test_truncated_final_pcap_record_yields_earlier_frames_then_an_anomaly(tmp_path: Path, cut: int) -> None:
    last = pcap_record(12, 0, b"\x03" * 80)
    records = read(write(tmp_path, two_record_pcap() + last[:cut]))
    assert [r.number for r in frames_of(records)] == [1, 2]
    assert records[2:] == [records[-1]]
    assert records[-1].kind == "capture"
    assert records[-1].frame == 3
    assert "truncated" in records[-1].detail


def test_hostile_pcap_caplen_is_an_anomaly_and_reading_stops(tmp_path: Path) -> None:
    hostile = struct.pack("<IIII", 12, 0, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 64
    records = read(write(tmp_path, two_record_pcap() + hostile + pcap_record(13, 0, b"x")))
    assert len(frames_of(records)) == 2
    assert records[-1] == Anomaly("capture", records[-1].detail, 3)
    assert str(MAX_CAPLEN) in records[-1].detail


def test_pcap_caplen_just_above_the_limit_is_an_anomaly(tmp_path: Path) -> None:
    hostile = struct.pack("<IIII", 12, 0, MAX_CAPLEN + 1, MAX_CAPLEN + 1)
    records = read(write(tmp_path, pcap_header() + hostile))
    assert records == [Anomaly("capture", records[0].detail, 1)]


def test_truncated_final_pcapng_block_yields_earlier_frames_then_an_anomaly(tmp_path: Path) -> None:
    last = epb(0, 9_000_000, b"\x03" * 80)
    records = read(write(tmp_path, two_packet_pcapng() + last[:-10]))
    assert [r.number for r in frames_of(records)] == [1, 2]
    assert anomalies_of(records) == [records[-1]]
    assert records[-1].frame == 3


@pytest.mark.parametrize("length", [0, 8, 13, 30, 0xFFFFFFFC], ids=["zero", "below-12", "odd", "not-4n", "huge"])
def test_pcapng_hostile_block_length_is_an_anomaly_and_reading_stops(tmp_path: Path, length: int) -> None:
    bad = struct.pack("<II", 6, length) + b"\0" * 64
    records = read(write(tmp_path, two_packet_pcapng() + bad + epb(0, 1, b"never")))
    assert len(frames_of(records)) == 2
    assert anomalies_of(records) == [records[-1]]
    assert records[-1].kind == "capture"
    assert records[-1].frame == 3


def test_pcapng_trailing_length_mismatch_is_an_anomaly_and_reading_stops(tmp_path: Path) -> None:
    broken = bytearray(epb(0, 9_000_000, b"\x03" * 8))
    broken[-4:] = struct.pack("<I", len(broken) + 4)
    records = read(write(tmp_path, two_packet_pcapng() + bytes(broken) + epb(0, 1, b"never")))
    assert len(frames_of(records)) == 2
    assert anomalies_of(records) == [records[-1]]
    assert "trailing" in records[-1].detail


def test_pcapng_packet_on_unknown_interface_is_an_anomaly_and_reading_goes_on(tmp_path: Path) -> None:
    content = two_packet_pcapng() + epb(7, 1, b"lost") + epb(0, 8_000_000, b"kept")
    records = read(write(tmp_path, content))
    assert isinstance(records[2], Anomaly)
    assert (records[2].kind, records[2].frame) == ("capture", 3)
    assert "interface 7" in records[2].detail
    assert records[3] == Frame(4, 8.0, LINKTYPE_ETHERNET, b"kept", 4)


def test_pcapng_caplen_beyond_its_block_is_an_anomaly_and_reading_goes_on(tmp_path: Path) -> None:
    content = two_packet_pcapng() + epb(0, 1, b"tiny", caplen=5000) + epb(0, 8_000_000, b"kept")
    records = read(write(tmp_path, content))
    assert records[2] == Anomaly("capture", records[2].detail, 3)
    assert records[3].number == 4


def test_pcapng_block_with_bad_byte_order_magic_mid_file_is_an_anomaly(tmp_path: Path) -> None:
    bad_section = bytearray(shb())
    bad_section[8:12] = b"\xde\xad\xbe\xef"
    records = read(write(tmp_path, two_packet_pcapng() + bytes(bad_section)))
    assert len(frames_of(records)) == 2
    assert "byte-order" in records[-1].detail


def test_pcapng_unsupported_major_version_mid_file_is_an_anomaly(tmp_path: Path) -> None:
    version_2 = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1))
    records = read(write(tmp_path, two_packet_pcapng() + version_2 + epb(0, 1, b"never")))
    assert len(frames_of(records)) == 2
    assert "version 2.0" in records[-1].detail


# ---------------------------------------------------------------------------- caller mistakes


def assert_one_line_error(path: Path, *words: str) -> None:
    with pytest.raises(CaptureError) as caught:
        iter_capture(path)  # raises on the call itself, before any iteration
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "absent.pcap", "no such file")


def test_directory_is_a_capture_error(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path, "is a directory")


def test_empty_file_is_a_capture_error(tmp_path: Path) -> None:
    assert_one_line_error(write(tmp_path, b""), "empty")


def test_text_file_is_a_capture_error_naming_its_first_bytes(tmp_path: Path) -> None:
    assert_one_line_error(write(tmp_path, b"hello, world\n"), "not a pcap or pcapng capture", "0x68656c6c")


def test_gzip_of_a_text_file_is_a_capture_error(tmp_path: Path) -> None:
    assert_one_line_error(write(tmp_path, gzip.compress(b"{}")), "not a pcap or pcapng capture")


def test_truncated_pcap_global_header_is_a_capture_error(tmp_path: Path) -> None:
    assert_one_line_error(write(tmp_path, pcap_header()[:10]), "truncated")


def test_pcapng_first_section_with_bad_byte_order_magic_is_a_capture_error(tmp_path: Path) -> None:
    content = bytearray(shb())
    content[8:12] = b"\0\0\0\0"
    assert_one_line_error(write(tmp_path, bytes(content)), "byte-order")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_capture_error(tmp_path: Path) -> None:
    path = write(tmp_path, two_record_pcap())
    path.chmod(0)
    try:
        assert_one_line_error(path, "permission denied")
    finally:
        path.chmod(0o600)


def test_permission_denied_is_a_capture_error_even_when_running_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ikeaudit.sources

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ikeaudit.sources, "open", refuse, raising=False)
    assert_one_line_error(write(tmp_path, two_record_pcap()), "permission denied")


# ---------------------------------------------------------------------------- arguments


@pytest.fixture
def capture_folder(tmp_path: Path) -> Path:
    (tmp_path / "nested").mkdir()
    write(tmp_path, two_record_pcap(), "a.pcap")
    write(tmp_path / "nested", gzip.compress(two_packet_pcapng()), "b.pcapng.gz")
    write(tmp_path, b'{"not": "a capture"}', "manifest.json")
    write(tmp_path, b"SK_ei 00\n", "a.keys")
    write(tmp_path, gzip.compress(b"compressed notes"), "notes.txt.gz")
    return tmp_path


def test_folder_expands_to_the_captures_inside_it_recursively(capture_folder: Path) -> None:
    assert expand_capture_args([str(capture_folder)]) == [
        str(capture_folder / "a.pcap"),
        str(capture_folder / "nested" / "b.pcapng.gz"),
    ]


def test_glob_expands_to_matching_files(capture_folder: Path) -> None:
    assert expand_capture_args([str(capture_folder / "*.pcap"), str(capture_folder / "**" / "*.gz")]) == [
        str(capture_folder / "a.pcap"),
        str(capture_folder / "nested" / "b.pcapng.gz"),
        str(capture_folder / "notes.txt.gz"),
    ]


def test_paths_reached_twice_are_listed_once_and_sorted(capture_folder: Path) -> None:
    pcap = str(capture_folder / "a.pcap")
    assert expand_capture_args([pcap, str(capture_folder), pcap]) == [
        pcap,
        str(capture_folder / "nested" / "b.pcapng.gz"),
    ]


def test_explicit_file_is_kept_even_when_not_a_capture(capture_folder: Path) -> None:
    keys = str(capture_folder / "a.keys")
    assert expand_capture_args([keys]) == [keys]


def test_missing_path_argument_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file or directory"):
        expand_capture_args([str(tmp_path / "absent.pcap")])


def test_glob_matching_nothing_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="pattern matched no file"):
        expand_capture_args([str(tmp_path / "*.pcapng")])


def test_expanded_folder_reads_cleanly(capture_folder: Path) -> None:
    for path in expand_capture_args([str(capture_folder)]):
        records = read(Path(path))
        assert len(records) == 2 and not anomalies_of(records)


# ---------------------------------------------------------------------------- fuzzing


def assert_well_formed_stream(records: list[Frame | Anomaly]) -> None:
    assert all(isinstance(r, (Frame, Anomaly)) for r in records)
    numbers = [r.number for r in records if isinstance(r, Frame)]
    assert numbers == sorted(set(numbers))
    assert all(len(r.data) <= MAX_CAPLEN for r in records if isinstance(r, Frame))


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(tail=st.binary(max_size=600))
def test_any_bytes_after_a_pcap_header_give_frames_and_anomalies_only(
    tmp_path_factory: pytest.TempPathFactory, tail: bytes
) -> None:
    path = write(tmp_path_factory.mktemp("fuzz"), pcap_header() + tail)
    records = read(path)
    assert_well_formed_stream(records)
    assert not any(isinstance(r, Anomaly) for r in records[:-1])  # pcap stops at its damage


@FUZZ
@given(tail=st.binary(max_size=600))
def test_any_bytes_after_a_pcapng_section_header_give_frames_and_anomalies_only(
    tmp_path_factory: pytest.TempPathFactory, tail: bytes
) -> None:
    path = write(tmp_path_factory.mktemp("fuzz"), shb() + tail)
    assert_well_formed_stream(read(path))


block_types = st.sampled_from([0x0A0D0D0A, 1, 2, 3, 5, 6, 9, 0xBAD, 0x77777777])


@FUZZ
@given(
    blocks=st.lists(st.tuples(block_types, st.binary(max_size=80)), max_size=8),
    endian=st.sampled_from(["<", ">"]),
)
def test_well_framed_pcapng_blocks_with_any_content_give_frames_and_anomalies_only(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[tuple[int, bytes]], endian: str
) -> None:
    content = shb(endian) + idb(LINKTYPE_ETHERNET, endian) + b"".join(block(t, b, endian) for t, b in blocks)
    for name, data in (("plain", content), ("gz", gzip.compress(content))):
        assert_well_formed_stream(read(write(tmp_path_factory.mktemp("fuzz"), data, name)))


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=10), st.integers(1, 255)), min_size=1, max_size=4))
def test_gzip_with_flipped_bytes_gives_frames_and_anomalies_only(
    tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[int, int]]
) -> None:
    compressed = bytearray(gzip.compress(two_record_pcap() + two_record_pcap()[24:]))
    for position, mask in flips:
        compressed[position % len(compressed)] ^= mask
    try:
        records = read(write(tmp_path_factory.mktemp("fuzz"), bytes(compressed)))
    except CaptureError:
        return  # the flip hit the gzip or capture header: a caller-level error
    assert_well_formed_stream(records)


# ---------------------------------------------------------------------------- real captures


def tshark_frame_count(path: Path) -> int | None:
    if shutil.which("tshark") is None:
        return None
    result = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=False,
    )
    return len(result.stdout.splitlines())


def capture_params(paths: list[str], absent_reason: str) -> list[object]:
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent_reason))]
    return [pytest.param(Path(p), id=os.path.basename(p)) for p in sorted(paths)]


def thirdparty_captures() -> list[str]:
    patterns = ("*.pcap", "*.pcapng", "*.pcapng.gz", "*.cap")
    return [p for pattern in patterns for p in glob.glob(str(THIRDPARTY / "**" / pattern), recursive=True)]


def assert_reads_like_tshark(path: Path) -> None:
    records = read(path)
    assert anomalies_of(records) == []
    assert [f.number for f in records] == list(range(1, len(records) + 1))
    expected = tshark_frame_count(path)
    if expected is not None:
        assert len(records) == expected


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_pcapng_frame_numbers_match_tshark_across_block_kinds_and_sections(tmp_path: Path) -> None:
    ethernet = bytes(6) + bytes.fromhex("000000000001") + b"\x08\x00" + bytes(20)
    content = (
        shb("<")
        + block(4, struct.pack("<HH", 0, 0))
        + idb(LINKTYPE_ETHERNET, "<")
        + spb(ethernet)
        + obsolete_pb(0, 2_000_000, ethernet)
        + block(0x00000BAD, struct.pack("<I", 32473) + b"custom")
        + block(5, struct.pack("<III", 0, 0, 0))
        + block(9, b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n")
        + shb(">")
        + idb(LINKTYPE_ETHERNET, ">", options=tsresol(0x80 | 10, ">"))
        + epb(0, 5 << 10, ethernet, ">")
    )
    path = write(tmp_path, content, "mixed.pcapng")
    frames = frames_of(read(path))
    assert [f.number for f in frames] == [1, 2, 5]
    assert frames[-1].number == tshark_frame_count(path)


@pytest.mark.parametrize(
    "path", capture_params(glob.glob(str(PROJECT_PCAPS / "*.pcap")), "no project captures")
)
def test_project_capture_reads_cleanly_with_tshark_frame_count(path: Path) -> None:
    assert_reads_like_tshark(path)


@pytest.mark.parametrize("path", capture_params(thirdparty_captures(), f"{THIRDPARTY} is absent"))
def test_thirdparty_capture_reads_cleanly_with_tshark_frame_count(path: Path) -> None:
    assert_reads_like_tshark(path)
