"""IKE datagrams to dissected messages, through Scapy's IKEv2 layers.

This is the only stage that touches Scapy packets, and none leaves it: it hands on
ints, bytes and names in `IkeMessage` records. Scapy does not complain about bad
lengths (a message whose header says 1,232 bytes but carries 45 still dissects),
so every length is checked here and a contradiction becomes an `Anomaly` on the
message, or a `Malformed` record when nothing trustworthy is left.

Given a key table, the SK payload is opened (`ikeaudit.decrypt`) and its plaintext
dissected by the very code that reads clear payloads. SKF fragments are opened one by
one here; `InnerReassembly` joins their plaintexts once every fragment has come and
dissects the whole (RFC 7383 section 2.6).

Scapy is imported when a message first needs it: a payload layout not met before (the
layouts of earlier runs are handed in by the pipeline, `learn_layouts`), a message the
hot path does not take, or scapy=True.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from dataclasses import replace
from operator import attrgetter
from typing import TYPE_CHECKING

from ikeaudit import decrypt, fastdissect, iana
from ikeaudit.records import (
    Anomaly,
    Authentication,
    Certificate,
    CertificateRequest,
    Decryption,
    Identification,
    IkeDatagram,
    Ikev1Message,
    Ikev1Proposal,
    Ikev1Transform,
    IkeMessage,
    InnerPayloads,
    KeyExchange,
    Malformed,
    Notify,
    Proposal,
    Transform,
)

if TYPE_CHECKING:
    from scapy.packet import Packet

# Scapy's layers (ikeaudit.layers), imported by _load_scapy() when a message needs them:
# the hot path needs them only for a payload layout it has not met (see learn_layouts).
ISAKMP = IKEv2 = IKEv2_AUTH = IKEv2_CERT = IKEv2_CERTREQ = IKEv2_Encrypted = IKEv2_Encrypted_Fragment = None
IKEv2_IDi = IKEv2_IDr = IKEv2_KE = IKEv2_Notify = IKEv2_Payload = IKEv2_Proposal = IKEv2_SA = None
IKEv2_Transform = IKEv2_VendorID = None


def _load_scapy() -> None:
    """Scapy's layers into this module's names, once (half a second and 25 MB of Scapy)."""
    global ISAKMP, IKEv2, IKEv2_AUTH, IKEv2_CERT, IKEv2_CERTREQ, IKEv2_Encrypted, IKEv2_Encrypted_Fragment
    global IKEv2_IDi, IKEv2_IDr, IKEv2_KE, IKEv2_Notify, IKEv2_Payload, IKEv2_Proposal, IKEv2_SA
    global IKEv2_Transform, IKEv2_VendorID
    if IKEv2 is not None:
        return
    from ikeaudit import layers  # first of Scapy's layers: see layers.py on routing tables

    ISAKMP, IKEv2_AUTH, IKEv2_CERT, IKEv2_CERTREQ = layers.ISAKMP, layers.IKEv2_AUTH, layers.IKEv2_CERT, \
        layers.IKEv2_CERTREQ
    IKEv2_Encrypted, IKEv2_Encrypted_Fragment = layers.IKEv2_Encrypted, layers.IKEv2_Encrypted_Fragment
    IKEv2_IDi, IKEv2_IDr, IKEv2_KE, IKEv2_Notify = layers.IKEv2_IDi, layers.IKEv2_IDr, layers.IKEv2_KE, \
        layers.IKEv2_Notify
    IKEv2_Payload, IKEv2_Proposal, IKEv2_SA = layers.IKEv2_Payload, layers.IKEv2_Proposal, layers.IKEv2_SA
    IKEv2_Transform, IKEv2_VendorID = layers.IKEv2_Transform, layers.IKEv2_VendorID
    IKEv2 = layers.IKEv2  # last: it says the others are set


IKE_HEADER_LENGTH = iana.IKE_HEADER_LENGTH
# A legitimate message has a few dozen payloads at most; a longer chain is hostile
# and would also drive Scapy's recursive dissection into the recursion limit.
MAX_PAYLOADS = 128
# The hot path hands a longer chain to Scapy: so far under MAX_PAYLOADS that Scapy's
# recursion never decides a message the hot path would have read.
FAST_MAX_PAYLOADS = 48
MAX_PROPOSALS = 64
MAX_TRANSFORMS = 256
# Decrypted SKF shares held per message: a Total Fragments of 65,535 must not make one
# message hold 65,535 plaintexts (the tracker keeps the same number of fragments).
MAX_INNER_FRAGMENTS = 128
SK_HEADER, SKF_HEADER = iana.SK_HEADER, iana.SKF_HEADER
KE_HEADER = iana.PAYLOAD_FIXED_LENGTHS[iana.PAYLOAD_KE]
ID_HEADER = iana.PAYLOAD_FIXED_LENGTHS[iana.PAYLOAD_IDI]
CERT_HEADER = iana.PAYLOAD_FIXED_LENGTHS[iana.PAYLOAD_CERT]  # CERT and CERTREQ: 1-byte encoding
AUTH_HEADER = iana.PAYLOAD_FIXED_LENGTHS[iana.PAYLOAD_AUTH]
NOTIFY_HEADER = iana.PAYLOAD_FIXED_LENGTHS[iana.PAYLOAD_NOTIFY]
# True: every message is dissected by Scapy alone, payload after payload, as the
# differential test's reference; `dissect(..., scapy=...)` decides per call.
SCAPY_ONLY = False
# Layouts of distinct payload prefixes held (a few hundred on a busy gateway), of SA
# payloads, and the largest SA payload whose dissection is kept: the caches stay at a
# few MB even when hostile input fills them.
LAYOUT_CACHE = 4096
SA_LAYOUT_CACHE = 512
CACHED_SA_BYTES = 2048
SHARED_NOTIFY_BYTES = 16  # notify data up to this size is shared between equal notifies (not NAT-D hashes)


def dissect(datagram: IkeDatagram, keys: decrypt.KeyTable | None = None, *,
            scapy: bool | None = None) -> IkeMessage | Ikev1Message | Malformed:
    """keys: a key table to open SK/SKF payloads with; None leaves them encrypted.

    A message whose structure is clean goes through the hot path: `fastdissect` reads the
    header and the payload chain, and each payload's fields come from Scapy's dissection
    of its layout, kept per distinct layout (`_layout`). Anything else, or scapy=True
    (default: SCAPY_ONLY), is dissected by Scapy as a whole. Both give the same record
    (tests/test_differential.py)."""
    data = datagram.payload
    if len(data) < IKE_HEADER_LENGTH:
        return _malformed(datagram, f"{len(data)} bytes is shorter than an IKE header")
    scapy = SCAPY_ONLY if scapy is None else scapy
    if datagram.ike_version == 1:
        return _ikev1(datagram, scapy)
    if not scapy:
        walk = _fast(data, datagram.frame)
        if walk is not None:
            return _message(datagram, walk, keys, scapy)
    _load_scapy()
    try:
        packet = IKEv2(data)
    except Exception as exc:  # Scapy raises whatever its fields raise on hostile bytes
        return _malformed(datagram, f"IKEv2 header does not dissect: {exc.__class__.__name__}")
    if not isinstance(packet, IKEv2):
        return _malformed(datagram, f"not an IKEv2 header (version byte 0x{data[17]:02x})")
    try:
        return _ikev2(datagram, packet, keys, scapy)
    except RecursionError:
        return _malformed(datagram, "payload chain too deep to dissect")
    except Exception as exc:
        return _malformed(datagram, f"payloads do not dissect: {exc.__class__.__name__}: {exc}")


def _malformed(datagram: IkeDatagram, detail: str) -> Malformed:
    return Malformed(datagram.frame, datagram.timestamp, datagram.src, datagram.dst,
                     datagram.sport, datagram.dport,
                     Anomaly("malformed", detail, datagram.frame))


def _ikev1(datagram: IkeDatagram, scapy: bool) -> Ikev1Message:
    if scapy:
        _load_scapy()
        h = ISAKMP(datagram.payload[:IKE_HEADER_LENGTH])
        spi_i, spi_r, next_payload, exchange = bytes(h.init_cookie), bytes(h.resp_cookie), int(h.next_payload), \
            int(h.exch_type)
        flags, message_id, declared = int(h.flags), int(h.id), int(h.length)
    else:  # the same 28 bytes with struct (tests/test_differential.py holds them to Scapy's)
        spi_i, spi_r, next_payload, _, exchange, flags, message_id, declared = fastdissect.ike_header(datagram.payload)
    walk = _Ikev1Walk(datagram.frame)
    present = len(datagram.payload)
    if declared != present:
        kind = "incomplete" if declared > present else "malformed"
        walk.anomaly(kind, f"ISAKMP header length {declared} but {present} bytes present")
    if not flags & 0x01:  # with the E bit set every payload is ciphertext
        end = min(declared, present) if declared >= IKE_HEADER_LENGTH else present
        _ikev1_payloads(datagram.payload[:end], next_payload, walk)
    return Ikev1Message(
        frame=datagram.frame, timestamp=datagram.timestamp, ip_version=datagram.ip_version,
        src=datagram.src, dst=datagram.dst, sport=datagram.sport, dport=datagram.dport,
        transport=datagram.transport, udp_payload_length=datagram.udp_payload_length,
        spi_i=spi_i.hex(), spi_r=spi_r.hex(),
        exchange=exchange, flags=flags, message_id=message_id, length=declared,
        payload_types=tuple(walk.payload_types), proposals=tuple(walk.proposals),
        vendor_ids=tuple(walk.vendor_ids), ke_length=walk.ke_length,
        notify_types=tuple(walk.notify_types), anomalies=tuple(walk.anomalies),
    )


class _Ikev1Walk:
    """What one IKEv1 message's clear payloads say."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.payload_types: list[int] = []
        self.proposals: list[Ikev1Proposal] = []
        self.vendor_ids: list[bytes] = []
        self.ke_length: int | None = None
        self.notify_types: list[int] = []
        self.anomalies: list[Anomaly] = []

    def anomaly(self, kind: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, detail, self.frame))


