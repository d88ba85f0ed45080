"""Exposure per tunnel: what harvest-now-decrypt-later could read between two peers.

A pure function of audited negotiations and ESP flows (plain records).

A tunnel is a pair of peers (unordered addresses) with an established IKE SA between
them (established observed or inferred by the tracker) or ESP between them. Every
other negotiation - unanswered requests, scans, reflection floods, failed handshakes,
handshakes whose success nothing shows - forms no tunnel: `unanswered_traffic` counts
those apart, with a finding naming the sources and the volume.

Each IKE SA of a tunnel (established, or followed by ESP between its peers, which
infers its establishment) is:

- exposed: classical-only key exchange (classical, classical-pq-offered, IKEv1), unless
  an RFC 8784 PPK was confirmed used (ppk "negotiated"); inferred classical counts too;
- protected: ML-KEM with confidence verified or negotiated, or a confirmed PPK;
- unassessed: anything else - handshake not captured (observation not-observable),
  ML-KEM chosen but its exchange not captured or contradicted, ML-KEM inferred only.

A tunnel is exposed when any of its SAs was (what was recorded once stays recorded),
else unassessed when any was or when ESP ran under no captured SA, else protected. ESP
flows are attributed by address pair and time: a flow belongs to the most recent SA
between the same peers that began before its first packet (Child SA SPIs travel
encrypted, so no SPI can tie them tighter); a flow before any SA is unassessed.

Sensors: captures from several capture points (`--sensor`) may hold the same IKE SA
twice. A negotiation is the same one when its peers and IKE SPIs are (SPIs are random,
64 bits each): it counts once, from the sensor that saw its IKE_SA_INIT request, then
most of its messages (ties: the first sensor by name), and the tunnel lists every sensor that saw it (`sensors`). ESP
flows likewise (same addresses, SPI and encapsulation): counted from one sensor
(`distinct_esp_flows`), never added up across sensors.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterable, Mapping

from ikeaudit.classify import (
    CLASSICAL, CLASSICAL_PQ_OFFERED, FAILED, HYBRID_PQ, IKEV1, INCOMPLETE, NOT_OBSERVABLE, PASSABLE_CONFIDENCE,
    PQ_ONLY, UNKNOWN, Classification, KeCatalog,
)
from ikeaudit.peer import Implementation
from ikeaudit.policy.rules import audited_negotiations
from ikeaudit.records import EspFlow, Finding

CLASSICAL_ONLY_CLASSES = (CLASSICAL, CLASSICAL_PQ_OFFERED, IKEV1)
PQ_CLASSES = (HYBRID_PQ, PQ_ONLY)

EXPOSED, UNASSESSED, PROTECTED = "exposed", "unassessed", "protected"
IKEV1_REASON = "IKEv1 (no post-quantum key exchange)"
# Tunnel.observation, from the best-known to the least.
OBSERVED, INFERRED = "observed", "inferred"
# One address meeting this many others without any tunnel is a scan or a flood, not
# stray requests.
FLOOD_PEERS = 50

# Ranking weights of TunnelExposure.score (highest first = look here first).
SCORE_WEIGHTS: Mapping[str, float] = {
    "latest_classical_only": 40.0,  # the tunnel's most recent IKE SA is classical-only now
    "classical_only": 10.0,  # per classical-only negotiation
    "downgrades": 8.0,  # per downgrade event
    "regressions": 8.0,  # per classical-only negotiation after a post-quantum one
    "unassessed": 5.0,  # per SA of the tunnel that could not be assessed
    "unverifiable": 3.0,  # per unknown or incomplete negotiation
    "esp_bytes_log10": 2.0,  # times log10(1 + ESP bytes sent while classical-only or unassessed)
}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    established: int  # IKE SAs established (observed, inferred, or inferred from ESP after them)
    pq_protected: int  # hybrid-pq and pq-only SAs whose confidence can pass
    classical_only: int  # classical, classical-pq-offered and ikev1, without a confirmed PPK
    ppk: int  # classical negotiations whose RFC 8784 PPK was confirmed used
    unverifiable: int  # unknown and incomplete
    downgrades: int  # classical-pq-offered, plus INVALID_KE_PAYLOAD retries from ML-KEM to classical
    regressions: int  # classical-only negotiations that came after a post-quantum one
    latest_class: str  # class of the most recent negotiation
    classical_seconds: float  # first to last message of the classical-only negotiations, summed
    esp_packets: int | None  # ESP under a classical-only SA; None: not measured
    esp_bytes: int | None
    score: float
    status: str = PROTECTED  # EXPOSED, UNASSESSED or PROTECTED
    observation: str = OBSERVED  # "observed", "inferred" or "unassessed"
    reasons: tuple[str, ...] = ()  # why exposed or unassessed, one sentence each
    unassessed: int = 0  # SAs of the tunnel that could not be assessed
    established_by_esp: int = 0  # SAs whose establishment only ESP after them shows
    esp_packets_unassessed: int | None = None  # ESP under an unassessed SA, or under none captured
    esp_bytes_unassessed: int | None = None
    esp_packets_total: int | None = None
    esp_bytes_total: int | None = None
    downgrade_prevention: str | None = None  # of the latest SA whose IKE_SA_INIT was seen
    inferences: tuple[str, ...] = ()  # what the tunnel's status rests on beyond observation
    sensors: tuple[str, ...] = ()  # the sensors that saw it (its negotiations or ESP), when named

    def as_dict(self) -> dict:
        return {
            "peers": list(self.peers), "captures": list(self.captures),
            "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen),
            "negotiations": self.negotiations, "by_class": dict(self.by_class),
            "established": self.established, "pq_protected": self.pq_protected,
            "classical_only": self.classical_only, "ppk": self.ppk, "unverifiable": self.unverifiable,
            "downgrades": self.downgrades, "regressions": self.regressions,
            "latest_class": self.latest_class, "classical_seconds": self.classical_seconds,
            "esp_packets": self.esp_packets, "esp_bytes": self.esp_bytes, "score": self.score,
            "status": self.status, "observation": self.observation, "reasons": list(self.reasons),
            "unassessed": self.unassessed, "established_by_esp": self.established_by_esp,
            "esp_packets_unassessed": self.esp_packets_unassessed,
            "esp_bytes_unassessed": self.esp_bytes_unassessed,
            "esp_packets_total": self.esp_packets_total, "esp_bytes_total": self.esp_bytes_total,
            "downgrade_prevention": self.downgrade_prevention, "inferences": list(self.inferences),
            "sensors": list(self.sensors),
        }


@dataclass(frozen=True)
class UnansweredTraffic:
    """Negotiations between peers that formed no tunnel: no established SA, no ESP."""

    pairs: int
    negotiations: int
    by_class: dict[str, int]
    messages: int  # distinct IKE messages (IKEv2) among them
    sources: tuple[tuple[str, int], ...]  # initiators by negotiation count, most first
    destinations: tuple[tuple[str, int], ...]  # responders by negotiation count, most first
    findings: tuple[Finding, ...]

    def as_dict(self) -> dict:
        return {
            "pairs": self.pairs, "negotiations": self.negotiations, "by_class": dict(self.by_class),
            "messages": self.messages, "source_addresses": len(self.sources),
            "destination_addresses": len(self.destinations),
            "top_sources": [{"address": a, "negotiations": n} for a, n in self.sources[:10]],
            "top_destinations": [{"address": a, "negotiations": n} for a, n in self.destinations[:10]],
            "findings": [{"severity": f.severity, "code": f.code, "detail": f.detail} for f in self.findings],
        }


def sa_status(c: Classification) -> tuple[str, str]:
    """(EXPOSED, UNASSESSED or PROTECTED, the reason in one phrase) of one IKE SA."""
    if c.name in CLASSICAL_ONLY_CLASSES:
        if c.ppk == "negotiated":
            return PROTECTED, "an RFC 8784 post-quantum preshared key was confirmed used"
        if c.name == IKEV1:
            return EXPOSED, IKEV1_REASON
        how = " (inferred)" if c.observation != OBSERVED else ""
        return EXPOSED, f"classical-only key exchange{how}"
    if c.name in PQ_CLASSES:
        if c.confidence in PASSABLE_CONFIDENCE and c.observation != NOT_OBSERVABLE:
            return PROTECTED, "ML-KEM key exchange"
        return UNASSESSED, {
            "unconfirmed": "ML-KEM was chosen but the exchange carrying it was not captured",
            "contradicted": "the messages on the wire contradict the chosen ML-KEM key exchange",
        }.get(c.confidence or "", "ML-KEM is only inferred, not observed")
    if c.observation == NOT_OBSERVABLE or c.name == UNKNOWN:
        return UNASSESSED, "their handshake was not captured"
    return UNASSESSED, f"the negotiation is {c.name}"


@dataclass(frozen=True, slots=True)
class SaFacts:
    """What exposure reads of a Negotiation, and no more: a report that streams keeps
    this per IKE SA (bench/gateway.py: about 0.9 KB each, ClassFacts and peers shared)
    instead of the negotiation and its messages."""

    capture: str
    ike_version: int
    initiator: str
    responder: str
    spi_i: str
    spi_r: str
    first_seen: float
    last_seen: float
    first_frame: int
    established: bool
    established_basis: str | None
    sa_init_seen: bool
    message_count: int
    sender: tuple[str, str]  # who put it on the wire (_sender)
    retries: tuple  # its INVALID_KE_PAYLOAD retries, the only ones a downgrade is counted from


@dataclass(frozen=True, slots=True)
class ClassFacts:
    """What exposure reads of a Classification (sa_status, the tunnel's observation)."""

    name: str
    ppk: str
    confidence: str | None
    observation: str
    downgrade_prevention: str | None
    inferences: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExposureItem:
    """An audited negotiation as exposure sees it. peers: the implementations that
    identify() found (for the report's tunnel view), when asked for."""

    negotiation: SaFacts
    classification: ClassFacts
    sensor: str | None = None
    peers: tuple | None = None


# What identify() says of peers whose Vendor IDs named nothing, kept once.
_UNIDENTIFIED = (Implementation("initiator", None, None, None, ()), Implementation("responder", None, None, None, ()))
# A gateway's clients run a few implementations: each pair identify() found is kept once
# (up to _PEERS_KEPT of them; 1.4 KB each).
_PEERS: dict[tuple, tuple] = {}
_PEERS_KEPT = 4096
# Most negotiations share their ClassFacts: those without inferences (which name SPIs)
# are kept once. Bounded: a handful of names, confidences and observations.
_CLASS_FACTS: dict[ClassFacts, ClassFacts] = {}


def exposure_item(item, peers: bool = False) -> ExposureItem:
    """The facts exposure reads of an AuditedNegotiation (an ExposureItem as it is)."""
    if isinstance(item, ExposureItem):
        return item
    n, c = item.negotiation, item.classification
    sender = _sender(n)
    sender = (n.initiator, n.responder) if sender == (n.initiator, n.responder) else sender  # its strings once
    facts = SaFacts(n.capture, n.ike_version, n.initiator, n.responder, n.spi_i, n.spi_r, n.first_seen,
                    n.last_seen, n.first_frame, n.established, n.established_basis, n.sa_init_seen,
                    len(n.messages), sender, tuple(r for r in n.retries if r.reason == "INVALID_KE_PAYLOAD"))
    kind = ClassFacts(c.name, c.ppk, c.confidence, c.observation, c.downgrade_prevention, tuple(c.inferences))
    if not kind.inferences:
        kind = _CLASS_FACTS.setdefault(kind, kind)
    found = None
    if peers:
        found = item.peers if any(p.name is not None for p in item.peers) else _UNIDENTIFIED
        if len(_PEERS) < _PEERS_KEPT or found in _PEERS:
            found = _PEERS.setdefault(found, found)
    return ExposureItem(facts, kind, item.sensor, found)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _sa_key(n) -> tuple:
    return n.ike_version, n.initiator, n.responder, n.spi_i, n.spi_r


def distinct_negotiations(items: Iterable) -> tuple[list, dict[tuple, tuple[str, ...]]]:
    """The negotiations with every IKE SA once though several sensors saw it, and which
    sensors saw each (by _sa_key). Negotiations without a sensor are all kept."""
    chosen: dict[tuple, int] = {}  # key -> index in out
    seen_by: dict[tuple, set[str]] = {}
    out: list = []
    for item in map(exposure_item, items):
        if item.sensor is None:
            out.append(item)
            continue
        key = _sa_key(item.negotiation)
        seen_by.setdefault(key, set()).add(item.sensor)
        index = chosen.get(key)
        if index is None:
            chosen[key] = len(out)
            out.append(item)
        elif out[index].sensor != item.sensor and _fuller(item, out[index]):
            out[index] = item
    return out, {key: tuple(sorted(names)) for key, names in seen_by.items()}


def _fuller(item, kept) -> bool:
    """Whether item's sensor saw more of the negotiation than kept's: first the view that
    holds the IKE_SA_INIT request (the offer, the choice and any INVALID_KE retry, which
    the class and the downgrade count rest on; a mid-stream view with more INFORMATIONALs
    must not replace it), then more messages (ties: the first name)."""
    def rank(i) -> tuple:
        return i.negotiation.sa_init_seen, i.negotiation.message_count

    return rank(item) > rank(kept) or (rank(item) == rank(kept) and item.sensor < kept.sensor)


def distinct_esp_flows(audits: Iterable) -> list[EspFlow]:
    """The ESP flows of CaptureAudits, each SPI's flow counted from one sensor (the one
    that saw most of its packets; ties: the first name) though several saw it. Flows of
    captures without a sensor are all kept."""
    per_sensor: dict[tuple, dict[str, list[EspFlow]]] = {}
    out = []
    for audit in audits:
        for flow in audit.esp_flows:
            if audit.sensor is None:
                out.append(flow)
            else:
                key = (flow.src, flow.dst, flow.spi, flow.encapsulated)
                per_sensor.setdefault(key, {}).setdefault(audit.sensor, []).append(flow)
    for sensors in per_sensor.values():
        best = min(sensors, key=lambda name: (-sum(f.packets for f in sensors[name]), name))
        out.extend(sensors[best])
    return out


def _flow_sensors(audits: Iterable) -> dict[tuple, set[str]]:
    """(src, dst) pair -> the sensors whose captures hold ESP between them."""
    found: dict[tuple, set[str]] = {}
    for audit in audits:
        if getattr(audit, "sensor", None) is not None and hasattr(audit, "esp_flows"):
            for flow in audit.esp_flows:
                found.setdefault(_pair(flow.src, flow.dst), set()).add(audit.sensor)
    return found


def _grouped(audits: Iterable, esp: Iterable[EspFlow] | None):
    """Negotiations (each IKE SA once) and ESP flows by address pair, and which sensors
    saw each IKE SA (distinct_negotiations)."""
    groups: dict[tuple[str, str], list] = {}
    items, seen_by = distinct_negotiations(audited_negotiations(audits))
    for item in items:
        n = item.negotiation
        groups.setdefault(_pair(n.initiator, n.responder), []).append(item)
    flows: dict[tuple[str, str], list[EspFlow]] = {}
    for flow in esp or ():
        flows.setdefault(_pair(flow.src, flow.dst), []).append(flow)
    for items in groups.values():
        items.sort(key=lambda i: (i.negotiation.first_seen, i.negotiation.first_frame))
    return groups, flows, seen_by


def _is_tunnel(items: list, flows: list[EspFlow]) -> bool:
    return bool(flows) or any(i.negotiation.established for i in items)


def exposure(audits: Iterable, esp: Iterable[EspFlow] | None = None,
             catalog: KeCatalog | None = None) -> list[TunnelExposure]:
    """The tunnels among every negotiation (of CaptureAudits or AuditedNegotiations) and
    ESP flow, ranked most exposed first. Without flows (esp None) ESP figures are None
    and only established SAs make tunnels."""
    catalog = catalog or KeCatalog()
    audits = list(audits)
    groups, flows, seen_by = _grouped(audits, esp)
    esp_seen_by = _flow_sensors(audits)
    measured = esp is not None
    out = []
    for pair in set(groups) | set(flows):
        if _is_tunnel(groups.get(pair, []), flows.get(pair, [])):
            tunnel = _pair_exposure(pair, groups.get(pair, []), flows.get(pair, []), measured, catalog)
            sensors = set(esp_seen_by.get(pair, ()))
            for item in groups.get(pair, []):
                sensors.update(seen_by.get(_sa_key(item.negotiation), ()))
            out.append(replace(tunnel, sensors=tuple(sorted(sensors))) if sensors else tunnel)
    return sorted(out, key=lambda e: (-e.score, -e.last_seen, e.peers))


def unanswered_traffic(audits: Iterable, esp: Iterable[EspFlow] | None = None) -> UnansweredTraffic:
    """The negotiations that formed no tunnel, with findings naming sources and volume."""
    groups, flows, _ = _grouped(audits, esp)
    items = [i for pair, group in groups.items() if not _is_tunnel(group, flows.get(pair, [])) for i in group]
    pairs = sum(1 for pair, group in groups.items() if not _is_tunnel(group, flows.get(pair, [])))
    sources = Counter(i.negotiation.sender[0] for i in items)
    destinations = Counter(i.negotiation.sender[1] for i in items)
    by_class = Counter(i.classification.name for i in items)
    messages = sum(i.negotiation.message_count for i in items)
    return UnansweredTraffic(
        pairs=pairs, negotiations=len(items), by_class=dict(sorted(by_class.items())), messages=messages,
        sources=tuple(sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))),
        destinations=tuple(sorted(destinations.items(), key=lambda kv: (-kv[1], kv[0]))),
        findings=tuple(_unanswered_findings(items, sources, destinations, by_class)))


