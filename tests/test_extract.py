"""Tests for ikeaudit.extract: frames built with Scapy, fed as bytes, records asserted."""

from __future__ import annotations

import glob
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (
    ARP,
    ESP,
    ICMP,
    IP,
    TCP,
    UDP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    fragment,
    fragment6,
)
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.layers.l2 import GRE
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.utils import RawPcapReader

from conftest import FUZZED, THIRDPARTY, needs_thirdparty, needs_tshark
from ikeaudit.sources import iter_capture
from ikeaudit.extract import Extractor
from ikeaudit.records import Anomaly, Frame, IkeDatagram

ROOT = Path(__file__).resolve().parents[1]

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MARKER = b"\x00\x00\x00\x00"


def ike(version: int = 0x20, body: bytes = b"", exchange: int = 34) -> bytes:
    """A minimal IKE header (plus an opaque body) whose Length field is right."""
    length = 28 + len(body)
    header = struct.pack("!BBBBII", 0, version, exchange, 0x08, 0, length)
    return b"\x11" * 8 + bytes(8) + header + body


BIG = ike(body=bytes(range(256)) * 12)  # 3100 bytes: needs IP fragmentation


def eth(payload) -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / payload


def udp4(sport: int = 500, dport: int = 500, payload: bytes = ike(), **ip) -> IP:
    return IP(src=A4, dst=B4, **ip) / UDP(sport=sport, dport=dport) / Raw(payload)


def udp6(sport: int = 500, dport: int = 500, payload: bytes = ike()) -> IPv6:
    return IPv6(src=A6, dst=B6) / UDP(sport=sport, dport=dport) / Raw(payload)


def mk(pkt, number: int = 1, ts: float = 100.0, linktype: int = 1) -> Frame:
    data = pkt if isinstance(pkt, bytes) else bytes(pkt)
    return Frame(number, ts, linktype, data, len(data))


def feed(ex: Extractor, pkts, linktype: int = 1, ts: float = 100.0, step: float = 0.001) -> list:
    out = []
    for i, pkt in enumerate(pkts, 1):
        out += ex.feed(mk(pkt, i, ts + i * step, linktype))
    return out


def datagrams(records) -> list[IkeDatagram]:
    return [r for r in records if isinstance(r, IkeDatagram)]


def anomalies(records, kind: str | None = None) -> list[Anomaly]:
    return [r for r in records if isinstance(r, Anomaly) and kind in (None, r.kind)]


def one(records) -> IkeDatagram:
    assert not anomalies(records), anomalies(records)
    (record,) = datagrams(records)
    return record


def only_anomaly(records, kind: str) -> Anomaly:
    assert not datagrams(records)
    (anomaly,) = records
    assert anomaly.kind == kind, anomaly
    return anomaly


# --- link types


def test_ethernet_ipv4_udp_500_becomes_one_datagram_with_its_fields():
    record = one(Extractor().feed(mk(eth(udp4()), number=7, ts=5.5)))
    assert (record.frame, record.frames) == (7, (7,))
    assert (record.timestamp, record.first_timestamp) == (5.5, 5.5)
    assert (record.ip_version, record.src, record.dst) == (4, A4, B4)
    assert (record.sport, record.dport) == (500, 500)
    assert (record.transport, record.non_esp_marker, record.ike_version) == ("udp", False, 2)
    assert record.payload == ike()
    assert record.udp_payload_length == 28
    assert record.ip_length == 20 + 8 + 28
    assert record.ip_fragment_lengths == ()


LINK_CASES = {
    "ethernet": (1, eth(udp4())),
    "802.1q": (1, eth(Dot1Q(vlan=10) / udp4())),
    "qinq-88a8": (1, eth(Dot1AD(vlan=100) / Dot1Q(vlan=10) / udp4())),
    "qinq-9100": (1, Ether(dst="02:00:00:00:00:02", type=0x9100) / Dot1Q(vlan=5) / udp4()),
    "ethernet-ipv6": (1, eth(udp6())),
    "sll": (113, CookedLinux() / udp4()),
    "sll-ipv6": (113, CookedLinux() / udp6()),
    "sll2": (276, CookedLinuxV2() / udp4()),
    "sll2-ipv6": (276, CookedLinuxV2() / udp6()),
    "raw-101-v4": (101, udp4()),
    "raw-101-v6": (101, udp6()),
    "raw-12": (12, udp4()),
    "raw-14": (14, udp6()),
    "raw-ipv4-228": (228, udp4()),
    "raw-ipv6-229": (229, udp6()),
    "null-le-ipv4": (0, struct.pack("<I", 2) + bytes(udp4())),
    "null-be-ipv4": (0, struct.pack(">I", 2) + bytes(udp4())),
    "null-le-ipv6-24": (0, struct.pack("<I", 24) + bytes(udp6())),
    "null-be-ipv6-28": (0, struct.pack(">I", 28) + bytes(udp6())),
    "null-le-ipv6-30": (0, struct.pack("<I", 30) + bytes(udp6())),
    "loop-ipv4": (108, struct.pack(">I", 2) + bytes(udp4())),
    "loop-ipv6": (108, struct.pack(">I", 24) + bytes(udp6())),
}


