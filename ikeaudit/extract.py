"""Frames in, IKE datagrams out: the extraction stage.

Sans-IO in the manner of h11: an :class:`Extractor` is fed one
:class:`~ikeaudit.records.Frame` at a time and returns the :class:`IkeDatagram` and
:class:`Anomaly` records that frame completed; :meth:`Extractor.flush` reports what never
completed. No file, socket or Scapy object is involved: headers are read with
:mod:`struct` straight from the captured bytes, because this runs once per frame over
multi-gigabyte captures and most frames are not IKE and must be rejected cheaply.

Decoded:
  link types  1 Ethernet, 113 Linux cooked v1, 276 Linux cooked v2, 101/12/14 raw IP
              (version from the first nibble), 228 raw IPv4, 229 raw IPv6, 0 BSD NULL
              (address family in either byte order), 108 OpenBSD LOOP. Any other link
              type is counted and reported once as ``Anomaly("unsupported")``.
  tunnels     what mirrors and provider links wrap around the original frame, opened
              recursively (at most 8 deep; the tunnel's own addresses are never taken
              for the IKE peers): 802.1Q / 802.1ad / 0x9100 VLAN tags (up to 8 in a
              stack); GRE (RFC 2784/2890: checksum, key and sequence fields) carrying
              ERSPAN type I (0x88BE without sequence number), II (0x88BE, 8-byte header),
              III (0x22EB, 12-byte header, optional 8-byte platform subheader; Ethernet or
              IP frames), transparent Ethernet (0x6558, also NVGRE), IP or any ethertype
              below; VXLAN (UDP 4789 and ``vxlan_ports``); Geneve (UDP 6081, options
              skipped, by protocol type); MPLS label stacks (0x8847/0x8848: IPv4 or IPv6
              by the first nibble after the bottom label, Ethernet after a pseudowire
              control word); PPPoE sessions (0x8864: PPP IPv4 and IPv6); IP-in-IP
              (protocols 4 and 41). A tunnel whose content we cannot read (a GRE
              protocol type, an ERSPAN version, ...) is counted and reported once per
              kind as ``Anomaly("unsupported")``. Tunnel packets that arrive as IP
              fragments are reassembled first.
  IP          IPv4 with options (checksum not verified); IPv6 with hop-by-hop, routing,
              fragment, destination-options, mobility, HIP, shim6 and experimental
              headers in any order (at most 8); ESP and AH end the walk. IPv4 and IPv6
              fragments are reassembled with bounded tables.
  UDP         either port 500 or 4500. On 4500: NAT keepalive (0xFF) and ESP-in-UDP are
              counted, IKE is taken from behind the 4-byte zero non-ESP marker.
  TCP         RFC 9329 IKE over TCP port 4500 (see "IKE over TCP" below).

Duplicates: a SPAN session often delivers a packet twice (both ports of a conversation
mirrored), microseconds apart and identical but for the link layer and sometimes the
TTL. An IKE, IKE-over-TCP or ESP packet whose IP packet (after decapsulation; TTL or hop
limit and the IPv4 checksum aside) repeats one of the last ``DUPLICATE_WINDOW`` seconds
is dropped and counted as ``duplicates`` (a hash of each recent packet is kept, at most
65536), so that no copy passes for a retransmission. In a capture without a clock (every
timestamp 0) only a copy in the very next frame is a duplicate: time cannot tell the rest
from retransmissions. Fragments are matched by their pieces instead (below).

Reassembly semantics: a fragment that repeats a piece already held (same offset, same
bytes) is a duplicate: counted, not recorded in ``frames``/``ip_fragment_lengths``. Any
other overlap, a second differing last fragment, or a datagram above ``max_datagram``
drops the datagram with ``Anomaly("malformed")``. Fragments of a datagram whose first
fragment shows non-IKE ports, or that is not UDP/TCP at all, are ignored and counted.
Timeouts compare frame timestamps with the first piece's; a capture whose clock runs
backwards only delays expiry.

IKE over TCP (RFC 9329): each direction of a TCP port-4500 connection is one stream,
reassembled by sequence number from its SYN: out-of-order segments wait (bounded by a
per-stream cap of ``TCP_STREAM_CAP`` bytes and 1024 segments held, beyond which the
connection is dropped with ``Anomaly("overflow")``), retransmitted bytes are used once.
Only the TCP originator sends the "IKETCP" prefix (RFC 9329 section 3); it is stripped
from whichever direction starts with it, so both directions are handled. Then come
2-byte length-prefixed frames (length includes itself): a zero non-ESP marker means IKE,
anything else is ESP (counted). Not handled, by design:
  * streams whose SYN was not captured (joined mid-way): reported once as
    ``Anomaly("incomplete")`` and ignored, because frame boundaries cannot be found;
  * TLS-wrapped IKE over TCP (RFC 9329 section 3 allows TLS first): frames are garbage
    and come out as malformed or ESP;
  * sequence wrap beyond 2 GiB of one stream, urgent data, and TCP checksums;
  * a segment cut by the snaplen: reported as incomplete and its bytes left as a gap.
For a TCP record, ``ip_length`` and ``ip_fragment_lengths`` describe the IP packet of the
segment that completed the frame, ``frames`` every segment that carried part of it.

Stats keys (``Extractor.stats``, a Counter; missing keys are 0):
  frames                  every frame fed
  ike_datagrams           IkeDatagram records emitted (IKEv2 and IKEv1, UDP and TCP)
  ikev1_datagrams         of those, IKEv1 (ISAKMP)
  unsupported_linktype    frames of a link type we do not decode
  unsupported_encapsulation  frames of a tunnel whose content we do not decode
  encap_<name>            frames (or packets) seen in each encapsulation: vlan (a tag
                          stack), gre, erspan_i, erspan_ii, erspan_iii, ethernet
                          (transparent Ethernet), vxlan, geneve, mpls, pppoe, ip_in_ip
  duplicates              mirrored copies dropped (see "Duplicates")
  non_ip                  frames whose link layer carries something other than IP
  non_ike                 IP packets that are not IKE: other protocols, other ports
  esp / ah                IP protocol 50 / 51 packets
  esp_in_udp              UDP 4500 payloads that are ESP (non-zero SPI)
  nat_keepalive           UDP 4500 single-byte 0xFF keepalives
  ip_fragments            IP fragments seen
  ip_fragment_duplicates  fragments that repeated a piece already held or delivered
  non_ike_fragments       fragments ignored because their datagram cannot be IKE
  dropped_fragments       late fragments of a datagram already given up (overlap,
                          oversize, table overflow, timeout)
  reassembled             IP datagrams completed from fragments
  tcp_segments            TCP segments with port 4500 on either side
  tcp_streams             TCP port-4500 stream directions opened by a SYN
  tcp_retransmissions     TCP segments whose bytes had all been seen already
  tcp_ike                 IKE frames taken from TCP streams (also in ike_datagrams)
  tcp_esp                 ESP frames seen in TCP streams
  anomalies               Anomaly records emitted
"""

from __future__ import annotations

