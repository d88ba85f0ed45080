"""What large ML-KEM payloads do to message sizes and fragmentation.

Two views of one negotiation, both pure functions of `Negotiation` records:

* observed: which messages arrived IP-fragmented, IKE-fragmented (RFC 7383) or both,
  how long the handshake took and how many round trips it needed, and whether
  fragmented requests were retransmitted into silence (a fragmentation black hole);
* what-if: for a set of path MTUs, IPv4 and IPv6, UDP 500 and 4500, which messages
  would be IP-fragmented, and how many IKE fragments each would need.

Sizes are computed from header sizes (RFC 791, RFC 8200, RFC 768, RFC 3948,
RFC 7296 section 3.14, RFC 7383 section 2.5), never from a table of captured sizes.
An IKE-fragmented message's unfragmented size is reconstructed from its fragments and
the negotiated cipher's IV, block and ICV sizes; CBC padding is unknowable from
outside, so that figure may exceed the truth by less than one cipher block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ikeaudit import iana
from ikeaudit.records import Finding, Negotiation, Proposal, TrackedMessage

IPV4_HEADER = 20
IPV6_HEADER = 40
IPV6_FRAGMENT_HEADER = 8
UDP_HEADER = 8
NON_ESP_MARKER = len(iana.NON_ESP_MARKER)
IKE_HEADER, SK_HEADER, SKF_HEADER = iana.IKE_HEADER_LENGTH, iana.SK_HEADER, iana.SKF_HEADER
PAD_LENGTH_FIELD = 1

DEFAULT_MTUS = (1500, 1492, 1400, 1280)
HANDSHAKE_EXCHANGES = (iana.IKE_SA_INIT, iana.IKE_INTERMEDIATE, iana.IKE_AUTH)


@dataclass(frozen=True, slots=True)
class SkOverhead:
    iv: int
    block: int
    icv: int


def sk_overhead(chosen: Proposal | None) -> SkOverhead | None:
    """IV, padding block and ICV of the SK payload under the chosen IKE proposal."""
    if chosen is None:
        return None
    encr = chosen.ids(iana.TRANSFORM_ENCR)
    sizes = iana.ENCRYPTION_SIZES.get(encr[0]) if encr else None
    if sizes is None:
        return None
    icv = sizes.icv
    if icv is None:
        integ = chosen.ids(iana.TRANSFORM_INTEG)
        icv = iana.INTEGRITY_ICV_BYTES.get(integ[0]) if integ else None
    if icv is None:
        return None
    return SkOverhead(sizes.iv, sizes.block, icv)


def is_encrypted(message: TrackedMessage) -> bool:
    return bool(message.payload_types) and message.payload_types[-1] in (iana.PAYLOAD_SK, iana.PAYLOAD_SKF)


def plaintext_bytes(message: TrackedMessage, overhead: SkOverhead) -> int:
    """Upper bound of the inner payload bytes of an encrypted message (padding assumed 0)."""
    header = SKF_HEADER if message.ike_fragments else SK_HEADER
    return sum(max(length - IKE_HEADER - header - overhead.iv - overhead.icv - PAD_LENGTH_FIELD, 0)
               for length in message.ike_lengths)


# The smallest overhead any cipher adds to an SK payload (no IV, no ICV): with the
# cipher unknown, a plaintext bound computed with it can only be too large, so what it
# excludes is excluded whatever the cipher.
NO_OVERHEAD = SkOverhead(0, 1, 0)


def plaintext_upper_bound(message: TrackedMessage, overhead: SkOverhead | None) -> int:
    """Most inner payload bytes an encrypted message can hold: with the negotiated
    cipher's overhead, or the smallest possible when it is unknown."""
    return plaintext_bytes(message, overhead or NO_OVERHEAD)


def unfragmented_ike_bytes(message: TrackedMessage, overhead: SkOverhead | None) -> int | None:
    """The IKE message as it would be without RFC 7383 fragmentation; None when the
    cipher is unknown and the message was IKE-fragmented."""
    if not message.ike_fragments:
        return message.ike_bytes
    if overhead is None or not message.complete:
        return None
    inner = plaintext_bytes(message, overhead)
    padded = math.ceil((inner + PAD_LENGTH_FIELD) / overhead.block) * overhead.block
    return IKE_HEADER + SK_HEADER + overhead.iv + padded + overhead.icv


def ip_header(ip_version: int) -> int:
    return IPV4_HEADER if ip_version == 4 else IPV6_HEADER


def marker(port: int) -> int:
    return NON_ESP_MARKER if port == iana.NAT_T_PORT else 0


