"""Dissected messages to negotiations: one `Negotiation` per IKE SA.

An IKE SA is named by its SPI pair. Its first request carries SPIr 0, so a response
(or anything later) completes the pair; the tracker indexes by both. Retransmissions
are byte-identical (RFC 7296 section 2.1) and are counted on the message they repeat;
an INVALID_KE_PAYLOAD or COOKIE answer followed by a new IKE_SA_INIT request is a
retry of the same attempt, not a new negotiation. IKE fragments (SKF) are grouped by
(sender, message id, direction), since their bodies are encrypted.

With a key table, dissection hands on what the encrypted payloads held: the tracker
gathers it per IKE SA (IKE_AUTH identities and Child SA proposals, PPK notifies, each
CREATE_CHILD_SA with the IKE_FOLLOWUP_KE exchanges that belong to it) and links a
rekeyed IKE SA to its parent by the new SPIs the rekey carried.

Which exchange may follow which is one table, `TRANSITIONS`, in the manner of h11:
anything it does not list is recorded as an anomaly instead of being guessed.
"""

from __future__ import annotations

import functools
import math
import pickle
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from operator import attrgetter
from types import MappingProxyType, SimpleNamespace
from typing import TypeVar

from ikeaudit import iana, records
from ikeaudit.spill import SpillFile
from ikeaudit.mtu import plaintext_upper_bound, sk_overhead
from ikeaudit.records import (
    AUTH_REQUESTED,
    ESTABLISHED,
    INTERMEDIATE,
    MIDSTREAM,
    NEW,
    SA_INIT_DONE,
    SA_INIT_FAILED,
    SA_INIT_REQUESTED,
    SA_INIT_RETRY,
    Anomaly,
    ChildExchange,
    Decryption,
    FollowupKe,
    Identification,
    Ikev1Message,
    Ikev1Proposal,
    IkeMessage,
    InnerPayloads,
    Malformed,
    Negotiation,
    Proposal,
    SaInitRetry,
    TrackedMessage,
)

ZERO_SPI = "0" * 16

# (state, exchange, is_response) -> next state. IKE_SA_INIT responses are decided by
# their content (chosen SA, retry demand or error) in `_sa_init_response_state`.
TRANSITIONS: dict[tuple[str, int, bool], str] = {
    (NEW, iana.IKE_SA_INIT, False): SA_INIT_REQUESTED,
    (SA_INIT_REQUESTED, iana.IKE_SA_INIT, False): SA_INIT_REQUESTED,
    (SA_INIT_RETRY, iana.IKE_SA_INIT, False): SA_INIT_REQUESTED,
    (SA_INIT_FAILED, iana.IKE_SA_INIT, False): SA_INIT_REQUESTED,
    (SA_INIT_DONE, iana.IKE_INTERMEDIATE, False): INTERMEDIATE,
    (INTERMEDIATE, iana.IKE_INTERMEDIATE, False): INTERMEDIATE,
    (INTERMEDIATE, iana.IKE_INTERMEDIATE, True): INTERMEDIATE,
    (SA_INIT_DONE, iana.IKE_AUTH, False): AUTH_REQUESTED,
    (INTERMEDIATE, iana.IKE_AUTH, False): AUTH_REQUESTED,
    (AUTH_REQUESTED, iana.IKE_AUTH, False): AUTH_REQUESTED,
    (AUTH_REQUESTED, iana.IKE_AUTH, True): ESTABLISHED,
    # EAP and multiple authentication take several IKE_AUTH rounds.
    (ESTABLISHED, iana.IKE_AUTH, False): AUTH_REQUESTED,
    (ESTABLISHED, iana.CREATE_CHILD_SA, False): ESTABLISHED,
    (ESTABLISHED, iana.CREATE_CHILD_SA, True): ESTABLISHED,
    (ESTABLISHED, iana.IKE_FOLLOWUP_KE, False): ESTABLISHED,
    (ESTABLISHED, iana.IKE_FOLLOWUP_KE, True): ESTABLISHED,
    (ESTABLISHED, iana.INFORMATIONAL, False): ESTABLISHED,
    (ESTABLISHED, iana.INFORMATIONAL, True): ESTABLISHED,
    # A peer may give up with an INFORMATIONAL (delete, error) at any point after SA_INIT.
    (SA_INIT_DONE, iana.INFORMATIONAL, False): SA_INIT_DONE,
    (SA_INIT_DONE, iana.INFORMATIONAL, True): SA_INIT_DONE,
    (INTERMEDIATE, iana.INFORMATIONAL, False): INTERMEDIATE,
    (INTERMEDIATE, iana.INFORMATIONAL, True): INTERMEDIATE,
    (AUTH_REQUESTED, iana.INFORMATIONAL, False): AUTH_REQUESTED,
    (AUTH_REQUESTED, iana.INFORMATIONAL, True): AUTH_REQUESTED,
}
# Anything goes once we joined an SA in the middle: we cannot know what came before.
MIDSTREAM_EXCHANGES = frozenset({iana.IKE_AUTH, iana.CREATE_CHILD_SA, iana.INFORMATIONAL,
                                 iana.IKE_INTERMEDIATE, iana.IKE_FOLLOWUP_KE})

# Bounds on what one IKE SA may hold: hostile input can announce 65,535 IKE fragments,
# use a new message id in every packet or repeat one packet forever. Past a bound the
# rest is counted, not kept, and an "overflow" anomaly on the negotiation says how much.
# A real message has a few dozen fragments at most (libreswan sends at most 32).
MAX_IKE_FRAGMENTS = 128  # fragments kept per message
MAX_OPEN_FRAGMENT_GROUPS = 64  # fragmented messages of one SA still missing fragments
MAX_MESSAGES = 4096  # distinct messages per IKE SA: 2,048 exchanges, a day of 40 s DPD
MAX_FRAMES = 1024  # frame numbers listed per message (retransmissions are counted anyway)
MAX_ANOMALIES = 256  # anomaly records per IKE SA
# SAs evicted from a full table that hold a single unanswered datagram (a flood of
# random SPIs looks like this) are kept as negotiations up to `max_evicted_bare`; past
# that they are counted per initiator (for at most MAX_FLOOD_SOURCES initiators).
MAX_FLOOD_SOURCES = 1024

# The negotiation table is bounded in memory (`--max-state-mb`), by an estimate that
# errs high: tracemalloc measured about 3.4 KB for an SA holding its IKE_SA_INIT request
# and 15.9 KB for one holding a whole handshake of 11 datagrams (bench/gateway.py's lab
# handshakes), i.e. about 2.2 KB for the SA and 1.2 KB a datagram kept. A datagram with
# hundreds of transforms holds more (dissection bounds them: 64 proposals, 256 transforms).
SA_STATE_BYTES = 4096  # an open IKE SA, its lookup entries and its first message's builder
DATAGRAM_STATE_BYTES = 2048  # each datagram it keeps (the dissected record and its frames)
# A frozen SA (_SaBuilder.freeze) is counted as this plus the bytes of its packs held in
# memory (those in the spill file cost disk, not memory): tracemalloc measured 1.2 KB an
# SA with its packs filed, its lookup entries included, and the allocator keeps about a
# fifth more as free blocks among them (sys._debugmallocstats, bench/gateway.py at 20,000).
FROZEN_SA_STATE_BYTES = 2048
# Open SAs of a single unanswered datagram: a flood of random SPIs is made of these, a
# gateway's new negotiations stay so only for a round trip (2,000 a second at 100 ms: 200).
MAX_BARE_IN_FLIGHT = 10_000
# The scan and report keep every SA open to the end of its capture, frozen once idle:
# 1024 MB holds 500,000 frozen SAs (FROZEN_SA_STATE_BYTES, the packs filed), 350,000 when
# no spill file can be made and every pack stays in memory (about 1 KB each on the lab
# handshakes), and about 900 MB of memory are in use when it is reached.
DEFAULT_MAX_STATE_MB = 1024
# A tracker that never freezes (live, audit_frames) holds SAs as they were fed: 6144 MB
# holds 240,000 SAs of 11 datagrams (what the lab handshakes hold on average), a million
# of one.
UNFROZEN_MAX_STATE_MB = 6144
MAX_RETRY_CANDIDATES = 64  # recent retry demands between two peers a new SPIi may answer

# How long after a retry demand a request with a new SPIi from the same initiator is
# taken for the retry of that attempt.
RETRY_WINDOW_S = 30.0

# How long before an IKE SA met without IKE_SA_INIT a CREATE_CHILD_SA of another SA
# between the same peers may be taken for the rekey that created it. Peers rekey a few
# seconds before the old SA expires and delete it right after; an unrelated SA hours
# later between the same gateways must not inherit anything.
REKEY_WINDOW_S = 300.0

# Fewest inner payload bytes of a CREATE_CHILD_SA request that rekeys an IKE SA (RFC 7296
# section 1.3.2): an SA payload with one IKE proposal (4 + 8 + 8-byte SPI + ENCR, PRF
# and KE transforms of 8 bytes), a Nonce of at least 16 bytes (4 + 16) and a KE payload
# of at least Curve25519's 32 bytes (8 + 32).
MIN_IKE_REKEY_REQUEST = (4 + 8 + 8 + 3 * 8) + (4 + 16) + (8 + 32)


_EMPTY: MappingProxyType = MappingProxyType({})
# One int object each for the IKE ports an SA keeps (an int above 256 is an object per packet).
_PORTS = {port: port for port in iana.IKE_PORTS}
# Values that thousands of SAs hold alike, one object each: the notify types of
# IKE_SA_INIT messages and the proposals offered (a gateway's clients send the same few),
# the highest message ids of frozen SAs, the masks of exchanges seen (an int past 2**30
# is 32 bytes) (bounded: hostile input may send new ones every time).
_SHARED_TUPLES: dict[tuple | int, tuple | int] = {}
MAX_SHARED_TUPLES = 4096
_T = TypeVar("_T", tuple, int)
# The list fields of an SA (`_SaBuilder.grown`)
_GROWN = ("offered", "offered_ke", "error_notifies", "retries", "vendor_ids", "anomalies", "ikev1_exchanges")
_OFFERS = ("offered", "offered_ke")
# Bytes of packed SAs held in memory before packs go to a temporary file (_Packer): about
# 4,000 SAs, so that a small scan makes no file (at 200,000 SAs, 16 MB was 4 % of the peak).
SPILL_AFTER_BYTES = 4 << 20
MAX_LATER = 8  # packs of messages met while frozen, beside the first, before a thaw joins them


def _shared(values: _T) -> _T:
    shared = _SHARED_TUPLES.get(values)
    if shared is None:
        if len(_SHARED_TUPLES) >= MAX_SHARED_TUPLES:
            return values
        shared = _SHARED_TUPLES[values] = values
    return shared


def _fragment_number(message: IkeMessage) -> int:
    """Its SKF fragment number; 0 for an unfragmented message."""
    return message.fragment[0] if message.fragment else 0


_TRACKED_FIELDS = ("exchange", "message_id", "response", "from_initiator", "src", "dst", "sport", "dport",
                   "first_frame", "frames", "first_timestamp", "last_timestamp", "udp_payload_bytes", "ip_lengths",
                   "ike_lengths", "ike_bytes", "encrypted_bytes", "ike_fragments", "fragments_seen",
                   "ip_fragment_lengths", "retransmissions", "assembly_seconds", "payload_types", "notifies",
                   "key_exchange", "decryption", "inner")