@pytest.mark.parametrize("linktype, pkt", LINK_CASES.values(), ids=LINK_CASES.keys())
def test_each_supported_link_type_yields_the_datagram(linktype, pkt):
    record = one(Extractor().feed(mk(pkt, linktype=linktype)))
    assert record.sport == record.dport == 500
    assert record.src in (A4, A6)
    assert record.payload == ike()


def test_unsupported_link_type_is_reported_once_per_link_type_and_counted_per_frame():
    ex = Extractor()
    records = [r for lt in (147, 147, 9, 147) for r in ex.feed(mk(b"whatever", linktype=lt))]
    assert [a.kind for a in records] == ["unsupported", "unsupported"]
    assert "147" in records[0].detail and "9" in records[1].detail
    assert ex.stats["unsupported_linktype"] == 4


def test_non_ip_ethernet_is_counted_and_silent():
    ex = Extractor()
    assert ex.feed(mk(eth(ARP()))) == []
    assert ex.stats["non_ip"] == 1


def test_loopback_with_unknown_family_is_non_ip():
    ex = Extractor()
    assert ex.feed(mk(struct.pack("<I", 7) + bytes(udp4()), linktype=0)) == []
    assert ex.stats["non_ip"] == 1


def test_too_many_vlan_tags_is_malformed():
    tags = Dot1Q(vlan=1)
    for _ in range(9):
        tags = tags / Dot1Q(vlan=1)
    only_anomaly(Extractor().feed(mk(eth(tags / udp4()))), "malformed")


# --- IP layers and protocols


def test_ipv4_options_are_skipped_and_counted_in_ip_length():
    record = one(Extractor().feed(mk(eth(udp4(options=[IPOption_RR(routers=["10.0.0.1"])])))))
    assert record.ip_length == 28 + 8 + 28  # 20 + 8 bytes of options
    assert record.payload == ike()


def test_ipv6_extension_headers_are_walked():
    pkt = (
        IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
        / UDP(sport=500, dport=500) / Raw(ike())
    )  # fmt: skip
    record = one(Extractor().feed(mk(eth(pkt))))
    assert (record.ip_version, record.src, record.dst) == (6, A6, B6)
    assert record.ip_length == 40 + 24 + 8 + 28


def test_ipv6_addresses_are_compressed():
    pkt = IPv6(src="2001:0db8:0000:0000:0000:0000:0000:0001", dst="fe80::1")
    pkt = pkt / UDP(sport=500, dport=500) / Raw(ike())
    record = one(Extractor().feed(mk(eth(pkt))))
    assert (record.src, record.dst) == ("2001:db8::1", "fe80::1")


@pytest.mark.parametrize(
    "pkt, key",
    [
        (IP(src=A4, dst=B4) / ESP(spi=1, seq=1, data=b"x" * 40), "esp"),
        (IPv6(src=A6, dst=B6) / ESP(spi=1, seq=1, data=b"x" * 40), "esp"),
        (IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / ESP(spi=1, seq=1, data=b"x" * 40), "esp"),
        (IP(src=A4, dst=B4, proto=51) / Raw(b"\x11\x04" + bytes(22)), "ah"),
        (IP(src=A4, dst=B4) / ICMP(), "non_ike"),
        (IP(src=A4, dst=B4) / TCP(sport=1234, dport=443), "non_ike"),
        (IP(src=A4, dst=B4) / UDP(sport=53, dport=53) / Raw(ike()), "non_ike"),
        (IPv6(src=A6, dst=B6) / UDP(sport=1234, dport=4501) / Raw(ike()), "non_ike"),
    ],
    ids=["esp4", "esp6", "esp6-after-destopt", "ah", "icmp", "tcp-443", "udp-53", "udp6-4501"],
)
def test_non_ike_traffic_is_counted_and_produces_nothing(pkt, key):
    ex = Extractor()
    assert ex.feed(mk(eth(pkt))) == []
    assert ex.stats[key] == 1
    assert ex.flush() == []


# --- UDP 500 / 4500


@pytest.mark.parametrize("sport, dport", [(500, 500), (63995, 500), (500, 63995)])
def test_port_500_either_direction_and_nat_t_high_ports(sport, dport):
    record = one(Extractor().feed(mk(eth(udp4(sport, dport)))))
    assert (record.sport, record.dport, record.non_esp_marker) == (sport, dport, False)


@pytest.mark.parametrize("sport, dport", [(4500, 4500), (10954, 4500), (4500, 10954)])
def test_port_4500_strips_the_non_esp_marker(sport, dport):
    record = one(Extractor().feed(mk(eth(udp4(sport, dport, MARKER + ike())))))
    assert record.non_esp_marker is True
    assert record.payload == ike()
    assert record.udp_payload_length == 4 + 28


def test_port_4500_over_ipv6_strips_the_marker():
    record = one(Extractor().feed(mk(eth(udp6(4500, 4500, MARKER + ike())))))
    assert (record.ip_version, record.non_esp_marker, record.ip_length) == (6, True, 40 + 8 + 32)


def test_nat_keepalive_is_counted_without_record():
    ex = Extractor()
    assert ex.feed(mk(eth(udp4(4500, 4500, b"\xff")))) == []
    assert ex.stats["nat_keepalive"] == 1


