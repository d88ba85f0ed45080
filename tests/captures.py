"""Lab captures made into field situations, with Scapy: drop exchanges, keep one
direction, move an SA in time or to other addresses, edit an IKE_SA_INIT payload chain.

Only the test side reads packets with Scapy; what it writes is audited by the whole
pipeline as any capture would be. The IKE header is read from the UDP payload's own
bytes (RFC 7296 section 3.1: exchange type at offset 18, flags at 19; on port 4500
after the 4-byte non-ESP marker), and an IP fragment follows the first fragment of its
datagram.
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.all import IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, rdpcap, wrpcap

IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
IKE_INTERMEDIATE, IKE_FOLLOWUP_KE = 43, 44
FLAG_INITIATOR, FLAG_RESPONSE = 0x08, 0x20
IKE_PORTS = (500, 4500)


def _ike_bytes(packet) -> tuple[bytes, int] | None:
    """The IKE message of a UDP datagram's first piece, and its offset in the payload."""
    udp = packet.getlayer(UDP)
    if udp is None or not ({udp.sport, udp.dport} & set(IKE_PORTS)):
        return None
    data = bytes(udp.payload)
    offset = 0
    if 4500 in (udp.sport, udp.dport):
        if data[:4] != b"\0\0\0\0":
            return None  # ESP in UDP, or a NAT keepalive
        offset = 4
    if len(data) < offset + 28 or data[offset + 17] >> 4 != 2:
        return None
    return data, offset


def _fragment_key(packet):
    if IP in packet and (packet[IP].flags.MF or packet[IP].frag):
        return 4, packet[IP].src, packet[IP].dst, packet[IP].id
    if IPv6ExtHdrFragment in packet:
        return 6, packet[IPv6].src, packet[IPv6].dst, packet[IPv6ExtHdrFragment].id
    return None


def ike_headers(packets) -> list[tuple[int, int] | None]:
    """(exchange type, flags) of each packet that carries (a piece of) an IKEv2 message."""
    firsts = {}
    for p in packets:
        key, found = _fragment_key(p), _ike_bytes(p)
        if key is not None and found is not None:
            data, offset = found
            firsts[key] = (data[offset + 18], data[offset + 19])
    out = []
    for p in packets:
        found = _ike_bytes(p)
        if found is not None:
            data, offset = found
            out.append((data[offset + 18], data[offset + 19]))
        else:
            key = _fragment_key(p)
            out.append(firsts.get(key) if key is not None else None)
    return out


def source(packet) -> str | None:
    if IP in packet:
        return packet[IP].src
    if IPv6 in packet:
        return packet[IPv6].src
    return None


def read(path: str) -> list:
    return list(rdpcap(path))


def write(packets, path: Path) -> str:
    wrpcap(str(path), packets)
    return str(path)


def without_exchanges(packets, exchanges: set[int]) -> list:
    """Every packet but those carrying the given exchanges (both directions)."""
    return [p for p, h in zip(packets, ike_headers(packets)) if h is None or h[0] not in exchanges]


def initiator_address(packets) -> str:
    return next(source(p) for p, h in zip(packets, ike_headers(packets))
                if h is not None and h[0] == IKE_SA_INIT and not h[1] & FLAG_RESPONSE)


def one_direction(packets, *, from_initiator: bool) -> list:
    """What a one-way tap shows: the IP packets one peer sent (IKE, its fragments, ESP)."""
    initiator = initiator_address(packets)
    return [p for p in packets if source(p) is not None and (source(p) == initiator) == from_initiator]


def shifted(packets, seconds: float) -> list:
    out = []
    for p in packets:
        q = p.copy()
        q.time = p.time + seconds
        out.append(q)
    return out


def readdressed(packets, mapping: dict[str, str]) -> list:
    """IPv4 packets with their addresses renamed (checksums recomputed)."""
    out = []
    for p in packets:
        q = p.copy()
        if IP in q:
            q[IP].src = mapping.get(q[IP].src, q[IP].src)
            q[IP].dst = mapping.get(q[IP].dst, q[IP].dst)
            del q[IP].chksum
            if UDP in q:
                del q[UDP].chksum
        q.time = p.time
        out.append(q)
    return out


def _payloads(ike: bytes):
    """(type, start, length) of each payload in the chain after the IKE header."""
    kind, at = ike[16], 28
    while kind and at + 4 <= len(ike):
        length = struct.unpack("!H", ike[at + 2:at + 4])[0]
        yield kind, at, length
        kind, at = ike[at], at + length


def _with_ike(packet, found, ike: bytes):
    data, offset = found
    q = packet.copy()
    q[UDP].remove_payload()
    q[UDP].add_payload(Raw(data[:offset] + ike[:24] + struct.pack("!I", len(ike)) + ike[28:]))
    del q[UDP].len, q[UDP].chksum
    if IP in q:
        del q[IP].len, q[IP].chksum
    if IPv6 in q:
        del q[IPv6].plen
    q.time = packet.time
    return q


def add_transform(packet, transform_type: int, transform_id: int, *, before_type: int):
    """The IKE_SA_INIT packet with one more transform in its first proposal, placed on the
    wire before the first transform of `before_type` (RFC 7296 section 3.3: order is free)."""
    found = _ike_bytes(packet)
    data, offset = found
    ike = bytearray(data[offset:])
    sa = next(start for kind, start, _ in _payloads(bytes(ike)) if kind == 33)
    proposal = sa + 4
    count = ike[proposal + 7]
    at = proposal + 8 + ike[proposal + 6]  # after the SPI
    transforms = []
    for _ in range(count):
        length = struct.unpack("!H", ike[at + 2:at + 4])[0]
        transforms.append(bytes(ike[at:at + length]))
        at += length
    new = bytes([3, 0]) + struct.pack("!HBBH", 8, transform_type, 0, transform_id)
    index = next(i for i, t in enumerate(transforms) if t[4] == before_type)
    transforms.insert(index, new)
    body = b"".join(bytes([0 if i == len(transforms) - 1 else 3]) + t[1:] for i, t in enumerate(transforms))
    start = proposal + 8 + ike[proposal + 6]
    end = at
    ike[start:end] = body
    grow = 8
    ike[proposal + 7] = count + 1
    ike[proposal + 2:proposal + 4] = struct.pack("!H", struct.unpack("!H", ike[proposal + 2:proposal + 4])[0] + grow)
    ike[sa + 2:sa + 4] = struct.pack("!H", struct.unpack("!H", ike[sa + 2:sa + 4])[0] + grow)
    return _with_ike(packet, found, bytes(ike))


def add_notify(packet, notify_type: int):
    """The IKE packet with a status Notify payload (no SPI, no data) first in its chain."""
    found = _ike_bytes(packet)
    data, offset = found
    ike = data[offset:]
    notify = bytes([ike[16], 0]) + struct.pack("!HBBH", 8, 0, 0, notify_type)
    ike = ike[:16] + bytes([41]) + ike[17:28] + notify + ike[28:]
    return _with_ike(packet, found, ike)


def edited(packets, edit, *, exchange: int, response: bool | None = None) -> list:
    """Every packet with `edit` applied to those carrying the given exchange."""
    out = []
    for p, h in zip(packets, ike_headers(packets)):
        hit = h is not None and h[0] == exchange and _ike_bytes(p) is not None and (
            response is None or bool(h[1] & FLAG_RESPONSE) == response)
        out.append(edit(p) if hit else p)
    return out
