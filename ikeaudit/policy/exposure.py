"""Exposure per tunnel: what harvest-now-decrypt-later could read between two peers.

A pure function of audited negotiations and ESP flows (plain records).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

from ikeaudit.classify import (
    CLASSICAL, CLASSICAL_PQ_OFFERED, HYBRID_PQ, IKEV1, INCOMPLETE, PQ_ONLY, UNKNOWN, Classification,
    KeCatalog,
)
from ikeaudit.policy.rules import audited_negotiations
from ikeaudit.records import EspFlow

CLASSICAL_ONLY_CLASSES = (CLASSICAL, CLASSICAL_PQ_OFFERED, IKEV1)
PQ_CLASSES = (HYBRID_PQ, PQ_ONLY)



# Ranking weights of TunnelExposure.score (highest first = look here first).
SCORE_WEIGHTS: Mapping[str, float] = {
    "latest_classical_only": 40.0,  # the tunnel's most recent IKE SA is classical-only now
    "classical_only": 10.0,  # per classical-only negotiation
    "downgrades": 8.0,  # per downgrade event
    "regressions": 8.0,  # per classical-only negotiation after a post-quantum one
    "unverifiable": 3.0,  # per unknown or incomplete negotiation
    "esp_bytes_log10": 2.0,  # times log10(1 + ESP bytes sent while classical-only)
}


@dataclass(frozen=True)
class TunnelExposure:
    """Everything seen between two peers, whoever initiated, and how exposed it is to
    harvest-now-decrypt-later."""

    peers: tuple[str, str]  # the two addresses, sorted
    captures: tuple[str, ...]
    first_seen: float  # epoch seconds
    last_seen: float
    negotiations: int
    by_class: dict[str, int]
    established: int
    pq_protected: int  # hybrid-pq and pq-only
    classical_only: int  # classical, classical-pq-offered and ikev1, without a negotiated PPK
    ppk: int  # classical negotiations that negotiated an RFC 8784 PPK
    unverifiable: int  # unknown and incomplete
    downgrades: int  # classical-pq-offered, plus INVALID_KE_PAYLOAD retries from ML-KEM to classical
    regressions: int  # classical-only negotiations that came after a post-quantum one
    latest_class: str  # class of the most recent negotiation
    classical_seconds: float  # first to last message of the classical-only negotiations, summed
    esp_packets: int | None  # ESP while the current IKE SA was classical-only; None: not measured
    esp_bytes: int | None
    score: float

    def as_dict(self) -> dict:
        def iso(epoch: float) -> str:
            return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="microseconds") \
                .replace("+00:00", "Z")

        return {
            "peers": list(self.peers), "captures": list(self.captures),
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "negotiations": self.negotiations, "by_class": dict(self.by_class),
            "established": self.established, "pq_protected": self.pq_protected,
            "classical_only": self.classical_only, "ppk": self.ppk, "unverifiable": self.unverifiable,
            "downgrades": self.downgrades, "regressions": self.regressions,
            "latest_class": self.latest_class, "classical_seconds": self.classical_seconds,
            "esp_packets": self.esp_packets, "esp_bytes": self.esp_bytes, "score": self.score,
        }


def exposure(audits: Iterable, esp: Iterable[EspFlow] | None = None,
             catalog: KeCatalog | None = None) -> list[TunnelExposure]:
    """Group every negotiation (of CaptureAudits or AuditedNegotiations) by unordered
    address pair; rank the pairs, most exposed first.

    ESP flows, when given, are attributed by address pair and time: a flow belongs to
    the most recent IKE SA between the same peers established before the flow's first
    packet (Child SA SPIs travel encrypted, so no SPI can tie them tighter); it counts
    when that SA is classical-only. Without flows esp_packets/esp_bytes are None.
    """
    catalog = catalog or KeCatalog()
    groups: dict[tuple[str, str], list] = {}
    for item in audited_negotiations(audits):
        n = item.negotiation
        groups.setdefault(tuple(sorted((n.initiator, n.responder))), []).append(item)
    flows_by_pair: dict[tuple[str, str], list[EspFlow]] = {}
    if esp is not None:
        for flow in esp:
            flows_by_pair.setdefault(tuple(sorted((flow.src, flow.dst))), []).append(flow)
    out = [_pair_exposure(pair, items, flows_by_pair.get(pair, []) if esp is not None else None, catalog)
           for pair, items in groups.items()]
    return sorted(out, key=lambda e: (-e.score, -e.last_seen, e.peers))


def _is_classical_only(c: Classification) -> bool:
    return c.name in CLASSICAL_ONLY_CLASSES and c.ppk != "negotiated"


def _pair_exposure(pair, items, flows, catalog: KeCatalog) -> TunnelExposure:
    items = sorted(items, key=lambda i: (i.negotiation.first_seen, i.negotiation.first_frame))
    classes = Counter(i.classification.name for i in items)
    downgrades = regressions = 0
    seen_pq = False
    classical_seconds = 0.0
    for item in items:
        n, c = item.negotiation, item.classification
        if c.name == CLASSICAL_PQ_OFFERED:
            downgrades += 1
        downgrades += sum(1 for r in n.retries if r.reason == "INVALID_KE_PAYLOAD"
                          and r.offered_ke is not None and r.requested_ke is not None
                          and catalog.method(r.offered_ke).is_pq and catalog.method(r.requested_ke).is_classical)
        if c.name in PQ_CLASSES:
            seen_pq = True
        elif _is_classical_only(c):
            classical_seconds += max(n.last_seen - n.first_seen, 0.0)
            if seen_pq:
                regressions += 1
    esp_packets = esp_bytes = None
    if flows is not None:
        esp_packets = esp_bytes = 0
        established = [i for i in items if i.negotiation.established]
        for flow in flows:
            owner = None
            for item in established:
                if item.negotiation.first_seen <= flow.first_timestamp:
                    owner = item
            if owner is not None and _is_classical_only(owner.classification):
                esp_packets += flow.packets
                esp_bytes += flow.bytes
    classical_only = sum(1 for i in items if _is_classical_only(i.classification))
    unverifiable = classes[UNKNOWN] + classes[INCOMPLETE]
    latest = items[-1].classification
    w = SCORE_WEIGHTS
    score = (w["latest_classical_only"] * _is_classical_only(latest)
             + w["classical_only"] * classical_only + w["downgrades"] * downgrades
             + w["regressions"] * regressions + w["unverifiable"] * unverifiable
             + w["esp_bytes_log10"] * math.log10(1 + (esp_bytes or 0)))
    return TunnelExposure(
        peers=pair,
        captures=tuple(dict.fromkeys(i.negotiation.capture for i in items)),
        first_seen=min(i.negotiation.first_seen for i in items),
        last_seen=max(i.negotiation.last_seen for i in items),
        negotiations=len(items),
        by_class=dict(sorted(classes.items())),
        established=sum(1 for i in items if i.negotiation.established),
        pq_protected=classes[HYBRID_PQ] + classes[PQ_ONLY],
        classical_only=classical_only,
        ppk=sum(1 for i in items if i.classification.name in CLASSICAL_ONLY_CLASSES
                and i.classification.ppk == "negotiated"),
        unverifiable=unverifiable,
        downgrades=downgrades,
        regressions=regressions,
        latest_class=latest.name,
        classical_seconds=round(classical_seconds, 6),
        esp_packets=esp_packets,
        esp_bytes=esp_bytes,
        score=round(score, 3),
    )