def _sender(n) -> tuple[str, str]:
    """(source, destination) of what a negotiation that formed no tunnel put on the wire:
    a flood of answers that nobody asked for (reflection) comes from the responders."""
    if n.messages:
        return n.messages[0].src, n.messages[0].dst
    if n.ike_version == 1 and not n.ikev1_offered and n.ikev1_chosen is not None:
        return n.responder, n.initiator
    return n.initiator, n.responder


def _volume(items: list, by_class: Counter) -> str:
    classes = ", ".join(f"{k} {v}" for k, v in sorted(by_class.items()))
    first = min(i.negotiation.first_seen for i in items)
    last = max(i.negotiation.last_seen for i in items)
    return f"{len(items)} negotiation(s) ({classes}) from {_iso(first)} to {_iso(last)}"


def _unanswered_findings(items: list, sources: Counter, destinations: Counter, by_class: Counter) -> list[Finding]:
    if not items:
        return []
    findings = []
    senders: dict[str, set[str]] = {}
    targets: dict[str, set[str]] = {}
    for i in items:
        source, destination = i.negotiation.sender
        senders.setdefault(destination, set()).add(source)
        targets.setdefault(source, set()).add(destination)
    for address, count in destinations.most_common():
        if len(senders[address]) >= FLOOD_PEERS:
            named = [a for a, _ in sources.most_common() if a in senders[address]][:5]
            findings.append(Finding("medium", "ike-flood", (
                f"{count} IKE negotiation(s) from {len(senders[address])} addresses toward {address} formed no "
                f"tunnel: a flood (reflection/amplification, or a DoS on {address}), not tunnels; most active "
                f"sources: {', '.join(named)}")))
    for address, count in sources.most_common():
        if len(targets[address]) >= FLOOD_PEERS:
            findings.append(Finding("medium", "ike-scan", (
                f"{address} sent {count} IKE negotiation(s) to {len(targets[address])} addresses without forming "
                "a tunnel: a scan, not tunnels")))
    top = ", ".join(f"{a} ({n})" for a, n in sources.most_common(5))
    more = f" and {len(sources) - 5} more" if len(sources) > 5 else ""
    findings.append(Finding("low", "no-tunnel", (
        f"{_volume(items, by_class)} between {len({_pair(i.negotiation.initiator, i.negotiation.responder) for i in items})}"
        f" peer pair(s) formed no tunnel (no established IKE SA, no ESP): unanswered requests, failed or "
        f"unconfirmed handshakes, scans or floods; sources: {top}{more}")))
    return findings


