"""The scan fast path: libpcap's BPF prefilter in C, and files scanned in parallel.

What it must never change: the negotiations found, their frame numbers, and the damage
reported. So every test here compares the fast path with the plain Python reader (the
fallback used when libpcap is absent), or `--jobs N` with `--jobs 1`, on the lab
captures, on a generated span capture (bench/make_span.py) and on damaged, compressed,
pcapng and rotated (split) captures. No test times anything.
"""

from __future__ import annotations

import copy
import ctypes
import gzip
import hashlib
import importlib.util
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import ikeaudit.cache as cache
import ikeaudit.sources as sources
from conftest import PCAPS, ROOT, lab_path
from ikeaudit.cli import main
from ikeaudit.pipeline import audit_captures, scan_filter
from ikeaudit.records import Anomaly, Frame
from ikeaudit.sources import iter_capture, open_capture
from test_sources import block, epb, idb, pad4, shb, spb

needs_libpcap = pytest.mark.skipif(sources.libpcap_version() is None, reason="libpcap is not installed")
pytestmark = needs_libpcap

LAB = sorted(str(p) for p in PCAPS.glob("*.pcap"))
# Counters that do not depend on which frames reached extraction: the prefilter keeps
# every frame these count.
STABLE_STATS = ("frames", "ike_datagrams", "ikev1_datagrams", "ip_fragments", "reassembled", "esp_in_udp",
                "nat_keepalive", "malformed_ike", "tcp_segments", "tcp_ike", "anomalies")