def test_esp_in_udp_is_counted_without_record():
    ex = Extractor()
    assert ex.feed(mk(eth(udp4(4500, 4500, struct.pack("!II", 0xC0FFEE, 1) + bytes(40))))) == []
    assert ex.stats["esp_in_udp"] == 1


def test_ikev1_version_byte_gives_ike_version_1():
    ex = Extractor()
    record = one(ex.feed(mk(eth(udp4(payload=ike(version=0x10, exchange=2))))))
    assert record.ike_version == 1
    assert (ex.stats["ike_datagrams"], ex.stats["ikev1_datagrams"]) == (1, 1)


def test_unknown_ike_major_version_is_malformed():
    records = Extractor().feed(mk(eth(udp4(payload=ike(version=0x30))), number=3))
    anomaly = only_anomaly(records, "malformed")
    assert "version 0x30" in anomaly.detail
    assert anomaly.frame == 3


@pytest.mark.parametrize("payload", [b"", b"\x01" * 27])
def test_port_500_payload_shorter_than_ike_header_is_malformed(payload):
    only_anomaly(Extractor().feed(mk(eth(udp4(payload=payload)))), "malformed")


@pytest.mark.parametrize("payload", [b"", b"\x00\x00", MARKER + b"\x01" * 10])
def test_port_4500_payload_too_short_is_malformed(payload):
    only_anomaly(Extractor().feed(mk(eth(udp4(4500, 4500, payload)))), "malformed")


@pytest.mark.parametrize("udp_len", [7, 20, 100])
def test_inconsistent_udp_length_is_malformed(udp_len):
    pkt = IP(src=A4, dst=B4) / UDP(sport=500, dport=500, len=udp_len) / Raw(ike())
    only_anomaly(Extractor().feed(mk(eth(pkt))), "malformed")


def test_snaplen_cut_ike_frame_is_incomplete():
    data = bytes(eth(udp4(payload=BIG[:1400])))
    anomaly = only_anomaly(Extractor().feed(Frame(9, 1.0, 1, data[:96], len(data))), "incomplete")
    assert anomaly.frame == 9


def test_snaplen_cut_non_ike_frame_is_silent():
    data = bytes(eth(IP(src=A4, dst=B4) / UDP(sport=53, dport=53) / Raw(b"x" * 1400)))
    ex = Extractor()
    assert ex.feed(Frame(1, 1.0, 1, data[:96], len(data))) == []
    assert ex.stats["non_ike"] == 1


def test_ethernet_padding_after_ip_is_ignored():
    record = one(Extractor().feed(mk(bytes(eth(udp4())) + bytes(20))))
    assert record.payload == ike()


# --- hostile headers: exactly one anomaly with the frame number, never an exception


def raw_ipv4(ihl: int = 5, total: int | None = None, payload: bytes = b"", proto: int = 17) -> bytes:
    header = bytearray(bytes(IP(src=A4, dst=B4, proto=proto)))
    header[0] = 0x40 | ihl
    body = bytes(header) + payload
    struct.pack_into("!H", header, 2, len(body) if total is None else total)
    return bytes(header) + payload


HOSTILE = {
    "ethernet-short": (1, b"\x00" * 10),
    "ihl-below-5": (228, raw_ipv4(ihl=3, payload=bytes(udp4())[20:])),
    "ihl-beyond-data": (228, raw_ipv4(ihl=15)),
    "total-below-header": (228, raw_ipv4(total=12, payload=bytes(udp4())[20:])),
    "total-beyond-data": (228, raw_ipv4(total=1000, payload=bytes(udp4())[20:])),
    "ipv4-short": (228, bytes(udp4())[:12]),
    "ipv4-version-mismatch": (229, bytes(udp4())),
    "ipv6-short": (229, bytes(udp6())[:30]),
    "ipv6-payload-beyond-data": (229, bytes(IPv6(src=A6, dst=B6, plen=2000)) + bytes(udp4())[20:]),
    "ipv6-ext-runs-past-payload": (229, bytes(IPv6(nh=60, plen=8)) + b"\x11\xff" + bytes(6)),
    "ipv6-too-many-ext": (229, bytes(IPv6(nh=60, plen=9 * 8)) + (b"\x3c\x00" + bytes(6)) * 9),
    "udp-header-short": (228, raw_ipv4(payload=b"\x01\xf4\x01\xf4\x00")),
    "raw-version-nibble": (101, b"\x50" + bytes(40)),
    "sll-short": (113, b"\x00" * 15),
    "tcp-4500-short-header": (228, raw_ipv4(payload=b"\x11\x94\x11\x94" + bytes(8), proto=6)),
}


@pytest.mark.parametrize("linktype, data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_headers_give_one_anomaly_with_the_frame_number(linktype, data):
    (anomaly,) = Extractor().feed(Frame(42, 1.0, linktype, data, len(data)))
    assert isinstance(anomaly, Anomaly)
    assert anomaly.kind == "malformed"
    assert anomaly.frame == 42


def test_header_cut_by_snaplen_is_incomplete_not_malformed():
    data = bytes(eth(udp4()))
    anomaly = only_anomaly(Extractor().feed(Frame(1, 1.0, 1, data[:20], len(data))), "incomplete")
    assert "IPv4 header" in anomaly.detail


# --- IP fragment reassembly (IPv4 and IPv6 alike)


def fragments(
    version: int, payload: bytes = BIG, sport: int = 500, dport: int = 500, ident: int = 7
) -> list[bytes]:
    """Ethernet frames carrying the IP fragments of one UDP datagram, in order."""
    if version == 4:
        pkt = IP(src=A4, dst=B4, id=ident) / UDP(sport=sport, dport=dport) / Raw(payload)
        return [bytes(eth(f)) for f in fragment(pkt, fragsize=1000)]
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=ident) / UDP(sport=sport, dport=dport)
    pkt = pkt / Raw(payload)
    return [bytes(eth(f)) for f in fragment6(pkt, 1280)]


