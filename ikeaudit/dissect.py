"""IKE datagrams to dissected messages, through Scapy's IKEv2 layers.

This is the only stage that touches Scapy packets, and none leaves it: it hands on
ints, bytes and names in `IkeMessage` records. Scapy does not complain about bad
lengths (a message whose header says 1,232 bytes but carries 45 still dissects),
so every length is checked here and a contradiction becomes an `Anomaly` on the
message, or a `Malformed` record when nothing trustworthy is left.
"""

from __future__ import annotations

import hashlib

from scapy.layers.isakmp import ISAKMP
from scapy.packet import Packet

from ikeaudit import iana
from ikeaudit.layers import (
    IKEv2,
    IKEv2_Encrypted,
    IKEv2_Encrypted_Fragment,
    IKEv2_KE,
    IKEv2_Notify,
    IKEv2_Payload,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2_VendorID,
)
from ikeaudit.records import (
    Anomaly,
    IkeDatagram,
    Ikev1Message,
    IkeMessage,
    KeyExchange,
    Malformed,
    Notify,
    Proposal,
    Transform,
)

IKE_HEADER_LENGTH = 28
# A legitimate message has a few dozen payloads at most; a longer chain is hostile
# and would also drive Scapy's recursive dissection into the recursion limit.
MAX_PAYLOADS = 128
MAX_PROPOSALS = 64
MAX_TRANSFORMS = 256


def dissect(datagram: IkeDatagram) -> IkeMessage | Ikev1Message | Malformed:
    data = datagram.payload
    if len(data) < IKE_HEADER_LENGTH:
        return _malformed(datagram, f"{len(data)} bytes is shorter than an IKE header")
    if datagram.ike_version == 1:
        return _ikev1(datagram)
    try:
        packet = IKEv2(data)
    except Exception as exc:  # Scapy raises whatever its fields raise on hostile bytes
        return _malformed(datagram, f"IKEv2 header does not dissect: {exc.__class__.__name__}")
    if not isinstance(packet, IKEv2):
        return _malformed(datagram, f"not an IKEv2 header (version byte 0x{data[17]:02x})")
    try:
        return _ikev2(datagram, packet)
    except RecursionError:
        return _malformed(datagram, "payload chain too deep to dissect")
    except Exception as exc:
        return _malformed(datagram, f"payloads do not dissect: {exc.__class__.__name__}: {exc}")


def _malformed(datagram: IkeDatagram, detail: str) -> Malformed:
    return Malformed(datagram.frame, datagram.timestamp, datagram.src, datagram.dst,
                     datagram.sport, datagram.dport,
                     Anomaly("malformed", detail, datagram.frame))


def _ikev1(datagram: IkeDatagram) -> Ikev1Message:
    h = ISAKMP(datagram.payload[:IKE_HEADER_LENGTH])
    return Ikev1Message(
        frame=datagram.frame, timestamp=datagram.timestamp, ip_version=datagram.ip_version,
        src=datagram.src, dst=datagram.dst, sport=datagram.sport, dport=datagram.dport,
        transport=datagram.transport, udp_payload_length=datagram.udp_payload_length,
        spi_i=bytes(h.init_cookie).hex(), spi_r=bytes(h.resp_cookie).hex(),
        exchange=int(h.exch_type), flags=int(h.flags), message_id=int(h.id), length=int(h.length),
    )