def ip_fragment_count(udp_payload: int, mtu: int, ip_version: int) -> int:
    """Fragments a sender makes of one UDP datagram on a link of this MTU."""
    ip_payload = UDP_HEADER + udp_payload
    if ip_header(ip_version) + ip_payload <= mtu:
        return 1
    # Every fragment but the last carries a multiple of 8 bytes (RFC 791, RFC 8200).
    room = mtu - ip_header(ip_version) - (IPV6_FRAGMENT_HEADER if ip_version == 6 else 0)
    per_fragment = room // 8 * 8
    if per_fragment <= 0:
        raise ValueError(f"MTU {mtu} cannot carry an IPv{ip_version} fragment")
    return math.ceil(ip_payload / per_fragment)


def ike_fragment_capacity(fragment_size: int, ip_version: int, port: int, overhead: SkOverhead) -> int:
    """Inner payload bytes one SKF fragment carries when its IP datagram is fragment_size
    bytes at most (how strongSwan's fragment_size and RFC 7383 section 2.5 count)."""
    room = (fragment_size - ip_header(ip_version) - UDP_HEADER - marker(port) - IKE_HEADER
            - SKF_HEADER - overhead.iv - overhead.icv)
    return room // overhead.block * overhead.block - PAD_LENGTH_FIELD


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One message on one hypothetical path."""

    exchange: int
    message_id: int
    response: bool
    mtu: int
    ip_version: int
    port: int
    ike_bytes: int  # unfragmented IKE message
    udp_payload_bytes: int
    ip_datagram_bytes: int
    ip_fragments: int  # sent whole: 1 means it fits
    ike_fragmentable: bool  # encrypted, and both peers announced IKEV2_FRAGMENTATION_SUPPORTED
    ike_fragments: int | None  # fragments needed at fragment_size; None when not fragmentable
    ike_fragment_ip_fragments: int | None  # IP fragments of the largest IKE fragment
    fragment_size: int

    @property
    def ip_fragmented(self) -> bool:
        return self.ip_fragments > 1


def what_if(n: Negotiation, mtus: Iterable[int] = DEFAULT_MTUS, *, ip_versions=(4, 6),
            ports=tuple(sorted(iana.IKE_PORTS)), fragment_size: int | None = None) -> list[WhatIf]:
    overhead = sk_overhead(n.chosen)
    both_support = fragmentation_supported(n) == (True, True)
    mtus, ip_versions, ports = tuple(mtus), tuple(ip_versions), tuple(ports)
    rows: list[WhatIf] = []
    for m in n.messages:
        ike = unfragmented_ike_bytes(m, overhead)
        if ike is None:
            continue
        # A row depends on the message only through these: a gateway's clients send
        # messages of the same sizes over and over (20 rows a message, 160 a negotiation).
        key = (m.exchange, m.message_id, m.response, is_encrypted(m), ike, mtus, ip_versions, ports, fragment_size,
               overhead, both_support)
        found = _ROWS.get(key)
        if found is None:
            found = tuple(_what_if_row(m, ike, mtu, ip_version, port, fragment_size or mtu, overhead, both_support)
                          for mtu in mtus for ip_version in ip_versions for port in ports)
            if len(_ROWS) >= _ROWS_KEPT:
                _ROWS.clear()
            _ROWS[key] = found
        rows.extend(found)
    return rows


_ROWS: dict[tuple, tuple[WhatIf, ...]] = {}  # what_if's rows by what they depend on
_ROWS_KEPT = 4096


def _what_if_row(m: TrackedMessage, ike: int, mtu: int, ip_version: int, port: int,
                 fragment_size: int, overhead: SkOverhead | None, both_support: bool) -> WhatIf:
    udp = ike + marker(port)
    fragmentable = both_support and is_encrypted(m) and overhead is not None
    needed = largest_piece_ip = None
    if fragmentable:
        inner = plaintext_bytes_of_unfragmented(ike, overhead)
        capacity = ike_fragment_capacity(fragment_size, ip_version, port, overhead)
        if capacity > 0:
            needed = max(1, math.ceil(inner / capacity))
            piece = fragment_size if needed > 1 else udp + UDP_HEADER + ip_header(ip_version)
            largest_piece_ip = ip_fragment_count(piece - UDP_HEADER - ip_header(ip_version), mtu, ip_version)
    return WhatIf(m.exchange, m.message_id, m.response, mtu, ip_version, port, ike, udp,
                  udp + UDP_HEADER + ip_header(ip_version), ip_fragment_count(udp, mtu, ip_version),
                  fragmentable, needed, largest_piece_ip, fragment_size)


def plaintext_bytes_of_unfragmented(ike: int, overhead: SkOverhead) -> int:
    return ike - IKE_HEADER - SK_HEADER - overhead.iv - overhead.icv - PAD_LENGTH_FIELD


def fragmentation_supported(n: Negotiation) -> tuple[bool, bool]:
    """(initiator, responder). IKE fragments on the wire prove both announced it
    (RFC 7383 section 2.3), even when their IKE_SA_INIT was not captured."""
    if n.fragments_seen:
        return True, True
    return (iana.IKEV2_FRAGMENTATION_SUPPORTED in n.initiator_notifies,
            iana.IKEV2_FRAGMENTATION_SUPPORTED in n.responder_notifies)


def intermediate_supported(n: Negotiation) -> tuple[bool, bool]:
    """(initiator, responder). An IKE_INTERMEDIATE exchange on the wire proves both
    announced it (RFC 9242 section 3), even when their IKE_SA_INIT was not captured."""
    if n.intermediate_seen:
        return True, True
    return (iana.INTERMEDIATE_EXCHANGE_SUPPORTED in n.initiator_notifies,
            iana.INTERMEDIATE_EXCHANGE_SUPPORTED in n.responder_notifies)


@dataclass(frozen=True, slots=True)
class FragmentationProfile:
    """What the capture shows of one negotiation's sizes and fragmentation."""

    fragmentation_supported: tuple[bool, bool]  # (initiator, responder)
    largest_message: TrackedMessage | None
    ip_fragmented: tuple[TrackedMessage, ...]
    ike_fragmented: tuple[TrackedMessage, ...]
    sa_init_ip_fragmented: bool
    handshake_seconds: float | None  # first IKE_SA_INIT request to the IKE_AUTH response
    round_trips: int | None  # request/response exchanges until IKE_AUTH completed
    handshake_retransmissions: int
    black_hole_suspected: bool
    findings: tuple[Finding, ...]