import ipaddress
import struct
from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import fields

from ikeaudit.iana import (ETHERTYPE_ERSPAN_II, ETHERTYPE_ERSPAN_III, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
                           ETHERTYPE_MPLS, ETHERTYPE_PPPOE_SESSION, ETHERTYPE_TEB, ETHERTYPE_VLAN, GENEVE_PORT,
                           IPPROTO_GRE, IPPROTO_IPV4_IN_IP, IPPROTO_IPV6_IN_IP, IPV6_EXTENSION_HEADERS,
                           PPP_IPV4, PPP_IPV6, VXLAN_PORT)
from ikeaudit.iana import IKE_HEADER_LENGTH as IKE_HEADER_LEN, IKE_PORTS as IKE_UDP_PORTS, NAT_T_PORT, NON_ESP_MARKER
from ikeaudit.records import Anomaly, EspFlow, Frame, IkeDatagram

_DATAGRAM_FIELDS = ("frame", "frames", "timestamp", "first_timestamp", "ip_version", "src", "dst", "sport", "dport",
                    "transport", "non_esp_marker", "ip_length", "ip_fragment_lengths", "udp_payload_length",
                    "payload", "ike_version")
if tuple(f.name for f in fields(IkeDatagram)) != _DATAGRAM_FIELDS:
    raise ImportError("Extractor._ike passes IkeDatagram's fields by position: their order changed")

Record = IkeDatagram | Anomaly

NAT_KEEPALIVE = b"\xff"
IKETCP_PREFIX = b"IKETCP"
TCP_STREAM_CAP = 1 << 18  # bytes one TCP direction may hold unframed or out of order

_MAX_VLAN_TAGS = 8
_MAX_IPV6_EXT = 8
_MAX_IP_FRAGMENTS = 1024  # pieces of one datagram: 64 KiB in 1024 pieces is 64-byte fragments
_MAX_TCP_PENDING = 1024  # out-of-order segments one TCP direction may hold
_NAME_CACHE = 1 << 16

_IP_ETHERTYPE = {4: ETHERTYPE_IPV4, 6: ETHERTYPE_IPV6}
_VLAN_TPIDS = frozenset(ETHERTYPE_VLAN)
# BSD address families for IPv6 differ per OS: 24 NetBSD/OpenBSD, 28 FreeBSD, 30 Darwin.
_AF_IP = {2: ETHERTYPE_IPV4, 24: ETHERTYPE_IPV6, 28: ETHERTYPE_IPV6, 30: ETHERTYPE_IPV6}
_IPV6_SKIPPABLE = frozenset(IPV6_EXTENSION_HEADERS)
_IP_IN_IP = {IPPROTO_IPV4_IN_IP: ETHERTYPE_IPV4, IPPROTO_IPV6_IN_IP: ETHERTYPE_IPV6}
# IP protocols whose datagrams, once reassembled, may hold IKE: itself or in a tunnel.
_CARRIER_PROTOS = frozenset((6, 17, IPPROTO_GRE, *_IP_IN_IP))
# What may follow an IPv6 fragment header in a datagram that could hold IKE.
_IPV6_FRAGMENTABLE = _CARRIER_PROTOS | (_IPV6_SKIPPABLE - {0})

# Decapsulation bounds: tunnels inside tunnels, labels in one MPLS stack.
_MAX_ENCAP_DEPTH = 8
_MAX_MPLS_LABELS = 16
# Copies of one packet that a SPAN session delivers come microseconds apart; a sender's
# own retransmission takes half a second or more (IKE and TCP timers alike).
DUPLICATE_WINDOW = 0.05  # seconds
_MAX_RECENT = 1 << 16  # packets remembered for duplicate detection

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32LE = struct.Struct("<I")
_IPV4 = struct.Struct("!BxHHHxB")  # version/IHL, total length, id, flags/offset, protocol
_IPV6 = struct.Struct("!IHB")  # version/class/flow, payload length, next header
_FRAG6 = struct.Struct("!BxHI")  # next header, offset/flags, identification
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!4xI4xH")  # seq, data offset/flags

_FIN, _SYN, _RST = 0x01, 0x02, 0x04
_DROPPED = "dropped_fragments"  # stats key for late pieces of a datagram given up


def undecoded(stats: Counter) -> str | None:
    """What to warn about when no frame of a capture could be read at all: all were of a
    link type or an encapsulation that extraction does not decode (see ``stats``)."""
    frames = stats.get("frames", 0)
    unread = stats.get("unsupported_linktype", 0) + stats.get("unsupported_encapsulation", 0)
    if not frames or unread < frames:
        return None
    return f"none of its {frames} frames could be decoded (link type or encapsulation not supported)"


class _Truncated(Exception):
    """A header runs past the captured bytes: incomplete if the snaplen cut the frame,
    malformed otherwise."""


class _Malformed(Exception):
    """A header contradicts itself or the bytes present."""


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise _Truncated(f"{what} truncated: frame has {len(data)} bytes, needs {end}")


def _within(limit: int, end: int, what: str) -> None:
    """A header must end within the enclosing payload (which ends at `limit`)."""
    if limit < end:
        raise _Truncated(f"{what} truncated: {limit} bytes available, needs {end}")


# --- link layers: each returns (ethertype of what follows, or 0 for "not IP"; its offset)


def _ethernet(data: bytes) -> tuple[int, int]:
    _need(data, 14, "Ethernet header")
    return _U16.unpack_from(data, 12)[0], 14


def _sll(data: bytes) -> tuple[int, int]:
    _need(data, 16, "Linux cooked header")
    return _U16.unpack_from(data, 14)[0], 16


def _sll2(data: bytes) -> tuple[int, int]:
    _need(data, 20, "Linux cooked v2 header")
    return _U16.unpack_from(data, 0)[0], 20


def _raw(data: bytes) -> tuple[int, int]:
    _need(data, 1, "raw IP header")
    version = data[0] >> 4
    if version not in (4, 6):
        raise _Malformed(f"raw IP frame with version nibble {version}")
    return _IP_ETHERTYPE[version], 0


def _raw4(data: bytes) -> tuple[int, int]:
    return ETHERTYPE_IPV4, 0


def _raw6(data: bytes) -> tuple[int, int]:
    return ETHERTYPE_IPV6, 0


def _null(data: bytes) -> tuple[int, int]:
    # Host byte order of the capturing machine, which the file does not tell us.
    _need(data, 4, "loopback header")
    family = _AF_IP.get(_U32LE.unpack_from(data)[0]) or _AF_IP.get(_U32.unpack_from(data)[0])
    return family or 0, 4


def _loop(data: bytes) -> tuple[int, int]:
    _need(data, 4, "loopback header")
    return _AF_IP.get(_U32.unpack_from(data)[0], 0), 4


_LINKS: dict[int, Callable[[bytes], tuple[int, int]]] = {
    0: _null, 1: _ethernet, 12: _raw, 14: _raw, 101: _raw, 108: _loop,
    113: _sll, 228: _raw4, 229: _raw6, 276: _sll2,
}  # fmt: skip