def _load_make_span():
    spec = importlib.util.spec_from_file_location("make_span", ROOT / "bench" / "make_span.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


make_span = _load_make_span()


# ---------------------------------------------------------------------------- helpers


def scan(*args: str) -> dict:
    result = CliRunner().invoke(main, ["scan", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(params=["in-buffer", "in-buffer-python-walk", "per-record"])
def bpf_mode(request, monkeypatch):
    """Every way the prefilter runs: libpcap reading our buffer (one call a chunk), the
    records between passing ones counted in C (the record walker) or in Python, or
    pcap_offline_filter() on each record (where fmemopen is missing)."""
    if request.param == "per-record":
        monkeypatch.setattr(sources._libpcap(), "memory", None)
    if request.param == "in-buffer-python-walk":
        monkeypatch.setattr(sources._libpcap(), "walker", lambda endian: None)
    return request.param


@pytest.fixture
def no_libpcap(monkeypatch):
    """As on a machine without libpcap."""
    monkeypatch.setattr(sources, "_LIBPCAP", None)


def fallback_scan(monkeypatch, *args: str) -> dict:
    with monkeypatch.context() as m:
        m.setattr(sources, "_LIBPCAP", None)
        return scan(*args)


def comparable(document: dict) -> dict:
    """The document with only the counters both paths agree on: the fallback also counts
    the frames the prefilter never hands on (TCP, DNS, ...)."""
    document = copy.deepcopy(document)
    for capture in document["captures"]:
        capture["stats"] = {k: capture["stats"].get(k, 0) for k in STABLE_STATS}
    return document


def assert_same_audit(fast: dict, slow: dict) -> None:
    assert comparable(fast) == comparable(slow)
    for capture in fast["captures"]:  # the prefilter did run
        assert capture["stats"]["prefiltered"] >= 0
    for capture in slow["captures"]:
        assert "prefiltered" not in capture["stats"]


def reference(path, expressions=None) -> list[Frame | Anomaly]:
    """What the prefiltered source must yield: iter_capture's records, frames that the
    same BPF program rejects left out."""
    libpcap = sources._libpcap()
    expressions = expressions or scan_filter(esp=False)
    out = []
    for item in iter_capture(path):
        if isinstance(item, Frame):
            flt = libpcap.compile(item.linktype, expressions)
            if flt is not None and not flt.matches(item.data, item.wire_length):
                continue
        out.append(item)
    return out


def pcap_records(path) -> tuple[bytes, list[bytes]]:
    """A little-endian microsecond pcap as its header and its records."""
    data = Path(path).read_bytes()
    records, pos = [], 24
    while pos < len(data):
        end = pos + 16 + struct.unpack_from("<I", data, pos + 8)[0]
        records.append(data[pos:end])
        pos = end
    return data[:24], records


@pytest.fixture(scope="module")
def span(tmp_path_factory) -> Path:
    """A small span capture: TCP, ESP, DNS, VLANs, IPv6, fragments, and IKE on 500 and
    4500 (some IP-fragmented out of order, some IKEv1) from the lab captures."""
    path = tmp_path_factory.mktemp("span") / "span.pcap"
    make_span.generate(path, frames=20_000, ike_messages=300, seed=7)
    return path


# ---------------------------------------------------------------------------- the source


@pytest.mark.parametrize("path", LAB, ids=lambda p: Path(p).stem[:3])
def test_prefiltered_source_yields_iter_capture_frames_that_pass_the_filter(path, bpf_mode):
    capture = open_capture(path, prefilter=scan_filter(esp=False))
    assert list(capture) == reference(path)
    assert capture.engine == "bpf"
    assert capture.frames == sum(isinstance(i, Frame) for i in iter_capture(path))


def test_prefiltered_source_on_span_pcap_gzip_and_pcapng(span, tmp_path, bpf_mode):
    gz = tmp_path / "span.pcap.gz"
    gz.write_bytes(gzip.compress(span.read_bytes()))
    ng = tmp_path / "span.pcapng"
    make_span.generate(ng, frames=20_000, ike_messages=300, seed=7, fmt="pcapng")
    for path in (span, gz, ng):
        capture = open_capture(path, prefilter=scan_filter(esp=False))
        items = list(capture)
        assert items == reference(path)
        assert capture.frames == 20_000 and capture.passed == len(items) < 20_000 / 2


def test_big_endian_and_nanosecond_pcap(tmp_path, bpf_mode):
    header, records = pcap_records(lab_path("p02"))
    swapped = bytearray(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
    for record in records:
        seconds, micros, caplen, wire = struct.unpack_from("<IIII", record)
        swapped += struct.pack(">IIII", seconds, micros * 1000, caplen, wire) + record[16:]
    path = tmp_path / "big.pcap"
    path.write_bytes(swapped)
    assert list(open_capture(path, prefilter=scan_filter(esp=False))) == reference(path)


@pytest.mark.parametrize("cooked", [False, True], ids=["one-link-type", "two-link-types"])
@pytest.mark.parametrize("second", ["<", ">"], ids=["same-order", "other-order"])
def test_pcapng_with_sections_link_types_and_odd_blocks(tmp_path, bpf_mode, cooked, second):
    """Two interfaces (Ethernet and Ethernet or Linux cooked), a custom block and a simple
    packet block (both take a frame number), then a second section: every frame keeps
    its number, whichever blocks libpcap or the plain reader read."""
    header, records = pcap_records(lab_path("r01"))
    frames = [(struct.unpack_from("<II", r), r[16:]) for r in records]

    def ticks(stamp):
        return stamp[0] * 1_000_000 + stamp[1]

    def cooked_frame(ethernet: bytes) -> bytes:  # Linux cooked v1: type, ARPHRD, address, protocol
        return struct.pack("!HHH8sH", 0, 1, 6, ethernet[6:12] + b"\0\0", struct.unpack_from("!H", ethernet, 12)[0]) \
            + ethernet[14:]

    content = shb() + idb(1) + idb(113 if cooked else 1)
    for index, (stamp, data) in enumerate(frames[:60]):
        content += epb(index % 2, ticks(stamp), cooked_frame(data) if cooked and index % 2 else data)
        if index == 20:
            content += block(0x00000BAD, b"\0\0\0\0custom")
        if index == 30:
            content += spb(frames[0][1])
    content += shb(second) + idb(1, second)
    for stamp, data in frames[60:]:
        content += epb(0, ticks(stamp), data, second)
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(content)
    items = list(open_capture(path, prefilter=scan_filter(esp=False)))
    assert items == reference(path)
    assert {f.linktype for f in items if isinstance(f, Frame)} == ({1, 113} if cooked else {1})


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_pcapng_block_larger_than_the_read_buffer(tmp_path, bpf_mode, packed):
    header, records = pcap_records(lab_path("r01"))
    content = shb() + idb(1)
    for index, record in enumerate(records):
        seconds, micros = struct.unpack_from("<II", record)
        content += epb(0, seconds * 1_000_000 + micros, record[16:])
        if index == 40:
            content += block(0x0000000A, b"\1" * (3 << 20))  # 3 MiB of decryption secrets
    path = tmp_path / ("big.pcapng.gz" if packed else "big.pcapng")
    path.write_bytes(gzip.compress(content) if packed else content)
    assert list(open_capture(path, prefilter=scan_filter(esp=False))) == reference(path)


def test_a_libpcap_that_disagrees_with_the_walk_loses_no_frame(span, monkeypatch):
    """Should libpcap ever name a record where none starts, the walk notices and filters
    the rest itself."""
    honest = sources._MemoryPcap.passing

    def shifted(self, address, length, program, caplens=None):
        found = honest(self, address, length, program, caplens)
        return None if found is None else [end + 3 for end in found]

    expected = reference(span)
    monkeypatch.setattr(sources._MemoryPcap, "passing", shifted)
    assert list(open_capture(span, prefilter=scan_filter(esp=False))) == expected


def _program_bytes(flt) -> bytes:
    return ctypes.string_at(flt.program.bf_insns, flt.program.bf_len * 8)


@pytest.fixture
def program_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache of compiled prefilters, and a libpcap that has compiled nothing yet."""
    monkeypatch.setenv("IKEAUDIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sources, "_LIBPCAP", False)
    return tmp_path / "bpf"


def test_a_compiled_prefilter_is_read_back_from_the_cache_as_libpcap_compiled_it(program_cache):
    expressions = scan_filter(esp=False)
    compiled = sources._load_libpcap().compile(1, expressions)
    assert len(list(program_cache.iterdir())) == 1
    cached = sources._load_libpcap().compile(1, expressions)
    assert cached._instructions  # from the file, not from pcap_compile()
    assert _program_bytes(cached) == _program_bytes(compiled) and cached.expression == compiled.expression
    path = lab_path("f01")
    assert list(open_capture(path, prefilter=expressions)) == reference(path)


@pytest.mark.parametrize("damage", ["one instruction changed", "cut short", "valid digest, invalid program"])
def test_a_damaged_cached_prefilter_is_compiled_again(program_cache, damage):
    expressions = scan_filter(esp=False)
    expected = _program_bytes(sources._load_libpcap().compile(1, expressions))
    (stored,) = program_cache.iterdir()
    data = bytearray(stored.read_bytes())
    head = len(cache._CACHE_MAGIC) + 32  # then the instructions
    if damage == "one instruction changed":
        data[head + 8 * 20 + 4] ^= 0x01
    elif damage == "cut short":
        del data[-8:]
    else:  # a jump far past the end, which libpcap's validator refuses: rebuilt with a digest to match
        program = struct.pack("=HBBI", 0x05, 0, 0, 1_000_000) + struct.pack("=HBBI", 0x06, 0, 0, 0)
        data = bytearray(cache._CACHE_MAGIC + hashlib.sha256(program).digest() + program)
    stored.write_bytes(bytes(data))
    again = sources._load_libpcap().compile(1, expressions)
    assert not again._instructions and _program_bytes(again) == expected
    assert sources._load_libpcap().compile(1, expressions)._instructions == expected  # stored anew


def test_a_cached_prefilter_that_others_may_write_is_not_trusted(program_cache):
    expressions = scan_filter(esp=False)
    sources._load_libpcap().compile(1, expressions)
    (stored,) = program_cache.iterdir()
    assert stored.stat().st_mode & 0o777 == 0o600
    stored.chmod(0o666)
    assert not sources._load_libpcap().compile(1, expressions)._instructions  # compiled again


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("IKEAUDIT_CACHE_DIR", str(blocker))  # a folder cannot be made under it
    monkeypatch.setattr(sources, "_LIBPCAP", False)
    path = lab_path("h01")
    assert list(open_capture(path, prefilter=scan_filter(esp=False))) == reference(path)


def _records(*caplens: int, endian: str = "<") -> bytes:
    return b"".join(struct.pack(endian + "IIII", 1, 2, n, n) + bytes([n % 251]) * n for n in caplens)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_the_record_walker_counts_whole_records_as_the_python_walk(endian):
    walker = sources._libpcap().walker(endian)
    lengths = [60, 1514, 0, 9000, 42] * 100  # more records than one call of the program walks
    data = _records(*lengths, endian=endian)
    buffer = ctypes.create_string_buffer(data + bytes(16), len(data) + 16)
    address = ctypes.addressof(buffer)
    assert walker.count(address, len(data)) == (len(lengths), len(data))
    first_three = 16 * 3 + 60 + 1514 + 0
    assert walker.count(address, first_three) == (3, first_three)
    assert walker.count(address, first_three + 16 + 9000 - 1) == (3, first_three)  # the 4th does not fit
    assert walker.count(address, first_three + 15) == (3, first_three)  # nor its header
    assert walker.count(address + first_three, len(data) - first_three) == (len(lengths) - 3, len(data) - first_three)


def test_the_record_walker_stops_at_a_length_libpcap_would_refuse():
    walker = sources._libpcap().walker("<")
    data = _records(60, 60) + struct.pack("<IIII", 1, 2, 1 << 24, 60) + bytes(60) + _records(60)
    buffer = ctypes.create_string_buffer(data + bytes(16), len(data) + 16)
    assert walker.count(ctypes.addressof(buffer), len(data)) == (2, 2 * (16 + 60))


def test_without_libpcap_the_source_is_iter_capture(no_libpcap):
    path = lab_path("h01")
    capture = open_capture(path, prefilter=scan_filter())
    assert capture.engine == "python"
    assert list(capture) == list(iter_capture(path))


def test_libpcap_that_does_not_load_means_the_fallback(monkeypatch):
    monkeypatch.setattr(sources, "_LIBPCAP", False)  # not looked for yet
    monkeypatch.setattr(sources, "_load_libpcap", lambda: None)
    assert sources.libpcap_version() is None
    assert open_capture(lab_path("h01"), prefilter=scan_filter()).engine == "python"
    audit = audit_captures([lab_path("h01")])[0]
    assert "prefiltered" not in audit.stats and audit.stats["frames"] == 33


def test_no_prefilter_means_every_frame():
    capture = open_capture(lab_path("h01"))
    assert capture.engine == "python" and len(list(capture)) == 33


# ---------------------------------------------------------------------------- damage


def damaged(span: Path, tmp_path: Path) -> list[Path]:
    data = span.read_bytes()
    _, records = pcap_records(span)
    cut_record = 24 + sum(len(r) for r in records[:9000]) + 20  # inside record 9001
    packed = gzip.compress(data)
    flipped = bytearray(packed)
    flipped[len(flipped) // 2] ^= 0xFF
    hostile = bytearray(data)
    struct.pack_into("<I", hostile, 24 + sum(len(r) for r in records[:5000]) + 8, 10**7)
    files = {
        "cut.pcap": data[:cut_record],
        "cut-header.pcap": data[: 24 + sum(len(r) for r in records[:7000]) + 9],
        "cut.pcap.gz": packed[: len(packed) * 2 // 3],  # deflate stream ends early
        "flipped.pcap.gz": bytes(flipped),
        "hostile.pcap": bytes(hostile),
    }
    paths = []
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        paths.append(tmp_path / name)
    ng = tmp_path / "whole.pcapng"
    make_span.generate(ng, frames=5_000, ike_messages=100, seed=3, fmt="pcapng")
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(ng.read_bytes()[: ng.stat().st_size * 3 // 5])
    paths.append(cut)
    return paths


def test_damaged_captures_give_the_same_records_and_anomalies(span, tmp_path, monkeypatch, bpf_mode):
    for path in damaged(span, tmp_path):
        items = list(open_capture(path, prefilter=scan_filter(esp=False)))
        assert items == reference(path), path.name
        assert isinstance(items[-1], Anomaly) and items[-1].kind == "capture", path.name
        fast = scan(str(path))
        assert_same_audit(fast, fallback_scan(monkeypatch, str(path)))
        assert fast["captures"][0]["anomalies"][-1]["kind"] == "capture"


# ---------------------------------------------------------------------------- whole scans


def test_fast_path_and_fallback_agree_on_every_lab_capture(monkeypatch):
    fast = scan(*LAB)
    assert_same_audit(fast, fallback_scan(monkeypatch, *LAB))
    assert len(fast["captures"]) == len(LAB)


def test_fast_path_and_fallback_agree_on_a_span_capture(span, monkeypatch):
    fast = scan(str(span))
    assert_same_audit(fast, fallback_scan(monkeypatch, str(span)))
    stats = fast["captures"][0]["stats"]
    assert stats["frames"] == 20_000 and stats["prefiltered"] > 15_000


@pytest.fixture(scope="module")
def vxlan_span(tmp_path_factory) -> Path:
    """The span capture as a cloud traffic mirror delivers it: every frame in VXLAN."""
    path = tmp_path_factory.mktemp("span") / "span-vxlan.pcap"
    make_span.generate(path, frames=20_000, ike_messages=300, seed=7, vxlan=True)
    return path


def test_fast_path_and_fallback_agree_on_a_vxlan_span_capture(vxlan_span, span, monkeypatch):
    """The VXLAN mirror's frames are judged in C as the plain ones are: what it passes to
    Python on top are only the frames inside with two VLAN tags."""
    fast = scan(str(vxlan_span))
    assert_same_audit(fast, fallback_scan(monkeypatch, str(vxlan_span)))
    plain = scan(str(span))
    assert [{**n, "capture": None} for n in fast["negotiations"]] == \
        [{**n, "capture": None} for n in plain["negotiations"]]
    stats, plain_stats = fast["captures"][0]["stats"], plain["captures"][0]["stats"]
    assert stats["encap_vxlan"] == stats["frames"] - stats["prefiltered"]
    assert plain_stats["prefiltered"] - stats["prefiltered"] == stats["non_ike"] < 0.02 * stats["frames"]


def test_span_scan_finds_exactly_the_generated_ike(span):
    truth = json.loads(Path(f"{span}.truth.json").read_text())
    document = scan(str(span))
    negotiations = document["negotiations"]
    frames = {f for n in negotiations for m in n["messages"] for f in m["frames"]}
    generated = {f for i in truth["instances"] if i["ike_version"] == 2 for f in i["frames"]}
    assert frames == generated
    assert sum(len(n["messages"]) for n in negotiations) == truth["ikev2_messages"]
    assert document["captures"][0]["stats"]["ike_datagrams"] == truth["ike_datagrams"]
    assert document["summary"]["by_classification"] == truth["by_classification"]
    assert document["summary"]["negotiations"] == truth["negotiations"]


def test_gzip_and_pcapng_span_scan_like_the_pcap(span, tmp_path):
    gz = tmp_path / "span.pcap.gz"
    gz.write_bytes(gzip.compress(span.read_bytes()))
    ng = tmp_path / "span.pcapng"
    make_span.generate(ng, frames=20_000, ike_messages=300, seed=7, fmt="pcapng")
    plain = scan(str(span))["negotiations"]
    for other in (gz, ng):
        negotiations = scan(str(other))["negotiations"]
        assert [{**n, "capture": None} for n in negotiations] == [{**n, "capture": None} for n in plain]


def test_progress_reports_every_byte_of_every_file(span, monkeypatch):
    paths = [str(span), lab_path("h01"), lab_path("v01")]
    total = sum(Path(p).stat().st_size for p in paths)
    for jobs in (1, 2):
        seen = []
        audit_captures(paths, jobs=jobs, progress=seen.append)
        assert sum(seen) == total
    with monkeypatch.context() as m:
        m.setattr(sources, "_LIBPCAP", None)
        seen = []
        audit_captures(paths, progress=seen.append)
        assert sum(seen) == total


def test_json_on_stdout_stays_clean():
    result = CliRunner().invoke(main, ["scan", lab_path("h01"), "--format", "json"])
    json.loads(result.stdout)
    assert result.stderr == ""


# ---------------------------------------------------------------------------- --jobs and rotated files


def test_jobs_output_equals_one_process_on_the_lab_captures():
    one = CliRunner().invoke(main, ["scan", str(PCAPS), "--format", "json"])
    two = CliRunner().invoke(main, ["scan", str(PCAPS), "--format", "json", "--jobs", "2"])
    assert one.exit_code == two.exit_code == 0
    assert one.stdout == two.stdout


def test_mtu_jobs_output_equals_one_process():
    one = CliRunner().invoke(main, ["mtu", str(PCAPS), "--format", "json"])
    three = CliRunner().invoke(main, ["mtu", str(PCAPS), "--format", "json", "-j", "3"])
    assert one.exit_code == three.exit_code == 0
    assert one.stdout == three.stdout


SPLIT = 50  # r01 frames 1..50 and 51..125: the IKE SA's IKE_FOLLOWUP_KE request's two
# IKE fragments are frames 50 and 51, and its rekeyed successor starts in the second file


@pytest.fixture
def rotated(tmp_path) -> tuple[Path, Path]:
    """r01 as `tcpdump -C 1 -W 10 -w r01.pcap` would have rotated it mid-negotiation,
    across the ring's wrap: the second file's name sorts first, so the command line order
    is not the time order."""
    header, records = pcap_records(lab_path("r01"))
    first, second = tmp_path / "r01.pcap9", tmp_path / "r01.pcap0"
    first.write_bytes(header + b"".join(records[:SPLIT]))
    second.write_bytes(header + b"".join(records[SPLIT:]))
    return first, second


def renumbered(negotiation: dict) -> dict:
    """A negotiation of the whole r01 with each frame numbered as in its part."""
    n = copy.deepcopy(negotiation)

    def number(frame):
        return frame - SPLIT if frame is not None and frame > SPLIT else frame

    n["first_frame"] = number(n["first_frame"])
    for m in n["messages"]:
        m["first_frame"] = number(m["first_frame"])
        m["frames"] = [number(f) for f in m["frames"]]
    for item in (*n["retries"], *n["anomalies"]):
        item["frame"] = number(item["frame"])
    return n


def unlabelled(negotiation: dict) -> dict:
    """Without the name of the largest message: of several equally large ones, mtu picks
    the one with the lowest frame number, and frame numbers of two files do not compare."""
    n = copy.deepcopy(negotiation)
    del n["fragmentation"]["largest_message"]["message"]
    return n


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_negotiation_split_by_a_rotation_comes_out_whole_once(rotated, jobs):
    first, second = rotated
    whole = scan(lab_path("r01"))["negotiations"]
    document = scan(str(first), str(second), "--jobs", jobs)
    assert [c["path"] for c in document["captures"]] == [str(second), str(first)]
    assert len(document["negotiations"]) == len(whole) == 2
    # Each under the file of its first message; else as in the unsplit capture.
    assert [n["capture"] for n in document["negotiations"]] == [str(second), str(first)]
    by_spi = {n["spi_i"]: n for n in document["negotiations"]}
    for n in whole:
        mine, expected = unlabelled(by_spi[n["spi_i"]]), unlabelled(renumbered(n))
        assert {**mine, "capture": None} == {**expected, "capture": None}
    parent = by_spi[next(n["spi_i"] for n in whole if n["first_frame"] < SPLIT)]
    assert parent["capture"] == str(first)
    split = next(m for m in parent["messages"] if m["exchange"] == "IKE_FOLLOWUP_KE" and m["message_id"] == 5)
    assert split["frames"] == [SPLIT, 1] and split["ike_fragments_seen"] == [1, 2]  # one fragment per file


def test_rotated_scan_with_jobs_equals_one_process(rotated):
    first, second = rotated
    args = ["scan", str(second), str(first), "--format", "json"]
    assert CliRunner().invoke(main, args).stdout == CliRunner().invoke(main, [*args, "-j", "2"]).stdout


def test_the_same_capture_twice_is_not_merged(tmp_path):
    """Two files covering the same time (a copy, or a second tap) stay apart."""
    copy_path = tmp_path / "copy.pcap"
    shutil.copy(lab_path("h01"), copy_path)
    document = scan(lab_path("h01"), str(copy_path))
    assert len(document["negotiations"]) == 2
    a, b = document["negotiations"]
    assert {**a, "capture": None} == {**b, "capture": None}
    assert a["retransmissions"] == 0


def test_files_without_frames_or_ike_join_nothing(tmp_path, rotated):
    first, second = rotated
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(pcap_records(lab_path("r01"))[0])
    document = scan(str(first), str(empty), str(second))
    assert [c["path"] for c in document["captures"]] == [str(empty), str(second), str(first)]
    assert [n["capture"] for n in document["negotiations"]] == [str(second), str(first)]


def test_a_file_that_is_no_capture_stops_the_scan_before_any_work(tmp_path):
    notes = tmp_path / "notes.pcap"
    notes.write_text("not a capture\n")
    for jobs in ("1", "2"):
        result = CliRunner().invoke(main, ["scan", lab_path("h01"), str(notes), "--jobs", jobs])
        assert result.exit_code == 2
        assert "not a pcap or pcapng capture" in result.output and len(result.output.splitlines()) == 1


def test_progress_bar_goes_to_a_terminal_stderr_only(monkeypatch, capsys):
    """With stderr a terminal the scan draws (after a second) a bar there; stdout stays
    the report's."""
    import io

    from ikeaudit import cli
    from ikeaudit.classify import KeCatalog

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for jobs in (1, 2):
        audits = cli._audit((lab_path("h01"), lab_path("r01")), KeCatalog(), jobs=jobs, esp=False)
        assert [len(a.negotiations) for a in audits] == [1, 2]
    assert capsys.readouterr().out == ""