def _ikev1_chain(data: bytes, start: int, first_type: int, walk: _Ikev1Walk, what: str):
    """Yield (type, body) along an ISAKMP generic-header chain (RFC 2408 section 3.2) that
    runs from `start` to the end of `data`; a length that contradicts the bytes ends it
    with an anomaly. Scapy's ISAKMP layers turn attributes into names and accept any
    length, so the chain is read here, where every length is checked."""
    offset, payload_type, count = start, first_type, 0
    while payload_type != 0:
        count += 1
        if count > MAX_PAYLOADS:
            walk.anomaly("malformed", f"more than {MAX_PAYLOADS} {what}s")
            return
        if len(data) - offset < 4:
            walk.anomaly("malformed", f"{what} {payload_type} announced but {len(data) - offset} bytes left")
            return
        next_type, length = data[offset], int.from_bytes(data[offset + 2:offset + 4], "big")
        if length < 4 or offset + length > len(data):
            walk.anomaly("malformed", f"{what} {payload_type} length {length} with "
                                      f"{len(data) - offset} bytes left")
            return
        yield payload_type, data[offset + 4:offset + length]
        offset += length
        payload_type = next_type
    if offset < len(data) and what == "payload":
        walk.anomaly("malformed", f"{len(data) - offset} bytes after the last payload")