def _walk_ipv6(
    data: bytes, nh: int, pos: int, end: int, allow_fragment: bool = True
) -> tuple[int, int, tuple[int, int, bool, int] | None]:
    """Skip extension headers: (next header, its offset, fragment info or None).
    Fragment info is (fragment header offset, fragment offset, more, identification)."""
    for _ in range(_MAX_IPV6_EXT):
        if nh in _IPV6_SKIPPABLE:
            if pos + 2 > end:
                raise _Truncated(f"IPv6 extension header {nh} truncated")
            nh, pos = data[pos], pos + (data[pos + 1] + 1) * 8
            if pos > end:
                raise _Truncated("IPv6 extension header runs past the payload")
        elif nh == 44:
            if not allow_fragment:
                raise _Malformed("IPv6 fragment header inside a reassembled datagram")
            if pos + 8 > end:
                raise _Truncated("IPv6 fragment header truncated")
            nxt, offset_flags, ident = _FRAG6.unpack_from(data, pos)
            return nxt, pos + 8, (pos, offset_flags & 0xFFF8, bool(offset_flags & 1), ident)
        else:
            return nh, pos, None
    raise _Malformed(f"more than {_MAX_IPV6_EXT} IPv6 extension headers")


def _could_be_ike(proto: int, sport: int, dport: int) -> bool:
    if proto == 17:
        return sport in IKE_UDP_PORTS or dport in IKE_UDP_PORTS
    return proto == 6 and NAT_T_PORT in (sport, dport)


class _Ip:
    """What the transport layer needs to know about the IP packet it came in."""

    __slots__ = ("version", "src", "dst", "length", "frames", "frag_lengths", "first_ts", "cut", "depth")

    def __init__(self, version: int, src: bytes, dst: bytes, length: int, cut: bool = False,
                 frames: tuple[int, ...] = (), first_ts: float | None = None,
                 frag_lengths: tuple[int, ...] = (), depth: int = 0) -> None:  # fmt: skip
        self.version, self.src, self.dst, self.length, self.cut = version, src, dst, length, cut
        self.frames, self.frag_lengths, self.first_ts = frames, frag_lengths, first_ts
        self.depth = depth  # encapsulations around it


class _Reassembly:
    """The pieces of one fragmented IP datagram, by offset in its fragmentable part."""

    __slots__ = ("version", "src", "dst", "proto", "hdr_len", "starts", "pieces", "total",
                 "received", "frames", "lengths", "first_ts", "cut", "ident", "depth")  # fmt: skip

    def __init__(self, version: int, src: bytes, dst: bytes, proto: int, ident: int,
                 hdr_len: int, first_ts: float) -> None:  # fmt: skip
        self.version, self.src, self.dst, self.proto, self.ident = version, src, dst, proto, ident
        self.hdr_len = hdr_len  # IP header (+ IPv6 unfragmentable extension headers)
        self.starts: list[int] = []
        self.pieces: dict[int, tuple[int, bytes]] = {}  # offset -> (declared length, bytes)
        self.total: int | None = None  # known once the last fragment arrives
        self.received = 0
        self.frames: list[int] = []
        self.lengths: list[int] = []
        self.first_ts = first_ts
        self.cut = False  # some piece was cut by the snaplen: can never be delivered
        self.depth = 0  # encapsulations around the datagram

    def add(self, offset: int, length: int, data: bytes, more: bool) -> bool:
        """Hold a piece; False for an exact duplicate; _Malformed for any other overlap."""
        stop = offset + length
        held = self.pieces.get(offset)
        if held is not None:
            if held == (length, data) and (more or self.total == stop):
                return False
            raise _Malformed(f"IP fragments overlap at offset {offset}")
        i = bisect_left(self.starts, offset)
        before = self.starts[i - 1] if i else None
        if before is not None and before + self.pieces[before][0] > offset:
            raise _Malformed(f"IP fragment at {offset} overlaps the one at {before}")
        if i < len(self.starts) and self.starts[i] < stop:
            raise _Malformed(f"IP fragment at {offset} overlaps the one at {self.starts[i]}")
        if len(self.starts) >= _MAX_IP_FRAGMENTS:
            raise _Malformed(f"more than {_MAX_IP_FRAGMENTS} IP fragments")
        if not more:
            if self.total is not None or (self.starts and self.starts[-1] >= stop):
                raise _Malformed(f"IP fragment ending at {stop} contradicts the datagram's end")
            self.total = stop
        elif self.total is not None and stop > self.total:
            raise _Malformed(f"IP fragment ending at {stop} lies past the last one")
        insort(self.starts, offset)
        self.pieces[offset] = (length, data)
        self.received += length
        return True

    @property
    def complete(self) -> bool:
        return self.total is not None and self.received == self.total

    def payload(self) -> bytes:
        return b"".join(self.pieces[start][1] for start in self.starts)

    def fingerprint(self) -> dict[int, int]:
        """What a late duplicate of a delivered datagram would repeat."""
        return {start: hash(piece) for start, (_, piece) in self.pieces.items()}


class _TcpStream:
    """One direction of a TCP port-4500 connection, as RFC 9329 frames it."""

    __slots__ = ("isn", "next", "buf", "pending", "pieces", "prefixed", "closed")

    def __init__(self, isn: int | None) -> None:
        self.isn = isn  # None: joined mid-way, ignored
        self.next = 0  # stream offset (0 = first byte after SYN) expected next
        self.buf = bytearray()  # in-order bytes not yet framed, ending at `next`
        self.pending: dict[int, tuple[bytes, int, float]] = {}  # offset -> data, frame, time
        self.pieces: deque[tuple[int, int, float]] = deque()  # end offset, frame, time in buf
        self.prefixed = False  # the IKETCP question is settled
        self.closed = False

    def held(self) -> int:
        return len(self.buf) + sum(len(seg) for seg, _, _ in self.pending.values())

    def first_frame(self) -> int | None:
        frames = [f for _, f, _ in self.pieces] + [f for _, f, _ in self.pending.values()]
        return min(frames, default=None)


