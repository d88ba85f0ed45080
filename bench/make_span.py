"""Generate a large, mixed span-port capture with ground truth, fast.

    python bench/make_span.py --frames 1000000 --out bench/out/span-1m.pcap
    python bench/make_span.py --frames 20000 --format pcapng --out /tmp/span.pcapng
    python bench/make_span.py --frames 1000000 --vxlan --out bench/out/span-1m-vxlan.pcap

Writes OUT and OUT.truth.json. The capture is what a span port of a busy site looks
like to an IKE auditor: almost all of it is not IKE.

  background  TCP connections (IPv4 and IPv6, 802.1Q-tagged too: TLS records to the
              server, an ACK back every other segment), native ESP, ESP-in-UDP and
              NAT-T keepalives on 4500, DNS, QUIC, NTP, mDNS over IPv6, QinQ-tagged UDP,
              ARP, ICMP, and IP-fragmented UDP that is not IKE (IPv4 and IPv6, every
              other one out of order); the mix is MIX below
  IKE         the IKE messages of the lab captures in pcaps/ (real strongSwan and
              Libreswan handshakes: IKE_SA_INIT on 500, the rest on 4500, IKE
              fragmentation, INVALID_KE retries, rekeys, IPv6, NAT-T), replayed with
              fresh SPIs, their own addresses and IP identifications per negotiation;
              some VLAN- or QinQ-tagged, some with their first large datagram
              (mostly the IKE_SA_INIT request) cut into IP fragments sent last one
              first (IPv4 and IPv6); plus IKEv1 main mode exchanges built once with
              Scapy

Speed: Scapy builds each packet template once; the millions of frames are written
from those bytes with struct (counters patched in place), never through Scapy.

The ground truth (OUT.truth.json) lists every IKE negotiation generated: its template,
SPIs, addresses and the frame numbers of every frame that carries a piece of an IKE
datagram, with the counts an audit must find: IKE datagrams, distinct IKEv2 messages
(from pcaps/manifest.json), negotiations and their expected classification.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "pcaps"

# Background mix: kind -> weight among the emissions (a TCP emission may add its ACK,
# a fragmented one is two frames). Fragments and traffic on port 4500 reach Python
# through the prefilter, as IKE does; the rest never does.
MIX = {
    "tcp4": 36.0, "tcp6": 5.0, "tcp4_vlan": 5.0, "udp4_qinq": 1.0,
    "esp": 8.0, "esp_udp": 2.0, "natt_keepalive": 0.3, "dns": 20.0, "quic": 5.0,
    "ntp": 2.0, "mdns6": 2.0, "arp": 1.0, "icmp": 1.0, "frag4": 0.2, "frag6": 0.1,
}  # fmt: skip
FLOWS = 64  # variants (addresses, ports, SPIs) per background kind
FRAMES_PER_SECOND = 2000.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------------------- helpers


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_ipv4_checksum(frame: bytearray, ip: int) -> None:
    ihl = (frame[ip] & 0x0F) * 4
    frame[ip + 10 : ip + 12] = b"\0\0"
    frame[ip + 10 : ip + 12] = struct.pack("!H", checksum(bytes(frame[ip : ip + ihl])))


def udp6_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    pseudo = src + dst + struct.pack("!I3xB", len(udp), 17)
    udp = udp[:6] + b"\0\0" + udp[8:]
    return checksum(pseudo + udp) or 0xFFFF


def add_vlan(frame: bytes, tags: list[tuple[int, int]]) -> bytes:
    """Insert 802.1Q/802.1ad tags (TPID, VLAN id) after the MAC addresses."""
    inserted = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return frame[:12] + inserted + frame[12:]


# ---------------------------------------------------------------------------- IKE templates


@dataclass
class IkeFrame:
    time: float  # seconds after the template's first IKE frame
    data: bytes
    version: int  # IP version
    ip: int  # offset of the IP header
    ike: int | None  # offset of the IKE header, when this frame holds it
    datagram: int  # index of the datagram within the template
    fragmented: bool


@dataclass
class Template:
    name: str
    frames: list[IkeFrame]
    initiator: bytes
    responder: bytes
    messages: int  # distinct IKEv2 messages (manifest), 0 for IKEv1
    negotiations: int
    classification: str
    ike_version: int = 2

    @property
    def duration(self) -> float:
        return self.frames[-1].time if self.frames else 0.0

    @property
    def datagrams(self) -> int:
        return len({f.datagram for f in self.frames})


def _lab_templates() -> list[Template]:
    from scapy.utils import RawPcapReader

    manifest = json.loads((LAB / "manifest.json").read_text())
    templates = []
    for record in manifest["records"]:
        frames, first_time = [], None
        first_fragments: dict[tuple, int] = {}  # (src, dst, id) -> datagram index
        pending: list[tuple] = []  # non-first IPv4 fragments, decided once the first is known
        datagrams = 0
        initiator = responder = b""
        for data, meta in RawPcapReader(str(LAB / record["file"])):
            stamp = meta.sec + meta.usec / 1e6
            parsed = _lab_ike(data)
            if parsed is None:
                continue
            kind, version, ip, ike, key = parsed
            first_time = stamp if first_time is None else first_time
            if kind == "tail":  # a non-first IPv4 fragment
                pending.append((stamp - first_time, data, version, ip, key))
                continue
            if kind == "head":
                first_fragments[key] = datagrams
            if not initiator:
                src_at, size = (ip + 12, 4) if version == 4 else (ip + 8, 16)
                initiator, responder = data[src_at : src_at + size], data[src_at + size : src_at + 2 * size]
            frames.append(IkeFrame(stamp - first_time, data, version, ip, ike, datagrams, kind == "head"))
            datagrams += 1
        for offset, data, version, ip, key in pending:
            if key in first_fragments:
                frames.append(IkeFrame(offset, data, version, ip, None, first_fragments[key], True))
        frames.sort(key=lambda f: f.time)
        classification = _lab_classification(record)
        templates.append(Template(record["id"], frames, initiator, responder, len(record["ike_messages"]),
                                  max(record["n_ike_sas"], 1), classification))
    return templates


def _lab_classification(record: dict) -> str:
    # The manifest predates the `classical-pq-offered` class: a downgrade is classical
    # key exchange although the initiator offered ML-KEM.
    expected = record["expected_classification"]
    if expected == "classical" and record["pq_offered_by_initiator"]:
        return "classical-pq-offered"
    if record["n_ike_sas"] == 0 and record["error_notifies"]:
        return "failed"
    return expected


def _lab_ike(data: bytes):
    """("whole"|"head"|"tail", IP version, IP offset, IKE offset, fragment key) for a
    lab frame that carries IKE (the lab captures are untagged Ethernet), else None."""
    etype = struct.unpack_from("!H", data, 12)[0]
    ip = 14
    if etype == 0x0800:
        ihl = (data[ip] & 0x0F) * 4
        total, ident, flags_offset, proto = struct.unpack_from("!2xHHH1xB", data, ip)
        key = (data[ip + 12 : ip + 20], ident)
        if proto != 17:
            return None
        if flags_offset & 0x1FFF:
            return ("tail", 4, ip, None, key)
        udp, end = ip + ihl, ip + total
        kind = "head" if flags_offset & 0x2000 else "whole"
    elif etype == 0x86DD:
        if data[ip + 6] != 17:
            return None
        udp, end, key, kind = ip + 40, ip + 40 + struct.unpack_from("!H", data, ip + 4)[0], None, "whole"
    else:
        return None
    sport, dport = struct.unpack_from("!HH", data, udp)
    if not {sport, dport} & {500, 4500}:
        return None
    body = udp + 8
    if 4500 in (sport, dport):
        if data[body:end] == b"\xff" or data[body : body + 4] != b"\0\0\0\0":
            return None  # NAT-T keepalive or ESP in UDP
        body += 4
    return (kind, 4 if etype == 0x0800 else 6, ip, body, key)


def _ikev1_template() -> Template:
    """An IKEv1 main mode exchange: SA, KE+nonce, then two encrypted messages each way."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.isakmp import (ISAKMP, ISAKMP_payload_KE, ISAKMP_payload_Nonce,
                                     ISAKMP_payload_Proposal, ISAKMP_payload_SA,
                                     ISAKMP_payload_Transform)
    from scapy.layers.l2 import Ether

    def payload(layer, data: bytes):  # the data field is `load` before Scapy 2.6.2
        names = [f.name for f in layer.fields_desc]
        return layer(**{next(n for n in ("ke", "nonce", "load") if n in names): data})

    transform = ISAKMP_payload_Transform(transforms=[
        ("Encryption", "AES-CBC"), ("KeyLength", 256), ("Hash", "SHA2-256"), ("GroupDesc", "2048MODPgr"),
        ("Authentication", "PSK"), ("LifeType", "Seconds"), ("LifeDuration", 28800)])
    sa = ISAKMP_payload_SA(prop=ISAKMP_payload_Proposal(trans=transform))
    ci, cr, zero = b"\x11" * 8, b"\x22" * 8, b"\0" * 8
    rng = random.Random(500)
    messages = [
        (True, ISAKMP(init_cookie=ci, resp_cookie=zero, exch_type=2) / sa),
        (False, ISAKMP(init_cookie=ci, resp_cookie=cr, exch_type=2) / sa),
        (True, ISAKMP(init_cookie=ci, resp_cookie=cr, exch_type=2)
         / payload(ISAKMP_payload_KE, rng.randbytes(256)) / payload(ISAKMP_payload_Nonce, rng.randbytes(32))),
        (False, ISAKMP(init_cookie=ci, resp_cookie=cr, exch_type=2)
         / payload(ISAKMP_payload_KE, rng.randbytes(256)) / payload(ISAKMP_payload_Nonce, rng.randbytes(32))),
        (True, ISAKMP(init_cookie=ci, resp_cookie=cr, exch_type=2, flags=1, next_payload=5)
         / rng.randbytes(76)),
        (False, ISAKMP(init_cookie=ci, resp_cookie=cr, exch_type=2, flags=1, next_payload=5)
         / rng.randbytes(76)),
    ]
    a, b = "198.51.100.1", "198.51.100.2"
    frames = []
    for index, (from_initiator, message) in enumerate(messages):
        src, dst = (a, b) if from_initiator else (b, a)
        packet = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst, id=100 + index) \
            / UDP(sport=500, dport=500) / message
        frames.append(IkeFrame(index * 0.004, bytes(packet), 4, 14, 42, index, False))
    return Template("ikev1", frames, ipaddress.ip_address(a).packed, ipaddress.ip_address(b).packed,
                    0, 1, "ikev1", ike_version=1)