def ip_total_lengths(frames: list[bytes]) -> list[int]:
    """What tshark calls ip.len / 40 + ipv6.plen for each fragment."""
    return [len(f) - 14 for f in frames]


def expected_ip_length(version: int, payload: bytes = BIG) -> int:
    return (20 if version == 4 else 40) + 8 + len(payload)


@pytest.mark.parametrize("version", [4, 6])
def test_fragments_in_order_are_reassembled(version):
    frames = fragments(version)
    assert len(frames) >= 3
    ex = Extractor()
    records = feed(ex, frames)
    record = one(records)
    n = len(frames)
    assert record.frame == n and record.frames == tuple(range(1, n + 1))
    assert record.first_timestamp == pytest.approx(100.001)
    assert record.timestamp == pytest.approx(100 + n * 0.001)
    assert record.payload == BIG
    assert record.ip_length == expected_ip_length(version)
    assert record.ip_fragment_lengths == tuple(ip_total_lengths(frames))
    assert record.udp_payload_length == len(BIG)
    assert ex.stats["reassembled"] == 1 and ex.stats["ip_fragments"] == n
    assert ex.flush() == []


@pytest.mark.parametrize("version", [4, 6])
def test_fragments_reversed_are_reassembled_with_arrival_order(version):
    frames = fragments(version)[::-1]
    record = one(feed(Extractor(), frames))
    assert record.frame == len(frames)
    assert record.payload == BIG
    assert record.ip_fragment_lengths == tuple(ip_total_lengths(frames))


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("seed", range(5))
def test_fragments_shuffled_are_reassembled(version, seed):
    frames = fragments(version, payload=ike(body=bytes(range(256)) * 30))
    random.Random(seed).shuffle(frames)
    assert one(feed(Extractor(), frames)).payload == ike(body=bytes(range(256)) * 30)


@pytest.mark.parametrize("version", [4, 6])
def test_duplicated_fragments_are_tolerated_even_after_completion(version):
    frames = fragments(version)
    ex = Extractor()
    records = feed(ex, [frames[0], frames[0], *frames[1:], frames[-1], frames[1]])
    record = one(records)
    assert record.frames == (1, *range(3, len(frames) + 2))
    assert len(record.ip_fragment_lengths) == len(frames)
    assert ex.stats["ip_fragment_duplicates"] == 3
    assert ex.flush() == []


@pytest.mark.parametrize("version", [4, 6])
def test_missing_fragment_is_incomplete_at_flush(version):
    frames = fragments(version)
    ex = Extractor()
    assert feed(ex, frames[:1] + frames[2:]) == []
    (anomaly,) = ex.flush()
    assert anomaly.kind == "incomplete"
    assert anomaly.frame == 1
    assert ex.flush() == []


def overlapping(version: int) -> list[bytes]:
    """The second fragment moved back 8 bytes, so it overlaps the first."""
    frames = fragments(version)
    pkt = Ether(frames[1])
    if version == 4:
        pkt[IP].frag -= 1
        del pkt[IP].chksum
    else:
        pkt[IPv6ExtHdrFragment].offset -= 1
    frames[1] = bytes(pkt)
    return frames


@pytest.mark.parametrize("version", [4, 6])
def test_overlapping_fragments_drop_the_datagram_as_malformed(version):
    ex = Extractor()
    records = feed(ex, overlapping(version))
    anomaly = only_anomaly(records, "malformed")
    assert "overlap" in anomaly.detail and anomaly.frame == 2
    assert ex.flush() == []


@pytest.mark.parametrize("version", [4, 6])
def test_conflicting_fragment_at_the_same_offset_is_malformed(version):
    frames = fragments(version)
    changed = bytearray(frames[1])
    changed[-1] ^= 0xFF
    records = feed(Extractor(), [frames[1], bytes(changed)])
    only_anomaly(records, "malformed")


def test_ipv6_fragment_with_extension_headers_before_and_after_it():
    payload = MARKER + BIG
    pkt = (
        IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=5)
        / IPv6ExtHdrDestOpt() / UDP(sport=4500, dport=4500) / Raw(payload)
    )  # fmt: skip
    frames = [bytes(f) for f in fragment6(pkt, 1280)]
    record = one(feed(Extractor(), frames, linktype=229))
    assert record.payload == BIG
    # hop-by-hop (unfragmentable) and destination options (fragmentable) count, the
    # fragment header does not
    assert record.ip_length == 40 + 8 + 8 + 8 + len(payload)
    assert record.ip_fragment_lengths == tuple(len(f) for f in frames)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_non_ike_fragments_are_dropped_silently(version, order):
    frames = fragments(version, sport=53, dport=5353)
    if order == "reversed":
        frames.reverse()
    ex = Extractor()
    assert feed(ex, frames) == []
    assert ex.flush() == []
    assert ex.stats["non_ike_fragments"] == len(frames)