def profile(n: Negotiation) -> FragmentationProfile:
    messages = list(n.messages)
    largest = max(messages, key=lambda m: (sum(m.udp_payload_bytes), -m.first_frame), default=None)
    ip_fragmented = tuple(m for m in messages if m.ip_fragmented)
    ike_fragmented = tuple(m for m in messages if m.ike_fragments)
    seconds, trips, retransmissions = _handshake(messages)
    black_holes = _black_holes(messages)
    findings = [Finding("high", "fragmentation-black-hole", text) for text in black_holes]
    sa_init_fragmented = any(m.exchange == iana.IKE_SA_INIT for m in ip_fragmented)
    if sa_init_fragmented:
        findings.append(Finding("medium", "sa-init-ip-fragmented",
                                "IKE_SA_INIT was IP-fragmented: RFC 7383 cannot fragment it, and "
                                "paths that drop IP fragments will stall this negotiation"))
    supported = fragmentation_supported(n)
    encrypted_fragmented = [m for m in ip_fragmented if is_encrypted(m)]
    if encrypted_fragmented and supported != (True, True):
        findings.append(Finding("medium", "ike-fragmentation-not-negotiated",
                                f"{len(encrypted_fragmented)} encrypted message(s) IP-fragmented "
                                "because IKEV2_FRAGMENTATION_SUPPORTED was not sent by both peers"))
    return FragmentationProfile(supported, largest, ip_fragmented, ike_fragmented, sa_init_fragmented,
                                seconds, trips, retransmissions, bool(black_holes), tuple(findings))


def _handshake(messages: list[TrackedMessage]) -> tuple[float | None, int | None, int]:
    handshake = [m for m in messages if m.exchange in HANDSHAKE_EXCHANGES]
    retransmissions = sum(m.retransmissions for m in handshake)
    starts = [m.first_timestamp for m in handshake if m.exchange == iana.IKE_SA_INIT and not m.response]
    auth_done = [m for m in handshake if m.exchange == iana.IKE_AUTH and m.response]
    if not starts or not auth_done:
        return None, None, retransmissions
    end = max(m.last_timestamp if m.retransmissions == 0 else m.first_timestamp for m in auth_done)
    trips = sum(1 for m in handshake if not m.response and m.first_timestamp <= end)
    return end - min(starts), trips, retransmissions


def _black_holes(messages: list[TrackedMessage]) -> list[str]:
    """Fragmented requests sent again and again while no answer ever came back."""
    answered = {(m.message_id, m.from_initiator) for m in messages if m.response}
    found = []
    for m in messages:
        if m.response or m.retransmissions == 0 or (m.message_id, not m.from_initiator) in answered:
            continue
        if m.ip_fragmented or m.ike_fragments:
            kind = "IP-fragmented" if m.ip_fragmented else "IKE-fragmented"
            found.append(f"{iana.exchange_name(m.exchange)} request (message id {m.message_id}, "
                         f"{sum(m.udp_payload_bytes)} bytes, {kind}) sent {m.retransmissions + 1} times "
                         "without an answer: fragments are probably dropped on the path")
    return found