# ---------------------------------------------------------------------------- IKE instances


@dataclass
class Instance:
    template: Template
    index: int
    start: float
    scale: float
    variant: str  # "plain", "vlan", "qinq", "refragmented"
    initiator: bytes
    responder: bytes
    spis: dict[bytes, bytes] = field(default_factory=dict)
    frames: list[int] = field(default_factory=list)  # filled in as they are written
    datagrams: int = 0


def _instance_addresses(index: int, version: int) -> tuple[bytes, bytes]:
    if version == 4:
        return (ipaddress.IPv4Address("10.0.0.0") + 1 + index).packed, \
            (ipaddress.IPv4Address("172.16.0.0") + 1 + index).packed
    return (ipaddress.IPv6Address("2001:db8:1::") + 1 + index).packed, \
        (ipaddress.IPv6Address("2001:db8:2::") + 1 + index).packed


def _materialize(inst: Instance, rng: random.Random) -> list[tuple[float, bytes, int]]:
    """The instance's frames as (time, bytes, datagram) in sending order."""
    t = inst.template
    id_shift = rng.randrange(1, 0xFFFF)
    out: list[tuple[float, bytes, int]] = []
    refragment = _refragment_target(t) if inst.variant == "refragmented" else None
    for number, f in enumerate(t.frames):
        frame = bytearray(f.data)
        _patch_addresses(frame, f, t, inst)
        if f.ike is not None:
            for at in (f.ike, f.ike + 8):
                spi = bytes(frame[at : at + 8])
                if spi != b"\0" * 8:
                    fresh = inst.spis.setdefault(spi, rng.getrandbits(64).to_bytes(8, "big") or b"\1" * 8)
                    frame[at : at + 8] = fresh
        if f.version == 4:
            ident = struct.unpack_from("!H", frame, f.ip + 4)[0]
            struct.pack_into("!H", frame, f.ip + 4, (ident + id_shift) & 0xFFFF)
            if f.ike is not None:  # the frame holds the UDP header: no checksum (allowed for IPv4)
                udp = f.ip + (frame[f.ip] & 0x0F) * 4
                frame[udp + 6 : udp + 8] = b"\0\0"
            fix_ipv4_checksum(frame, f.ip)
        else:
            udp, end = f.ip + 40, f.ip + 40 + struct.unpack_from("!H", frame, f.ip + 4)[0]
            struct.pack_into("!H", frame, udp + 6, udp6_checksum(bytes(frame[f.ip + 8 : f.ip + 24]),
                                                                bytes(frame[f.ip + 24 : f.ip + 40]),
                                                                bytes(frame[udp:end])))
        when = inst.start + f.time * inst.scale
        if number == refragment:
            pieces = _ip_fragments(bytes(frame), f, rng)
            pieces.reverse()  # out of order: last fragment first
            out.extend((when + i * 1e-5, p, f.datagram) for i, p in enumerate(pieces))
        else:
            out.append((when, bytes(frame), f.datagram))
    if inst.variant in ("vlan", "qinq"):
        tags = [(0x8100, 100 + inst.index % 3000)] if inst.variant == "vlan" else \
            [(0x88A8, 10 + inst.index % 100), (0x8100, 200 + inst.index % 3000)]
        out = [(when, add_vlan(data, tags), d) for when, data, d in out]
    return out