def _ikev1_payloads(data: bytes, first_type: int, walk: _Ikev1Walk) -> None:
    for payload_type, body in _ikev1_chain(data, IKE_HEADER_LENGTH, first_type, walk, "payload"):
        walk.payload_types.append(payload_type)
        if payload_type == iana.IKEV1_PAYLOAD_SA:
            _ikev1_sa(body, walk)
        elif payload_type == iana.IKEV1_PAYLOAD_VID:
            walk.vendor_ids.append(body)
        elif payload_type == iana.IKEV1_PAYLOAD_KE:
            walk.ke_length = len(body)
        elif payload_type == iana.IKEV1_PAYLOAD_NOTIFY and len(body) >= 8:
            walk.notify_types.append(int.from_bytes(body[6:8], "big"))


def _ikev1_sa(body: bytes, walk: _Ikev1Walk) -> None:
    # DOI (4), Situation (4 for the IPsec DOI), then Proposal payloads (RFC 2408 3.4, RFC 2407 4.6.1)
    if len(body) <= 8 or int.from_bytes(body[:4], "big") != iana.IKEV1_DOI_IPSEC:
        return  # another DOI, or no proposal at all: nothing to read, nothing contradicted
    before = len(walk.proposals)
    for _, proposal in _ikev1_chain(body, 8, iana.IKEV1_PAYLOAD_PROPOSAL, walk, "proposal"):
        if len(walk.proposals) - before >= MAX_PROPOSALS:
            walk.anomaly("malformed", f"more than {MAX_PROPOSALS} proposals")
            return
        if len(proposal) < 4 or len(proposal) < 4 + proposal[2]:
            walk.anomaly("malformed", "proposal shorter than its SPI")
            return
        number, protocol, spi_size, announced = proposal[0], proposal[1], proposal[2], proposal[3]
        transforms = [_ikev1_transform(t, protocol, walk) for _, t in
                      _ikev1_chain(proposal, 4 + spi_size, iana.IKEV1_PAYLOAD_TRANSFORM, walk, "transform")]
        if len(transforms) != announced:
            walk.anomaly("malformed", f"proposal #{number} announces {announced} transforms, "
                                      f"carries {len(transforms)}")
        walk.proposals.append(Ikev1Proposal(number, protocol, proposal[4:4 + spi_size].hex(),
                                            tuple(transforms[:MAX_TRANSFORMS])))


def _ikev1_transform(body: bytes, protocol: int, walk: _Ikev1Walk) -> Ikev1Transform:
    number, transform_id = (body[0], body[1]) if len(body) >= 2 else (0, 0)
    attributes: list[tuple[int, int]] = []
    offset, broken = 4, False
    while offset + 4 <= len(body):
        kind = int.from_bytes(body[offset:offset + 2], "big")
        if kind & 0x8000:  # AF bit: a 2-byte value in the Length field (TV)
            attributes.append((kind & 0x7FFF, int.from_bytes(body[offset + 2:offset + 4], "big")))
            offset += 4
            continue
        length = int.from_bytes(body[offset + 2:offset + 4], "big")
        if offset + 4 + length > len(body):
            walk.anomaly("malformed", f"transform #{number} attribute {kind} length {length} "
                                      "runs past the transform")
            broken = True
            break
        attributes.append((kind, int.from_bytes(body[offset + 4:offset + 4 + length], "big")))
        offset += 4 + length
    if offset < len(body) and not broken:
        walk.anomaly("malformed", f"transform #{number}: {len(body) - offset} bytes after its attributes")
    return _ikev1_transform_record(number, transform_id, protocol, tuple(attributes))


def _ikev1_transform_record(number: int, transform_id: int, protocol: int,
                            attributes: tuple[tuple[int, int], ...]) -> Ikev1Transform:
    values = dict(attributes)
    phase1 = protocol == iana.IKEV1_PROTO_ISAKMP
    life_type_key, life_key = ((iana.IKEV1_ATTR_LIFE_TYPE, iana.IKEV1_ATTR_LIFE_DURATION) if phase1
                               else (iana.IPSEC_ATTR_LIFE_TYPE, iana.IPSEC_ATTR_LIFE_DURATION))
    lives: dict[int, int] = {}
    life_type = None
    for kind, value in attributes:  # each Life Type is followed by its Life Duration
        if kind == life_type_key:
            life_type = value
        elif kind == life_key and life_type is not None:
            lives[life_type] = value
    if phase1:
        return Ikev1Transform(
            number, transform_id, encryption=values.get(iana.IKEV1_ATTR_ENCRYPTION),
            hash=values.get(iana.IKEV1_ATTR_HASH), auth_method=values.get(iana.IKEV1_ATTR_AUTH_METHOD),
            group=values.get(iana.IKEV1_ATTR_GROUP), key_length=values.get(iana.IKEV1_ATTR_KEY_LENGTH),
            life_seconds=lives.get(iana.IKEV1_LIFE_SECONDS), life_kilobytes=lives.get(iana.IKEV1_LIFE_KILOBYTES),
            attributes=attributes)
    return Ikev1Transform(
        number, transform_id, encryption=transform_id, hash=values.get(iana.IPSEC_ATTR_AUTH_ALGORITHM),
        group=values.get(iana.IPSEC_ATTR_GROUP), key_length=values.get(iana.IPSEC_ATTR_KEY_LENGTH),
        life_seconds=lives.get(iana.IKEV1_LIFE_SECONDS), life_kilobytes=lives.get(iana.IKEV1_LIFE_KILOBYTES),
        attributes=attributes)