class Extractor:
    """Turns captured frames into IKE datagrams and anomalies; see the module docstring
    for what is decoded and for the meaning of each ``stats`` key. ``vxlan_ports``: the
    UDP destination ports read as VXLAN; ``duplicate_window``: how close in time a copy of
    a packet must come to be a mirror's duplicate (0 keeps every copy)."""

    def __init__(self, *, max_reassembly_buffers: int = 4096, reassembly_timeout: float = 60.0,
                 max_datagram: int = 65535, max_tcp_streams: int = 1024,
                 max_esp_flows: int = 65536,
                 max_reassembly_bytes: int = 16 * 1024 * 1024,
                 vxlan_ports: Iterable[int] = (VXLAN_PORT,),
                 duplicate_window: float = DUPLICATE_WINDOW) -> None:  # fmt: skip
        self.stats: Counter[str] = Counter()
        self._udp_tunnels = {port: _vxlan for port in vxlan_ports}
        self._udp_tunnels.setdefault(GENEVE_PORT, _geneve)
        self._duplicate_window = duplicate_window
        self._recent: dict[int, float] = {}  # hash of a packet -> when seen
        self._recent_frame: dict[int, int] = {}  # hash of a packet -> the frame it was last seen in
        self._recent_order: deque[tuple[float, int]] = deque()
        self._carried: tuple[tuple[int, ...], float | None] = ((), None)  # see _ip()
        self._max_esp_flows = max(1, max_esp_flows)
        # (src, dst, spi, encapsulated) -> [first_frame, first_ts, last_ts, packets, bytes]
        self._esp: dict[tuple[bytes, bytes, bytes, bool], list] = {}
        self._max_buffers = max(1, max_reassembly_buffers)
        self._timeout = reassembly_timeout
        self._max_datagram = max_datagram
        self._max_bytes = max(max_reassembly_bytes, max_datagram)
        self._held = 0  # bytes (as declared) the pending reassembly buffers hold
        self._max_streams = max(1, max_tcp_streams)
        self._pending: dict[tuple, _Reassembly] = {}
        # Datagrams already decided, so that their late pieces start nothing new: either
        # the stats key to count them under (not IKE, or given up), or the delivered
        # pieces' fingerprint, to tell a late duplicate from a reused identification.
        self._settled: dict[tuple, tuple[float, dict[int, int] | str]] = {}
        self._streams: dict[tuple, _TcpStream] = {}
        self._unsupported_seen: set[object] = set()  # link types and encapsulations told
        self._names: dict[bytes, str] = {}

    # --- public API

    def feed(self, frame: Frame) -> list[Record]:
        self.stats["frames"] += 1
        out: list[Record] = self._expire(frame.timestamp) if self._pending or self._settled else []
        try:
            out.extend(self._frame(frame))
        except _Truncated as exc:
            kind = "incomplete" if frame.wire_length > len(frame.data) else "malformed"
            out.append(Anomaly(kind, str(exc), frame.number))
        except _Malformed as exc:
            out.append(Anomaly("malformed", str(exc), frame.number))
        return self._counted(out)

    def flush(self) -> list[Anomaly]:
        out = [self._unfinished(buf, "capture ended") for buf in self._pending.values()]
        for key, stream in self._streams.items():
            if stream.isn is not None and stream.held():
                out.append(self._stream_anomaly("incomplete", key, stream, "capture ended"))
        self._pending.clear()
        self._held = 0
        self._settled.clear()
        self._streams.clear()
        return self._counted(out)

    def esp_flows(self) -> list[EspFlow]:
        """ESP traffic seen so far, one record per SPI and direction."""
        return [EspFlow(self._name(src), self._name(dst), spi.hex(), encapsulated, *values)
                for (src, dst, spi, encapsulated), values
                in sorted(self._esp.items(), key=lambda item: item[1][0])]

    # --- link layers and encapsulations

    def _counted(self, out: list) -> list:
        if out:
            self.stats["anomalies"] += sum(isinstance(r, Anomaly) for r in out)
        return out

    def _frame(self, frame: Frame) -> list[Record]:
        link = _LINKS.get(frame.linktype)
        if link is None:
            return self._unsupported_link(frame)
        data = frame.data
        etype, off = link(data)
        return self._ethertype(frame, data, etype, off, len(data), frame.wire_length > len(data), 0)

    def _ethertype(self, frame: Frame, data: bytes, etype: int, off: int, limit: int, cut: bool,
                   depth: int, tunnel: str = "") -> list[Record]:  # fmt: skip
        """What follows an ethertype: in a link header, an inner Ethernet frame, or the
        protocol field of a `tunnel` (where an unknown type is unsupported, not non-IP).
        `limit` is where the enclosing payload ends, `cut` whether the snaplen cut it."""
        if etype in _VLAN_TPIDS:
            self.stats["encap_vlan"] += 1
            for _ in range(_MAX_VLAN_TAGS):
                _within(limit, off + 4, "VLAN tag")
                etype = _U16.unpack_from(data, off + 2)[0]
                off += 4
                if etype not in _VLAN_TPIDS:
                    break
            else:
                raise _Malformed(f"more than {_MAX_VLAN_TAGS} VLAN tags")
        if etype == ETHERTYPE_IPV4:
            return self._ipv4(frame, data, off, limit, cut, depth)
        if etype == ETHERTYPE_IPV6:
            return self._ipv6(frame, data, off, limit, cut, depth)
        decapsulate = _DECAPSULATE.get(etype)
        if decapsulate is not None:
            if depth >= _MAX_ENCAP_DEPTH:
                raise _Malformed(f"more than {_MAX_ENCAP_DEPTH} nested encapsulations")
            return decapsulate(self, frame, data, off, limit, cut, depth + 1)
        if tunnel:
            return self._unsupported(frame, (tunnel, etype), f"{tunnel} protocol type 0x{etype:04x}")
        self.stats["non_ip"] += 1
        return []

    def _inner_ethernet(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool,
                        depth: int) -> list[Record]:  # fmt: skip
        _within(limit, off + 14, "inner Ethernet header")
        return self._ethertype(frame, data, _U16.unpack_from(data, off + 12)[0], off + 14, limit, cut, depth)

    def _inner_ip(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int,
                  what: str) -> list[Record]:  # fmt: skip
        """An IP packet whose version only its first nibble tells."""
        _within(limit, off + 1, what)
        etype = _IP_ETHERTYPE.get(data[off] >> 4)
        if etype is None:
            return self._unsupported(frame, what, f"{what} with first nibble {data[off] >> 4}")
        return self._ethertype(frame, data, etype, off, limit, cut, depth)

    def _teb(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        # Transparent Ethernet bridging (GRE 0x6558, NVGRE) and any tunnel naming it.
        self.stats["encap_ethernet"] += 1
        return self._inner_ethernet(frame, data, off, limit, cut, depth)

    def _mpls(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        self.stats["encap_mpls"] += 1
        for _ in range(_MAX_MPLS_LABELS):
            _within(limit, off + 4, "MPLS label")
            off += 4
            if data[off - 2] & 1:  # bottom of stack
                break
        else:
            raise _Malformed(f"more than {_MAX_MPLS_LABELS} MPLS labels")
        _within(limit, off + 1, "MPLS payload")
        if data[off] >> 4 == 0:  # a pseudowire control word, then an Ethernet frame (RFC 4448)
            return self._inner_ethernet(frame, data, off + 4, limit, cut, depth)
        return self._inner_ip(frame, data, off, limit, cut, depth, "MPLS payload")

    def _pppoe(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        self.stats["encap_pppoe"] += 1
        _within(limit, off + 8, "PPPoE session header")
        if data[off] != 0x11 or data[off + 1] != 0:
            return self._unsupported(frame, "PPPoE", f"PPPoE version/type 0x{data[off]:02x} code {data[off + 1]}")
        ppp = _U16.unpack_from(data, off + 6)[0]
        if ppp == PPP_IPV4:
            return self._ipv4(frame, data, off + 8, limit, cut, depth)
        if ppp == PPP_IPV6:
            return self._ipv6(frame, data, off + 8, limit, cut, depth)
        self.stats["non_ip"] += 1  # LCP, IPCP, authentication: the link's own control traffic
        return []

    def _gre(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        _within(limit, off + 4, "GRE header")
        flags, ptype = _PORTS.unpack_from(data, off)
        if flags & 0x4007:  # source routing (RFC 1701) or version 1 (PPTP's enhanced GRE)
            return self._unsupported(frame, ("GRE", flags & 0x4007),
                                     f"GRE version {flags & 7}" + (" with routing" if flags & 0x4000 else ""))
        # Checksum, key and sequence number fields, 4 bytes each when their bit is set.
        off += 4 + 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
        if ptype == ETHERTYPE_ERSPAN_II:
            if not flags & 0x1000:  # type I: no sequence number and no ERSPAN header
                self.stats["encap_erspan_i"] += 1
                return self._inner_ethernet(frame, data, off, limit, cut, depth)
            self.stats["encap_erspan_ii"] += 1
            _within(limit, off + 8, "ERSPAN type II header")
            if data[off] >> 4 != 1:
                return self._unsupported(frame, "ERSPAN II", f"ERSPAN version {data[off] >> 4} in a type II header")
            return self._inner_ethernet(frame, data, off + 8, limit, cut, depth)
        if ptype == ETHERTYPE_ERSPAN_III:
            self.stats["encap_erspan_iii"] += 1
            _within(limit, off + 12, "ERSPAN type III header")
            if data[off] >> 4 != 2:
                return self._unsupported(frame, "ERSPAN III", f"ERSPAN version {data[off] >> 4} in a type III header")
            frame_type = (data[off + 10] >> 2) & 0x1F
            start = off + 12 + 8 * (data[off + 11] & 1)  # O bit: a platform-specific subheader
            if frame_type == 0:
                return self._inner_ethernet(frame, data, start, limit, cut, depth)
            if frame_type == 2:
                return self._inner_ip(frame, data, start, limit, cut, depth, "ERSPAN type III IP frame")
            return self._unsupported(frame, ("ERSPAN III", frame_type), f"ERSPAN type III frame type {frame_type}")
        self.stats["encap_gre"] += 1
        return self._ethertype(frame, data, ptype, off, limit, cut, depth, "GRE")

    def _vxlan(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        self.stats["encap_vxlan"] += 1
        _within(limit, off + 8, "VXLAN header")
        return self._inner_ethernet(frame, data, off + 8, limit, cut, depth)

    def _geneve(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        self.stats["encap_geneve"] += 1
        _within(limit, off + 8, "Geneve header")
        if data[off] >> 6:
            return self._unsupported(frame, "Geneve", f"Geneve version {data[off] >> 6}")
        start = off + 8 + (data[off] & 0x3F) * 4  # past the options
        _within(limit, start, "Geneve options")
        return self._ethertype(frame, data, _U16.unpack_from(data, off + 2)[0], start, limit, cut, depth, "Geneve")

    def _ip_in_ip(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        self.stats["encap_ip_in_ip"] += 1
        return self._inner_ip(frame, data, off, limit, cut, depth, "IP-in-IP packet")

    def _unsupported_link(self, frame: Frame) -> list[Record]:
        self.stats["unsupported_linktype"] += 1
        if frame.linktype in self._unsupported_seen:
            return []
        self._unsupported_seen.add(frame.linktype)
        return [Anomaly("unsupported", f"link type {frame.linktype} is not decoded", frame.number)]

    def _unsupported(self, frame: Frame, key: object, what: str) -> list[Record]:
        """A frame of an encapsulation we do not read: counted, told once per kind."""
        self.stats["unsupported_encapsulation"] += 1
        if key in self._unsupported_seen:
            return []
        self._unsupported_seen.add(key)
        return [Anomaly("unsupported", f"{what} is not decoded", frame.number)]

    # --- IP

    @staticmethod
    def _ip_end(off: int, declared: int, limit: int, cut: bool, what: str) -> tuple[int, bool]:
        """Where the IP packet ends in the captured bytes, and whether the snaplen cut it;
        trailing bytes past the declared length are link padding."""
        if off + declared <= limit:
            return off + declared, False
        if cut:
            return limit, True
        raise _Malformed(f"{what} {declared} but only {limit - off} bytes present")

    def _ipv4(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        _within(limit, off + 20, "IPv4 header")
        vihl, total, ident, flags_offset, proto = _IPV4.unpack_from(data, off)
        if vihl >> 4 != 4:
            raise _Malformed(f"IPv4 header with version {vihl >> 4}")
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or total < ihl:
            raise _Malformed(f"IPv4 header length {ihl}, total length {total}")
        _within(limit, off + ihl, "IPv4 options")
        end, cut = self._ip_end(off, total, limit, cut, "IPv4 total length")
        src, dst = data[off + 12 : off + 16], data[off + 16 : off + 20]
        if flags_offset & 0x3FFF:
            if proto not in _CARRIER_PROTOS:
                self.stats["ip_fragments"] += 1
                self.stats["non_ike_fragments"] += 1
                return []
            key = (4, src, dst, proto, ident)
            meta = (4, src, dst, proto, ident, ihl)  # _Reassembly's arguments
            offset, more = (flags_offset & 0x1FFF) * 8, bool(flags_offset & 0x2000)
            return self._fragment(
                frame, data, key, meta, offset, more, off + ihl, end, total - ihl, total, cut, depth
            )
        start = off + ihl
        if self._relevant(proto, data, start, end) and self._repeated(
            frame, data[off : off + 8] + data[off + 9 : off + 10] + data[off + 12 : end]  # not TTL, checksum
        ):
            return []
        return self._transport(frame, self._ip(4, src, dst, total, cut, depth), proto, data, start, end)

    def _ipv6(self, frame: Frame, data: bytes, off: int, limit: int, cut: bool, depth: int) -> list[Record]:
        _within(limit, off + 40, "IPv6 header")
        vtcfl, plen, nh = _IPV6.unpack_from(data, off)
        if vtcfl >> 28 != 6:
            raise _Malformed(f"IPv6 header with version {vtcfl >> 28}")
        end, cut = self._ip_end(off + 40, plen, limit, cut, "IPv6 payload length")
        src, dst = data[off + 8 : off + 24], data[off + 24 : off + 40]
        nh, pos, frag = _walk_ipv6(data, nh, off + 40, end)
        if frag is None:
            if self._relevant(nh, data, pos, end) and self._repeated(
                frame, data[off : off + 7] + data[off + 8 : end]  # not the hop limit
            ):
                return []
            return self._transport(frame, self._ip(6, src, dst, 40 + plen, cut, depth), nh, data, pos, end)
        hdr_pos, offset, more, ident = frag
        if nh not in _IPV6_FRAGMENTABLE:
            self.stats["ip_fragments"] += 1
            self.stats["non_ike_fragments"] += 1
            return []
        unfragmentable = hdr_pos - off  # IPv6 header plus extension headers before it
        declared = 40 + plen - (pos - off)
        meta = (6, src, dst, nh, ident, unfragmentable)
        key = (6, src, dst, ident)
        return self._fragment(
            frame, data, key, meta, offset, more, pos, end, declared, 40 + plen, cut, depth
        )

    def _ip(self, version: int, src: bytes, dst: bytes, length: int, cut: bool, depth: int) -> _Ip:
        # Inside a tunnel packet reassembled from fragments, the frames are the tunnel's.
        return _Ip(version, src, dst, length, cut, *self._carried, depth=depth)

    # --- duplicates

    def _relevant(self, proto: int, data: bytes, start: int, end: int) -> bool:
        """Whether a packet is one whose copies would count twice: IKE, IKE over TCP, ESP.
        Tunnels are judged by their inner packet, fragments by their pieces."""
        if proto == 17 or proto == 6:
            if end - start < 4:
                return False
            sport, dport = _PORTS.unpack_from(data, start)
            return _could_be_ike(proto, sport, dport)
        return proto == 50

    def _repeated(self, frame: Frame, packet: bytes) -> bool:
        """A copy of a packet seen within DUPLICATE_WINDOW (a SPAN session mirroring both
        ports of a conversation): counted as `duplicates` and dropped."""
        if self._duplicate_window <= 0:
            return False
        now, recent, order = frame.timestamp, self._recent, self._recent_order
        while order and (now - order[0][0] > self._duplicate_window or len(order) >= _MAX_RECENT):
            when, old = order.popleft()
            if recent.get(old) == when:
                del recent[old]
                self._recent_frame.pop(old, None)
        key = hash(packet)
        seen = recent.get(key)
        if seen is not None and abs(now - seen) <= self._duplicate_window:
            # A capture without a clock (every timestamp 0, as some rewritten test captures
            # have) cannot tell a retransmission from a mirror's copy by time: only the copy
            # in the very next frame is taken for a duplicate there.
            if now != 0.0 or seen != 0.0 or frame.number - self._recent_frame.get(key, frame.number) == 1:
                self.stats["duplicates"] += 1
                return True
        recent[key] = now
        self._recent_frame[key] = frame.number
        order.append((now, key))
        return False

    # --- IP reassembly

    def _fragment(self, frame: Frame, data: bytes, key: tuple, meta: tuple, offset: int, more: bool,
                  start: int, end: int, declared: int, frag_length: int,
                  cut: bool, depth: int) -> list[Record]:  # fmt: skip
        self.stats["ip_fragments"] += 1
        piece = data[start:end]
        if self._already_settled(key, offset, piece):
            return []
        out: list[Record] = []
        buf = self._pending.get(key)
        if buf is None:
            out += self._make_room()
            buf = self._pending[key] = _Reassembly(*meta, first_ts=frame.timestamp)
            buf.depth = depth
        if self._held + declared > self._max_bytes:
            out += self._free_bytes(key, declared)
        try:
            if meta[5] + offset + declared > self._max_datagram:
                raise _Malformed(f"reassembled datagram would exceed {self._max_datagram} bytes")
            added = buf.add(offset, declared, piece, more)
        except _Malformed as exc:
            self._settle(key, frame.timestamp, _DROPPED)
            return [*out, Anomaly("malformed", f"{self._describe(buf)}: {exc}", frame.number)]
        if not added:
            self.stats["ip_fragment_duplicates"] += 1
            return out
        self._held += declared
        buf.frames.append(frame.number)
        buf.lengths.append(frag_length)
        buf.cut |= cut
        if offset == 0:
            buf.hdr_len = meta[5]
            if not self._first_piece_could_be_ike(buf, piece):
                self.stats["non_ike_fragments"] += len(buf.frames)
                self._settle(key, frame.timestamp, "non_ike_fragments")
                return out
        if buf.complete:
            self._settle(key, frame.timestamp, buf.fingerprint())
            self.stats["reassembled"] += 1
            out += self._reassembled(frame, buf)
        return out

    def _already_settled(self, key: tuple, offset: int, piece: bytes) -> bool:
        settled = self._settled.get(key)
        if settled is None:
            return False
        fingerprint = settled[1]
        if isinstance(fingerprint, str):
            self.stats[fingerprint] += 1
            return True
        if fingerprint.get(offset) == hash(piece):
            self.stats["ip_fragment_duplicates"] += 1
            return True
        del self._settled[key]  # the identification was reused for a new datagram
        return False

    def _settle(self, key: tuple, now: float, fingerprint: dict[int, int] | str) -> None:
        buf = self._pending.pop(key, None)
        if buf is not None:
            self._held -= buf.received
        self._settled.pop(key, None)
        if len(self._settled) >= self._max_buffers:
            del self._settled[next(iter(self._settled))]
        self._settled[key] = (now, fingerprint)

    def _first_piece_could_be_ike(self, buf: _Reassembly, piece: bytes) -> bool:
        proto, pos = buf.proto, 0
        if buf.version == 6:
            try:
                proto, pos, _ = _walk_ipv6(piece, proto, 0, len(piece), allow_fragment=False)
            except (_Truncated, _Malformed):
                return True  # undecidable from this piece; decided at reassembly
        if proto not in (6, 17):
            return proto in _CARRIER_PROTOS  # a tunnel: its inner packet will tell
        if len(piece) < pos + 4:
            return True
        sport, dport = _PORTS.unpack_from(piece, pos)
        return _could_be_ike(proto, sport, dport) or (proto == 17 and dport in self._udp_tunnels)

    def _make_room(self) -> list[Record]:
        if len(self._pending) < self._max_buffers:
            return []
        key = next(iter(self._pending))
        buf = self._pending[key]
        self._settle(key, buf.first_ts, _DROPPED)
        detail = f"reassembly table full ({self._max_buffers}): dropped {self._describe(buf)}"
        return [Anomaly("overflow", detail, buf.frames[0] if buf.frames else None)]

    def _free_bytes(self, keep: tuple, needed: int) -> list[Record]:
        """Drop the oldest buffers (not `keep`'s) until `needed` more bytes fit."""
        out: list[Record] = []
        while self._held + needed > self._max_bytes:
            key = next((k for k in self._pending if k != keep), None)
            if key is None:
                break
            buf = self._pending[key]
            self._settle(key, buf.first_ts, _DROPPED)
            detail = f"reassembly buffers full ({self._max_bytes} bytes): dropped {self._describe(buf)}"
            out.append(Anomaly("overflow", detail, buf.frames[0] if buf.frames else None))
        return out

    def _expire(self, now: float) -> list[Record]:
        out: list[Record] = []
        while self._pending:
            key, buf = next(iter(self._pending.items()))
            if now - buf.first_ts <= self._timeout:
                break
            out.append(self._unfinished(buf, f"timed out after {self._timeout:g} s"))
            self._settle(key, now, _DROPPED)
        while self._settled:
            key, (when, _) = next(iter(self._settled.items()))
            if now - when <= self._timeout:
                break
            del self._settled[key]
        return out

    def _unfinished(self, buf: _Reassembly, why: str) -> Anomaly:
        total = "?" if buf.total is None else buf.total
        detail = f"{self._describe(buf)} never completed ({why}): {buf.received} of {total} bytes"
        return Anomaly("incomplete", detail, buf.frames[0] if buf.frames else None)

    def _describe(self, buf: _Reassembly) -> str:
        shown = ", ".join(map(str, buf.frames[:8])) + (f", ... {len(buf.frames)} in all" if len(buf.frames) > 8 else "")
        frames = f" (frames {shown})" if buf.frames else ""
        return (f"IPv{buf.version} datagram {self._name(buf.src)} -> {self._name(buf.dst)} "
                f"id 0x{buf.ident:x}{frames}")  # fmt: skip

    def _reassembled(self, frame: Frame, buf: _Reassembly) -> list[Record]:
        if buf.cut:
            detail = f"{self._describe(buf)}: a fragment was cut by the snaplen"
            return [Anomaly("incomplete", detail, frame.number)]
        payload = buf.payload()
        proto, pos = buf.proto, 0
        if buf.version == 6:
            proto, pos, _ = _walk_ipv6(payload, proto, 0, len(payload), allow_fragment=False)
        ip = _Ip(buf.version, buf.src, buf.dst, buf.hdr_len + len(payload), False,
                 tuple(buf.frames), buf.first_ts, tuple(buf.lengths), buf.depth)  # fmt: skip
        return self._transport(frame, ip, proto, payload, pos, len(payload))

    # --- transports

    def _transport(
        self, frame: Frame, ip: _Ip, proto: int, data: bytes, start: int, end: int
    ) -> list[Record]:
        if proto == 17:
            return self._udp(frame, ip, data, start, end)
        if proto == 6:
            return self._tcp(frame, ip, data, start, end)
        if proto == 50:
            self.stats["esp"] += 1
            return self._esp_packet(frame, ip, data[start:start + 4], False)
        if proto == IPPROTO_GRE:
            return self._tunnel(frame, ip, _gre, data, start, end)
        if proto in _IP_IN_IP:
            return self._tunnel(frame, ip, _ip_in_ip, data, start, end)
        self.stats["ah" if proto == 51 else "non_ike"] += 1
        return []

    def _tunnel(self, frame: Frame, ip: _Ip, decapsulate: Callable, data: bytes, start: int,
                end: int) -> list[Record]:  # fmt: skip
        """The packet inside a tunnel packet (whose addresses are the mirror's, never the
        IKE peers')."""
        if ip.depth >= _MAX_ENCAP_DEPTH:
            raise _Malformed(f"more than {_MAX_ENCAP_DEPTH} nested encapsulations")
        if not ip.frames:
            return decapsulate(self, frame, data, start, end, ip.cut, ip.depth + 1)
        self._carried = (ip.frames, ip.first_ts)
        try:
            return decapsulate(self, frame, data, start, end, ip.cut, ip.depth + 1)
        finally:
            self._carried = ((), None)

    def _esp_packet(self, frame: Frame, ip: _Ip, spi: bytes, encapsulated: bool) -> list[Record]:
        key = (ip.src, ip.dst, spi, encapsulated)
        flow = self._esp.get(key)
        if flow is not None:
            flow[2] = frame.timestamp
            flow[3] += 1
            flow[4] += ip.length
            return []
        if len(self._esp) >= self._max_esp_flows:
            self.stats["esp_flow_overflow"] += 1
            if self.stats["esp_flow_overflow"] == 1:
                return [Anomaly("overflow", f"more than {self._max_esp_flows} ESP flows: later new "
                                "SPIs are counted in stats only", frame.number)]
            return []
        self._esp[key] = [frame.number, frame.timestamp, frame.timestamp, 1, ip.length]
        return []

    def _udp(self, frame: Frame, ip: _Ip, data: bytes, start: int, end: int) -> list[Record]:
        if end - start < 4:
            raise _Truncated("UDP header")
        sport, dport = _PORTS.unpack_from(data, start)
        if sport not in IKE_UDP_PORTS and dport not in IKE_UDP_PORTS:
            tunnel = self._udp_tunnels.get(dport)
            if tunnel is not None:
                return self._tunnel(frame, ip, tunnel, data, start + 8, end)
            self.stats["non_ike"] += 1
            return []
        if ip.cut:
            raise _Truncated(f"UDP {sport} -> {dport} datagram cut by the snaplen")
        if end - start < 8:
            raise _Malformed(f"UDP header truncated: {end - start} bytes")
        length = _U16.unpack_from(data, start + 4)[0]
        if length != end - start:
            raise _Malformed(f"UDP length {length} but the IP payload is {end - start} bytes")
        body = data[start + 8 : end]
        marker = NAT_T_PORT in (sport, dport)
        if marker:
            if body == NAT_KEEPALIVE:
                self.stats["nat_keepalive"] += 1
                return []
            if len(body) < 4:
                raise _Malformed(f"UDP 4500 payload of {len(body)} bytes")
            if body[:4] != NON_ESP_MARKER:
                self.stats["esp_in_udp"] += 1
                return self._esp_packet(frame, ip, body[:4], True)
        ike = body[4:] if marker else body
        return [self._ike(frame, ip, sport, dport, "udp", marker, len(body), ike)]

    def _ike(self, frame: Frame, ip: _Ip, sport: int, dport: int, transport: str, marker: bool,
             payload_length: int, ike: bytes, frames: tuple[int, ...] = (),
             first_ts: float | None = None) -> Record:  # fmt: skip
        if len(ike) < IKE_HEADER_LEN:
            detail = f"IKE message of {len(ike)} bytes is shorter than the IKE header"
            return Anomaly("malformed", detail, frame.number)
        major = ike[17] >> 4
        if major not in (1, 2):
            return Anomaly("malformed", f"not an IKE header: version 0x{ike[17]:02x}", frame.number)
        self.stats["ike_datagrams"] += 1
        if major == 1:
            self.stats["ikev1_datagrams"] += 1
        if first_ts is None:
            first_ts = frame.timestamp if ip.first_ts is None else ip.first_ts
        # Positional, in the order of _DATAGRAM_FIELDS: once per datagram, 16 keywords took as
        # long to bind as the record to build.
        return IkeDatagram(frame.number, frames or ip.frames or (frame.number,), frame.timestamp, first_ts,
                           ip.version, self._name(ip.src), self._name(ip.dst), sport, dport, transport, marker,
                           ip.length, ip.frag_lengths, payload_length, ike, major)

    def _name(self, raw: bytes) -> str:
        name = self._names.get(raw)
        if name is None:
            if len(self._names) >= _NAME_CACHE:
                self._names.clear()
            name = self._names[raw] = ipaddress.ip_address(raw).compressed
        return name

    # --- IKE over TCP (RFC 9329)

    def _tcp(self, frame: Frame, ip: _Ip, data: bytes, start: int, end: int) -> list[Record]:
        if end - start < 4:
            raise _Truncated("TCP header")
        sport, dport = _PORTS.unpack_from(data, start)
        if NAT_T_PORT not in (sport, dport):
            self.stats["non_ike"] += 1
            return []
        self.stats["tcp_segments"] += 1
        if ip.cut or end - start < 20:
            raise _Truncated(f"TCP {sport} -> {dport} segment")
        seq, offset_flags = _TCP.unpack_from(data, start)
        header = (offset_flags >> 12) * 4
        if header < 20 or start + header > end:
            raise _Malformed(f"TCP data offset {header} in a {end - start}-byte segment")
        key = (ip.src, sport, ip.dst, dport)
        flags = offset_flags & 0x3F
        out: list[Record] = []
        stream = self._streams.pop(key, None)  # re-inserted below: least recently used goes first
        if flags & _SYN and (stream is None or stream.isn != seq):
            if stream is not None and stream.isn is not None and stream.held():
                out.append(self._stream_anomaly("incomplete", key, stream, "connection restarted"))
            stream = _TcpStream(seq)
            self.stats["tcp_streams"] += 1
        elif stream is None:
            if end - start == header:
                return out  # a bare ACK of a connection we do not follow
            stream = _TcpStream(None)
            detail = f"{self._flow(key)}: stream joined without its SYN, not decoded"
            out.append(Anomaly("incomplete", detail, frame.number))
        out += self._store_stream(key, stream)
        if stream.isn is None:
            return out
        segment = data[start + header : end]
        if segment:
            relative = (seq - stream.isn - 1 + bool(flags & _SYN)) & 0xFFFFFFFF
            out += self._tcp_data(frame, ip, key, stream, relative, segment)
        if flags & (_FIN | _RST):
            stream.closed = True
        return out

    def _store_stream(self, key: tuple, stream: _TcpStream) -> list[Record]:
        out: list[Record] = []
        if len(self._streams) >= self._max_streams:
            old_key = next(iter(self._streams))
            old = self._streams.pop(old_key)
            if old.isn is not None and (old.held() or not old.closed):
                why = f"stream table full ({self._max_streams})"
                out.append(self._stream_anomaly("overflow", old_key, old, why))
        self._streams[key] = stream
        return out

    def _tcp_data(self, frame: Frame, ip: _Ip, key: tuple, stream: _TcpStream, relative: int,
                  segment: bytes) -> list[Record]:  # fmt: skip
        if relative >= 1 << 31 or relative + len(segment) <= stream.next:
            self.stats["tcp_retransmissions"] += 1
            return []
        if relative > stream.next:
            held = stream.pending.get(relative)
            if held is None or len(held[0]) < len(segment):  # keep the longer copy
                stream.pending[relative] = (segment, frame.number, frame.timestamp)
        else:
            self._append(stream, segment[stream.next - relative :], frame.number, frame.timestamp)
            self._drain(stream)
        if stream.held() > TCP_STREAM_CAP or len(stream.pending) > _MAX_TCP_PENDING:
            self._streams[key] = _TcpStream(None)  # ignore the rest of this connection
            why = f"more than {TCP_STREAM_CAP} bytes or {_MAX_TCP_PENDING} segments held"
            return [self._stream_anomaly("overflow", key, stream, why)]
        return self._tcp_frames(frame, ip, key, stream)

    @staticmethod
    def _append(stream: _TcpStream, data: bytes, number: int, timestamp: float) -> None:
        stream.buf += data
        stream.next += len(data)
        stream.pieces.append((stream.next, number, timestamp))

    def _drain(self, stream: _TcpStream) -> None:
        """Move out-of-order segments that now touch the in-order bytes into the buffer."""
        for relative in sorted(stream.pending):
            if relative > stream.next:
                break
            segment, number, timestamp = stream.pending.pop(relative)
            if relative + len(segment) > stream.next:
                self._append(stream, segment[stream.next - relative :], number, timestamp)

    def _tcp_frames(self, frame: Frame, ip: _Ip, key: tuple, stream: _TcpStream) -> list[Record]:
        buf, out = stream.buf, []
        if not stream.prefixed:
            if len(buf) < len(IKETCP_PREFIX) and IKETCP_PREFIX.startswith(buf):
                return out
            stream.prefixed = True
            if buf.startswith(IKETCP_PREFIX):
                self._consume(stream, len(IKETCP_PREFIX))
        while len(buf) >= 2:
            length = _U16.unpack_from(buf)[0]
            if length < 6:  # cannot hold a marker or SPI: framing is lost for good
                self._streams[key] = _TcpStream(None)
                why = f"IKETCP frame length {length}"
                return [*out, self._stream_anomaly("malformed", key, stream, why)]
            if len(buf) < length:
                break
            body = bytes(buf[2:length])
            frames, first_ts = self._frame_pieces(stream, length)
            if body[:4] == NON_ESP_MARKER:
                self.stats["tcp_ike"] += 1
                sport, dport = key[1], key[3]
                ike = body[4:]
                out.append(
                    self._ike(frame, ip, sport, dport, "tcp", True, length, ike, frames, first_ts)
                )
            else:
                self.stats["tcp_esp"] += 1
            self._consume(stream, length)
        return out

    @staticmethod
    def _frame_pieces(stream: _TcpStream, length: int) -> tuple[tuple[int, ...], float]:
        """Frames that carried the first `length` buffered bytes, and the earliest time."""
        stop = stream.next - len(stream.buf) + length
        carriers = []
        for end, number, timestamp in stream.pieces:
            carriers.append((number, timestamp))
            if end >= stop:
                break
        return tuple(sorted({n for n, _ in carriers})), min(t for _, t in carriers)

    @staticmethod
    def _consume(stream: _TcpStream, count: int) -> None:
        del stream.buf[:count]
        start = stream.next - len(stream.buf)
        while stream.pieces and stream.pieces[0][0] <= start:
            stream.pieces.popleft()

    def _stream_anomaly(self, kind: str, key: tuple, stream: _TcpStream, why: str) -> Anomaly:
        gaps = sum(len(seg) for seg, _, _ in stream.pending.values())
        detail = (f"{self._flow(key)}: {why}; {len(stream.buf)} bytes of an unfinished frame, "
                  f"{gaps} bytes after a gap")  # fmt: skip
        return Anomaly(kind, detail, stream.first_frame())

    def _flow(self, key: tuple) -> str:
        return f"TCP {self._name(key[0])}:{key[1]} -> {self._name(key[2])}:{key[3]}"


_gre = Extractor._gre
_vxlan = Extractor._vxlan
_geneve = Extractor._geneve
_ip_in_ip = Extractor._ip_in_ip
# Ethertypes (and GRE protocol types) of what extraction opens; IP itself aside.
_DECAPSULATE: dict[int, Callable] = {
    ETHERTYPE_TEB: Extractor._teb,
    **dict.fromkeys(ETHERTYPE_MPLS, Extractor._mpls),
    ETHERTYPE_PPPOE_SESSION: Extractor._pppoe,
}