def _patch_addresses(frame: bytearray, f: IkeFrame, t: Template, inst: Instance) -> None:
    at, size = (f.ip + 12, 4) if f.version == 4 else (f.ip + 8, 16)
    for where in (at, at + size):
        value = bytes(frame[where : where + size])
        frame[where : where + size] = inst.initiator if value == t.initiator else inst.responder


def _refragment_target(t: Template) -> int | None:
    """The first whole IKE datagram of at least 600 bytes (an IKE_SA_INIT request)."""
    for number, f in enumerate(t.frames):
        if not f.fragmented and f.ike is not None and len(f.data) >= 600:
            return number
    return None


def _ip_fragments(frame: bytes, f: IkeFrame, rng: random.Random, size: int = 512) -> list[bytes]:
    link = frame[: f.ip]
    if f.version == 4:
        ihl = (frame[f.ip] & 0x0F) * 4
        header, payload = frame[f.ip : f.ip + ihl], frame[f.ip + ihl :]
        pieces = []
        for offset in range(0, len(payload), size):
            chunk = payload[offset : offset + size]
            more = offset + size < len(payload)
            h = bytearray(header)
            struct.pack_into("!H", h, 2, ihl + len(chunk))
            struct.pack_into("!H", h, 6, (0x2000 if more else 0) | offset // 8)
            fix_ipv4_checksum(h, 0)
            pieces.append(link + bytes(h) + chunk)
        return pieces
    fixed, payload = frame[f.ip : f.ip + 40], frame[f.ip + 40 :]
    ident = rng.getrandbits(32)
    pieces = []
    for offset in range(0, len(payload), size):
        chunk = payload[offset : offset + size]
        more = offset + size < len(payload)
        h = bytearray(fixed)
        struct.pack_into("!H", h, 4, 8 + len(chunk))
        h[6] = 44  # next header: Fragment
        fragment_header = struct.pack("!BxHI", 17, offset | more, ident)
        pieces.append(link + bytes(h) + fragment_header + chunk)
    return pieces


# ---------------------------------------------------------------------------- background


@dataclass
class Background:
    """Pre-built frames of one kind: FLOWS variants, and where their counters live."""

    frames: list[bytearray]  # FLOWS x pieces
    ident: tuple[int, ...] = ()  # offsets of 16-bit fields set to a running count (IPv4 id, DNS id)
    seq: int | None = None  # offset of a 32-bit counter per flow: TCP or ESP sequence, IPv6 fragment id
    step: int = 1  # what that counter advances by per emission
    pieces: int = 1  # frames per emission (IP fragments)
    port: int | None = None  # offset of the client port: connections come and go
    replies: list[bytearray] | None = None  # per flow: the server's ACK after every other segment
    reply_port: int = 0  # offset of the client port in the reply
    reply_ack: int = 0  # offset of its acknowledgement number
    values: list[int] = field(default_factory=list)  # the counter, per flow
    left: list[int] = field(default_factory=list)  # emissions before the flow's connection ends


def _background(rng: random.Random) -> dict[str, Background]:
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
    from scapy.packet import Raw

    def mac(i: int) -> str:
        return f"02:00:5e:{i >> 8 & 255:02x}:{i & 255:02x}:{rng.randrange(256):02x}"

    def v4(net: str, i: int) -> str:
        return str(ipaddress.IPv4Address(net) + 1 + i)

    def v6(net: str, i: int) -> str:
        return str(ipaddress.IPv6Address(net) + 1 + i)

    blobs = {n: rng.randbytes(n) for n in (40, 48, 60, 200, 1000, 1200, 1250, 1300, 1400, 1460, 2800)}

    def tls(size: int) -> bytes:  # one whole TLS application-data record per segment
        return b"\x17\x03\x03" + struct.pack("!H", size - 5) + blobs[size][5:]

    kinds: dict[str, Background] = {}

    def add(kind: str, build, reply=None, **layout) -> None:
        frames, replies = [], []
        for i in range(FLOWS):
            built = build(i)
            frames.extend(bytearray(bytes(p)) for p in (built if isinstance(built, list) else [built]))
            if reply is not None:
                replies.append(bytearray(bytes(reply(i))))
        kinds[kind] = Background(frames, replies=replies or None, values=[rng.getrandbits(32) for _ in range(FLOWS)],
                                 left=[0] * FLOWS, **layout)

    eth = lambda i: Ether(src=mac(i), dst=mac(i + 4096))  # noqa: E731
    back = lambda i: Ether(src=mac(i + 4096), dst=mac(i))  # noqa: E731
    # TCP connections: TLS records to the server, an ACK back after every other segment.
    add("tcp4", lambda i: eth(i) / IP(src=v4("192.168.0.0", i), dst=v4("203.0.113.0", i % 7))
        / TCP(sport=40000 + i, dport=443, flags="PA", seq=0, ack=rng.getrandbits(32)) / Raw(tls(1460)),
        lambda i: back(i) / IP(src=v4("203.0.113.0", i % 7), dst=v4("192.168.0.0", i))
        / TCP(sport=443, dport=40000 + i, flags="A", seq=rng.getrandbits(32)),
        ident=(18,), seq=38, step=1460, port=34, reply_port=36, reply_ack=42)
    add("tcp6", lambda i: eth(i) / IPv6(src=v6("2001:db8:100::", i), dst=v6("2001:db8:200::", i % 5))
        / TCP(sport=50000 + i, dport=443, flags="PA", ack=rng.getrandbits(32)) / Raw(tls(1200)),
        lambda i: back(i) / IPv6(src=v6("2001:db8:200::", i % 5), dst=v6("2001:db8:100::", i))
        / TCP(sport=443, dport=50000 + i, flags="A", seq=rng.getrandbits(32)),
        seq=58, step=1200, port=54, reply_port=56, reply_ack=62)
    add("tcp4_vlan", lambda i: Ether(src=mac(i), dst=mac(i + 1)) / Dot1Q(vlan=10 + i % 4)
        / IP(src=v4("192.168.64.0", i), dst=v4("203.0.113.64", i % 3))
        / TCP(sport=41000 + i, dport=443, flags="PA", ack=rng.getrandbits(32)) / Raw(tls(1000)),
        lambda i: Ether(src=mac(i + 1), dst=mac(i)) / Dot1Q(vlan=10 + i % 4)
        / IP(src=v4("203.0.113.64", i % 3), dst=v4("192.168.64.0", i))
        / TCP(sport=443, dport=41000 + i, flags="A", seq=rng.getrandbits(32)),
        ident=(22,), seq=42, step=1000, port=38, reply_port=40, reply_ack=46)
    add("udp4_qinq", lambda i: Ether(src=mac(i), dst=mac(i + 2)) / Dot1AD(vlan=7) / Dot1Q(vlan=30 + i % 4)
        / IP(src=v4("192.168.96.0", i), dst=v4("203.0.113.96", i % 3)) / UDP(sport=30000 + i, dport=8080)
        / Raw(blobs[200]), ident=(26,))
    add("esp", lambda i: eth(i) / IP(src=v4("198.18.0.0", i), dst=v4("198.18.128.0", i % 9), proto=50)
        / Raw(rng.randbytes(4) + b"\0\0\0\1" + blobs[1400]), ident=(18,), seq=38)
    add("esp_udp", lambda i: eth(i) / IP(src=v4("198.19.0.0", i), dst=v4("198.19.128.0", i % 9))
        / UDP(sport=4500, dport=4500) / Raw(b"\xc0" + rng.randbytes(3) + b"\0\0\0\1" + blobs[1300]),
        ident=(18,), seq=46)
    add("natt_keepalive", lambda i: eth(i) / IP(src=v4("198.19.0.0", i), dst=v4("198.19.128.0", i % 9))
        / UDP(sport=4500, dport=4500) / Raw(b"\xff"), ident=(18,))
    add("dns", lambda i: eth(i) / IP(src=v4("192.168.32.0", i), dst="192.0.2.53")
        / UDP(sport=20000 + i, dport=53) / DNS(id=i, rd=1, qd=DNSQR(qname=f"host{i}.example.com")),
        ident=(18, 42), port=34)
    add("quic", lambda i: eth(i) / IP(src=v4("192.168.48.0", i), dst=v4("203.0.113.128", i % 5))
        / UDP(sport=60000 + i, dport=443) / Raw(b"\x40" + blobs[1250]), ident=(18,), port=34)
    add("ntp", lambda i: eth(i) / IP(src=v4("192.168.16.0", i), dst="192.0.2.123")
        / UDP(sport=123, dport=123) / Raw(b"\x23" + blobs[48][1:]), ident=(18,))
    add("mdns6", lambda i: eth(i) / IPv6(src=v6("fe80::", i), dst="ff02::fb") / UDP(sport=5353, dport=5353)
        / DNS(qd=DNSQR(qname=f"printer{i}.local", qtype="PTR")))
    add("arp", lambda i: eth(i) / ARP(psrc=v4("192.168.0.0", i), pdst=v4("192.168.0.0", i + 1)))
    add("icmp", lambda i: eth(i) / IP(src=v4("192.168.0.0", i), dst="192.0.2.1") / ICMP(id=i) / Raw(blobs[48]),
        ident=(18,))
    # IP-fragmented UDP that is not IKE: a first fragment with other ports, then the rest.
    add("frag4", lambda i: [eth(i) / p for p in
                            (IP(src=v4("192.168.200.0", i), dst="203.0.113.200", id=i, flags=1, frag=0)
                             / UDP(sport=5060, dport=5060, len=8 + 2800) / Raw(blobs[1400]),
                             IP(src=v4("192.168.200.0", i), dst="203.0.113.200", id=i, frag=176, proto=17)
                             / Raw(blobs[1400][:1408 - 8] + blobs[40][:8]))], ident=(18,), pieces=2)

    def frag6(i: int) -> list:
        src, dst = ipaddress.IPv6Address("2001:db8:300::") + 1 + i, ipaddress.IPv6Address("2001:db8:300::ffff")
        data = blobs[2800][:2000]
        udp = struct.pack("!HHHH", 9000, 9000, 8 + len(data), 0) + data
        udp = udp[:6] + struct.pack("!H", udp6_checksum(src.packed, dst.packed, udp)) + udp[8:]
        head, tail = udp[:1232], udp[1232:]
        return [eth(i) / IPv6(src=str(src), dst=str(dst), nh=44, plen=8 + len(piece))
                / Raw(struct.pack("!BxHI", 17, offset | more, i) + piece)
                for offset, more, piece in ((0, 1, head), (1232, 0, tail))]

    add("frag6", frag6, seq=58, pieces=2)  # the counter is the fragment identification here
    return kinds


# ---------------------------------------------------------------------------- writing


class Writer:
    """pcap or pcapng, microsecond timestamps, Ethernet; buffered raw records. With
    vxlan=True every frame is sent on as a cloud traffic mirror delivers it: inside
    Ethernet, IPv4 (no options), UDP to 4789 and an 8-byte VXLAN header."""

    # The mirror's own headers: collector 10.200.0.2 hears from the VTEP 10.200.0.1.
    VXLAN_OUTER = bytes.fromhex("02aa00000002" "02aa00000001" "0800"  # Ethernet
                                "4500" "0000" "0000" "4000" "4011" "0000" "0ac80001" "0ac80002"  # IPv4
                                "0000" "12b5" "0000" "0000"  # UDP to 4789, checksum 0
                                "08000000" "00002a00")  # VXLAN: I flag, VNI 42

    def __init__(self, path: Path, fmt: str, compress: bool, vxlan: bool = False) -> None:
        self.fmt = fmt
        self.vxlan = vxlan
        # IPv4 header checksum of the outer header but for its total length.
        words = struct.unpack("!10H", self.VXLAN_OUTER[14:34])
        self._partial = sum(words)
        self.file = gzip.open(path, "wb", compresslevel=1) if compress else open(path, "wb")
        self.parts: list[bytes] = []
        self.frames = 0
        if fmt == "pcap":
            self.file.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        else:
            shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            self.file.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb)) + shb + struct.pack("<I", 12 + len(shb)))
            self.file.write(struct.pack("<IIHHII", 1, 20, 1, 0, 262144, 20))

    def add(self, when: float, data: bytes) -> int:
        if self.vxlan:
            data = self._wrap(data)
        micros = round(when * 1e6)
        if self.fmt == "pcap":
            self.parts.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(data), len(data)))
            self.parts.append(data)
        else:
            pad = -len(data) % 4
            length = 32 + len(data) + pad
            self.parts.append(struct.pack("<IIIIIII", 6, length, 0, micros >> 32, micros & 0xFFFFFFFF,
                                          len(data), len(data)))
            self.parts.append(data + b"\0" * pad + struct.pack("<I", length))
        self.frames += 1
        if len(self.parts) >= 16384:
            self.flush()
        return self.frames

    def _wrap(self, frame: bytes) -> bytes:
        outer = bytearray(self.VXLAN_OUTER)
        total = 20 + 8 + 8 + len(frame)
        checksum = self._partial + total
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
        struct.pack_into("!H", outer, 16, total)
        struct.pack_into("!H", outer, 24, ~checksum & 0xFFFF)
        # A VTEP varies the source port by inner flow (RFC 7348 section 5), here by frame.
        struct.pack_into("!H", outer, 34, 49152 + (self.frames & 0x3FFF))
        struct.pack_into("!H", outer, 38, total - 20)
        return bytes(outer) + frame

    def flush(self) -> None:
        self.file.write(b"".join(self.parts))
        self.parts.clear()

    def close(self) -> None:
        self.flush()
        self.file.close()


