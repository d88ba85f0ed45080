"""Which implementation each side of a negotiation runs, as far as the capture shows it
(issue 17), each identification with its evidence and confidence.

The evidence is the Vendor ID payloads a side sent (IKEv1, and IKEv2 in clear or
decrypted), named by `ikeaudit.vendors`, which cites a public source for every entry.
Confidence: "high" for a Vendor ID that is a product's and matched whole, "medium" for
one matched as a prefix of at least 8 bytes (a product ID followed by version bytes),
"low" for a shorter prefix (Openswan's two-byte "OE"). A side that sent no product
Vendor ID may still be named, at confidence "low", from the order of the notifies in its
IKE_SA_INIT message, where an implementation's published source fixes that order and it
differs from the others' (`NOTIFY_ORDERS`, each with its source); otherwise it is
"unidentified": nothing else is guessed.

A pure function of a `Negotiation`; no packet, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ikeaudit import iana, vendors
from ikeaudit.records import Negotiation

STRONG_PREFIX = 8  # bytes of a Vendor ID entry that make a prefix match more than a hint


@dataclass(frozen=True, slots=True)
class Implementation:
    side: str  # "initiator" or "responder"
    name: str | None  # the implementation ("strongSwan", "Fortinet FortiGate", ...); None: unidentified
    version: str | None
    confidence: str | None  # "high", "medium", "low"; None when unidentified
    evidence: tuple[str, ...]  # one sentence per Vendor ID that says something
    capabilities: tuple[str, ...] = ()  # protocol capabilities the Vendor IDs announce (DPD, NAT-T...)


_RANK = {"high": 3, "medium": 2, "low": 1}
_NAT_D = (iana.NAT_DETECTION_SOURCE_IP, iana.NAT_DETECTION_DESTINATION_IP)


@dataclass(frozen=True)
class NotifyOrder:
    """An implementation's IKE_SA_INIT notify order, as its source writes it."""

    implementation: str
    matches: Callable[[tuple[int, ...]], bool]  # the side's notify types in wire order, COOKIE left out
    description: str
    source: str


def _nat_d_first(types: tuple[int, ...]) -> bool:
    return types[:3] == (*_NAT_D, iana.IKEV2_FRAGMENTATION_SUPPORTED)


def _fragmentation_first_nat_d_after(types: tuple[int, ...]) -> bool:
    if not types or types[0] != iana.IKEV2_FRAGMENTATION_SUPPORTED:
        return False
    return any(types[i:i + 2] == _NAT_D for i in range(1, len(types) - 1))


# Each order is the opposite of the other's, so neither can match the other's messages;
# a minimal IKE_SA_INIT (NAT-D alone, as many implementations send) matches neither.
NOTIFY_ORDERS = (
    NotifyOrder("strongSwan", _nat_d_first,
                "the NAT-D notifies first, IKEV2_FRAGMENTATION_SUPPORTED next",
                "strongSwan src/libcharon/encoding/message.c, ike_sa_init_i_order and ike_sa_init_r_order "
                "(NAT-D notifies sorted right after the Nonce, the others after them); seen so from "
                "strongSwan 6.0.6 in the bundled lab captures"),
    NotifyOrder("Libreswan", _fragmentation_first_nat_d_after,
                "IKEV2_FRAGMENTATION_SUPPORTED first, the NAT-D notifies after it",
                "Libreswan programs/pluto/ikev2_ike_sa_init.c, record_v2_IKE_SA_INIT_request (fragmentation "
                "notify emitted first after the Nonce, NAT-D notifies last before the Vendor IDs); seen so "
                "from Libreswan 4.10 in the bundled lab captures"),
)


def notify_order_hint(types: tuple[int, ...]) -> NotifyOrder | None:
    """The implementation whose IKE_SA_INIT notify order `types` follows, if one does."""
    types = tuple(t for t in types if t != iana.COOKIE)  # a retry after a cookie puts it first
    for order in NOTIFY_ORDERS:
        if order.matches(types):
            return order
    return None


def identify(n: Negotiation) -> tuple[Implementation, Implementation]:
    """(initiator, responder)."""
    return _side(n, True), _side(n, False)


def _side(n: Negotiation, from_initiator: bool) -> Implementation:
    side = "initiator" if from_initiator else "responder"
    best: tuple[int, str, str | None, str] | None = None
    evidence, capabilities = [], []
    for who, raw in n.peer_vendor_ids:
        if who != from_initiator:
            continue
        named = vendors.name_vendor_id(raw)
        if named is None:
            evidence.append(f"unknown Vendor ID {raw.hex()}")
            continue
        if named.vendor is None:
            capabilities.append(named.label)
            continue
        matched = _entry_length(raw, named)
        confidence = ("high" if named.match == "exact" else
                      "medium" if matched >= STRONG_PREFIX else "low")
        evidence.append(f"Vendor ID {named.label!r} ({named.match} match, {named.source}): "
                        f"{named.vendor}, confidence {confidence}")
        if best is None or _RANK[confidence] > best[0]:
            best = (_RANK[confidence], named.vendor, named.version or _version_of(best, named.vendor), confidence)
        elif best[1] == named.vendor and best[2] is None and named.version:
            best = (best[0], best[1], named.version, best[3])  # another ID of the same product gives its version
    notifies = n.initiator_notifies if from_initiator else n.responder_notifies
    hint = notify_order_hint(notifies) if n.ike_version == 2 else None
    if hint is not None:
        evidence.append(f"IKE_SA_INIT notify order ({hint.description}) follows {hint.implementation}'s "
                        f"({hint.source}): {hint.implementation}, confidence low")
    if best is None:
        if hint is not None:
            return Implementation(side, hint.implementation, None, "low", tuple(evidence),
                                  tuple(dict.fromkeys(capabilities)))
        return Implementation(side, None, None, None, tuple(evidence) or ("no product Vendor ID was sent",),
                              tuple(dict.fromkeys(capabilities)))
    _, name, version, confidence = best
    return Implementation(side, name, version, confidence, tuple(evidence), tuple(dict.fromkeys(capabilities)))


def _version_of(best: tuple | None, vendor: str) -> str | None:
    return best[2] if best is not None and best[1] == vendor else None


def _entry_length(raw: bytes, named: vendors.VendorId) -> int:
    """How many bytes of `raw` the matching table entry covers."""
    return max((len(pattern) for pattern, name, _, _ in vendors.entries()
                if name == named.name and raw.startswith(pattern)), default=len(raw))