if tuple(f.name for f in fields(TrackedMessage)) != _TRACKED_FIELDS:
    raise ImportError("_MessageBuilder.build passes TrackedMessage's fields by position: their order changed")


@dataclass(slots=True)
class _MessageBuilder:
    first: IkeMessage
    frames: list[int] = field(default_factory=list)
    last_timestamp: float = 0.0
    # SKF fragment number (0 when unfragmented) -> datagram of its first transmission; None
    # while that is `first` alone, as for most messages (a dict each was a tenth of an SA
    # in flight). Empty until `add` takes the first datagram, `first`.
    pieces: dict[int, IkeMessage] | None = field(default_factory=dict)
    copies: dict[int, int] | None = None  # fragment number -> retransmitted copies, once one came
    # Decrypted content: on the SKF fragment that completed the set, which may be a
    # retransmitted copy when the first transmission lost a fragment.
    inner: InnerPayloads | None = None

    def add(self, message: IkeMessage) -> str | None:
        """Fold in one datagram; what was not kept of it when a bound was hit."""
        number = _fragment_number(message)
        dropped = None
        if len(self.frames) + len(message.frames) <= MAX_FRAMES:
            self.frames.extend(message.frames)
        else:
            dropped = f"frames of a message past the first {MAX_FRAMES}"
        self.last_timestamp = max(self.last_timestamp, message.timestamp)
        if self.inner is None and message.inner is not None:
            self.inner = message.inner
        pieces = self.pieces
        if pieces is not None and not pieces:  # `first` itself
            self.pieces = None
            return dropped
        if pieces is None:
            first = self.first
            if number == _fragment_number(first):
                pieces = {number: first}  # a copy of it: counted below, nothing to keep
            else:
                pieces = self.pieces = {_fragment_number(first): first}
        if number in pieces:
            if self.copies is None:
                self.copies = {}
            self.copies[number] = self.copies.get(number, 0) + 1
        elif len(pieces) >= MAX_IKE_FRAGMENTS:
            dropped = f"IKE fragments of a message past the first {MAX_IKE_FRAGMENTS}"
        else:
            pieces[number] = message
        return dropped

    @property
    def kept(self) -> int:
        """Datagrams of the first transmission kept."""
        return 1 if self.pieces is None else len(self.pieces)

    def ordered(self) -> list[IkeMessage]:
        """The datagrams of the first transmission, by fragment number."""
        pieces = self.pieces
        return [self.first] if pieces is None else [pieces[n] for n in sorted(pieces)]

    @property
    def incomplete(self) -> bool:
        total = self.first.fragment[1] if self.first.fragment else 0
        return 0 < total and self.kept < total

    def same_message(self, message: IkeMessage) -> bool:
        """A new message reusing the id (an IKE_SA_INIT retry) differs in its bytes."""
        number = _fragment_number(message)
        if self.pieces is None:
            first = self.first
            seen = first if number == _fragment_number(first) else None
        else:
            seen = self.pieces.get(number)
        return seen is None or seen.digest == message.digest

    def build(self) -> TrackedMessage:
        first = self.first
        if self.pieces is None:  # one datagram, as most messages: its own figures, no walk over pieces
            fragment = first.fragment
            per_datagram = ((first.udp_payload_length,), (first.ip_length,), (first.length,), first.length,
                            first.encrypted_length, fragment[1] if fragment else 0,
                            (fragment[0],) if fragment else (), (first.ip_fragment_lengths,),
                            first.timestamp - first.first_timestamp, first.decryption)
        else:
            ordered = self.ordered()
            per_datagram = (tuple(m.udp_payload_length for m in ordered), tuple(m.ip_length for m in ordered),
                            tuple(m.length for m in ordered), sum(m.length for m in ordered),
                            sum(m.encrypted_length for m in ordered),
                            max((m.fragment[1] for m in ordered if m.fragment), default=0),
                            tuple(m.fragment[0] for m in ordered if m.fragment),
                            tuple(m.ip_fragment_lengths for m in ordered),
                            max(m.timestamp for m in ordered) - min(m.first_timestamp for m in ordered),
                            self._decryption(ordered))
        (udp_payload_bytes, ip_lengths, ike_lengths, ike_bytes, encrypted_bytes, ike_fragments, fragments_seen,
         ip_fragment_lengths, assembly_seconds, decryption) = per_datagram
        # Positional, in the order of _TRACKED_FIELDS: 27 keywords took longer to bind than
        # the record to build, for every message of every negotiation.
        return TrackedMessage(
            first.exchange, first.message_id, first.is_response, first.from_original_initiator, first.src,
            first.dst, first.sport, first.dport, first.frame, tuple(self.frames), first.first_timestamp,
            self.last_timestamp, udp_payload_bytes, ip_lengths, ike_lengths, ike_bytes, encrypted_bytes,
            ike_fragments, fragments_seen, ip_fragment_lengths, max(self.copies.values()) if self.copies else 0,
            assembly_seconds, first.payload_types, first.notify_types(), first.key_exchange, decryption, self.inner,
        )

    def _decryption(self, ordered: list[IkeMessage]) -> Decryption | None:
        """The whole message's: the first fragment that failed, else how they opened."""
        outcomes = [m.decryption for m in ordered if m.decryption is not None]
        if not outcomes:
            return None
        failed = next((d for d in outcomes if not d.opened), None)
        if failed is not None:
            return failed
        status = "decrypted" if all(d.status == "decrypted" for d in outcomes) else "decrypted-unchecked"
        if len(ordered) == 1:
            return outcomes[0]
        detail = (f"{len(outcomes)} IKE fragments opened with {outcomes[0].key_line} and joined"
                  if self.inner is not None else
                  f"{len(outcomes)} IKE fragments opened, but not all fragments arrived to join them")
        return Decryption(status, detail, outcomes[0].key_line)


@dataclass(frozen=True, slots=True)
class _FirstSeen:
    """What a frozen SA keeps of its first message (the rest comes back with `messages`),
    and of its messages' keys: how many, and the highest message id of each kind
    (index 2 * response + from initiator; -1 for none). A message whose id is higher
    than any of its kind is a new one, kept beside the packed ones without thawing them
    (`_SaBuilder.messages_for`): on a gateway, the INFORMATIONAL exchanges that come
    every second or so to an established SA."""

    frame: int
    timestamp: float
    count: int = 0
    highest: tuple[int, int, int, int] = (-1, -1, -1, -1)


@dataclass(slots=True, eq=False)  # by identity: the tracker's indexes key on the SA itself
class _SaBuilder:
    first: IkeMessage | Ikev1Message
    spi_i: str
    spi_r: str
    initiator: str
    responder: str
    initiator_port: int
    responder_port: int
    state: str
    order: int
    last_seen: float = 0.0
    sa_init_seen: bool = False
    # The list fields hold the shared empty tuple until something is added (`grown`).
    offered: list[Proposal] | tuple = ()
    offered_ke: list[int] | tuple = ()
    chosen: Proposal | None = None
    responder_ke: int | None = None
    initiator_notifies: tuple[int, ...] = ()
    responder_notifies: tuple[int, ...] = ()
    error_notifies: list[tuple[int, int]] | tuple = ()
    retries: list[SaInitRetry] | tuple = ()
    # message key -> builders (`messages`); while the SA is frozen, with its first message,
    # a pack (_Packer: bytes, or where it lies in the spill file), and beside it the
    # messages met since: packed at each later freeze (the one pack as it is, more in a
    # tuple: most SAs have one, and a tuple of it was 48 bytes), the fresh ones not yet
    store: dict[tuple, list[_MessageBuilder]] | bytes | int = field(default_factory=dict)
    later: bytes | int | tuple[bytes | int, ...] = ()
    fresh: dict[tuple, list[_MessageBuilder]] | None = None
    vendor_ids: list[bytes] | tuple = ()
    anomalies: list[Anomaly] | tuple = ()
    # Bit 1 << exchange for each exchange a message of it ever had, and whether one
    # carried decrypted payloads: rekey linking looks into a frozen SA only when they say
    # it may find something (a message given up since may have gone: it looks then).
    exchanges: int = 0
    inner_seen: bool = False
    moved_to_4500: bool = False
    rekeyed_from: tuple[str, str] | None = None
    rekey_evidence: str | None = None
    rekey_linked_by: str | None = None
    ikev1_exchanges: list[int] | tuple = ()
    ikev1: _Ikev1Phase | None = None  # what an IKEv1 SA's clear messages showed
    reported: bool = False  # already handed out by Tracker.drain
    state_bytes: int = 0  # estimated, while open (Tracker.max_state_bytes)
    counted_frozen: bool = False  # state_bytes counts it frozen: a thaw must count it again
    # What a bound kept out -> how much, and the fragmented messages still missing
    # fragments, oldest first: id(builder) -> (key, builder); the shared empty mapping
    # until something is put in.
    dropped: dict[str, int] | MappingProxyType = field(default_factory=lambda: _EMPTY)
    open_fragments: dict[int, tuple[tuple, _MessageBuilder]] | MappingProxyType = field(default_factory=lambda: _EMPTY)

    @property
    def messages(self) -> dict[tuple, list[_MessageBuilder]]:
        """Its messages, thawed first if frozen."""
        store = self.store
        if type(store) is not dict:
            self.first, store = _PACKER.unpack(self.store, done=True)
            self._join(store, done=True)
            self.store, self.later, self.fresh = store, (), None
        return store

    def peek(self) -> dict[tuple, list[_MessageBuilder]]:
        """Its messages to read: a frozen SA's unpacked for the caller alone, the SA stays
        packed (rekey linking reads thousands of SAs at the end of the input: thawed
        together, they were a tenth of the scan's peak memory)."""
        store = self.store
        if type(store) is dict:
            return store
        store = _PACKER.unpack(store)[1]
        self._join(store)
        return store

    @property
    def packs_later(self) -> tuple[bytes | int, ...]:
        """The packs of the messages met while frozen, in order."""
        later = self.later
        return later if type(later) is tuple else (later,)

    def _join(self, store: dict[tuple, list[_MessageBuilder]], done: bool = False) -> None:
        """The messages met while frozen after the packed ones, as they came (their keys are new)."""
        for packed in self.packs_later:
            store.update(_PACKER.unpack(packed, done=done))
        if self.fresh:
            store.update(self.fresh)

    def messages_for(self, key: tuple) -> dict[tuple, list[_MessageBuilder]]:
        """Where the builders of a message of this key are, or go: beside a frozen SA's
        packed messages when the key is new to it (`_FirstSeen`), else among all of them,
        thawed."""
        first = self.first
        if type(first) is _FirstSeen and type(self.store) is not dict:
            fresh = self.fresh
            if fresh is not None and key in fresh:
                return fresh
            message_id, response, from_initiator = key
            kind = 2 * response + from_initiator
            if message_id > first.highest[kind] and first.count < MAX_MESSAGES and len(self.packs_later) < MAX_LATER:
                highest = list(first.highest)
                highest[kind] = message_id
                self.first = _FirstSeen(first.frame, first.timestamp, first.count + 1, _shared(tuple(highest)))
                if fresh is None:
                    fresh = self.fresh = {}
                return fresh
        return self.messages

    def freeze(self) -> None:
        """Its messages and first message packed: an SA idle in flight holds a fraction of
        the memory (bench/state_bytes.py); those met while frozen are packed on their own.
        One with IKE fragments still missing stays as it is (`open_fragments` points into
        its builders)."""
        if self.open_fragments:
            return
        if type(self.store) is not dict:
            if self.fresh:
                packed = _PACKER.pack(self.fresh)
                self.later = packed if self.later == () else (*self.packs_later, packed)
                self.fresh = None
            return
        first = self.first
        if not isinstance(first, IkeMessage):
            return
        for name in _GROWN:  # lists that rarely grow once idle: as tuples, the offers shared
            value = getattr(self, name)
            if type(value) is list:
                setattr(self, name, _shared(tuple(value)) if name in _OFFERS else tuple(value))
        highest = [-1, -1, -1, -1]
        for message_id, response, from_initiator in self.store:
            kind = 2 * response + from_initiator
            highest[kind] = max(highest[kind], message_id)
        count = len(self.store)
        self.store = _PACKER.pack((first, self.store))
        self.first = _FirstSeen(first.frame, first.timestamp, count, _shared(tuple(highest)))

    def grown(self, name: str) -> list:
        """The list field `name`, to append to: a field nothing was added to yet holds the
        shared empty tuple (an IKE SA in flight has a dozen of them, mostly empty)."""
        value = getattr(self, name)
        if type(value) is not list:
            value = list(value)
            setattr(self, name, value)
        return value

    def note(self, anomaly: Anomaly) -> None:
        if len(self.anomalies) < MAX_ANOMALIES:
            self.grown("anomalies").append(anomaly)
        else:
            self.drop(f"anomalies past the first {MAX_ANOMALIES}")

    def drop(self, what: str) -> None:
        if type(self.dropped) is not dict:
            self.dropped = {}
        self.dropped[what] = self.dropped.get(what, 0) + 1

    @property
    def bare(self) -> bool:
        """A single datagram and nothing after it."""
        return (len(self.messages) == 1 and not self.retries and not self.ikev1_exchanges
                and all(len(b) == 1 and b[0].kept == 1 for b in self.messages.values()))


