"""Which implementation each side of a negotiation runs, as far as the capture shows it
(issue 17), each identification with its evidence and confidence.

The evidence is the Vendor ID payloads a side sent (IKEv1, and IKEv2 in clear or
decrypted), named by `ikeaudit.vendors`, which cites a public source for every entry.
Confidence: "high" for a Vendor ID that is a product's and matched whole, "medium" for
one matched as a prefix of at least 8 bytes (a product ID followed by version bytes),
"low" for a shorter prefix (Openswan's two-byte "OE"). A side that sent no product
Vendor ID is "unidentified": nothing else is guessed. IKE_SA_INIT fingerprints (notify
order, proposal style) are not used: no public source documents them per
implementation, and an undocumented guess would be an invented identification.

A pure function of a `Negotiation`; no packet, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ikeaudit import vendors
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
    if best is None:
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