def test_fragments_of_non_udp_tcp_protocols_are_not_buffered():
    pkt = IP(src=A4, dst=B4) / ICMP() / Raw(b"x" * 3000)
    ex = Extractor()
    assert feed(ex, [bytes(eth(f)) for f in fragment(pkt, fragsize=1000)[1:]]) == []
    assert ex.flush() == []
    assert ex.stats["non_ike_fragments"] == 3


def test_port_4500_fragments_are_reassembled_and_marker_stripped():
    record = one(feed(Extractor(), fragments(4, MARKER + BIG, 4500, 4500)))
    assert record.non_esp_marker and record.payload == BIG


def test_reassembly_table_is_bounded_and_evicts_the_oldest():
    ex = Extractor(max_reassembly_buffers=2)
    firsts = [fragments(4, ident=i)[0] for i in (1, 2, 3)]
    records = feed(ex, firsts)
    overflow = only_anomaly(records, "overflow")
    assert overflow.frame == 1
    assert [a.kind for a in ex.flush()] == ["incomplete", "incomplete"]


def test_late_pieces_of_an_evicted_datagram_are_ignored():
    ex = Extractor(max_reassembly_buffers=1)
    one_, two = fragments(4, ident=1), fragments(4, ident=2)
    records = feed(ex, [one_[0], two[0], *one_[1:]])
    assert [a.kind for a in anomalies(records)] == ["overflow"]
    assert not datagrams(records)
    assert ex.stats["dropped_fragments"] == len(one_) - 1


def test_stale_fragments_time_out_as_incomplete():
    frames = fragments(4)
    ex = Extractor(reassembly_timeout=5.0)
    assert ex.feed(mk(frames[0], 1, ts=0.0)) == []
    (anomaly,) = ex.feed(mk(eth(IP(src=A4, dst=B4) / ICMP()), 2, ts=6.0))
    assert anomaly.kind == "incomplete" and anomaly.frame == 1
    assert ex.feed(mk(frames[1], 3, ts=6.1)) == []
    assert ex.flush() == []


def test_fragments_within_the_timeout_still_reassemble():
    frames = fragments(4)
    ex = Extractor(reassembly_timeout=5.0)
    records = [r for i, f in enumerate(frames) for r in ex.feed(mk(f, i + 1, ts=i * 1.5))]
    assert one(records).first_timestamp == 0.0


def test_datagram_above_max_datagram_is_malformed():
    ex = Extractor(max_datagram=2000)
    records = feed(ex, fragments(4))
    only_anomaly(records, "malformed")
    assert ex.flush() == []


def test_fragment_past_65535_bytes_is_malformed():
    pkt = IP(src=A4, dst=B4, id=9, proto=17, frag=8189, flags=0) / Raw(b"x" * 1000)
    only_anomaly(Extractor().feed(mk(eth(pkt))), "malformed")


def test_snaplen_cut_fragment_makes_the_datagram_incomplete():
    frames = fragments(4)
    ex = Extractor()
    records = ex.feed(Frame(1, 1.0, 1, frames[0][:200], len(frames[0])))
    records += feed(ex, frames[1:])
    only_anomaly(records, "incomplete")


def test_reused_ip_id_after_completion_makes_a_new_datagram():
    first = fragments(4, payload=BIG)
    second = fragments(4, payload=ike(body=b"\x55" * 3072))
    records = feed(Extractor(), first + second)
    assert [r.payload for r in datagrams(records)] == [BIG, ike(body=b"\x55" * 3072)]
    assert not anomalies(records)


# --- IKE over TCP (RFC 9329)

CLIENT, SERVER = ("10.0.0.1", 50000), ("10.0.0.2", 4500)


def tcp_seg(src, dst, seq: int, flags: str = "A", data: bytes = b"") -> bytes:
    segment = TCP(sport=src[1], dport=dst[1], seq=seq, flags=flags) / Raw(data)
    return bytes(eth(IP(src=src[0], dst=dst[0]) / segment))


def iketcp_frame(message: bytes, esp: bool = False) -> bytes:
    body = (struct.pack("!II", 0x1234, 1) + message) if esp else MARKER + message
    return struct.pack("!H", 2 + len(body)) + body


def handshake() -> list[bytes]:
    return [
        tcp_seg(CLIENT, SERVER, 1000, "S"),
        tcp_seg(SERVER, CLIENT, 5000, "SA"),
        tcp_seg(CLIENT, SERVER, 1001, "A"),
    ]


