"""The plain records that flow between the stages.

Every arrow of the pipeline (sources -> extract -> dissect -> track -> classify ->
findings -> renderers) carries one of these frozen dataclasses: no Scapy packet,
file handle or socket ever crosses a stage boundary, so each stage can be fed by a
test, a capture file or a live interface alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from operator import attrgetter


_NOTIFY_TYPE = attrgetter("type")  # notify_types: called for every message a negotiation is built of

# States of an IKE SA as the capture shows it (Negotiation.state).
NEW = "new"
SA_INIT_REQUESTED = "sa-init-requested"
SA_INIT_RETRY = "sa-init-retry-requested"  # INVALID_KE_PAYLOAD or COOKIE answered
SA_INIT_FAILED = "sa-init-failed"
SA_INIT_DONE = "sa-init-done"
INTERMEDIATE = "intermediate"
AUTH_REQUESTED = "auth-requested"
ESTABLISHED = "established"
MIDSTREAM = "midstream"  # met after IKE_SA_INIT, which the capture does not hold


@dataclass(frozen=True, slots=True)
class Finding:
    """Something an auditor should act on, with the severity it deserves."""

    severity: str  # "info", "low", "medium", "high", "critical"
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured link-layer frame, as a capture source yields it."""

    number: int  # 1-based position in its capture, as Wireshark numbers frames
    timestamp: float  # seconds since the epoch
    linktype: int  # LINKTYPE_* value of the interface that captured it
    data: bytes  # the captured bytes (may be shorter than wire_length)
    wire_length: int  # length on the wire; larger than len(data) when snaplen cut it


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something in the input that an auditor must be told about.

    kind is one of:
      "capture"     the capture file itself is damaged (truncated record, bad block)
      "malformed"   a header or length that contradicts the bytes present
      "incomplete"  data that never became whole (snaplen cut, missing IP or IKE fragment)
      "unsupported" a link type or encapsulation we do not decode
      "overflow"    a bounded table was full and state was dropped
      "undecryptable" an encrypted message that no key set of the key table opens
      "shed"        a live audit behind its capture left messages undissected (live.Shedding)
    """

    kind: str
    detail: str
    frame: int | None = None


@dataclass(frozen=True, slots=True)
class IkeDatagram:
    """One IKE message as it left the transport: a UDP payload (marker stripped) or
    one IKETCP frame, after IP reassembly. Extraction does not look inside beyond the
    fixed IKE header's version byte."""

    frame: int  # the frame that completed the datagram (last IP fragment), as in Wireshark
    frames: tuple[int, ...]  # every frame that carried a piece of it, in arrival order
    timestamp: float  # time the datagram became complete
    first_timestamp: float  # time its first piece was seen
    ip_version: int  # 4 or 6
    src: str
    dst: str
    sport: int
    dport: int
    transport: str  # "udp" or "tcp"
    non_esp_marker: bool  # arrived on UDP/TCP 4500 behind the 4-byte zero marker
    ip_length: int  # whole IP datagram after reassembly, headers included
    ip_fragment_lengths: tuple[int, ...]  # IP total length of each fragment; () when not fragmented
    udp_payload_length: int  # UDP payload (marker included); for TCP the frame's length field
    payload: bytes  # the IKE message bytes, marker stripped
    ike_version: int  # major version from the header: 2 for IKEv2, 1 for IKEv1/ISAKMP


@dataclass(frozen=True, slots=True)
class EspFlow:
    """The ESP packets of one SPI in one direction: the traffic an IKE SA protects."""

    src: str
    dst: str
    spi: str  # hex
    encapsulated: bool  # ESP-in-UDP (RFC 3948) rather than IP protocol 50
    first_frame: int
    first_timestamp: float
    last_timestamp: float
    packets: int
    bytes: int  # IP datagram bytes, headers included


@dataclass(frozen=True, slots=True)
class Transform:
    type: int  # 1 ENCR, 2 PRF, 3 INTEG, 4 KE, 5 ESN, 6..12 ADDKE1..7
    id: int
    key_length: int | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    number: int
    protocol: int  # 1 IKE, 2 AH, 3 ESP
    spi: str  # hex
    transforms: tuple[Transform, ...]

    def ids(self, transform_type: int) -> tuple[int, ...]:
        return tuple(t.id for t in self.transforms if t.type == transform_type)