class _Walk:
    """Accumulates what one message's header and clear payloads say."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.spi_i = self.spi_r = ""
        self.exchange = self.flags = self.message_id = self.length = 0
        self.payload_types: list[int] = []
        self.proposals: list[Proposal] = []
        self.key_exchange: KeyExchange | None = None
        self.notifies: list[Notify] = []
        self.vendor_ids: list[bytes] = []
        self.fragment: tuple[int, int] | None = None
        self.encrypted_length = 0
        self.encrypted_at: int | None = None  # offset of the SK/SKF payload in the message
        self.encrypted_end = 0
        self.encrypted_next = 0
        self.identifications: list[Identification] = []
        self.auth_method: int | None = None
        self.authentication: Authentication | None = None
        self.certificates: list[Certificate] = []
        self.cert_requests: list[CertificateRequest] = []
        self.anomalies: list[Anomaly] = []

    def anomaly(self, kind: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, detail, self.frame))


def _ikev2(datagram: IkeDatagram, packet: Packet, keys: decrypt.KeyTable | None, scapy: bool) -> IkeMessage:
    walk = _Walk(datagram.frame)
    walk.spi_i, walk.spi_r = bytes(packet.init_SPI).hex(), bytes(packet.resp_SPI).hex()
    walk.exchange, walk.flags, walk.message_id = int(packet.exch_type), int(packet.flags), int(packet.id)
    declared = walk.length = int(packet.length)
    present = len(datagram.payload)
    if declared != present:
        kind = "incomplete" if declared > present else "malformed"
        walk.anomaly(kind, f"IKE header length {declared} but {present} bytes present")
    _walk_payloads(packet, int(packet.next_payload), min(declared, present), present, walk, datagram.payload)
    return _message(datagram, walk, keys, scapy)


def _fast(data: bytes, frame: int) -> _Walk | None:
    """The hot path: the walk of a message whose structure is clean, else None."""
    head = fastdissect.header(data)
    if head is None:
        return None
    payloads = fastdissect.chain(data, head[2], FAST_MAX_PAYLOADS)
    if payloads is None:
        return None
    walk = _Walk(frame)
    for payload_type, offset, length in payloads:
        size = fastdissect.layout_length(payload_type, length)
        if size > length:
            return None
        prefix = data[offset:offset + size]
        if payload_type != iana.PAYLOAD_SA:
            fields = _layout(payload_type, prefix, length)
        elif size <= CACHED_SA_BYTES:
            fields = _sa_layout(payload_type, prefix, length)
        else:
            fields = _layout_of(payload_type, prefix, length)
        if fields is None:
            return None
        _record(payload_type, fields, data, offset, length, walk)
        walk.payload_types.append(payload_type)
    if payloads and payloads[-1][0] in (iana.PAYLOAD_SK, iana.PAYLOAD_SKF):
        _, walk.encrypted_at, length = payloads[-1]
        walk.encrypted_end = walk.encrypted_at + length
        walk.encrypted_next = fields[1]
    spi_i, spi_r, _, walk.exchange, walk.flags, walk.message_id, walk.length = head
    # Interned: the SPIs of every message of an IKE SA in flight are one string each.
    walk.spi_i, walk.spi_r = sys.intern(spi_i.hex()), sys.intern(spi_r.hex())
    return walk


_FILLS = (0x00, 0xFF)
_SENTINEL = b"\x00\x00\x00\x08" * 4  # bytes after the payload: a well-laid-out one leaves them alone


def _layout_of(payload_type: int, prefix: bytes, length: int) -> tuple | None:
    """The fields of a payload of this type and length that starts with `prefix` (its
    layout bytes, fastdissect.layout_length), from Scapy's dissection of such a payload;
    None when Scapy would not lay it out exactly over its Length, whatever its data.

    The data (the rest) is filled with zeros, then with 0xFF, and each time the
    dissection must stop at the payload's end: then the layout depends on the prefix
    alone, and Scapy's layers within a message read the same fields. The data itself is
    taken from the message bytes by `_record`."""
    _load_scapy()
    cls = _payload_class(payload_type)
    fill = length - len(prefix)
    fields = None
    for byte in _FILLS if fill else _FILLS[:1]:
        try:
            layer = cls(prefix + bytes((byte,)) * fill + _SENTINEL)
        except Exception:  # noqa: BLE001 - what Scapy cannot dissect, the slow path reports
            return None
        if len(layer.raw_packet_cache or b"") != length:
            return None
        if fields is None:
            try:
                fields = _fields(layer)
            except Exception:  # noqa: BLE001
                return None
    return fields


# Layouts Scapy gave in an earlier run (learn_layouts), and those it gave in this one
# (take_learned_layouts), each keyed (payload type, layout bytes, length): both bounded as the
# caches below, so hostile input cannot make them grow past a few MB.
_MAX_LAYOUTS = LAYOUT_CACHE + SA_LAYOUT_CACHE
_KNOWN: dict[tuple[int, bytes, int], tuple | None] = {}
_LEARNED: dict[tuple[int, bytes, int], tuple | None] = {}
_UNKNOWN = object()


def _remembered(payload_type: int, prefix: bytes, length: int) -> tuple | None:
    """_layout_of's answer, from an earlier run's Scapy when it gave one."""
    key = (payload_type, prefix, length)
    fields = _KNOWN.get(key, _UNKNOWN)
    if fields is _UNKNOWN:
        fields = _layout_of(payload_type, prefix, length)
        if len(_LEARNED) < _MAX_LAYOUTS:
            _LEARNED[key] = fields
    return fields


# Layouts are few: fixed parts (a few bytes) by the thousand, SA payloads (their proposals
# as records, tens of KB for a hostile one) by the hundred.
_layout = functools.lru_cache(maxsize=LAYOUT_CACHE)(_remembered)
_sa_layout = functools.lru_cache(maxsize=SA_LAYOUT_CACHE)(_remembered)


def clear_caches() -> None:
    """Forget every layout, learned or handed in, and shared notify (tests start cold with it)."""
    _layout.cache_clear()
    _sa_layout.cache_clear()
    _KNOWN.clear()
    _LEARNED.clear()
    _SHARED_NOTIFIES.clear()


def take_learned_layouts() -> list[list] | None:
    """The layouts Scapy gave in this process, newest first, then those handed in, as
    plain values (JSON) for learn_layouts in a later process; None when Scapy gave none
    since the last call (then there is nothing new to keep)."""
    if not _LEARNED:
        return None
    rows = [*_LEARNED.items(), *((k, f) for k, f in _KNOWN.items() if k not in _LEARNED)][:_MAX_LAYOUTS]
    _KNOWN.update(_LEARNED)
    _LEARNED.clear()
    return [[key[0], key[1].hex(), key[2], _plain(fields)] for key, fields in rows]


def learn_layouts(rows: object) -> int:
    """Layouts from take_learned_layouts() of an earlier process running this very code on
    this very Scapy (the caller's to ensure: pipeline keys them by the sources of both).
    A message whose every payload layout is known is read without importing Scapy. A
    row that is not exactly what take_learned_layouts writes is left out. Returns how many
    were taken."""
    if not isinstance(rows, list):
        return 0
    for row in rows:
        if len(_KNOWN) >= _MAX_LAYOUTS:
            break
        try:
            payload_type, prefix, length, fields = row
            key = (_int(payload_type), bytes.fromhex(prefix), _int(length))
            _KNOWN[key] = _fields_of(fields)
        except (TypeError, ValueError):
            continue
    return len(_KNOWN)


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(value)
    return value


def _plain(fields: tuple | None) -> list | None:
    if fields is None or fields[0] != _SA:
        return None if fields is None else list(fields)
    proposals = [[p.number, p.protocol, p.spi, [[t.type, t.id, t.key_length] for t in p.transforms]]
                 for p in fields[1]]
    return [_SA, proposals, list(fields[2])]


def _fields_of(plain: object) -> tuple | None:
    """_plain's inverse, checking every value's type and the tuple's size per kind."""
    if plain is None:
        return None
    if not isinstance(plain, list) or not plain:
        raise ValueError(plain)
    kind = _int(plain[0])
    if kind == _SA:
        _, proposals, details = plain
        if not all(isinstance(d, str) for d in details):
            raise TypeError(details)
        return _SA, tuple(_proposal_of(p) for p in proposals), tuple(details)
    if kind not in _FIELD_COUNTS or len(plain) != _FIELD_COUNTS[kind]:
        raise ValueError(plain)
    return tuple(_int(v) for v in plain)


def _proposal_of(plain: list) -> Proposal:
    number, protocol, spi, transforms = plain
    if not isinstance(spi, str):
        raise TypeError(spi)
    bytes.fromhex(spi)
    return Proposal(_int(number), _int(protocol), spi,
                    tuple(Transform(_int(t), _int(i), None if k is None else _int(k)) for t, i, k in transforms))


@functools.lru_cache(maxsize=None)
def _payload_class(payload_type: int) -> type:
    """The layer Scapy dissects a payload of this type with (its bindings on Next Payload)."""
    return IKEv2_Payload(next_payload=payload_type).guess_payload_class(b"")


def _message(datagram: IkeDatagram, walk: _Walk, keys: decrypt.KeyTable | None, scapy: bool) -> IkeMessage:
    # Positional, in IkeMessage's field order: binding 30 keywords took twice the time of
    # building the record (2.5 us against 0.8), once per IKE datagram.
    message = IkeMessage(
        *_transport_fields(datagram),  # frame .. udp_payload_length
        walk.spi_i, walk.spi_r, walk.exchange, walk.flags, walk.message_id, walk.length,
        tuple(walk.payload_types), tuple(walk.proposals), walk.key_exchange, tuple(walk.notifies),
        tuple(walk.vendor_ids), walk.fragment, walk.encrypted_length,
        # digest: 8 bytes tell a retransmission from another message under the same id and
        # SPIs; random, they are a tenth of what a frozen SA packs (track._Packer).
        hashlib.blake2b(datagram.payload, digest_size=8).digest(),
        tuple(walk.anomalies), walk.encrypted_next,
        cert_requests=tuple(walk.cert_requests),
    )
    if keys is None or walk.encrypted_at is None:
        return message
    return _open(message, datagram.payload, walk, keys, scapy)


# _message's positional order: the fields an IkeMessage takes from its datagram (which
# lead both records alike: frame .. udp_payload_length), then those of its header and payloads.
_TRANSPORT_FIELDS = tuple(f.name for f in dataclasses.fields(IkeDatagram)[:14])
_MESSAGE_FIELDS = ("spi_i", "spi_r", "exchange", "flags", "message_id", "length", "payload_types", "proposals",
                   "key_exchange", "notifies", "vendor_ids", "fragment", "encrypted_length", "digest", "anomalies",
                   "encrypted_next_payload")
if tuple(f.name for f in dataclasses.fields(IkeMessage)[:30]) != (*_TRANSPORT_FIELDS, *_MESSAGE_FIELDS):
    raise ImportError("dissect._message passes IkeMessage's fields by position: their order changed")
_transport_fields = attrgetter(*_TRANSPORT_FIELDS)


def _open(message: IkeMessage, data: bytes, walk: _Walk, keys: decrypt.KeyTable, scapy: bool) -> IkeMessage:
    """Decrypt the SK payload and dissect what it held; for an SKF fragment, decrypt its
    share only, which InnerReassembly joins with the others."""
    fragment = message.fragment
    opened = _decrypt(data, walk, keys)
    decryption = Decryption(opened.status, opened.detail,
                            opened.key_set.origin if opened.key_set else None)
    if opened.status not in (decrypt.DECRYPTED, decrypt.UNCHECKED):
        return replace(message, decryption=decryption)
    if fragment is not None:
        return replace(message, decryption=decryption, fragment_plaintext=opened.plaintext)
    return replace(message, decryption=decryption,
                   inner=dissect_inner(message, walk.encrypted_next, opened.plaintext, scapy=scapy))


def _decrypt(data: bytes, walk: _Walk, keys: decrypt.KeyTable) -> decrypt.Opened:
    fragment = walk.fragment
    return decrypt.open_encrypted(
        data, walk.encrypted_at, walk.encrypted_end, SKF_HEADER if fragment else SK_HEADER,
        walk.encrypted_next, bool(walk.flags & 0x08), keys.for_pair(walk.spi_i, walk.spi_r),
        whole=fragment is None or fragment == (1, 1))


def plaintext(datagram: IkeDatagram, keys: decrypt.KeyTable) -> tuple[int, bytes] | None:
    """(first inner payload type, plaintext) of an IKEv2 datagram's SK payload, or of an
    SKF fragment's own share, when the key table opens it; else None. For `ikeaudit show`."""
    data = datagram.payload
    walk = _fast(data, datagram.frame) if datagram.ike_version == 2 else None
    if walk is None and datagram.ike_version == 2 and len(data) >= IKE_HEADER_LENGTH:
        _load_scapy()
        try:
            packet = IKEv2(data)
            if isinstance(packet, IKEv2):
                walk = _Walk(datagram.frame)
                walk.spi_i, walk.spi_r = bytes(packet.init_SPI).hex(), bytes(packet.resp_SPI).hex()
                walk.flags = int(packet.flags)
                _walk_payloads(packet, int(packet.next_payload), min(int(packet.length), len(data)), len(data),
                               walk, data)
        except Exception:  # noqa: BLE001 - what does not dissect does not decrypt either
            walk = None
    if walk is None or walk.encrypted_at is None:
        return None
    opened = _decrypt(data, walk, keys)
    if opened.status not in (decrypt.DECRYPTED, decrypt.UNCHECKED):
        return None
    return walk.encrypted_next, opened.plaintext


def dissect_inner(message: IkeMessage, first_payload: int, plaintext: bytes, *,
                  scapy: bool | None = None) -> InnerPayloads:
    """Dissect a decrypted payload chain by the same walk as clear payloads: behind a
    copy of the message's IKE header whose Next Payload names the first inner payload."""
    length = IKE_HEADER_LENGTH + len(plaintext)
    header = (bytes.fromhex(message.spi_i) + bytes.fromhex(message.spi_r)
              + bytes([first_payload & 0xFF, 0x20, message.exchange & 0xFF, message.flags & 0xFF])
              + (message.message_id & 0xFFFFFFFF).to_bytes(4, "big") + length.to_bytes(4, "big"))
    data = header + plaintext
    walk = None if (SCAPY_ONLY if scapy is None else scapy) else _fast(data, message.frame)
    if walk is None:
        _load_scapy()
        walk = _Walk(message.frame)
        try:
            packet = IKEv2(data)
            _walk_payloads(packet, first_payload, length, length, walk, data)
        except RecursionError:
            walk.anomaly("malformed", "decrypted payload chain too deep to dissect")
        except Exception as exc:  # Scapy raises whatever its fields raise on hostile bytes
            walk.anomaly("malformed", f"decrypted payloads do not dissect: {exc.__class__.__name__}: {exc}")
    anomalies = tuple(replace(a, detail="inside the encrypted payload: " + a.detail) for a in walk.anomalies)
    return InnerPayloads(
        payload_types=tuple(walk.payload_types), proposals=tuple(walk.proposals),
        key_exchange=walk.key_exchange, notifies=tuple(walk.notifies),
        identifications=tuple(walk.identifications), auth_method=walk.auth_method,
        anomalies=anomalies, certificates=tuple(walk.certificates), cert_requests=tuple(walk.cert_requests),
        authentication=walk.authentication, vendor_ids=tuple(walk.vendor_ids),
    )


class InnerReassembly:
    """Joins the decrypted shares of SKF fragments (RFC 7383: each fragment is encrypted
    and authenticated on its own; the Next Payload of fragment 1 names the first inner
    payload) and dissects the whole once every fragment arrived. Sits between `dissect`
    and the tracker: records pass through, the fragment that completes a message comes
    out with its `inner` filled in, and shares no longer ride on the records.

    Bounded: at most max_messages partly arrived messages are held; past that the oldest
    is dropped and an "overflow" anomaly rides on the record that pushed it out. A message
    holds at most MAX_INNER_FRAGMENTS shares; a share past that is not kept, and says so.
    scapy: as for `dissect`.
    """

    def __init__(self, max_messages: int = 4096, *, scapy: bool | None = None) -> None:
        self.max_messages = max_messages
        self.scapy = scapy
        self._pending: dict[tuple, dict[int, IkeMessage]] = {}

    def feed(self, record: IkeMessage | Ikev1Message | Malformed) -> IkeMessage | Ikev1Message | Malformed:
        if not isinstance(record, IkeMessage) or not record.fragment_plaintext or record.fragment is None:
            return record
        number, total = record.fragment
        key = (record.spi_i, record.spi_r, record.message_id, record.is_response,
               record.from_original_initiator, record.exchange, total)
        pieces = self._pending.setdefault(key, {})
        anomalies = record.anomalies
        if number in pieces or len(pieces) < MAX_INNER_FRAGMENTS:
            pieces.setdefault(number, record)
        else:
            anomalies += (Anomaly("overflow", f"decrypted IKE fragment {number} of {total}: more than "
                                  f"{MAX_INNER_FRAGMENTS} held for one message, not kept", record.frame),)
        if len(self._pending) > self.max_messages:
            del self._pending[next(iter(self._pending))]
            anomalies += (Anomaly("overflow", f"more than {self.max_messages} IKE-fragmented messages "
                                  "partly decrypted: dropped the oldest", record.frame),)
        record = replace(record, fragment_plaintext=b"", anomalies=anomalies)
        if len(pieces) < total or set(pieces) != set(range(1, total + 1)):
            return record
        del self._pending[key]
        plaintext = b"".join(pieces[n].fragment_plaintext for n in range(1, total + 1))
        return replace(record, inner=dissect_inner(record, pieces[1].encrypted_next_payload, plaintext,
                                                   scapy=self.scapy))


def _walk_payloads(packet: Packet, first_type: int, available: int, present: int, walk: _Walk,
                   data: bytes) -> None:
    """Follow Scapy's layers along the Next Payload chain, checking each length against the bytes left.

    available is what the IKE header's Length admits, present what was captured: a
    payload running past the header's length is malformed; past the captured bytes,
    incomplete. Data fields are sliced from `data` where Scapy's layer lies (its
    offset: the bytes the layers before it took), never rebuilt with bytes(layer)."""
    layer = packet.payload
    at = len(packet.raw_packet_cache or b"")
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
        _record(payload_type, _fields(layer), data, at, length, walk)
        if payload_type in (iana.PAYLOAD_SK, iana.PAYLOAD_SKF):
            # Its Next Payload names the first payload inside the ciphertext, not a successor.
            walk.encrypted_at = available - remaining
            walk.encrypted_end = min(walk.encrypted_at + length, present)
            walk.encrypted_next = int(layer.next_payload or 0)
            remaining -= length
            break
        remaining -= length
        payload_type = int(layer.next_payload or 0)
        at += len(layer.raw_packet_cache or b"")
        layer = layer.payload
    if remaining > 0:
        walk.anomaly("malformed", f"{remaining} bytes after the last payload")


# What _fields reads from a layer, by kind: the first item of its tuple (of this many items).
_SA, _KE, _NOTIFY, _VENDOR_ID, _ID, _AUTH, _SKF, _SK, _OTHER, _CERT, _CERTREQ = range(11)
_FIELD_COUNTS = {_KE: 2, _NOTIFY: 4, _VENDOR_ID: 1, _ID: 2, _AUTH: 2, _SKF: 4, _SK: 2, _OTHER: 1, _CERT: 2,
                 _CERTREQ: 2}


def _fields(layer: Packet) -> tuple:
    """The fields dissection hands on from one payload layer, as plain values."""
    if isinstance(layer, IKEv2_SA):
        details: list[str] = []
        return _SA, tuple(_proposals(layer, details)), tuple(details)
    if isinstance(layer, IKEv2_KE):
        return _KE, int(layer.group)
    if isinstance(layer, IKEv2_Notify):
        spi_size = int(layer.SPIsize or 0)
        return _NOTIFY, int(layer.type), int(layer.proto or 0), spi_size
    if isinstance(layer, IKEv2_VendorID):
        return (_VENDOR_ID,)
    if isinstance(layer, (IKEv2_IDi, IKEv2_IDr)):
        return _ID, int(layer.IDtype)
    if isinstance(layer, IKEv2_AUTH):
        return _AUTH, int(layer.auth_type)
    if isinstance(layer, IKEv2_CERT):
        return _CERT, int(layer.cert_encoding)
    if isinstance(layer, IKEv2_CERTREQ):
        return _CERTREQ, int(layer.cert_encoding)
    if isinstance(layer, IKEv2_Encrypted_Fragment):
        return _SKF, int(layer.next_payload or 0), int(layer.frag_number), int(layer.frag_total)
    if isinstance(layer, IKEv2_Encrypted):
        return _SK, int(layer.next_payload or 0)
    return (_OTHER,)


def _record(payload_type: int, fields: tuple, data: bytes, at: int, length: int, walk: _Walk) -> None:
    """Add one payload's fields to the walk; `at` is where the payload starts in data."""
    kind = fields[0]
    if kind == _SA:
        walk.proposals.extend(fields[1])
        for detail in fields[2]:
            walk.anomaly("malformed", detail)
    elif kind == _KE:
        if walk.key_exchange is not None:
            walk.anomaly("malformed", "more than one KE payload")
        walk.key_exchange = KeyExchange(fields[1], max(length - KE_HEADER, 0))
    elif kind == _NOTIFY:
        # The raw notification data, whatever sub-fields Scapy split it into (REDIRECT).
        start = NOTIFY_HEADER + fields[3]
        walk.notifies.append(_notify(fields[1], fields[2], data[at + start:at + max(length, start)]))
    elif kind == _VENDOR_ID:
        walk.vendor_ids.append(data[at + iana.GENERIC_PAYLOAD_HEADER:at + length])
    elif kind == _ID:
        walk.identifications.append(Identification(payload_type, fields[1],
                                                   data[at + ID_HEADER:at + max(length, ID_HEADER)]))
    elif kind == _AUTH:
        walk.auth_method = fields[1]
        walk.authentication = Authentication(fields[1], data[at + AUTH_HEADER:at + max(length, AUTH_HEADER)])
    elif kind == _CERT:
        walk.certificates.append(Certificate(fields[1], data[at + CERT_HEADER:at + max(length, CERT_HEADER)]))
    elif kind == _CERTREQ:
        walk.cert_requests.append(CertificateRequest(fields[1],
                                                     data[at + CERT_HEADER:at + max(length, CERT_HEADER)]))
    elif kind == _SKF:
        walk.fragment = (fields[2], fields[3])
        walk.encrypted_length = max(length - SKF_HEADER, 0)
        if not 1 <= walk.fragment[0] <= walk.fragment[1]:
            walk.anomaly("malformed", f"SKF fragment {walk.fragment[0]} of {walk.fragment[1]}")
    elif kind == _SK:
        walk.encrypted_length = max(length - SK_HEADER, 0)


_SHARED_NOTIFIES: dict[tuple[int, int, bytes], Notify] = {}


def _notify(notify_type: int, protocol: int, data: bytes) -> Notify:
    """One record for the notifies every client sends alike (FRAGMENTATION_SUPPORTED,
    SIGNATURE_HASH_ALGORITHMS...): a gateway's tracker holds thousands of messages."""
    if len(data) > SHARED_NOTIFY_BYTES:
        return Notify(notify_type, protocol, data)
    key = (notify_type, protocol, data)
    notify = _SHARED_NOTIFIES.get(key)
    if notify is None:
        if len(_SHARED_NOTIFIES) >= LAYOUT_CACHE:
            _SHARED_NOTIFIES.clear()
        notify = _SHARED_NOTIFIES[key] = Notify(notify_type, protocol, data)
    return notify


def _proposals(sa: Packet, details: list[str]) -> list[Proposal]:
    """The SA payload's proposals; what is wrong with them goes to details."""
    proposals: list[Proposal] = []
    layer = sa.prop
    while isinstance(layer, IKEv2_Proposal):
        if len(proposals) >= MAX_PROPOSALS:
            details.append(f"more than {MAX_PROPOSALS} proposals")
            break
        transforms = _transforms(layer, details)
        if layer.trans_nb is not None and int(layer.trans_nb) != len(transforms):
            details.append(f"proposal #{layer.proposal} announces {layer.trans_nb} "
                           f"transforms, carries {len(transforms)}")
        proposals.append(Proposal(int(layer.proposal), int(layer.proto),
                                  bytes(layer.SPI or b"").hex(), tuple(transforms)))
        if int(layer.next_payload or 0) != iana.MORE_PROPOSALS:
            break
        layer = layer.payload
    if not proposals:
        details.append("SA payload without a proposal")
    return proposals


def _transforms(proposal: Packet, details: list[str]) -> list[Transform]:
    transforms: list[Transform] = []
    layer = proposal.trans
    while isinstance(layer, IKEv2_Transform):
        if len(transforms) >= MAX_TRANSFORMS:
            details.append(f"more than {MAX_TRANSFORMS} transforms in a proposal")
            break
        key_length = layer.key_length if int(layer.length or 0) > 8 else None
        transforms.append(Transform(int(layer.transform_type), int(layer.transform_id),
                                    None if key_length is None else int(key_length)))
        if int(layer.next_payload or 0) != iana.MORE_TRANSFORMS:
            break
        layer = layer.payload
    return transforms