def test_ike_over_tcp_prefix_split_and_out_of_order():
    stream = b"IKETCP" + iketcp_frame(ike())
    cuts = [0, 3, 8, 20, len(stream)]  # "IKE" | "TCP" + length | 12 bytes | rest
    pieces = [(1001 + lo, stream[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
    order = [0, 3, 1, 2]  # frames 4..7: the last piece arrives before the middle ones
    segments = handshake() + [tcp_seg(CLIENT, SERVER, pieces[i][0], data=pieces[i][1]) for i in order]
    ex = Extractor()
    record = one(feed(ex, segments))
    assert (record.transport, record.non_esp_marker, record.ike_version) == ("tcp", True, 2)
    assert (record.sport, record.dport, record.src, record.dst) == (50000, 4500, "10.0.0.1", "10.0.0.2")
    # frame 4 carried only prefix bytes, so it is not a piece of the IKE frame
    assert record.frame == 7 and record.frames == (5, 6, 7)
    assert record.first_timestamp == pytest.approx(100.005)
    assert record.udp_payload_length == 2 + 4 + 28
    assert record.payload == ike()
    assert ex.stats["tcp_ike"] == 1 and ex.stats["tcp_streams"] == 2
    assert ex.flush() == []


def test_ike_over_tcp_responder_sends_no_prefix():
    client = b"IKETCP" + iketcp_frame(ike())
    server = iketcp_frame(ike(body=b"r" * 50))
    segments = handshake() + [
        tcp_seg(CLIENT, SERVER, 1001, data=client),
        tcp_seg(SERVER, CLIENT, 5001, data=server),
    ]
    records = feed(Extractor(), segments)
    assert not anomalies(records)
    got = [(r.sport, r.payload) for r in datagrams(records)]
    assert got == [(50000, ike()), (4500, ike(body=b"r" * 50))]


def test_ike_over_tcp_several_frames_in_one_segment_and_esp_counted():
    frames = [iketcp_frame(ike()), iketcp_frame(b"e" * 40, esp=True), iketcp_frame(ike(exchange=35))]
    data = b"IKETCP" + b"".join(frames)
    ex = Extractor()
    records = feed(ex, handshake() + [tcp_seg(CLIENT, SERVER, 1001, data=data)])
    assert [r.payload[18] for r in datagrams(records)] == [34, 35]
    assert ex.stats["tcp_esp"] == 1


def test_ike_over_tcp_retransmission_is_used_once():
    data = b"IKETCP" + iketcp_frame(ike())
    ex = Extractor()
    first = tcp_seg(CLIENT, SERVER, 1001, data=data[:20])
    segments = handshake() + [first, first, tcp_seg(CLIENT, SERVER, 1001, data=data)]
    record = one(feed(ex, segments, step=0.3))  # TCP's retransmission timeout is 200 ms at least
    assert record.payload == ike()
    assert ex.stats["tcp_retransmissions"] == 1
    assert ex.stats["duplicates"] == 0


def test_ike_over_tcp_gap_never_filled_is_incomplete_at_flush():
    data = b"IKETCP" + iketcp_frame(ike())
    ex = Extractor()
    assert feed(ex, handshake() + [tcp_seg(CLIENT, SERVER, 1001 + 10, data=data[10:])]) == []
    (anomaly,) = ex.flush()
    assert anomaly.kind == "incomplete" and anomaly.frame == 4


def test_ike_over_tcp_without_syn_is_reported_once_and_ignored():
    data = iketcp_frame(ike())
    ex = Extractor()
    segments = [tcp_seg(CLIENT, SERVER, seq, data=data) for seq in (77, 77 + len(data))]
    records = feed(ex, segments)
    anomaly = only_anomaly(records, "incomplete")
    assert "SYN" in anomaly.detail
    assert ex.flush() == []


def test_ike_over_tcp_stream_table_is_bounded():
    ex = Extractor(max_tcp_streams=1)
    records = feed(ex, [tcp_seg(CLIENT, SERVER, 1, "S"), tcp_seg(("10.0.0.3", 1234), SERVER, 1, "S")])
    only_anomaly(records, "overflow")


def test_ike_over_tcp_bad_frame_length_is_malformed():
    ex = Extractor()
    records = feed(ex, handshake() + [tcp_seg(CLIENT, SERVER, 1001, data=b"IKETCP\x00\x03abc")])
    only_anomaly(records, "malformed")


# --- never raise


SUPPORTED_LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from(SUPPORTED_LINKTYPES),
    data=st.binary(max_size=300),
    extra=st.integers(0, 100),
)
def test_arbitrary_bytes_never_raise(linktype, data, extra):
    ex = Extractor(max_reassembly_buffers=4, max_tcp_streams=4)
    for number in (1, 2):
        wire_length = len(data) + extra * (number - 1)  # second time: as if snaplen-cut
        for record in ex.feed(Frame(number, float(number), linktype, data, wire_length)):
            assert isinstance(record, (IkeDatagram, Anomaly))
    assert all(isinstance(a, Anomaly) for a in ex.flush())


SEEDS = [
    bytes(udp4(4500, 4500, MARKER + ike())),
    bytes(udp6(500, 500, ike())),
    bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / UDP(sport=500, dport=500) / Raw(ike())),
    *[f[14:] for f in fragments(4)],
    *[f[14:] for f in fragments(6)],
    bytes(IP(src=A4, dst=B4) / TCP(sport=4500, dport=4500, flags="S", seq=1)),
    bytes(IP(src=A4, dst=B4) / TCP(sport=4500, dport=4500, seq=2) / Raw(b"IKETCP" + BIG[:200])),
]


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from(range(len(SEEDS))),  # which packet
            st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4),  # flips
            st.integers(0, 2000),  # snaplen
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_ike_packets_never_raise(picks):
    ex = Extractor(max_reassembly_buffers=2, max_tcp_streams=2)
    for number, (seed, flips, cut) in enumerate(picks, 1):
        data = bytearray(SEEDS[seed])
        for position, value in flips:
            if position < len(data):
                data[position] = value
        frame = Frame(number, float(number), 101, bytes(data[:cut]), len(data))
        assert all(isinstance(r, (IkeDatagram, Anomaly)) for r in ex.feed(frame))
    assert all(isinstance(a, Anomaly) for a in ex.flush())