class _Walk:
    """Accumulates what one message's clear payloads say."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.payload_types: list[int] = []
        self.proposals: list[Proposal] = []
        self.key_exchange: KeyExchange | None = None
        self.notifies: list[Notify] = []
        self.vendor_ids: list[bytes] = []
        self.fragment: tuple[int, int] | None = None
        self.encrypted_length = 0
        self.anomalies: list[Anomaly] = []

    def anomaly(self, kind: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, detail, self.frame))


def _ikev2(datagram: IkeDatagram, packet: Packet) -> IkeMessage:
    walk = _Walk(datagram.frame)
    declared = int(packet.length)
    present = len(datagram.payload)
    if declared != present:
        kind = "incomplete" if declared > present else "malformed"
        walk.anomaly(kind, f"IKE header length {declared} but {present} bytes present")
    _walk_payloads(packet, int(packet.next_payload), min(declared, present), present, walk)
    return IkeMessage(
        frame=datagram.frame, frames=datagram.frames, timestamp=datagram.timestamp,
        first_timestamp=datagram.first_timestamp, ip_version=datagram.ip_version,
        src=datagram.src, dst=datagram.dst, sport=datagram.sport, dport=datagram.dport,
        transport=datagram.transport, non_esp_marker=datagram.non_esp_marker,
        ip_length=datagram.ip_length, ip_fragment_lengths=datagram.ip_fragment_lengths,
        udp_payload_length=datagram.udp_payload_length,
        spi_i=bytes(packet.init_SPI).hex(), spi_r=bytes(packet.resp_SPI).hex(),
        exchange=int(packet.exch_type), flags=int(packet.flags), message_id=int(packet.id),
        length=declared, payload_types=tuple(walk.payload_types), proposals=tuple(walk.proposals),
        key_exchange=walk.key_exchange, notifies=tuple(walk.notifies),
        vendor_ids=tuple(walk.vendor_ids), fragment=walk.fragment,
        encrypted_length=walk.encrypted_length,
        digest=hashlib.blake2b(datagram.payload, digest_size=16).digest(),
        anomalies=tuple(walk.anomalies),
    )


def _walk_payloads(packet: Packet, first_type: int, available: int, present: int, walk: _Walk) -> None:
    """Follow the Next Payload chain, checking each length against the bytes left.

    available is what the IKE header's Length admits, present what was captured: a
    payload running past the header's length is malformed; past the captured bytes,
    incomplete."""
    layer = packet.payload
    payload_type = first_type
    remaining = available - IKE_HEADER_LENGTH
    beyond = present - available
    while payload_type != 0:
        if len(walk.payload_types) >= MAX_PAYLOADS:
            walk.anomaly("malformed", f"more than {MAX_PAYLOADS} payloads")
            return
        if not isinstance(layer, IKEv2_Payload):
            walk.anomaly("malformed", f"payload {iana.payload_name(payload_type)} announced "
                                      f"but {remaining} bytes left")
            return
        walk.payload_types.append(payload_type)
        length = int(layer.length or 0)
        if length < 4:
            walk.anomaly("malformed", f"{iana.payload_name(payload_type)} payload length {length}")
            return
        if length > remaining:
            kind = "incomplete" if length > remaining + beyond else "malformed"
            walk.anomaly(kind, f"{iana.payload_name(payload_type)} payload length {length} "
                               f"but the message has {remaining} bytes left")
        _read_payload(payload_type, layer, walk)
        if payload_type in (iana.PAYLOAD_SK, iana.PAYLOAD_SKF):
            # Its Next Payload names the first payload inside the ciphertext, not a successor.
            remaining -= length
            break
        remaining -= length
        payload_type = int(layer.next_payload or 0)
        layer = layer.payload
    if remaining > 0:
        walk.anomaly("malformed", f"{remaining} bytes after the last payload")


def _read_payload(payload_type: int, layer: Packet, walk: _Walk) -> None:
    if isinstance(layer, IKEv2_SA):
        walk.proposals.extend(_proposals(layer, walk))
    elif isinstance(layer, IKEv2_KE):
        if walk.key_exchange is not None:
            walk.anomaly("malformed", "more than one KE payload")
        walk.key_exchange = KeyExchange(int(layer.group), max(int(layer.length) - 8, 0))
    elif isinstance(layer, IKEv2_Notify):
        # The raw notification data, whatever sub-fields Scapy split it into (REDIRECT).
        start = 8 + int(layer.SPIsize or 0)
        data = bytes(layer)[start:max(int(layer.length), start)]
        walk.notifies.append(Notify(int(layer.type), int(layer.proto or 0), data))
    elif isinstance(layer, IKEv2_VendorID):
        walk.vendor_ids.append(bytes(layer.vendorID))
    elif isinstance(layer, IKEv2_Encrypted_Fragment):
        walk.fragment = (int(layer.frag_number), int(layer.frag_total))
        walk.encrypted_length = max(int(layer.length) - 8, 0)
        if not 1 <= walk.fragment[0] <= walk.fragment[1]:
            walk.anomaly("malformed", f"SKF fragment {walk.fragment[0]} of {walk.fragment[1]}")
    elif isinstance(layer, IKEv2_Encrypted):
        walk.encrypted_length = max(int(layer.length) - 4, 0)


def _proposals(sa: Packet, walk: _Walk) -> list[Proposal]:
    proposals: list[Proposal] = []
    layer = sa.prop
    while isinstance(layer, IKEv2_Proposal):
        if len(proposals) >= MAX_PROPOSALS:
            walk.anomaly("malformed", f"more than {MAX_PROPOSALS} proposals")
            break
        transforms = _transforms(layer, walk)
        if layer.trans_nb is not None and int(layer.trans_nb) != len(transforms):
            walk.anomaly("malformed", f"proposal #{layer.proposal} announces {layer.trans_nb} "
                                      f"transforms, carries {len(transforms)}")
        proposals.append(Proposal(int(layer.proposal), int(layer.proto),
                                  bytes(layer.SPI or b"").hex(), tuple(transforms)))
        if int(layer.next_payload or 0) != 2:
            break
        layer = layer.payload
    if not proposals:
        walk.anomaly("malformed", "SA payload without a proposal")
    return proposals


def _transforms(proposal: Packet, walk: _Walk) -> list[Transform]:
    transforms: list[Transform] = []
    layer = proposal.trans
    while isinstance(layer, IKEv2_Transform):
        if len(transforms) >= MAX_TRANSFORMS:
            walk.anomaly("malformed", f"more than {MAX_TRANSFORMS} transforms in a proposal")
            break
        key_length = layer.key_length if int(layer.length or 0) > 8 else None
        transforms.append(Transform(int(layer.transform_type), int(layer.transform_id),
                                    None if key_length is None else int(key_length)))
        if int(layer.next_payload or 0) != 3:
            break
        layer = layer.payload
    return transforms