@dataclass(frozen=True, slots=True)
class KeyExchange:
    """A KE payload seen in clear."""

    method: int
    data_length: int


@dataclass(frozen=True, slots=True)
class Notify:
    type: int
    protocol: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Identification:
    """An IDi or IDr payload, seen once decrypted."""

    payload: int  # 35 IDi, 36 IDr
    id_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Certificate:
    """A CERT payload as carried (RFC 7296 section 3.6): encoding 4 is a DER X.509
    certificate; `ikeaudit.certs` reads it."""

    encoding: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """A CERTREQ payload (RFC 7296 section 3.7): for X.509, the SHA-1 hashes of the
    public keys of the CAs the sender trusts, concatenated."""

    encoding: int
    authorities: bytes


@dataclass(frozen=True, slots=True)
class Authentication:
    """An AUTH payload (RFC 7296 section 3.8): its method and data. For method 14
    (RFC 7427 Digital Signature) the data starts with the signature's AlgorithmIdentifier."""

    method: int
    data: bytes


@dataclass(frozen=True, slots=True)
class InnerPayloads:
    """The payloads inside an SK payload, or inside a whole set of SKF fragments joined
    after decryption: dissected by the same code as clear payloads."""

    payload_types: tuple[int, ...]
    proposals: tuple[Proposal, ...] = ()
    key_exchange: KeyExchange | None = None
    notifies: tuple[Notify, ...] = ()
    identifications: tuple[Identification, ...] = ()
    auth_method: int | None = None
    anomalies: tuple[Anomaly, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    cert_requests: tuple[CertificateRequest, ...] = ()
    authentication: Authentication | None = None  # the AUTH payload, whose method is auth_method
    vendor_ids: tuple[bytes, ...] = ()

    def notify_types(self) -> tuple[int, ...]:
        return tuple(map(_NOTIFY_TYPE, self.notifies))


@dataclass(frozen=True, slots=True)
class Decryption:
    """How the encrypted payload of a message fared with the key table."""

    status: str  # "decrypted", "decrypted-unchecked", "no-key", "failed" (ikeaudit.decrypt)
    detail: str
    key_line: str | None = None  # "file:line" of the key set that opened it

    @property
    def opened(self) -> bool:
        return self.status in ("decrypted", "decrypted-unchecked")


@dataclass(frozen=True, slots=True)
class IkeMessage:
    """A dissected IKEv2 message: the header and every payload that is in clear."""

    frame: int
    frames: tuple[int, ...]
    timestamp: float
    first_timestamp: float
    ip_version: int
    src: str
    dst: str
    sport: int
    dport: int
    transport: str
    non_esp_marker: bool
    ip_length: int
    ip_fragment_lengths: tuple[int, ...]
    udp_payload_length: int
    spi_i: str  # hex, 16 digits
    spi_r: str
    exchange: int
    flags: int
    message_id: int
    length: int  # the header's Length field
    payload_types: tuple[int, ...]  # clear payload chain in order; SK (46) or SKF (53) last when present
    proposals: tuple[Proposal, ...] = ()
    key_exchange: KeyExchange | None = None
    notifies: tuple[Notify, ...] = ()
    vendor_ids: tuple[bytes, ...] = ()
    fragment: tuple[int, int] | None = None  # (Fragment Number, Total Fragments) of an SKF payload
    encrypted_length: int = 0  # bytes of SK/SKF payload body (IV, ciphertext, ICV)
    digest: bytes = b""  # hash of the whole message: a retransmission repeats it byte for byte
    anomalies: tuple[Anomaly, ...] = ()
    encrypted_next_payload: int = 0  # SK/SKF Next Payload: the first inner payload (fragment 1)
    decryption: Decryption | None = None  # None: no key table was given, or nothing is encrypted
    inner: InnerPayloads | None = None  # SK: this message's; SKF: the whole message's, on the
    # fragment that completed it
    fragment_plaintext: bytes = b""  # SKF: this fragment's decrypted share, until joined
    cert_requests: tuple[CertificateRequest, ...] = ()  # clear CERTREQ payloads (IKE_SA_INIT response)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x20)

    @property
    def from_original_initiator(self) -> bool:
        return bool(self.flags & 0x08)

    def notify_types(self) -> tuple[int, ...]:
        return tuple(map(_NOTIFY_TYPE, self.notifies))


@dataclass(frozen=True, slots=True)
class Ikev1Transform:
    """One transform of an IKEv1 proposal with its SA attributes.

    For an ISAKMP (phase 1) proposal the attributes are RFC 2409 appendix A's: encryption
    (1), hash (2), authentication method (3), group description (4), life type/duration
    (11/12), key length (14). For an IPsec (phase 2, quick mode) proposal they are RFC 2407
    section 4.5's and the cipher is the transform id itself: `encryption` is then the ESP
    transform id, `hash` the authentication algorithm (5), `group` the PFS group (3), `key_length`
    attribute 6, and `auth_method` None."""

    number: int
    transform_id: int  # phase 1: 1 KEY_IKE; ESP: the cipher (RFC 2407 section 4.4.4)
    encryption: int | None = None
    hash: int | None = None
    auth_method: int | None = None
    group: int | None = None
    key_length: int | None = None
    life_seconds: int | None = None
    life_kilobytes: int | None = None
    attributes: tuple[tuple[int, int], ...] = ()  # every (attribute type, value) as read


@dataclass(frozen=True, slots=True)
class Ikev1Proposal:
    number: int
    protocol: int  # 1 ISAKMP, 2 IPSEC_AH, 3 IPSEC_ESP, 4 IPCOMP (RFC 2407 section 4.4.1)
    spi: str  # hex
    transforms: tuple[Ikev1Transform, ...]


@dataclass(frozen=True, slots=True)
class Ikev1Message:
    """An ISAKMP (IKEv1) message: header, and the clear payloads of an unencrypted one
    (SA proposals, Vendor IDs, KE size, notifies). Never parsed as IKEv2."""

    frame: int
    timestamp: float
    ip_version: int
    src: str
    dst: str
    sport: int
    dport: int
    transport: str
    udp_payload_length: int
    spi_i: str
    spi_r: str
    exchange: int
    flags: int
    message_id: int
    length: int
    payload_types: tuple[int, ...] = ()  # clear payload chain; () when the E flag hides it
    proposals: tuple[Ikev1Proposal, ...] = ()
    vendor_ids: tuple[bytes, ...] = ()
    ke_length: int | None = None  # Key Exchange data bytes (IKEv1 names no group in it)
    notify_types: tuple[int, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x01)  # RFC 2408 section 3.1: E(ncryption) bit


@dataclass(frozen=True, slots=True)
class Malformed:
    """A datagram on an IKE port that could not be dissected as IKE."""

    frame: int
    timestamp: float
    src: str
    dst: str
    sport: int
    dport: int
    anomaly: Anomaly


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """One distinct IKE message of a negotiation: its retransmissions and IKE fragments
    folded in. A request and its response are two TrackedMessages."""

    exchange: int
    message_id: int
    response: bool
    from_initiator: bool  # sent by the IKE SA's original initiator (the I flag)
    src: str
    dst: str
    sport: int
    dport: int
    first_frame: int
    frames: tuple[int, ...]  # every frame carrying it, retransmissions included
    first_timestamp: float
    last_timestamp: float
    udp_payload_bytes: tuple[int, ...]  # one per datagram of the first transmission (per IKE fragment)
    ip_lengths: tuple[int, ...]  # IP datagram of each of those, headers included, after reassembly
    ike_lengths: tuple[int, ...]  # IKE Length field of each of those
    ike_bytes: int  # sum of the IKE Length fields of those datagrams
    encrypted_bytes: int  # sum of SK/SKF bodies
    ike_fragments: int  # Total Fragments announced by SKF; 0 when not IKE-fragmented
    fragments_seen: tuple[int, ...]  # SKF Fragment Numbers that arrived
    ip_fragment_lengths: tuple[tuple[int, ...], ...]  # per datagram; () when it was not IP-fragmented
    retransmissions: int
    assembly_seconds: float  # first piece to last piece of the first transmission
    payload_types: tuple[int, ...]  # clear payloads of the first datagram
    notifies: tuple[int, ...]
    key_exchange: KeyExchange | None = None
    decryption: Decryption | None = None  # of the whole message (every fragment); None without keys
    inner: InnerPayloads | None = None  # its decrypted payloads

    @property
    def ip_fragmented(self) -> bool:
        return any(self.ip_fragment_lengths)

    @property
    def complete(self) -> bool:
        return self.ike_fragments == 0 or len(self.fragments_seen) == self.ike_fragments


@dataclass(frozen=True, slots=True)
class SaInitRetry:
    """A responder's demand that the initiator start IKE_SA_INIT again."""

    reason: str  # "INVALID_KE_PAYLOAD" or "COOKIE"
    frame: int
    timestamp: float
    offered_ke: int | None  # KE payload method of the request that was refused
    requested_ke: int | None  # the method INVALID_KE_PAYLOAD asks for
    new_spi_i: str | None = None  # when the initiator changed its SPI for the retry


@dataclass(frozen=True, slots=True)
class FollowupKe:
    """One IKE_FOLLOWUP_KE exchange (RFC 9370 section 2.2.2), seen decrypted."""

    message_id: int
    frame: int
    request_ke: KeyExchange | None
    response_ke: KeyExchange | None


@dataclass(frozen=True, slots=True)
class ChildExchange:
    """A CREATE_CHILD_SA exchange seen decrypted: a new or rekeyed Child SA, or an IKE SA
    rekey, with the IKE_FOLLOWUP_KE exchanges that RFC 9370's ADDITIONAL_KEY_EXCHANGE
    notify ties to it."""

    message_id: int
    frame: int
    protocol: int | None  # of the chosen (else offered) proposal: 1 IKE SA rekey, 2 AH, 3 ESP
    offered: tuple[Proposal, ...]
    chosen: Proposal | None
    request_ke: KeyExchange | None
    response_ke: KeyExchange | None
    followups: tuple[FollowupKe, ...] = ()
    new_spis: tuple[str, str] | None = None  # IKE SA rekey: the new SA's (SPIi, SPIr)


@dataclass(frozen=True, slots=True)
class Negotiation:
    """Everything seen of one IKE SA (or IKEv1 exchange), ready for classification."""

    capture: str
    ike_version: int
    spi_i: str
    spi_r: str
    initiator: str
    responder: str
    initiator_port: int
    responder_port: int
    ip_version: int
    transport: str
    first_frame: int
    first_seen: float
    last_seen: float
    state: str
    sa_init_seen: bool  # an IKE_SA_INIT request of this SA was captured
    offered: tuple[Proposal, ...]  # IKE proposals of every IKE_SA_INIT request, retries included
    offered_ke: tuple[int, ...]  # KE payload methods of the IKE_SA_INIT requests, in order
    chosen: Proposal | None  # the proposal of the IKE_SA_INIT response
    responder_ke: int | None
    initiator_notifies: tuple[int, ...]  # IKE_SA_INIT request (last attempt)
    responder_notifies: tuple[int, ...]  # IKE_SA_INIT response (last)
    error_notifies: tuple[tuple[int, int], ...]  # (exchange, notify type) of clear error notifies
    retries: tuple[SaInitRetry, ...]
    messages: tuple[TrackedMessage, ...]
    vendor_ids: tuple[bytes, ...]
    moved_to_4500: bool
    anomalies: tuple[Anomaly, ...]
    # True only on evidence of a successful IKE_AUTH; `established_basis` says which:
    # "observed" a decrypted IKE_AUTH response with an AUTH payload and no error notify;
    # "inferred" without keys, later exchanges under the SA's SPIs after IKE_AUTH
    # (CREATE_CHILD_SA, INFORMATIONAL; ESP is judged by the exposure stage, not here);
    # "none" not established (an IKE_AUTH response alone may be AUTHENTICATION_FAILED or
    # an EAP round).
    established: bool
    rekeyed_from: tuple[str, str] | None = None  # parent's (spi_i, spi_r)
    rekey_evidence: str | None = None
    ikev1_exchanges: tuple[int, ...] = ()
    # What decryption showed (empty without a key table):
    # "spis" (decrypted rekey proposal), "addresses-time-and-size" (inferred: same peers,
    # within the tracker's rekey window, message sizes that agree) or None
    rekey_linked_by: str | None = None
    child_exchanges: tuple[ChildExchange, ...] = ()
    child_sa_offered: tuple[Proposal, ...] = ()  # IKE_AUTH request's SA payload
    child_sa_chosen: Proposal | None = None  # IKE_AUTH response's
    identifications: tuple[Identification, ...] = ()  # from IKE_AUTH, initiator's first
    auth_methods: tuple[tuple[bool, int], ...] = ()  # (from initiator, AUTH method) per AUTH payload
    ppk_notifies: tuple[tuple[int, int], ...] = ()  # (exchange, notify type) of decrypted PPK notifies
    established_basis: str = "none"  # "observed", "inferred" or "none" (see `established`)
    # What the wire shows even when the notifies that negotiated it were not captured:
    intermediate_seen: bool = False  # an IKE_INTERMEDIATE exchange was on the wire
    fragments_seen: bool = False  # SKF (IKE fragment) payloads were on the wire
    midstream: bool = False  # the SA was met without its IKE_SA_INIT (in either direction)
    # IKEv1 only: phase 1 proposals of the initiator's first SA payload, and the responder's
    ikev1_offered: tuple[Ikev1Proposal, ...] = ()
    ikev1_chosen: Ikev1Proposal | None = None
    ikev1_mode: str | None = None  # "main", "aggressive" or None when phase 1 was not seen
    peer_vendor_ids: tuple[tuple[bool, bytes], ...] = ()  # (from initiator, Vendor ID), IKEv1 and IKEv2
    # What the peers showed of their authentication, each item (from initiator, ...):
    certificates: tuple[tuple[bool, Certificate], ...] = ()  # CERT payloads of the decrypted IKE_AUTH
    cert_requests: tuple[tuple[bool, CertificateRequest], ...] = ()  # clear IKE_SA_INIT and decrypted IKE_AUTH
    authentications: tuple[tuple[bool, Authentication], ...] = ()  # AUTH payloads of the decrypted IKE_AUTH
    # RFC 7427 SIGNATURE_HASH_ALGORITHMS of the clear IKE_SA_INIT: the hash ids each side accepts
    signature_hash_algorithms: tuple[tuple[bool, tuple[int, ...]], ...] = ()


def quick_init(cls: type) -> type:
    """Give a frozen, slotted dataclass an __init__ that stores its fields as a plain
    class's would. The generated one calls object.__setattr__ for every field (frozen):
    about 140 ns a field here, 4.7 us for an IkeMessage; the records of a gateway scan
    are built by the million and that was a seventh of its time. This one turns the
    instance into a twin class of the same slots, stores the fields with ordinary
    attribute stores and turns it back: the same object, fields and defaults, still
    frozen afterwards (3.7x faster for IkeMessage). A subclass keeps the generated one."""
    fields = dataclasses.fields(cls)
    if not (cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__) or any(
            f.default_factory is not dataclasses.MISSING or not f.init for f in fields) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init takes a frozen, slotted dataclass of plain defaults")
    twin = type(cls.__name__, (), {"__slots__": cls.__slots__})
    namespace = {"_twin": twin, "_cls": cls, "_type": type, "_retype": object.__dict__["__class__"].__set__,
                 "_generated": cls.__init__}
    parameters = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            parameters.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
    names = [f.name for f in fields]
    source = (f"def __init__(self, {', '.join(parameters)}):\n"
              f"    if _type(self) is not _cls:\n"
              f"        return _generated(self, {', '.join(names)})\n"
              f"    _retype(self, _twin)\n"
              + "".join(f"    self.{name} = {name}\n" for name in names)
              + "    self.__class__ = _cls\n")
    exec(source, namespace)  # noqa: S102 - built from the dataclass's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
    _FIELDS[cls] = ({name: i for i, name in enumerate(names)}, attrgetter(*names) if len(names) > 1 else (lambda o, n=names[0]: (getattr(o, n),)))
    return cls


# quick_init's classes -> (field name -> position, a getter of their values as a tuple)
_FIELDS: dict[type, tuple] = {}


def replace(record, /, **changes):
    """dataclasses.replace, a dozen times faster for a record of quick_init (it walks the
    class's fields() and checks each on every call: 30 us for a Negotiation), which the
    classifier and the pipeline call for each negotiation."""
    known = _FIELDS.get(type(record))
    if known is None:
        return dataclasses.replace(record, **changes)
    positions, values = known
    arguments = list(values(record))
    for name, value in changes.items():
        position = positions.get(name)
        if position is None:
            raise TypeError(f"{type(record).__name__}: no field {name!r}")
        arguments[position] = value
    return type(record)(*arguments)


for _record in [value for value in list(globals().values())
                if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == __name__]:
    quick_init(_record)
del _record