# --- real captures against tshark


def read_frames(path: str):
    """A small stand-in for ikeaudit.sources: (pcap or pcapng, maybe gzipped) -> Frames."""
    with RawPcapReader(path) as reader:
        for number, (data, meta) in enumerate(reader, 1):
            if hasattr(meta, "tsresol"):
                ts, linktype = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol, meta.linktype
            else:
                ts, linktype = meta.sec + meta.usec / (1e9 if reader.nano else 1e6), reader.linktype
            yield Frame(number, ts, linktype, data, meta.wirelen)


def tshark_isakmp_frames(path: str) -> list[int]:
    result = subprocess.run(
        ["tshark", "-r", path, "-Y", "isakmp", "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [int(line) for line in result.stdout.split()]


def readable(path: str) -> bool:
    try:
        with RawPcapReader(path):
            return True
    except Exception:
        return False


OUR_CAPTURES = sorted(glob.glob(str(ROOT / "pcaps" / "*.pcap")))
THIRDPARTY_CAPTURES = sorted(p for p in glob.glob(str(THIRDPARTY / "*" / "*"))
                             if Path(p).name not in FUZZED and readable(p))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize(
    "path",
    OUR_CAPTURES + THIRDPARTY_CAPTURES,
    ids=lambda p: f"{Path(p).parent.name}/{Path(p).name}",
)
def test_capture_datagrams_match_tshark_isakmp_frames(path):
    # tshark lists every copy a mirror delivered (stopddos's capture has some, suricata's
    # every frame twice): here no copy is dropped; tests/test_encapsulation.py has those.
    ex = Extractor(duplicate_window=0)
    records = [r for frame in read_frames(path) for r in ex.feed(frame)] + ex.flush()
    assert [r.frame for r in datagrams(records)] == tshark_isakmp_frames(path)
    assert not anomalies(records)


def test_there_are_captures_to_compare():
    assert OUR_CAPTURES


# --- tunnels (the lab captures wrapped in each one: tests/test_encapsulation.py)

MIRROR = ("198.51.100.1", "198.51.100.2")


def vxlan4(inner, **ip) -> IP:
    return IP(src=MIRROR[0], dst=MIRROR[1], **ip) / UDP(sport=55555, dport=4789) / VXLAN(vni=1) / inner


def test_tunnel_addresses_are_not_the_peers_and_the_encapsulation_is_counted():
    ex = Extractor()
    record = one(ex.feed(mk(eth(vxlan4(eth(udp4()))))))
    assert (record.src, record.dst, record.ip_length) == (A4, B4, 28 + 28)
    assert ex.stats["encap_vxlan"] == 1


def test_unknown_gre_protocol_is_counted_and_told_once_with_its_first_frame():
    ex = Extractor()
    wccp = eth(IP(src=MIRROR[0], dst=MIRROR[1]) / GRE(proto=0x883E) / Raw(bytes(24)))
    records = feed(ex, [eth(udp4(sport=53, dport=53)), wccp, wccp])
    assert only_anomaly(records, "unsupported").frame == 2
    assert "GRE protocol type 0x883e" in records[0].detail
    assert ex.stats["unsupported_encapsulation"] == 2


def test_tunnels_nested_beyond_the_bound_are_malformed():
    pkt = udp4()
    for _ in range(9):
        pkt = IP(src=MIRROR[0], dst=MIRROR[1]) / GRE(proto=0x0800) / pkt
    assert "nested encapsulations" in only_anomaly(Extractor().feed(mk(eth(pkt))), "malformed").detail
    pkt = udp4()
    for _ in range(8):
        pkt = IP(src=MIRROR[0], dst=MIRROR[1]) / GRE(proto=0x0800) / pkt
    assert one(Extractor().feed(mk(eth(pkt)))).src == A4


def test_mpls_stack_without_bottom_label_is_malformed():
    labels = b"".join(struct.pack("!I", (label << 12) | 64) for label in range(17))  # S bit never set
    frame = bytes(Ether(type=0x8847)) + labels + bytes(udp4())
    assert "MPLS labels" in only_anomaly(Extractor().feed(mk(frame)), "malformed").detail


def test_fragmented_tunnel_packet_is_reassembled_then_opened():
    pieces = fragment(vxlan4(eth(udp4(payload=BIG)), id=77), fragsize=1000)
    ex = Extractor()
    record = one(feed(ex, [eth(p) for p in pieces]))
    assert (record.src, record.payload) == (A4, BIG)
    assert record.frames == tuple(range(1, len(pieces) + 1))
    assert record.first_timestamp == 100.001  # the first piece's
    assert ex.stats["encap_vxlan"] == 1 and ex.stats["reassembled"] == 1


def test_erspan_iii_can_carry_ip_without_ethernet():
    erspan = GRE(proto=0x22EB) / ERSPAN_III(ft=2) / udp6()
    record = one(Extractor().feed(mk(eth(IP(src=MIRROR[0], dst=MIRROR[1]) / erspan))))
    assert (record.src, record.ip_version) == (A6, 6)


def test_erspan_version_that_contradicts_the_protocol_type_is_unsupported():
    bad = GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(ver=2) / eth(udp4())
    only_anomaly(Extractor().feed(mk(eth(IP(src=MIRROR[0], dst=MIRROR[1]) / bad))), "unsupported")


def test_tunnel_cut_by_the_snaplen_is_incomplete():
    data = bytes(eth(vxlan4(eth(udp4()))))
    anomaly = only_anomaly(Extractor().feed(Frame(5, 1.0, 1, data[:110], len(data))), "incomplete")
    assert anomaly.frame == 5


def test_pppoe_link_control_is_not_ip():
    ex = Extractor()
    assert ex.feed(mk(Ether() / PPPoE(sessionid=1) / PPP(proto=0xC021) / Raw(b"\x09\x01\x00\x08" + bytes(4)))) == []
    assert ex.stats["non_ip"] == 1 and ex.stats["encap_pppoe"] == 1


def test_ipv6_extension_headers_repeated_and_out_of_order_are_walked():
    pkt = (IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
           / IPv6ExtHdrHopByHop() / UDP(sport=500, dport=500) / Raw(ike()))  # fmt: skip
    assert one(Extractor().feed(mk(eth(pkt)))).ip_length == 40 + 32 + 8 + 28
    # A Mobility header (RFC 6275) has the common format; "no next header" (59) ends it.
    mobility = bytes(IPv6(src=A6, dst=B6, nh=135) / Raw(bytes([59, 0]) + bytes(6)))
    ex = Extractor()
    assert ex.feed(mk(bytes(Ether(type=0x86DD)) + mobility)) == [] and ex.stats["non_ike"] == 1


# --- duplicates


def test_span_copy_microseconds_later_is_dropped_as_a_duplicate():
    ex = Extractor()
    copy = udp4(ttl=63)  # one hop later: TTL and checksum differ
    records = ex.feed(mk(eth(udp4()), 1, 10.0)) + ex.feed(mk(eth(copy), 2, 10.00001))
    assert one(records).frame == 1
    assert ex.stats["duplicates"] == 1


def test_copy_in_another_encapsulation_is_a_duplicate_too():
    ex = Extractor()
    records = ex.feed(mk(eth(udp6()), 1, 10.0)) + ex.feed(mk(eth(vxlan4(eth(udp6()))), 2, 10.00002))
    assert one(records).frame == 1 and ex.stats["duplicates"] == 1


def test_retransmission_a_second_later_is_kept():
    ex = Extractor()
    records = ex.feed(mk(eth(udp4()), 1, 10.0)) + ex.feed(mk(eth(udp4()), 2, 11.0))
    assert [r.frame for r in datagrams(records)] == [1, 2]
    assert ex.stats["duplicates"] == 0


def test_a_zero_window_keeps_every_copy():
    ex = Extractor(duplicate_window=0)
    assert len(datagrams(feed(ex, [eth(udp4()), eth(udp4())], step=0.0))) == 2


def test_different_packets_at_the_same_instant_are_not_duplicates():
    ex = Extractor()
    records = ex.feed(mk(eth(udp4()), 1, 10.0)) + ex.feed(mk(eth(udp4(payload=ike(body=b"x"))), 2, 10.0))
    assert len(datagrams(records)) == 2


def test_without_a_clock_only_a_copy_in_the_next_frame_is_a_duplicate():
    ex = Extractor()
    records = [r for n, ttl in ((1, 64), (2, 63), (3, 64), (5, 64))
               for r in ex.feed(mk(eth(udp4(ttl=ttl)), n, 0.0))]  # fmt: skip
    assert [r.frame for r in datagrams(records)] == [1, 3, 5]  # 2 is 1's mirror copy; 3 and 5 resent
    assert ex.stats["duplicates"] == 1


@needs_thirdparty
@needs_tshark
def test_a_clockless_capture_keeps_the_retransmissions_tshark_lists():
    path = THIRDPARTY / "more" / "tcpdump__isakmp4500.pcap"  # every timestamp 0
    listed = subprocess.run(["tshark", "-r", str(path), "-Y", "isakmp", "-T", "fields", "-e", "frame.number"],
                            capture_output=True, text=True, check=True).stdout.split()
    ex, found = Extractor(), []
    for item in iter_capture(str(path)):
        if hasattr(item, "linktype"):
            found += [r.frame for r in datagrams(ex.feed(item))]
    assert found == [int(n) for n in listed]


def test_esp_copies_count_once():
    ex = Extractor()
    esp = IP(src=A4, dst=B4) / ESP(spi=0x1234, seq=1) / Raw(bytes(40))
    feed(ex, [eth(esp), eth(esp)], step=0.00001)
    (flow,) = ex.esp_flows()
    assert flow.packets == 1 and ex.stats["duplicates"] == 1


def test_duplicate_memory_is_bounded():
    ex = Extractor()
    frame = bytearray(bytes(eth(udp4(payload=ike(body=bytes(4))))))
    for i in range(70_000):  # all different, all within the window
        frame[-4:] = struct.pack("!I", i)
        ex.feed(mk(bytes(frame), i, 10.0))
    assert len(ex._recent) <= 1 << 16 and ex.stats["ike_datagrams"] == 70_000
