"""The IKE header and the generic payload chain, read with `struct`: dissection's hot path.

Building a Scapy packet costs a fraction of a millisecond; a busy gateway sends tens of
thousands of IKE datagrams a second. This module reads only what RFC 7296 fixes for
every message: the 28-byte header and the chain of generic payload headers (Next
Payload, Length). It never interprets a payload's body: `dissect` has Scapy do that,
once per distinct payload layout (see `dissect._layout`).

It answers only for a message whose structure is clean: an IKEv2 header whose Length is
the bytes present, and a chain whose every payload fits exactly, up to the end of the
message or to its SK/SKF payload, which ends it. Anything else (a lying length, bytes
after the last payload, an absurdly long chain) gets None, and `dissect` falls back to
dissecting the whole message with Scapy, whose anomalies then say what is wrong. No
Scapy here: tests/test_architecture.py keeps it so.
"""

from __future__ import annotations

import struct

from ikeaudit import iana

_HEADER = struct.Struct("!8s8sBBBBII")  # SPIi, SPIr, Next Payload, Version, Exchange, Flags, Message ID, Length
_GENERIC = struct.Struct("!BxH")  # Next Payload, (Critical), Payload Length
_ENCRYPTED = frozenset((iana.PAYLOAD_SK, iana.PAYLOAD_SKF))
_IKEV2 = 0x20  # major version 2 in the high nibble; Scapy reads anything below as ISAKMP


def header(data: bytes) -> tuple[bytes, bytes, int, int, int, int, int] | None:
    """(SPIi, SPIr, Next Payload, Exchange, Flags, Message ID, Length) of a clean IKEv2
    header, or None: too short, an IKEv1 version byte, or a Length other than the bytes present."""
    if len(data) < iana.IKE_HEADER_LENGTH:
        return None
    spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = _HEADER.unpack_from(data)
    if version < _IKEV2 or length != len(data):
        return None
    return spi_i, spi_r, next_payload, exchange, flags, message_id, length


def ike_header(data: bytes) -> tuple[bytes, bytes, int, int, int, int, int, int]:
    """(SPIi, SPIr, Next Payload, Version, Exchange, Flags, Message ID, Length) of the
    first 28 bytes, whatever they say: the header of RFC 7296 is ISAKMP's (RFC 2408 3.1),
    and IKEv1 messages are read from it."""
    return _HEADER.unpack_from(data)


def chain(data: bytes, first: int, limit: int) -> list[tuple[int, int, int]] | None:
    """(payload type, offset, length) of each payload from `first` on, or None unless
    every payload header fits, every payload lies within the message, there are at most
    `limit` of them, and the last (the one whose Next Payload is 0, or SK/SKF) ends the message."""
    end = len(data)
    offset = iana.IKE_HEADER_LENGTH
    payload_type = first
    payloads: list[tuple[int, int, int]] = []
    unpack = _GENERIC.unpack_from
    while payload_type:
        if len(payloads) >= limit or offset + iana.GENERIC_PAYLOAD_HEADER > end:
            return None
        next_type, length = unpack(data, offset)
        if length < iana.GENERIC_PAYLOAD_HEADER or offset + length > end:
            return None
        payloads.append((payload_type, offset, length))
        offset += length
        if payload_type in _ENCRYPTED:  # its Next Payload names the first payload inside
            break
        payload_type = next_type
    return payloads if offset == end else None


def layout_length(payload_type: int, length: int) -> int:
    """How many leading bytes of a payload decide its layout and every field dissection
    reads from it, the data aside: its fixed part, or all of it for an SA payload (its
    proposals are what is read)."""
    if payload_type == iana.PAYLOAD_SA:
        return length
    return iana.PAYLOAD_FIXED_LENGTHS.get(payload_type, iana.GENERIC_PAYLOAD_HEADER)