def generate(out: str | Path, frames: int = 1_000_000, ike_messages: int = 2000, *, seed: int = 1,
             fmt: str = "pcap", compress: bool = False, ikev1_share: float = 0.05,
             truth_path: str | Path | None = None, vxlan: bool = False) -> dict:
    """Write a span capture of `frames` frames holding about `ike_messages` IKEv2 messages
    and return (and write beside it) its ground truth."""
    started = time.perf_counter()
    rng = random.Random(seed)
    out = Path(out)
    templates = _lab_templates()
    ikev1 = _ikev1_template()
    duration = max(frames / FRAMES_PER_SECOND, 1.0)

    instances: list[Instance] = []
    messages = 0
    variants = ["plain"] * 6 + ["vlan", "qinq", "refragmented", "refragmented"]
    while messages < ike_messages:
        if rng.random() < ikev1_share:
            template = ikev1
        else:
            template = rng.choice(templates)
            messages += template.messages
        variant = rng.choice(variants)
        if variant == "refragmented" and _refragment_target(template) is None:
            variant = "plain"
        scale = min(1.0, 0.4 * duration / template.duration) if template.duration else 1.0
        start = rng.uniform(0.0, duration - template.duration * scale - 0.01)
        initiator, responder = _instance_addresses(len(instances), template.frames[0].version)
        instances.append(Instance(template, len(instances), start, scale, variant, initiator, responder))

    ike: list[tuple[float, int, bytes, int, int]] = []  # time, order, bytes, instance, datagram
    for inst in instances:
        for when, data, datagram in _materialize(inst, rng):
            ike.append((when, len(ike), data, inst.index, datagram))
        inst.datagrams = inst.template.datagrams
    ike.sort()
    if len(ike) > frames:
        raise ValueError(f"{frames} frames cannot hold {len(ike)} IKE frames")

    kinds = _background(rng)
    names = list(MIX)
    background = frames - len(ike)
    emissions = rng.choices(names, weights=[MIX[n] for n in names], k=background)
    flows = [rng.randrange(FLOWS) for _ in range(4096)]
    counters = {name: rng.getrandbits(32) for name in names}
    step = duration / max(frames, 1)

    writer = Writer(out, fmt, compress, vxlan)
    add = writer.add
    pack_into = struct.pack_into
    next_ike = 0
    written_background = 0
    i = 0
    try:
        while written_background < background:
            name = emissions[i] if i < len(emissions) else "dns"
            kind = kinds[name]
            flow = flows[i & 4095]
            i += 1
            count = counters[name] = counters[name] + 1
            pieces = kind.frames[flow * kind.pieces : (flow + 1) * kind.pieces]
            if written_background + kind.pieces + (kind.replies is not None) > background:
                continue
            value = kind.values[flow]
            kind.values[flow] = (value + kind.step) & 0xFFFFFFFF
            reply = None
            if kind.port is not None:
                if not kind.left[flow]:  # the connection ended: a new one from a new client port
                    kind.left[flow] = rng.randrange(20, 400)
                    client = rng.randrange(1024, 65536)
                    pack_into("!H", pieces[0], kind.port, client)
                    if kind.replies is not None:
                        pack_into("!H", kind.replies[flow], kind.reply_port, client)
                kind.left[flow] -= 1
                if kind.replies is not None and kind.left[flow] & 1:
                    reply = kind.replies[flow]
                    pack_into("!I", reply, kind.reply_ack, kind.values[flow])
            if kind.pieces > 1 and count & 1:
                pieces = pieces[::-1]  # every other fragmented datagram arrives out of order
            for frame in (*pieces, reply) if reply is not None else pieces:
                for at in kind.ident:
                    pack_into("!H", frame, at, count & 0xFFFF)
                if kind.seq is not None and frame is not reply:
                    pack_into("!I", frame, kind.seq, value)
                now = START + writer.frames * step
                while next_ike < len(ike) and START + ike[next_ike][0] <= now:
                    _emit_ike(writer, instances, ike[next_ike], now)
                    next_ike += 1
                add(now, bytes(frame))
                written_background += 1
        while next_ike < len(ike):
            _emit_ike(writer, instances, ike[next_ike], START + writer.frames * step)
            next_ike += 1
    finally:
        writer.close()
    truth = _truth(out, writer.frames, instances, fmt, compress, seed, time.perf_counter() - started)
    truth["vxlan"] = vxlan
    truth_file = Path(truth_path) if truth_path else out.with_name(out.name + ".truth.json")
    truth_file.write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def _emit_ike(writer: Writer, instances: list[Instance], item: tuple, now: float) -> None:
    when, _order, data, index, _datagram = item
    number = writer.add(max(START + when, now), data)
    instances[index].frames.append(number)