def _owner(items: list, flow: EspFlow):
    """The most recent SA between the peers that began before the flow, if any; failed
    negotiations and unanswered requests established nothing and own no ESP."""
    owner = None
    for item in items:
        if item.classification.name in (FAILED, INCOMPLETE):
            continue
        if item.negotiation.first_seen <= flow.first_timestamp:
            owner = item
    return owner


def _pair_exposure(pair, items: list, flows: list[EspFlow], measured: bool, catalog: KeCatalog) -> TunnelExposure:
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
        elif sa_status(c)[0] == EXPOSED:
            classical_seconds += max(n.last_seen - n.first_seen, 0.0)
            if seen_pq:
                regressions += 1
    # The SAs of the tunnel: established, or owning ESP (which infers establishment).
    esp = {EXPOSED: [0, 0], UNASSESSED: [0, 0], PROTECTED: [0, 0]}
    by_esp: dict[int, object] = {}
    orphan_flows = 0
    for flow in flows:
        owner = _owner(items, flow)
        if owner is None:
            orphan_flows += 1
            status = UNASSESSED
        else:
            status = sa_status(owner.classification)[0]
            if not owner.negotiation.established:
                by_esp[id(owner)] = owner
        esp[status][0] += flow.packets
        esp[status][1] += flow.bytes
    sas = [i for i in items if i.negotiation.established or id(i) in by_esp]
    statuses = [(i, *sa_status(i.classification)) for i in sas]
    reasons = [r for _, s, r in statuses if s == EXPOSED]
    unassessed_reasons = [r for _, s, r in statuses if s == UNASSESSED]
    if orphan_flows:
        unassessed_reasons.append("ESP ran under no IKE SA the capture holds")
    if reasons:
        status = EXPOSED
    elif unassessed_reasons:
        status = UNASSESSED
    else:
        status = PROTECTED
    if unassessed_reasons or any(i.classification.observation == NOT_OBSERVABLE for i in sas):
        observation = UNASSESSED
    elif any(i.classification.observation != OBSERVED or i.negotiation.established_basis != OBSERVED
             for i in sas):
        observation = INFERRED
    else:
        observation = OBSERVED
    inferences = [f"IKE SA {i.negotiation.spi_i}/{i.negotiation.spi_r} established: inferred from ESP "
                  "between its peers after it" for i in by_esp.values()]
    inferences += [f"IKE SA {i.negotiation.spi_i}/{i.negotiation.spi_r} established: inferred from later "
                   "exchanges under its SPIs" for i in sas if i.negotiation.established_basis == INFERRED]
    inferences += [x for i in sas for x in i.classification.inferences]
    classical_only = sum(1 for i in items if sa_status(i.classification)[0] == EXPOSED
                         and i.classification.name in CLASSICAL_ONLY_CLASSES)
    unassessed = sum(1 for _, s, _ in statuses if s == UNASSESSED)
    unverifiable = classes[UNKNOWN] + classes[INCOMPLETE]
    latest = items[-1].classification if items else None
    prevention = next((i.classification.downgrade_prevention for i in reversed(items)
                       if i.classification.downgrade_prevention is not None), None)
    w = SCORE_WEIGHTS
    score = (w["latest_classical_only"] * (latest is not None and sa_status(latest)[0] == EXPOSED)
             + w["classical_only"] * classical_only + w["downgrades"] * downgrades
             + w["regressions"] * regressions + w["unassessed"] * (unassessed + bool(orphan_flows))
             + w["unverifiable"] * unverifiable
             + w["esp_bytes_log10"] * math.log10(1 + esp[EXPOSED][1] + esp[UNASSESSED][1]))
    times = [i.negotiation.first_seen for i in items] + [f.first_timestamp for f in flows]
    ends = [i.negotiation.last_seen for i in items] + [f.last_timestamp for f in flows]

    def measured_or_none(value: int) -> int | None:
        return value if measured else None

    return TunnelExposure(
        peers=pair,
        captures=tuple(dict.fromkeys(i.negotiation.capture for i in items)),
        first_seen=min(times),
        last_seen=max(ends),
        negotiations=len(items),
        by_class=dict(sorted(classes.items())),
        established=len(sas),
        pq_protected=sum(1 for i, s, _ in statuses if s == PROTECTED and i.classification.name in PQ_CLASSES),
        classical_only=classical_only,
        ppk=sum(1 for i in items if i.classification.name in CLASSICAL_ONLY_CLASSES
                and i.classification.ppk == "negotiated"),
        unverifiable=unverifiable,
        downgrades=downgrades,
        regressions=regressions,
        latest_class=latest.name if latest else "none",
        classical_seconds=round(classical_seconds, 6),
        esp_packets=measured_or_none(esp[EXPOSED][0]),
        esp_bytes=measured_or_none(esp[EXPOSED][1]),
        score=round(score, 3),
        status=status,
        observation=observation,
        reasons=tuple(dict.fromkeys(reasons + unassessed_reasons)),
        unassessed=unassessed,
        established_by_esp=len(by_esp),
        esp_packets_unassessed=measured_or_none(esp[UNASSESSED][0]),
        esp_bytes_unassessed=measured_or_none(esp[UNASSESSED][1]),
        esp_packets_total=measured_or_none(sum(f.packets for f in flows)),
        esp_bytes_total=measured_or_none(sum(f.bytes for f in flows)),
        downgrade_prevention=prevention,
        inferences=tuple(dict.fromkeys(inferences)),
    )