class _Packer:
    """Packs a frozen SA's messages. Pickled by each class's own field tuple (dataclasses'
    generic __getstate__/__setstate__ call fields() for every object: a third of a dense
    gateway scan went there), then compressed by zstd with a dictionary, the first SA
    packed: the class names, field layout and proposals that every other SA repeats
    (a quarter of the bytes of an SA in flight, bench/state_bytes.py). The dictionary is
    the process's for good, so every packed SA unpacks with it; zlib alone when
    zstandard is missing.

    Once SPILL_AFTER_BYTES of packs are held, later ones go to an unlinked temporary
    file and the SA keeps only where (an int): a gateway's hundreds of thousands of SAs
    in flight then cost memory for what tracking reads, not for what it packed. Packs
    in the file are counted; when the last is taken back (every SA handed out, as at the
    end of each capture) the file is emptied."""

    def __init__(self) -> None:
        classes = [c for c in vars(records).values() if isinstance(c, type) and is_dataclass(c)]
        table = {}
        for cls in [*classes, _MessageBuilder]:
            names = [f.name for f in fields(cls)]
            values = attrgetter(*names) if len(names) > 1 else (lambda o, name=names[0]: (getattr(o, name),))
            table[cls] = lambda o, cls=cls, values=values: (cls, values(o))
        self._pickler = type("_Pickler", (pickle.Pickler,), {"dispatch_table": table})
        self._compress = self._decompress = None
        self.spill_after = SPILL_AFTER_BYTES
        self.held = 0  # bytes of packs made in memory (not taken back: an upper bound)
        self.spill = SpillFile()

    def pack(self, value: object) -> bytes | int:
        chunks: list[bytes] = []
        self._pickler(SimpleNamespace(write=chunks.append), pickle.HIGHEST_PROTOCOL).dump(value)
        raw = b"".join(chunks)
        if self._compress is None:
            self._start(raw)
        packed = self._compress(raw)
        if self.held + len(packed) <= self.spill_after:
            self.held += len(packed)
            return packed
        return self._to_file(packed)

    def _to_file(self, packed: bytes) -> bytes | int:
        where = self.spill.put(packed)
        if where is None:  # no file: memory, as before the file
            self.held += len(packed)
            return packed
        return where

    def unpack(self, packed: bytes | int, done: bool = False) -> object:
        """What pack() packed; done: the caller drops its pack."""
        if type(packed) is int:
            packed = self.spill.get(packed, done)
        elif done:
            self.held -= len(packed)
        return pickle.loads(self._decompress(packed))

    def packed_size(self, packed: bytes | int) -> int:
        return SpillFile.length(packed) if type(packed) is int else len(packed)

    @staticmethod
    def held_size(packed: bytes | int) -> int:
        """The bytes of a pack held in memory: none for one in the spill file."""
        return 0 if type(packed) is int else len(packed)

    def _start(self, sample: bytes) -> None:
        try:
            import zstandard
        except ImportError:
            self._compress, self._decompress = (lambda data: zlib.compress(data, 1)), zlib.decompress
            return
        dictionary = zstandard.ZstdCompressionDict(sample, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        compress = zstandard.ZstdCompressor(level=1, dict_data=dictionary, write_checksum=False,
                                            write_dict_id=False).compress
        # Copied: zstandard's result keeps the buffer of the worst case, twice the bytes.
        self._compress = lambda data: bytes(memoryview(compress(data)))
        self._decompress = zstandard.ZstdDecompressor(dict_data=dictionary).decompress


_PACKER = _Packer()


class Tracker:
    """Feed it dissected records in capture order; `finish()` returns the negotiations.

    Bounded: open IKE SAs are held up to `max_state_bytes` of estimated state
    (SA_STATE_BYTES an SA, DATAGRAM_STATE_BYTES a datagram kept; frozen after
    `freeze_after` s idle, FROZEN_SA_STATE_BYTES and its packs in memory; by default
    DEFAULT_MAX_STATE_MB when it freezes, UNFROZEN_MAX_STATE_MB when not) and, when given, at most
    `max_negotiations` of them; past that the one idle the longest is closed early and an
    "overflow" anomaly says so. Of them at most `max_bare` may hold a single unanswered
    datagram (past that the one opened first is closed), so that a flood of random SPIs
    stays far below the memory bound. Of those closed early, the
    ones of a single unanswered datagram are kept up to `max_evicted_bare`, then counted
    (`anomalies()`). Each SA's messages, fragments and anomalies are bounded (MAX_*).
    """

    def __init__(self, capture: str = "", *, max_negotiations: int | None = None,
                 max_state_bytes: int | None = None, max_bare: int = MAX_BARE_IN_FLIGHT,
                 max_evicted_bare: int = 1_000, rekey_window: float = REKEY_WINDOW_S,
                 live: bool = False, freeze_after: float | None = None) -> None:  # fmt: skip
        self.capture = capture
        self.live = live  # drained and pruned while the capture goes on: keep the indexes below
        # IKE SAs idle this long in capture time are frozen (_SaBuilder.freeze) until fed again.
        self.freeze_after = freeze_after
        self._warm: dict[_SaBuilder, _SaBuilder] = {}  # open SAs not frozen, the one fed the longest ago first
        self._next_freeze = -math.inf
        self.rekey_window = rekey_window
        self.max_negotiations = max_negotiations
        if max_state_bytes is None:
            max_state_bytes = (DEFAULT_MAX_STATE_MB if freeze_after is not None else UNFROZEN_MAX_STATE_MB) << 20
        self.max_state_bytes = max_state_bytes
        self.max_bare = max_bare
        self.state_bytes = 0  # estimated state of the open IKE SAs
        self.max_evicted_bare = max_evicted_bare
        self._kept_bare = 0
        # Bare SAs evicted from the full table: initiator -> count (see MAX_FLOOD_SOURCES)
        self.evicted_bare: dict[str, int] = {}
        self.evicted_bare_total = 0
        self.evicted_bare_bound = ""  # which bound evicted them, as the anomaly says
        self._by_pair: dict[tuple[str, str], _SaBuilder] = {}
        self._pending: dict[str, _SaBuilder] = {}  # SPIi -> SA whose SPIr is not known yet
        self._by_spi_i: dict[str, _SaBuilder] = {}  # SPIi -> SA that began with IKE_SA_INIT
        self._ikev1: dict[tuple[str, str], _SaBuilder] = {}
        self._closed: list[_SaBuilder] = []
        # Live (drain/prune) only: closed IKEv2 SAs by SPI pair, open and closed IKEv2 SAs
        # by pair of peers (where a rekeyed SA's parent is), closed SAs drain has not
        # handed out yet (evicted from a full table), and how many prune() let go.
        self._closed_by_pair: dict[tuple[str, str], _SaBuilder] = {}
        self._by_peers: dict[frozenset, dict[_SaBuilder, _SaBuilder]] = {}
        self._unreported: list[_SaBuilder] = []
        self.pruned = 0
        self.reported: list[bool] = []  # set by finish(): whether drain handed out each one
        # Open IKEv2 SAs, the one fed the longest ago first: eviction takes the first.
        self._idle: dict[_SaBuilder, _SaBuilder] = {}
        # Open SAs of a single datagram so far, the one opened first first (max_bare).
        self._bare: dict[_SaBuilder, _SaBuilder] = {}
        # (initiator, responder) -> SAs told to retry IKE_SA_INIT, by id, in that order
        self._retrying: dict[tuple[str, str], dict[_SaBuilder, _SaBuilder]] = {}
        self._order = 0
        self.malformed: list[Malformed] = []
        self.malformed_count = 0
        # Streaming (`hand_out`): the SAs still held (open, or closed and not handed out)
        # by (initiator, responder), opened first first; the open ones met mid-stream; and
        # what SAs handed out leave behind for the rekeys that may follow them.
        # (the SA itself while it is the only one: most peers hold one, and a dict each
        # was a tenth of an SA's memory)
        self._held_by_peers: dict[tuple[str, str], _SaBuilder | dict[_SaBuilder, _SaBuilder]] = {}
        self._midstream_open: dict[_SaBuilder, _SaBuilder] = {}
        self._past = _HandedOut()
        self.horizon = -math.inf  # handed-out parents before this time can no longer be linked to
        self.awaited_parents: frozenset[tuple[str, str]] = frozenset()  # set by finish_stream
        self._inner_seen = False  # decrypted payloads seen (they may name a rekey's new SPIs)

    # -- feeding ---------------------------------------------------------------------
    def feed(self, record: IkeMessage | Ikev1Message | Malformed) -> None:
        if isinstance(record, Malformed):
            self.malformed_count += 1
            if len(self.malformed) < MAX_ANOMALIES:  # the pipeline lists them; live keeps these
                self.malformed.append(record)
        elif isinstance(record, Ikev1Message):
            self._feed_ikev1(record)
        else:
            self._feed_ikev2(record)

    def _feed_ikev2(self, message: IkeMessage) -> None:
        sa = self._find(message)
        opened = sa is None
        if opened:
            sa = self._open(message)
        self._idle.pop(sa, None)
        self._idle[sa] = sa
        self._advance(sa, message)
        self._record_message(sa, message)
        if opened:
            self._bare[sa] = sa
            if len(self._bare) > self.max_bare:
                self._evict(next(iter(self._bare.values())),
                            f"more than {self.max_bare} IKE SAs of a single unanswered datagram in flight",
                            "opened first")
        elif sa in self._bare and not sa.bare:
            del self._bare[sa]
        if sa.counted_frozen and type(sa.store) is dict:  # thawed by this datagram
            self._count(sa)
        if self.state_bytes > self.max_state_bytes:
            self._make_room(0)
        sa.last_seen = max(sa.last_seen, message.timestamp)
        for anomaly in message.anomalies:
            sa.note(anomaly)
        if iana.NAT_T_PORT in (message.sport, message.dport) and message.exchange != iana.IKE_SA_INIT:
            sa.moved_to_4500 = True
        if self.freeze_after is not None and sa in self._idle:
            self._warm.pop(sa, None)
            self._warm[sa] = sa
            if message.timestamp >= self._next_freeze:
                self._freeze_idle(message.timestamp)

    def _freeze_idle(self, now: float) -> None:
        warm = self._warm
        while warm:
            sa = next(iter(warm.values()))
            if now - sa.last_seen < self.freeze_after:
                break
            del warm[sa]
            sa.freeze()
            if type(sa.store) is not dict:
                self._count(sa)
        self._next_freeze = now + self.freeze_after / 2

    def _count(self, sa: _SaBuilder) -> None:
        """Its estimate made again, as it was frozen or thawed."""
        estimate = _state_estimate(sa)
        if sa in self._idle:
            self.state_bytes += estimate - sa.state_bytes
        sa.state_bytes = estimate
        sa.counted_frozen = type(sa.store) is not dict

    def _find(self, message: IkeMessage) -> _SaBuilder | None:
        if message.spi_r != ZERO_SPI:
            sa = self._by_pair.get((message.spi_i, message.spi_r))
            if sa is not None:
                return sa
            sa = self._pending.get(message.spi_i)
            if sa is None and message.exchange == iana.IKE_SA_INIT and message.is_response:
                # The answer to a retry may carry another SPIr than the refused attempt's.
                known = self._by_spi_i.get(message.spi_i)
                if known is not None and known.state == SA_INIT_REQUESTED:
                    sa = known
            if sa is not None:
                self._adopt(sa, message.spi_r)
            return sa
        sa = self._pending.get(message.spi_i)
        if sa is not None:
            return sa
        known = self._by_spi_i.get(message.spi_i)
        if known is not None and message.exchange == iana.IKE_SA_INIT:
            # A request repeated after its response was captured (the response was lost
            # on its way back), or a retry of an attempt whose refusal carried a SPIr.
            if message.is_response or known.state == SA_INIT_RETRY or self._is_retransmission(known, message):
                return known
        if message.exchange == iana.IKE_SA_INIT and not message.is_response:
            return self._retry_with_new_spi(message)
        return None

    def _adopt(self, sa: _SaBuilder, spi_r: str) -> None:
        """Name the SA by its completed SPI pair."""
        if self._pending.get(sa.spi_i) is sa:
            del self._pending[sa.spi_i]
        if self._by_pair.get((sa.spi_i, sa.spi_r)) is sa:
            del self._by_pair[(sa.spi_i, sa.spi_r)]
        sa.spi_r = spi_r
        self._by_pair[(sa.spi_i, sa.spi_r)] = sa

    def _retry_with_new_spi(self, message: IkeMessage) -> _SaBuilder | None:
        """Some initiators pick a fresh SPIi when they retry; tie it to the attempt.

        Candidates come from `_retrying`, not from a walk over every pending SA, which
        made a flood of IKE_SA_INIT requests with random SPIs quadratic."""
        candidates = self._retrying.get((message.src, message.dst))
        if not candidates:
            return None
        for key, sa in reversed(list(candidates.items())[-MAX_RETRY_CANDIDATES:]):
            if sa.state != SA_INIT_RETRY or self._pending.get(sa.spi_i) is not sa:
                del candidates[key]  # answered, retried or closed meanwhile
                continue
            if message.timestamp - sa.retries[-1].timestamp > RETRY_WINDOW_S:
                del candidates[key]  # too old to be retried now
                continue
            if 0 <= message.timestamp - sa.retries[-1].timestamp:
                del candidates[key]
                del self._pending[sa.spi_i]
                last = sa.retries[-1]
                sa.grown("retries")[-1] = SaInitRetry(last.reason, last.frame, last.timestamp,
                                             last.offered_ke, last.requested_ke, message.spi_i)
                sa.spi_i = message.spi_i
                self._pending[sa.spi_i] = sa
                self._by_spi_i[sa.spi_i] = sa
                return sa
        return None

    def _open(self, message: IkeMessage) -> _SaBuilder:
        self._make_room(SA_STATE_BYTES)
        initiator_sent = message.from_original_initiator
        initiator, responder = (message.src, message.dst) if initiator_sent else (message.dst, message.src)
        i_port, r_port = (message.sport, message.dport) if initiator_sent else (message.dport, message.sport)
        starts = message.exchange == iana.IKE_SA_INIT and not message.is_response
        self._order += 1
        sa = _SaBuilder(first=message, spi_i=message.spi_i, spi_r=message.spi_r,
                        initiator=initiator, responder=responder, initiator_port=_PORTS.get(i_port, i_port),
                        responder_port=_PORTS.get(r_port, r_port), state=NEW if starts else MIDSTREAM,
                        order=self._order, last_seen=message.timestamp, state_bytes=SA_STATE_BYTES)
        self.state_bytes += SA_STATE_BYTES
        if self.live:
            self._by_peers.setdefault(frozenset((initiator, responder)), {})[sa] = sa
        if message.spi_r == ZERO_SPI:
            self._pending[sa.spi_i] = sa
        else:
            self._by_pair[(sa.spi_i, sa.spi_r)] = sa
        if starts:
            self._by_spi_i[sa.spi_i] = sa
        else:
            self._midstream_open[sa] = sa
        held = self._held_by_peers.get((initiator, responder))
        if held is None:
            self._held_by_peers[(initiator, responder)] = sa
        elif type(held) is dict:
            held[sa] = sa
        else:
            self._held_by_peers[(initiator, responder)] = {held: held, sa: sa}
        return sa

    def _make_room(self, needed: int) -> None:
        """Close the SAs idle the longest until `needed` more bytes fit (and, for a new SA,
        the count bound allows one more); the SA fed last, at the end of `_idle`, stays."""
        while len(self._idle) > (1 if needed == 0 else 0) and (
                self.state_bytes + needed > self.max_state_bytes
                or (needed and self.max_negotiations is not None
                    and len(self._by_pair) + len(self._pending) >= self.max_negotiations)):
            self._evict(next(iter(self._idle.values())), self._bound())

    def _bound(self) -> str:
        if self.max_negotiations is not None and self.state_bytes <= self.max_state_bytes:
            return f"more than {self.max_negotiations} IKE SAs in flight"
        return f"more than {self.max_state_bytes >> 20} MB of IKE SA state in flight (--max-state-mb)"

    def _evict(self, oldest: _SaBuilder, bound: str, which: str = "idle the longest") -> None:
        self._close(oldest)
        if oldest.bare:
            if self._kept_bare >= self.max_evicted_bare:
                self._closed.pop()
                self._forget(oldest)
                if self.live:
                    self._forget_live(oldest)
                self._count_bare(oldest, bound)
                return
            self._kept_bare += 1
        oldest.note(Anomaly("overflow", f"{bound}: closed the one {which}", None))

    def _count_bare(self, sa: _SaBuilder, bound: str) -> None:
        self.evicted_bare_bound = bound
        self.evicted_bare_total += 1
        if sa.initiator in self.evicted_bare or len(self.evicted_bare) < MAX_FLOOD_SOURCES:
            self.evicted_bare[sa.initiator] = self.evicted_bare.get(sa.initiator, 0) + 1

    def anomalies(self) -> list[Anomaly]:
        """What the tracker itself could not keep: evicted single-datagram SAs, counted."""
        if not self.evicted_bare_total:
            return []
        top = sorted(self.evicted_bare.items(), key=lambda kv: -kv[1])[:5]
        sources = ", ".join(f"{address} {count}" for address, count in top)
        return [Anomaly("overflow", f"{self.evicted_bare_bound}: "
                        f"{self.evicted_bare_total} more evicted SAs of a single unanswered datagram "
                        f"(past {self.max_evicted_bare} kept) were counted, not kept "
                        f"(most from {sources})", None)]

    def _close(self, sa: _SaBuilder) -> None:
        self._bare.pop(sa, None)
        self._warm.pop(sa, None)
        self._midstream_open.pop(sa, None)
        if self._idle.pop(sa, None) is not None:
            self.state_bytes -= sa.state_bytes
        self._by_pair.pop((sa.spi_i, sa.spi_r), None)
        if self._pending.get(sa.spi_i) is sa:
            del self._pending[sa.spi_i]
        if self._by_spi_i.get(sa.spi_i) is sa:
            del self._by_spi_i[sa.spi_i]
        self._closed.append(sa)
        if self.live:
            self._closed_by_pair[(sa.spi_i, sa.spi_r)] = sa
            if not sa.reported:
                self._unreported.append(sa)

    # -- state -----------------------------------------------------------------------
    def _advance(self, sa: _SaBuilder, message: IkeMessage) -> None:
        exchange, response = message.exchange, message.is_response
        if exchange == iana.IKE_SA_INIT:
            self._sa_init(sa, message)
            return
        if sa.state == MIDSTREAM:
            if exchange not in MIDSTREAM_EXCHANGES:
                sa.note(Anomaly("malformed", f"unexpected {iana.exchange_name(exchange)}",
                                            message.frame))
            return
        nxt = TRANSITIONS.get((sa.state, exchange, response))
        if nxt is None:
            nxt = self._one_direction(sa, message)
        if nxt is None:
            if not self._is_known_response(sa, message):
                sa.note(Anomaly(
                    "malformed", f"{iana.exchange_name(exchange)} {'response' if response else 'request'} "
                    f"(message id {message.message_id}) in state {sa.state}", message.frame))
            return
        sa.state = nxt

    @staticmethod
    def _one_direction(sa: _SaBuilder, message: IkeMessage) -> str | None:
        """A capture that holds one direction only (a one-way tap, asymmetric routing)
        shows a response whose request it never saw, or a request that only an unseen
        response can have allowed: step over the missing message instead of calling
        the SA malformed."""
        exchange, response = message.exchange, message.is_response
        state = sa.state
        if state in (SA_INIT_REQUESTED, SA_INIT_RETRY) and message.spi_r != ZERO_SPI:
            state = SA_INIT_DONE  # the IKE_SA_INIT response that gave this SPIr was not captured
        if response:
            request_state = TRANSITIONS.get((state, exchange, False))
            return TRANSITIONS.get((request_state, exchange, True)) if request_state else None
        nxt = TRANSITIONS.get((state, exchange, False))
        if nxt is None and state == AUTH_REQUESTED:
            # the IKE_AUTH response before this request was not captured
            nxt = TRANSITIONS.get((ESTABLISHED, exchange, False))
        return nxt

    @staticmethod
    def _is_known_response(sa: _SaBuilder, message: IkeMessage) -> bool:
        """Responses to requests in the table keep the state; only the odd ones are flagged."""
        if not message.is_response:
            return False
        request_key = (message.message_id, False, not message.from_original_initiator)
        return request_key in sa.messages

    def _sa_init(self, sa: _SaBuilder, message: IkeMessage) -> None:
        if self._is_retransmission(sa, message):
            return
        if not message.is_response:
            nxt = TRANSITIONS.get((sa.state, iana.IKE_SA_INIT, False))
            if nxt is None:
                sa.note(Anomaly("malformed", f"IKE_SA_INIT request in state {sa.state}",
                                            message.frame))
                return
            sa.sa_init_seen = True
            offered = [p for p in message.proposals if p.protocol == 1]
            if offered:
                sa.grown("offered").extend(offered)
            if message.key_exchange is not None:
                sa.grown("offered_ke").append(message.key_exchange.method)
            sa.initiator_notifies = _shared(message.notify_types())
            if message.vendor_ids:
                sa.grown("vendor_ids").extend(message.vendor_ids)
            sa.state = nxt
            return
        if sa.state not in (SA_INIT_REQUESTED, SA_INIT_RETRY, SA_INIT_FAILED, SA_INIT_DONE, MIDSTREAM):
            sa.note(Anomaly("malformed", f"IKE_SA_INIT response in state {sa.state}",
                                        message.frame))
            return
        sa.responder_notifies = _shared(message.notify_types())
        if message.vendor_ids:
            sa.grown("vendor_ids").extend(message.vendor_ids)
        sa.state = self._sa_init_response_state(sa, message)
        if sa.state == SA_INIT_RETRY:
            self._retrying.setdefault((sa.initiator, sa.responder), {})[sa] = sa

    def _sa_init_response_state(self, sa: _SaBuilder, message: IkeMessage) -> str:
        errors = [n for n in message.notifies if n.type < iana.ERROR_NOTIFY_LIMIT]
        cookie = next((n for n in message.notifies if n.type == iana.COOKIE), None)
        invalid_ke = next((n for n in errors if n.type == iana.INVALID_KE_PAYLOAD), None)
        offered_ke = sa.offered_ke[-1] if sa.offered_ke else None
        if invalid_ke is not None or (cookie is not None and not message.proposals):
            requested = int.from_bytes(invalid_ke.data[:2], "big") if invalid_ke and len(invalid_ke.data) >= 2 else None
            reason = "INVALID_KE_PAYLOAD" if invalid_ke is not None else "COOKIE"
            sa.grown("retries").append(SaInitRetry(reason, message.frame, message.timestamp, offered_ke, requested))
            if invalid_ke is not None:
                sa.grown("error_notifies").append((iana.IKE_SA_INIT, iana.INVALID_KE_PAYLOAD))
            return SA_INIT_RETRY
        # A redirect ends this attempt as surely as an error does (RFC 5685).
        errors += [n for n in message.notifies if n.type == iana.REDIRECT]
        for n in errors:
            sa.grown("error_notifies").append((iana.IKE_SA_INIT, n.type))
        if errors or not message.proposals:
            if not errors:
                sa.note(Anomaly("malformed", "IKE_SA_INIT response without SA payload "
                                            "or error notify", message.frame))
            return SA_INIT_FAILED
        if len(message.proposals) != 1:
            sa.note(Anomaly("malformed", f"IKE_SA_INIT response carries "
                                        f"{len(message.proposals)} proposals, not one", message.frame))
        sa.chosen = message.proposals[0]
        sa.responder_ke = message.key_exchange.method if message.key_exchange else None
        return SA_INIT_DONE

    @staticmethod
    def _is_retransmission(sa: _SaBuilder, message: IkeMessage) -> bool:
        builders = sa.messages.get(_message_key(message))
        return bool(builders) and builders[-1].same_message(message)

    def _record_message(self, sa: _SaBuilder, message: IkeMessage) -> None:
        key = _message_key(message)
        messages = sa.messages_for(key)
        builders = messages.get(key)
        if builders is None:
            if len(messages) >= MAX_MESSAGES:
                sa.drop(f"messages past the first {MAX_MESSAGES} of the IKE SA")
                return
            builders = messages[key] = []
        if not builders or not builders[-1].same_message(message):
            builders.append(_MessageBuilder(first=message, last_timestamp=message.timestamp))
            if message.fragment:
                self._open_fragment_group(sa, key, builders[-1])
        builder = builders[-1]
        kept = builder.kept
        dropped = builder.add(message)
        if builder.kept > kept:
            sa.state_bytes += DATAGRAM_STATE_BYTES
            if sa in self._idle:
                self.state_bytes += DATAGRAM_STATE_BYTES
        if dropped:
            sa.drop(dropped)
        if id(builder) in sa.open_fragments and not builder.incomplete:
            del sa.open_fragments[id(builder)]
            if not sa.open_fragments:  # an emptied dict keeps its table: 232 bytes an SA that fragmented
                sa.open_fragments = _EMPTY
        exchanges = sa.exchanges | 1 << message.exchange
        if exchanges != sa.exchanges:
            sa.exchanges = _shared(exchanges)
        if message.inner is not None:
            self._inner_seen = sa.inner_seen = True
        notifies = message.notifies + (message.inner.notifies if message.inner else ())
        if notifies and message.exchange != iana.IKE_SA_INIT:
            errors = [(message.exchange, n.type) for n in notifies if n.type < iana.ERROR_NOTIFY_LIMIT]
            if errors:
                sa.grown("error_notifies").extend(errors)

    @staticmethod
    def _open_fragment_group(sa: _SaBuilder, key: tuple, builder: _MessageBuilder) -> None:
        """A new fragmented message: give up the oldest of the SA's incomplete ones when
        too many are open (a flood of fragments that never complete)."""
        if len(sa.open_fragments) >= MAX_OPEN_FRAGMENT_GROUPS:
            old_key, oldest = sa.open_fragments.pop(next(iter(sa.open_fragments)))
            sa.messages[old_key].remove(oldest)
            if not sa.messages[old_key]:
                del sa.messages[old_key]
            sa.drop(f"fragmented messages given up with fragments missing, past {MAX_OPEN_FRAGMENT_GROUPS} open")
        if type(sa.open_fragments) is not dict:
            sa.open_fragments = {}
        sa.open_fragments[id(builder)] = (key, builder)

    # -- IKEv1 -----------------------------------------------------------------------
    def _feed_ikev1(self, message: Ikev1Message) -> None:
        # ISAKMP names a phase 1 SA by its cookie pair; the responder cookie is 0 at first.
        sa = self._ikev1.get((message.spi_i, message.spi_r)) or self._ikev1.get((message.spi_i, ZERO_SPI))
        if sa is None:
            self._order += 1
            # ISAKMP has no initiator flag; a phase 1 SA payload under a responder cookie
            # is the responder's answer (a reflection flood is made of these alone).
            answer = _ikev1_phase1_answer(message)
            sa = _SaBuilder(first=message, spi_i=message.spi_i, spi_r=message.spi_r,
                            initiator=message.dst if answer else message.src,
                            responder=message.src if answer else message.dst,
                            initiator_port=message.dport if answer else message.sport,
                            responder_port=message.sport if answer else message.dport,
                            state="ikev1", order=self._order, last_seen=message.timestamp,
                            ikev1=_Ikev1Phase())
            self._closed.append(sa)
        if sa.spi_r == ZERO_SPI and message.spi_r != ZERO_SPI:
            sa.spi_r = message.spi_r
        self._ikev1[(sa.spi_i, sa.spi_r)] = sa
        self._ikev1[(message.spi_i, message.spi_r)] = sa
        sa.grown("ikev1_exchanges").append(message.exchange)
        sa.last_seen = max(sa.last_seen, message.timestamp)
        from_initiator = message.src == sa.initiator
        sa.ikev1.feed(message, from_initiator)
        if from_initiator and message.proposals and not sa.sa_init_seen:
            sa.sa_init_seen = sa.ikev1.offered != ()
        if message.vendor_ids:
            sa.grown("vendor_ids").extend(message.vendor_ids)
        for anomaly in message.anomalies:
            sa.note(anomaly)
        if iana.NAT_T_PORT in (message.sport, message.dport):
            sa.moved_to_4500 = True

    # -- output ----------------------------------------------------------------------
    def drain(self, now: float, idle_timeout: float = 120.0) -> list[Negotiation]:
        """Negotiations to report while the capture goes on (live): each IKE SA once, as
        soon as its handshake has an outcome (established or failed), or once it has been
        idle for idle_timeout seconds. Idle SAs leave the lookup tables so memory stays
        bounded; `finish()` still returns every negotiation with everything it saw."""
        outcome = (ESTABLISHED, SA_INIT_FAILED)
        ready: list[_SaBuilder] = []
        for sa in [*self._by_pair.values(), *self._pending.values()]:
            idle = now - sa.last_seen >= idle_timeout
            if idle:
                self._close(sa)
            if not sa.reported and (idle or sa.state in outcome):
                ready.append(sa)
        for sa in dict.fromkeys(self._ikev1.values()):
            if not sa.reported and now - sa.last_seen >= idle_timeout:
                ready.append(sa)
        ready += self._unreported  # closed since the last drain: idle, or evicted from a full table
        self._unreported = []
        ready = [sa for sa in dict.fromkeys(ready) if not sa.reported]
        for sa in ready:
            sa.reported = True
        orphans = {frozenset((sa.initiator, sa.responder)) for sa in ready if sa.state == MIDSTREAM}
        if orphans:
            # Only the SAs between the same peers can be a parent: linking over the whole
            # history at every drain made a long capture quadratic.
            family = dict.fromkeys(s for peers in orphans for s in self._by_peers.get(peers, {}))
            _link_rekeys(sorted(family, key=_order), self.rekey_window)
        return [self._negotiation(sa) for sa in sorted(ready, key=_order)]

    def _forget_live(self, sa: _SaBuilder) -> None:
        """An SA counted, not kept: out of the live indexes too."""
        if self._closed_by_pair.get((sa.spi_i, sa.spi_r)) is sa:
            del self._closed_by_pair[(sa.spi_i, sa.spi_r)]
        if self._unreported and self._unreported[-1] is sa:
            self._unreported.pop()
        peers = self._by_peers.get(frozenset((sa.initiator, sa.responder)))
        if peers is not None:
            peers.pop(sa, None)
            if not peers:
                del self._by_peers[frozenset((sa.initiator, sa.responder))]

    def prune(self, before: float) -> int:
        """Live, over days: the IKE SAs already handed out, closed and last seen before
        `before` leave memory (a rekey of one of them after that is not linked to it;
        finish() no longer returns them). Counted in `pruned`; returns how many."""
        keep = [sa for sa in self._closed if not (sa.reported and sa.last_seen < before)]
        gone = len(self._closed) - len(keep)
        if not gone:
            return 0
        kept = set(keep)
        self._closed = keep
        self._closed_by_pair = {pair: sa for pair, sa in self._closed_by_pair.items() if sa in kept}
        self._ikev1 = {pair: sa for pair, sa in self._ikev1.items() if sa in kept}
        open_ = {*self._by_pair.values(), *self._pending.values()}
        for peers, sas in list(self._by_peers.items()):
            for key in [key for key in sas if key not in kept and key not in open_]:
                del sas[key]
            if not sas:
                del self._by_peers[peers]
        for peers, retrying in list(self._retrying.items()):
            for key in [key for key, sa in retrying.items() if key not in open_]:
                del retrying[key]
            if not retrying:
                del self._retrying[peers]
        self.pruned += gone
        return gone

    # -- streaming (scan and report) -------------------------------------------------
    def hand_out(self, now: float, idle: float) -> list[tuple[int, Negotiation]]:
        """The negotiations done with by `now` (capture time), each with its place in the
        order `finish()` lists them in; their SAs leave the tracker. Done with: idle for
        `idle` seconds, or closed early by a bound. An SA waits while its parent, or an
        SA opened before it between the same peers, is still held: the classifier takes
        them in that order (a rekey is judged with its parent, a classical attempt after
        the one before it). What a later rekey needs of an SA handed out stays behind in
        a compact summary (`_HandedOut`). IKEv1 SAs stay to `finish_stream`."""
        ready: dict[_SaBuilder, _SaBuilder] = {}
        for sa in self._idle.values():  # fed the longest ago first
            if now - sa.last_seen < idle:
                break
            ready[sa] = sa
        for sa in self._closed:
            if sa.ikev1 is None:
                ready[sa] = sa
        released = self._release(ready) if ready else []
        start = min((sa.first.timestamp for sa in self._midstream_open.values()), default=now)
        # A rekey met later starts at `now` or after, an SA met mid-stream still open at its start.
        self.horizon = max(self.horizon, min(now, start) - self.rekey_window - 1e-6)
        self._past.prune(self.horizon)
        return [(sa.order, self._negotiation(sa)) for sa in released]

    def finish_stream(self) -> Iterator[tuple[int, Negotiation]]:
        """The end of the input for `hand_out`: every SA still held, in order, one at a
        time (each builder is let go as its negotiation is made). Once it has returned,
        what the negotiations still to come can need is known: `awaited_parents`, the
        SPI pairs they were linked to as rekeys, and `holds`, the peers with one still
        to come (a caller keeping state for later negotiations keeps only that)."""
        builders = list(self._idle)
        builders += [sa for sa in dict.fromkeys(self._closed) if sa not in self._idle]
        builders.sort(key=_order)
        # Every SA held is now both a parent to look at and an orphan to link (what
        # `_link` gathers from the indexes for some), with what those handed out left.
        _link_rekeys(builders, self.rekey_window, orphans=builders, past=self._past)
        self.awaited_parents = frozenset(sa.rekeyed_from for sa in builders if sa.rekeyed_from is not None)
        self._closed.clear()  # each builder goes as soon as its negotiation is made
        held, self._held_by_peers = self._held_by_peers, {}
        self._clear_open()
        self._held_by_peers = held  # emptied as they are handed out, for `holds`
        self._past = _HandedOut()
        return self._hand_out_all(builders)

    def _hand_out_all(self, builders: list[_SaBuilder | None]) -> Iterator[tuple[int, Negotiation]]:
        for index, sa in enumerate(builders):
            builders[index] = None
            self._forget(sa)
            yield sa.order, self._negotiation(sa)

    def _release(self, ready: dict[_SaBuilder, _SaBuilder]) -> list[_SaBuilder]:
        self._link(list(ready.values()))
        released: list[_SaBuilder] = []
        for sa in sorted(ready.values(), key=_order):
            if self._waits(sa):
                continue
            released.append(sa)
            if sa in self._idle:
                self._close(sa)
            self._forget(sa)
            self._past.keep(sa)
        gone = set(released)
        self._closed = [sa for sa in self._closed if sa not in gone]
        return released

    def _link(self, ready: list[_SaBuilder]) -> None:
        """Rekey links of the SAs about to leave, to the SAs still held (of the same
        addresses; every one when decrypted payloads name the new SPIs) and to what the
        ones handed out before left behind."""
        parents: dict[_SaBuilder, _SaBuilder] = {}
        if self._inner_seen:
            parents.update((sa, sa) for sa in [*self._idle.values(), *self._closed])
        for sa in ready:
            parents[sa] = sa
            if sa.state == MIDSTREAM:
                for peers in ((sa.initiator, sa.responder), (sa.responder, sa.initiator)):
                    parents.update((held, held) for held in self._held(peers))
        _link_rekeys(sorted(parents.values(), key=_order), self.rekey_window, orphans=ready,
                     past=self._past)

    def _waits(self, sa: _SaBuilder) -> bool:
        if sa.rekeyed_from is not None and sa.rekeyed_from != (sa.spi_i, sa.spi_r):
            parent = self._by_pair.get(sa.rekeyed_from)
            if parent is not None or any((c.spi_i, c.spi_r) == sa.rekeyed_from and c.ikev1 is None
                                         for c in self._closed):
                return True
        key = (sa.first.timestamp, sa.order)
        return any((other.first.timestamp, other.order) < key
                   for other in self._held((sa.initiator, sa.responder)))

    def _held(self, peers: tuple[str, str]) -> Iterator[_SaBuilder]:
        held = self._held_by_peers.get(peers)
        if held is None:
            return iter(())
        return iter(held.values()) if type(held) is dict else iter((held,))

    def holds(self, initiator: str, responder: str) -> bool:
        """Whether an IKEv2 SA between these peers is still held (streaming)."""
        return (initiator, responder) in self._held_by_peers

    def _forget(self, sa: _SaBuilder) -> None:
        """An SA let go for good: out of the streaming indexes."""
        peers = (sa.initiator, sa.responder)
        held = self._held_by_peers.get(peers)
        if held is sa or (type(held) is dict and held.pop(sa, None) is not None and not held):
            del self._held_by_peers[peers]
        retrying = self._retrying.get(peers)
        if retrying is not None and retrying.pop(sa, None) is not None and not retrying:
            del self._retrying[peers]

    def current(self, spi_i: str, spi_r: str) -> Negotiation | None:
        """One IKE SA as it stands now, open or closed (live reporting needs a parent's
        later IKE_FOLLOWUP_KE exchanges to judge its rekey)."""
        sa = self._by_pair.get((spi_i, spi_r)) or self._closed_by_pair.get((spi_i, spi_r))
        return self._negotiation(sa) if sa is not None else None

    def finish(self) -> list[Negotiation]:
        for sa in [*self._by_pair.values(), *self._pending.values()]:
            self._closed.append(sa)
        self._clear_open()
        builders = sorted(dict.fromkeys(self._closed), key=_order)
        _link_rekeys(builders, self.rekey_window)
        self.reported = [sa.reported for sa in builders]
        return [self._negotiation(sa) for sa in builders]

    def _clear_open(self) -> None:
        self._warm.clear()
        self._by_pair.clear()
        self._pending.clear()
        self._by_spi_i.clear()
        self._idle.clear()
        self._bare.clear()
        self.state_bytes = 0
        self._retrying.clear()
        self._held_by_peers.clear()
        self._midstream_open.clear()

    def _negotiation(self, sa: _SaBuilder) -> Negotiation:
        messages = _built_messages(sa)  # first: thaws a frozen SA's first message too
        first = sa.first
        anomalies = list(sa.anomalies)
        anomalies.extend(_undecryptable(sa, messages))
        for m in messages:
            if not m.complete:
                anomalies.append(Anomaly("incomplete", f"{iana.exchange_name(m.exchange)} "
                                         f"{'response' if m.response else 'request'} message id "
                                         f"{m.message_id}: IKE fragment(s) {_missing(m)} of "
                                         f"{m.ike_fragments} never seen", m.first_frame))
        anomalies += [Anomaly("overflow", f"{count} {what}: counted, not kept", None)
                      for what, count in sa.dropped.items()]
        basis = established_basis(messages) if isinstance(first, IkeMessage) else "none"
        return _with_ikev1(sa, Negotiation(
            capture=self.capture, ike_version=1 if isinstance(first, Ikev1Message) else 2,
            spi_i=sa.spi_i, spi_r=sa.spi_r, initiator=sa.initiator, responder=sa.responder,
            initiator_port=sa.initiator_port, responder_port=sa.responder_port,
            ip_version=first.ip_version, transport=first.transport, first_frame=first.frame,
            first_seen=first.timestamp, last_seen=sa.last_seen, state=sa.state,
            sa_init_seen=sa.sa_init_seen, offered=tuple(sa.offered), offered_ke=tuple(sa.offered_ke),
            chosen=sa.chosen, responder_ke=sa.responder_ke,
            initiator_notifies=sa.initiator_notifies, responder_notifies=sa.responder_notifies,
            error_notifies=tuple(dict.fromkeys(sa.error_notifies)), retries=tuple(sa.retries),
            messages=tuple(messages), vendor_ids=tuple(dict.fromkeys(sa.vendor_ids)),
            moved_to_4500=sa.moved_to_4500, anomalies=tuple(anomalies),
            established=basis != "none", established_basis=basis,
            intermediate_seen=any(m.exchange == iana.IKE_INTERMEDIATE for m in messages),
            fragments_seen=any(m.ike_fragments for m in messages),
            midstream=bool(messages) and not any(m.exchange == iana.IKE_SA_INIT for m in messages),
            rekeyed_from=sa.rekeyed_from,
            rekey_evidence=sa.rekey_evidence, ikev1_exchanges=tuple(sa.ikev1_exchanges),
            rekey_linked_by=sa.rekey_linked_by, child_exchanges=child_exchanges(messages),
            **_auth_content(messages), **_peer_content(sa, messages),
            ppk_notifies=tuple(dict.fromkeys((m.exchange, n.type) for m in messages if m.inner
                                             for n in m.inner.notifies if n.type in iana.PPK_NOTIFIES)),
        ))


# Exchanges that only an established IKE SA runs (RFC 7296 section 1.3 and 1.4, RFC 9370).
AFTER_AUTH = frozenset({iana.CREATE_CHILD_SA, iana.INFORMATIONAL, iana.IKE_FOLLOWUP_KE})


def established_basis(messages: list[TrackedMessage]) -> str:
    """Whether the IKE SA was established, and on what evidence.

    "observed": the last decrypted IKE_AUTH response carries an AUTH payload, no EAP
    payload (an EAP round carries the responder's AUTH with EAP and is not the end) and
    no error notify. A decrypted last response that fails this is "none", whatever
    follows. Without keys, "inferred" from an exchange that only an established SA runs
    (CREATE_CHILD_SA, INFORMATIONAL, IKE_FOLLOWUP_KE) after IKE_AUTH, or met without any
    handshake message at all. An IKE_AUTH response alone proves nothing: it may carry
    AUTHENTICATION_FAILED or one EAP round.
    """
    auth = [m for m in messages if m.exchange == iana.IKE_AUTH]
    answers = sorted((m for m in auth if m.response and m.inner is not None), key=lambda m: m.message_id)
    if answers:
        inner = answers[-1].inner
        ok = (iana.PAYLOAD_AUTH in inner.payload_types and iana.PAYLOAD_EAP not in inner.payload_types
              and not any(t < iana.ERROR_NOTIFY_LIMIT for t in inner.notify_types()))
        return "observed" if ok else "none"
    handshake = any(m.exchange in (iana.IKE_SA_INIT, iana.IKE_INTERMEDIATE) for m in messages)
    # The initiator numbers its requests and their responses; the responder's own
    # requests start only once the SA is up.
    last_auth = max((m.message_id for m in auth), default=-1)
    later = any(m.exchange in AFTER_AUTH and (m.from_initiator == m.response or m.message_id > last_auth)
                for m in messages)
    if later and (auth or not handshake):
        return "inferred"
    return "none"


def _missing(message: TrackedMessage) -> str:
    """The missing fragment numbers as ranges ("[2-7, 9]"): a hostile Total Fragments
    of 65,535 must not make a 65,535-number list."""
    seen = sorted({n for n in message.fragments_seen if 1 <= n <= message.ike_fragments})
    ranges, start = [], 1
    for number in [*seen, message.ike_fragments + 1]:
        if number > start:
            ranges.append(str(start) if number - 1 == start else f"{start}-{number - 1}")
        start = max(start, number + 1)
    shown = ", ".join(ranges[:8]) + (f", ... ({len(ranges) - 8} more ranges)" if len(ranges) > 8 else "")
    return f"[{shown}]"


def _state_estimate(sa: _SaBuilder) -> int:
    """The bytes an open SA is counted for against `--max-state-mb`: open, as it was fed
    (SA_STATE_BYTES and DATAGRAM_STATE_BYTES a datagram kept); frozen, its packs in memory
    and the datagrams met since."""
    store = sa.store
    if type(store) is dict:
        return SA_STATE_BYTES + DATAGRAM_STATE_BYTES * sum(b.kept for bs in store.values() for b in bs)
    fresh = sa.fresh
    held = _Packer.held_size
    more = (held(store) + sum(map(held, sa.packs_later))
            + (DATAGRAM_STATE_BYTES * sum(b.kept for bs in fresh.values() for b in bs) if fresh else 0))
    return FROZEN_SA_STATE_BYTES + more if more else FROZEN_SA_STATE_BYTES  # the constant: one int for all


def _built_messages(sa: _SaBuilder, messages: dict[tuple, list[_MessageBuilder]] | None = None) -> list[TrackedMessage]:
    messages = sa.messages if messages is None else messages
    return sorted((b.build() for bs in messages.values() for b in bs),
                  key=lambda m: (m.first_timestamp, m.first_frame))


def _undecryptable(sa: _SaBuilder, messages: list[TrackedMessage]) -> list[Anomaly]:
    """One anomaly per message no key set opened; one for all those of an SPI pair the
    key table has no line for (scanning many captures with one table is common)."""
    anomalies = []
    keyless = [m for m in messages if m.decryption is not None and m.decryption.status == "no-key"]
    if keyless:
        anomalies.append(Anomaly("undecryptable", f"{len(keyless)} encrypted message(s) left encrypted: "
                                 f"the key table has no line for SPI pair {sa.spi_i}/{sa.spi_r}",
                                 keyless[0].first_frame))
    for m in messages:
        if m.decryption is not None and m.decryption.status == "failed":
            anomalies.append(Anomaly("undecryptable", f"{_label(m)}: {m.decryption.detail}", m.first_frame))
        if m.inner is not None:
            anomalies.extend(m.inner.anomalies)
    return anomalies


def _label(m: TrackedMessage) -> str:
    return (f"{iana.exchange_name(m.exchange)} {'response' if m.response else 'request'} "
            f"message id {m.message_id}")


def _auth_content(messages: list[TrackedMessage]) -> dict:
    """What the decrypted IKE_AUTH exchange(s) say: identities, AUTH methods and the
    Child SA proposals (offered in a request, chosen in a response)."""
    auth = [m for m in messages if m.exchange == iana.IKE_AUTH and m.inner is not None]
    offered: list[Proposal] = []
    chosen: Proposal | None = None
    identifications: list[Identification] = []
    methods: list[tuple[bool, int]] = []
    for m in auth:
        if m.response and m.inner.proposals:
            chosen = m.inner.proposals[0]
        elif not m.response and not offered:
            offered = list(m.inner.proposals)
        identifications.extend(m.inner.identifications)
        if m.inner.auth_method is not None:
            methods.append((m.from_initiator, m.inner.auth_method))
    return {"child_sa_offered": tuple(offered), "child_sa_chosen": chosen,
            "identifications": tuple(dict.fromkeys(identifications)), "auth_methods": tuple(methods)}


def _peer_content(sa: _SaBuilder, messages: list[TrackedMessage]) -> dict:
    """What each side showed of itself (issue 17): Vendor IDs, CERTREQ and RFC 7427
    SIGNATURE_HASH_ALGORITHMS from the clear messages the builders hold, and CERT, CERTREQ
    and AUTH payloads from the decrypted ones."""
    clear = sorted((b.first for bs in sa.messages.values() for b in bs), key=lambda m: (m.first_timestamp, m.frame))
    vendor_ids = [(m.from_original_initiator, v) for m in clear for v in m.vendor_ids]
    requests = [(m.from_original_initiator, r) for m in clear for r in m.cert_requests]
    hashes = [(m.from_original_initiator, tuple(int.from_bytes(n.data[i:i + 2], "big")
                                                for i in range(0, len(n.data) - 1, 2)))
              for m in clear for n in m.notifies if n.type == iana.SIGNATURE_HASH_ALGORITHMS]
    certificates, authentications = [], []
    for m in messages:
        if m.inner is None:
            continue
        vendor_ids += [(m.from_initiator, v) for v in m.inner.vendor_ids]
        requests += [(m.from_initiator, r) for r in m.inner.cert_requests]
        certificates += [(m.from_initiator, c) for c in m.inner.certificates]
        if m.inner.authentication is not None:
            authentications.append((m.from_initiator, m.inner.authentication))
    return {"peer_vendor_ids": tuple(dict.fromkeys(vendor_ids)), "cert_requests": tuple(dict.fromkeys(requests)),
            "signature_hash_algorithms": tuple(dict.fromkeys(hashes)),
            "certificates": tuple(dict.fromkeys(certificates)), "authentications": tuple(authentications)}


def child_exchanges(messages: list[TrackedMessage]) -> tuple[ChildExchange, ...]:
    """Each decrypted CREATE_CHILD_SA exchange with its IKE_FOLLOWUP_KE exchanges.

    RFC 9370 section 2.2.2: a CREATE_CHILD_SA response that wants more key exchanges
    carries an ADDITIONAL_KEY_EXCHANGE notify whose data is a link token; the next
    IKE_FOLLOWUP_KE request repeats it, and its response may hand a new token for the
    exchange after. The token, not the message id, says which rekey a follow-up serves.
    """
    requests = [m for m in messages if not m.response and m.inner is not None]
    responses = {(m.exchange, m.message_id, not m.from_initiator): m for m in messages
                 if m.response and m.inner is not None}
    exchanges: list[dict] = []
    tokens: dict[bytes, int] = {}
    for request in requests:
        response = responses.get((request.exchange, request.message_id, request.from_initiator))
        if request.exchange == iana.CREATE_CHILD_SA:
            offered = request.inner.proposals
            chosen = response.inner.proposals[0] if response and response.inner.proposals else None
            protocol = chosen.protocol if chosen else (offered[0].protocol if offered else None)
            new_spis = None
            if protocol == 1 and chosen is not None:
                spi_i = next((p.spi for p in offered if p.protocol == 1 and len(p.spi) == 16), None)
                if spi_i and len(chosen.spi) == 16:
                    new_spis = (spi_i, chosen.spi)
            exchanges.append({"message_id": request.message_id, "frame": request.first_frame,
                              "protocol": protocol, "offered": offered, "chosen": chosen,
                              "request_ke": request.inner.key_exchange,
                              "response_ke": response.inner.key_exchange if response else None,
                              "followups": [], "new_spis": new_spis})
            _take_token(response, tokens, len(exchanges) - 1)
        elif request.exchange == iana.IKE_FOLLOWUP_KE:
            token = _link_token(request)
            index = tokens.pop(token, None) if token is not None else None
            if index is None:
                continue
            exchanges[index]["followups"].append(FollowupKe(
                request.message_id, request.first_frame, request.inner.key_exchange,
                response.inner.key_exchange if response else None))
            _take_token(response, tokens, index)
    return tuple(ChildExchange(**{**e, "followups": tuple(e["followups"])}) for e in exchanges)


def _link_token(message: TrackedMessage | None) -> bytes | None:
    if message is None or message.inner is None:
        return None
    return next((n.data for n in message.inner.notifies if n.type == iana.ADDITIONAL_KEY_EXCHANGE), None)


def _take_token(response: TrackedMessage | None, tokens: dict[bytes, int], index: int) -> None:
    token = _link_token(response)
    if token is not None:
        tokens[token] = index


def _message_key(message: IkeMessage) -> tuple:
    # Each side numbers its own requests, so the sender's role is part of the key.
    return (message.message_id, message.is_response, message.from_original_initiator)


def _create_child_sa_requests(messages: dict[tuple, list[_MessageBuilder]]) -> list[TrackedMessage]:
    """Each CREATE_CHILD_SA exchange of an SA's messages by its request, or by its response
    when the request was not captured (a one-direction capture), in time order."""
    built = [b.build() for bs in messages.values() for b in bs if b.first.exchange == iana.CREATE_CHILD_SA]
    requests = {(m.message_id, m.from_initiator) for m in built if not m.response}
    return sorted((m for m in built if not m.response or (m.message_id, not m.from_initiator) not in requests),
                  key=lambda m: m.first_timestamp)


def _rekey_room(parent: _SaBuilder, message: TrackedMessage) -> tuple[bool, str]:
    """Whether a CREATE_CHILD_SA message of the parent is large enough to rekey it: an
    IKE SA rekey carries an SA payload, a Nonce and a KE payload (of the parent's own KE
    method when it is known, RFC 7296 section 2.8 keeps the algorithms)."""
    overhead = sk_overhead(parent.chosen)
    room = plaintext_upper_bound(message, overhead)
    ke_ids = parent.chosen.ids(iana.TRANSFORM_KE) if parent.chosen else ()
    method = iana.ke_method(ke_ids[0]) if ke_ids else None
    key_bytes = (method.responder_bytes if message.response else method.initiator_bytes) if method else None
    needed = MIN_IKE_REKEY_REQUEST - 32 + key_bytes if key_bytes else MIN_IKE_REKEY_REQUEST
    return room >= needed, _room_text(room, needed, bool(overhead), method.name if key_bytes else None,
                                      message.response)


# One text for the many alike (at the end of a gateway's capture every rekey candidate
# holds one: 200 bytes each were most of the linking's memory).
@functools.lru_cache(maxsize=MAX_SHARED_TUPLES)
def _room_text(room: int, needed: int, cipher_known: bool, method: str | None, response: bool) -> str:
    what = f"the smallest IKE SA rekey {'response' if response else 'request'}"
    if method is not None:
        what += f" with the parent's {method} key"
    cipher = "the negotiated cipher" if cipher_known else "no cipher overhead (cipher unknown)"
    return f"its at most {room} inner bytes ({cipher}) {'have' if room >= needed else 'lack'} room for {what} ({needed} bytes)"


def _link_rekeys(sas: list[_SaBuilder], window: float = REKEY_WINDOW_S, *,
                 orphans: list[_SaBuilder] | None = None, past: _HandedOut | None = None) -> None:
    """Tie an IKE SA met without IKE_SA_INIT to the SA it rekeyed.

    Decrypted, a CREATE_CHILD_SA that rekeys the IKE SA names the new SPIs in its IKE
    proposals (request: SPIi, response: SPIr): that is proof. Without keys the new SPIs
    stay encrypted, so the link is an inference from what is visible: the same pair of
    addresses, a CREATE_CHILD_SA of the parent at most `window` seconds before the new
    SA's first message, and a request large enough to carry an IKE SA rekey. A parent
    that fell silent before the new SA appeared (it was deleted after the rekey) is
    preferred over one that carried on. An SA whose own IKE_AUTH was captured began
    with a handshake (its IKE_SA_INIT was lost): it is no rekey and is never linked.

    Streaming (`Tracker.hand_out`): only `orphans` are linked, to the parents among `sas`
    and to those `past` remembers of the SAs handed out before.
    """
    children = sas if orphans is None else orphans
    _link_rekeys_by_spis(sas, children, past)
    orphans = [sa for sa in children if sa.state == MIDSTREAM and not sa.ikev1_exchanges
               and sa.rekey_linked_by != "spis"
               and not (sa.exchanges & _HANDSHAKE and any(
                   b.first.exchange in _HANDSHAKE_EXCHANGES for bs in sa.peek().values() for b in bs))]
    by_pair: dict[frozenset, tuple[list[_SaBuilder], list[_SaBuilder]]] = {}  # pair -> (orphans, parents)
    for sa in orphans:
        by_pair.setdefault(frozenset((sa.initiator, sa.responder)), ([], []))[0].append(sa)
    if not by_pair:
        return
    for parent in sas:
        found = by_pair.get(frozenset((parent.initiator, parent.responder)))
        if found is not None:
            found[1].append(parent)
    # An address pair at a time, its CREATE_CHILD_SA messages large enough for a rekey in
    # time order: each orphan looks only at those of its window (a gateway pair rekeying
    # for hours, or thousands of peers, made a walk over every parent quadratic), and
    # only one pair's are held at once (at the end of a gateway's capture, all of them
    # together were a tenth of its peak memory).
    for pair, (pair_orphans, parents) in by_pair.items():
        entries = [entry for parent in parents for entry in _rekey_entries(parent)]
        if past is not None and pair in past.entries:
            entries.extend(past.entries[pair])
        entries.sort(key=lambda e: e[:3])
        _link_orphans(pair_orphans, entries, window)


def _link_orphans(orphans: list[_SaBuilder], entries: list[tuple], window: float) -> None:
    """Each orphan of an address pair tied to the best of the pair's rekey candidates (`_rekey_entries`)."""
    for sa in orphans:
        start = sa.first.timestamp
        best: tuple | None = None
        # Widened by a microsecond: the exact test below decides, as float rounding would.
        low = bisect_left(entries, start - window - 1e-6, key=_time)
        high = bisect_right(entries, start + 1e-6, key=_time)
        for entry in entries[low:high]:
            at, rank_order, index, parent_start, parent_last, _, parent_id, *_ = entry
            if parent_id == id(sa) or parent_start > start or not 0 <= start - at <= window:
                continue
            # A parent that fell silent first, then the latest request; on a tie the
            # parent met first, and its later request.
            rank = (parent_last <= start, at, rank_order, index)
            if best is None or rank > best[0]:
                best = (rank, entry)
        if best is None:
            continue
        (ended, *_), (at, _, _, _, _, (spi_i, spi_r), _, response, message_id, room) = best
        sa.rekeyed_from = (spi_i, spi_r)
        sa.rekey_linked_by = "addresses-time-and-size"
        sa.rekey_evidence = (
            f"inferred: no IKE_SA_INIT; same addresses as IKE SA {spi_i}/{spi_r}, whose "
            f"CREATE_CHILD_SA {'response' if response else 'request'} (message id {message_id}) "
            f"at {at:.6f} precedes "
            f"this SA's first message by {start - at:.1f} s (rekey window {window:g} s); "
            f"{room}" + ("; the parent fell silent before this SA appeared" if ended
                         else "; the parent stayed active"))


def _rekey_entries(parent: _SaBuilder) -> list[tuple]:
    """The parent's CREATE_CHILD_SA messages large enough for a rekey, as `_link_rekeys`
    ranks them: (time, -order, index, parent's start, parent's last time, parent's SPIs,
    id(parent), response, message id, room)."""
    if parent.ikev1_exchanges or not parent.exchanges >> iana.CREATE_CHILD_SA & 1:
        return []
    messages = parent.peek()
    if not any(b.first.exchange == iana.CREATE_CHILD_SA for bs in messages.values() for b in bs):
        return []
    entries = []
    for index, request in enumerate(_create_child_sa_requests(messages)):
        fits, room = _rekey_room(parent, request)
        if fits:
            entries.append((request.first_timestamp, -parent.order, index, parent.first.timestamp, parent.last_seen,
                            (parent.spi_i, parent.spi_r), id(parent), request.response, request.message_id, room))
    return entries


# A mid-stream SA with a message of these was seen from its start: never a rekey orphan.
_HANDSHAKE_EXCHANGES = (iana.IKE_AUTH, iana.IKE_INTERMEDIATE, iana.IKE_SA_INIT)
_HANDSHAKE = sum(1 << exchange for exchange in _HANDSHAKE_EXCHANGES)  # as _SaBuilder.exchanges marks them


def _order(sa: _SaBuilder) -> int:
    return sa.order


def _time(entry: tuple) -> float:
    return entry[0]


def _link_rekeys_by_spis(sas: list[_SaBuilder], children: list[_SaBuilder] | None = None,
                         past: _HandedOut | None = None) -> None:
    if not (past is not None and past.spis) and not any(sa.inner_seen for sa in sas):
        return  # no decrypted rekey names new SPIs: nothing to build the index for
    by_pair = {(sa.spi_i, sa.spi_r): sa for sa in (sas if children is None else children) if not sa.ikev1_exchanges}
    if past is not None and past.spis:
        for pair, child in by_pair.items():
            link = past.spis.get(pair)
            if link is not None:
                _link_by_spis(child, *link)
    for parent in sas:
        if parent.ikev1_exchanges or not parent.inner_seen:
            continue
        messages = parent.peek()
        if not any(b.inner for bs in messages.values() for b in bs):
            continue
        for exchange in child_exchanges(_built_messages(parent, messages)):
            child = by_pair.get(exchange.new_spis) if exchange.new_spis else None
            if child is None or child is parent:
                continue
            _link_by_spis(child, (parent.spi_i, parent.spi_r), exchange.message_id, exchange.frame, exchange.new_spis)


def _link_by_spis(child: _SaBuilder, parent: tuple[str, str], message_id: int, frame: int,
                  new_spis: tuple[str, str]) -> None:
    child.rekeyed_from = parent
    child.rekey_linked_by = "spis"
    child.rekey_evidence = (
        f"by SPIs: the decrypted CREATE_CHILD_SA (message id {message_id}, frame "
        f"{frame}) of IKE SA {parent[0]}/{parent[1]} rekeyed it to the new "
        f"SPIs {new_spis[0]}/{new_spis[1]}")


@dataclass(slots=True)
class _HandedOut:
    """What the SAs handed out leave for the rekeys met after them: their CREATE_CHILD_SA
    messages that may have rekeyed them, by address pair (`_rekey_entries`, dropped once
    older than any rekey still to come can reach), and the new SPIs their decrypted
    rekeys named (kept: a few per SA, and only with keys)."""

    entries: dict[frozenset, list[tuple]] = field(default_factory=dict)
    spis: dict[tuple[str, str], tuple] = field(default_factory=dict)

    def keep(self, sa: _SaBuilder) -> None:
        # id(sa) goes: a later SA may get the same id once this one is freed.
        entries = [(*e[:6], None, *e[7:]) for e in _rekey_entries(sa)]
        if entries:
            self.entries.setdefault(frozenset((sa.initiator, sa.responder)), []).extend(entries)
        if not sa.ikev1_exchanges and sa.inner_seen and any(b.inner for bs in sa.messages.values() for b in bs):
            for exchange in child_exchanges(_built_messages(sa)):
                if exchange.new_spis and exchange.new_spis != (sa.spi_i, sa.spi_r):
                    self.spis[exchange.new_spis] = ((sa.spi_i, sa.spi_r), exchange.message_id, exchange.frame,
                                                    exchange.new_spis)

    def prune(self, horizon: float) -> None:
        for pair in [p for p, entries in self.entries.items() if max(e[0] for e in entries) < horizon]:
            del self.entries[pair]


# -- IKEv1 ------------------------------------------------------------------------------
IKEV1_PHASE1 = {iana.IKEV1_MAIN_MODE: "main", iana.IKEV1_AGGRESSIVE: "aggressive"}
# Exchanges that run under an established phase 1 SA's keys (RFC 2409 sections 5.5-5.7,
# RFC 2408 section 4.8; Transaction is mode config / XAUTH).
IKEV1_UNDER_PHASE1 = frozenset({iana.IKEV1_QUICK_MODE, iana.IKEV1_INFORMATIONAL, iana.IKEV1_TRANSACTION})


def _ikev1_phase1_answer(message: Ikev1Message) -> bool:
    return (message.exchange in IKEV1_PHASE1 and message.message_id == 0 and message.spi_r != ZERO_SPI
            and iana.IKEV1_PAYLOAD_SA in message.payload_types)


@dataclass
class _Ikev1Phase:
    """What an IKEv1 SA's messages show of its phase 1 and what ran under it.

    Without keys the last phase 1 messages are ciphertext, so success is inferred from
    what follows them: Main Mode ends with messages 5 (initiator) and 6 (responder), both
    encrypted; Aggressive Mode with the responder's message 2 and the initiator's message
    3 (RFC 2409 section 5). A Quick Mode, Informational or Transaction exchange under the
    same cookies after that uses the phase 1 keys, so phase 1 succeeded. A Quick Mode
    answered in both directions proves the same of an SA whose phase 1 was not captured.
    """

    mode: str | None = None
    offered: tuple[Ikev1Proposal, ...] = ()
    chosen: Ikev1Proposal | None = None
    initiator_done: bool = False  # Main Mode message 5 / Aggressive Mode message 3
    responder_done: bool = False  # Main Mode message 6 / Aggressive Mode message 2
    after_phase1: list[int] = field(default_factory=list)  # exchanges once both were seen
    quick_mode_from: set[bool] = field(default_factory=set)  # directions of Quick Mode messages
    peer_vendor_ids: list[tuple[bool, bytes]] = field(default_factory=list)

    def feed(self, message: Ikev1Message, from_initiator: bool) -> None:
        self.peer_vendor_ids.extend((from_initiator, v) for v in message.vendor_ids)
        if message.exchange in IKEV1_PHASE1 and message.message_id == 0:
            self._phase1(message, from_initiator)
        elif message.exchange in IKEV1_UNDER_PHASE1:
            if self.initiator_done and self.responder_done:
                self.after_phase1.append(message.exchange)
            if message.exchange == iana.IKEV1_QUICK_MODE:
                self.quick_mode_from.add(from_initiator)

    def _phase1(self, message: Ikev1Message, from_initiator: bool) -> None:
        self.mode = IKEV1_PHASE1[message.exchange]
        isakmp = tuple(p for p in message.proposals if p.protocol == iana.IKEV1_PROTO_ISAKMP)
        if isakmp and from_initiator and not self.offered:
            self.offered = isakmp
        elif isakmp and not from_initiator:
            self.chosen = isakmp[0]
        has_sa = iana.IKEV1_PAYLOAD_SA in message.payload_types
        if self.mode == "main" and message.encrypted:
            if from_initiator:
                self.initiator_done = True
            elif self.initiator_done:
                self.responder_done = True
        elif self.mode == "aggressive":
            if not from_initiator and has_sa:
                self.responder_done = True
            elif from_initiator and self.responder_done and (message.encrypted or not has_sa):
                self.initiator_done = True

    @property
    def established_basis(self) -> str:
        if self.initiator_done and self.responder_done and self.after_phase1:
            return "inferred"
        if self.mode is None and self.quick_mode_from == {True, False}:
            return "inferred"
        return "none"


def _with_ikev1(sa: _SaBuilder, negotiation: Negotiation) -> Negotiation:
    """An IKEv1 SA's negotiation with what its phase 1 showed; IKEv2 ones pass unchanged."""
    phase = sa.ikev1
    if phase is None:
        return negotiation
    basis = phase.established_basis
    return replace(negotiation, established=basis != "none", established_basis=basis,
                   midstream=phase.mode is None, ikev1_offered=phase.offered, ikev1_chosen=phase.chosen,
                   ikev1_mode=phase.mode, peer_vendor_ids=tuple(dict.fromkeys(phase.peer_vendor_ids)))