def _truth(out: Path, frames: int, instances: list[Instance], fmt: str, compress: bool, seed: int,
           seconds: float) -> dict:
    ikev2 = [i for i in instances if i.template.ike_version == 2]
    ikev1 = [i for i in instances if i.template.ike_version == 1]
    by_class: dict[str, int] = {}
    for inst in instances:
        by_class[inst.template.classification] = (by_class.get(inst.template.classification, 0)
                                                  + inst.template.negotiations)
    return {
        "capture": str(out),
        "format": fmt + (".gz" if compress else ""),
        "seed": seed,
        "frames": frames,
        "generated_in_seconds": round(seconds, 2),
        "ike_frames": sum(len(i.frames) for i in instances),
        "ike_datagrams": sum(i.datagrams for i in instances),
        "ikev1_datagrams": sum(i.datagrams for i in ikev1),
        "ikev2_datagrams": sum(i.datagrams for i in ikev2),
        "ikev2_messages": sum(i.template.messages for i in ikev2),
        "ikev2_negotiations": sum(i.template.negotiations for i in ikev2),
        "ikev1_negotiations": len(ikev1),
        "negotiations": sum(i.template.negotiations for i in instances),
        "by_classification": dict(sorted(by_class.items())),
        "instances": [{
            "template": i.template.name, "variant": i.variant, "ike_version": i.template.ike_version,
            "initiator": str(ipaddress.ip_address(i.initiator)),
            "responder": str(ipaddress.ip_address(i.responder)),
            "spis": sorted(s.hex() for s in i.spis.values()),
            "messages": i.template.messages, "datagrams": i.datagrams,
            "negotiations": i.template.negotiations, "classification": i.template.classification,
            "frames": i.frames,
        } for i in instances],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--ike-messages", type=int, default=2000,
                        help="IKEv2 messages to include (whole negotiations, so a few more)")
    parser.add_argument("--format", choices=["pcap", "pcapng"], default="pcap")
    parser.add_argument("--gzip", action="store_true", help="gzip-compress the capture")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--vxlan", action="store_true",
                        help="deliver every frame in VXLAN (UDP 4789), as a cloud traffic mirror does")
    parser.add_argument("--out", required=True, help="capture to write (its truth goes to OUT.truth.json)")
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    truth = generate(args.out, args.frames, args.ike_messages, seed=args.seed, fmt=args.format,
                     compress=args.gzip, vxlan=args.vxlan)
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {truth['frames']} frames, {size / 1e6:.0f} MB, {truth['ike_frames']} IKE frames, "
          f"{truth['ike_datagrams']} IKE datagrams, {truth['ikev2_messages']} IKEv2 messages, "
          f"{truth['negotiations']} negotiations, in {truth['generated_in_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
