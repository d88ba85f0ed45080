"""The alert rules: what one new negotiation, or the passing of time, changes in a
tunnel's posture, and which alert each change raises.

Pure logic on plain data: ``observe`` and ``tick`` take a ``Tunnel`` (mutated in
place) and return the alerts, each raised once per change of state, never once per
negotiation; ``state`` persists tunnels, ``service`` emits the alerts.

A tunnel is a pair of peer addresses, whoever initiates. Its posture is the key
exchange of its latest successful negotiation: ``post-quantum`` (hybrid-pq, pq-only)
or ``classical`` (classical, classical-pq-offered, ikev1); None until one succeeded.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime

from ikeaudit.report.views import iso_time

PQ_CLASSES = frozenset({"hybrid-pq", "pq-only"})
CLASSICAL_CLASSES = frozenset({"classical", "classical-pq-offered", "ikev1"})
POST_QUANTUM, CLASSICAL = "post-quantum", "classical"
UNASSESSED = "unassessed"  # shown for a tunnel whose posture is still None

FALLBACK = "fallback"
NEW_CLASSICAL_TUNNEL = "new-classical-tunnel"
DOWNGRADE = "downgrade"
PQ_FAILURE = "pq-failure"
VISIBILITY_LOST = "visibility-lost"
KINDS = (FALLBACK, NEW_CLASSICAL_TUNNEL, DOWNGRADE, PQ_FAILURE, VISIBILITY_LOST)
SEVERITY = {FALLBACK: "high", DOWNGRADE: "high", NEW_CLASSICAL_TUNNEL: "medium", PQ_FAILURE: "medium",
            VISIBILITY_LOST: "low"}  # fmt: skip
ALERT_SCHEMA_VERSION = 1
MAX_EVIDENCE_ATTEMPTS = 8


@dataclass(frozen=True)
class Rules:
    """Timing of the rules that wait (seconds)."""

    # A tunnel whose own rekey interval was never seen (fewer than two successful
    # negotiations at least min_rekey_gap apart) is expected back within this.
    rekey_interval: float = 4 * 3600.0  # strongSwan's default IKE SA rekey_time
    # visibility-lost when unseen for this many rekey intervals (rekey times are jittered).
    visibility_factor: float = 1.5
    # pq-failure when failed PQ attempts stay without any success this long.
    pq_failure_grace: float = 300.0
    min_rekey_gap: float = 60.0  # shorter gaps are retries, not rekeys


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def negotiation_key(spi_i: str, spi_r: str, first_seen: float) -> str:
    """What makes a negotiation the same one when fed twice (a restart, a re-scan, a
    second sensor): its IKE SA's SPI pair; with the responder's SPI still zero (an
    unanswered request), the initiator's SPI and the time."""
    if spi_r.strip("0"):
        return f"{spi_i}:{spi_r}"
    return f"{spi_i}:{spi_r}@{first_seen:.6f}"


@dataclass(frozen=True)
class Seen:
    """What the rules read of one negotiation (from its JSON view)."""

    key: str
    time: float
    last_seen: float
    spi_i: str
    spi_r: str
    initiator: str
    responder: str
    initiator_port: int
    responder_port: int
    transport: str
    ip_version: int
    classification: str
    confidence: str | None
    observation: str | None
    ke_method: int | None
    addke_methods: tuple[int, ...]
    chosen_proposal: str | None
    established: bool
    state: str
    pq_offered: bool | None
    findings: tuple[str, ...]
    error: str | None

    @classmethod
    def from_view(cls, view: dict) -> Seen:
        first = epoch(view["first_seen"])
        return cls(
            key=negotiation_key(view["spi_i"], view["spi_r"], first), time=first,
            last_seen=epoch(view["last_seen"]), spi_i=view["spi_i"], spi_r=view["spi_r"],
            initiator=view["initiator"], responder=view["responder"],
            initiator_port=view["initiator_port"], responder_port=view["responder_port"],
            transport=view["transport"], ip_version=view["ip_version"],
            classification=view["classification"], confidence=view.get("confidence"),
            observation=view.get("observation"), ke_method=view.get("ke_method"),
            addke_methods=tuple(view.get("addke_methods") or ()),
            chosen_proposal=view.get("chosen_proposal"), established=bool(view.get("established")),
            state=view.get("state") or "", pq_offered=view.get("pq_offered_by_initiator"),
            findings=tuple(sorted({f["code"] for f in view.get("findings", [])})), error=view.get("error"),
        )  # fmt: skip

    @property
    def peers(self) -> tuple[str, str]:
        return tuple(sorted((self.initiator, self.responder)))  # type: ignore[return-value]

    @property
    def succeeded(self) -> bool:
        # The tracker's state, not only `established`: without keys, a handshake handed
        # out as soon as its IKE_AUTH response passed may not be provably established yet.
        return self.established or self.state == "established"

    def summary(self) -> dict:
        """The evidence an alert carries about this negotiation."""
        return {"time": _iso(self.time), "spi_i": self.spi_i, "spi_r": self.spi_r,
                "initiator": self.initiator, "responder": self.responder,
                "classification": self.classification, "confidence": self.confidence,
                "ke_method": self.ke_method, "addke_methods": list(self.addke_methods),
                "state": self.state, "error": self.error, "findings": list(self.findings)}  # fmt: skip


def _iso(t: float) -> str:
    return iso_time(t)


@dataclass
class Tunnel:
    """A tunnel's state between negotiations; persisted by ``state.StateStore``."""

    peer_a: str
    peer_b: str
    first_seen: float
    last_seen: float
    sensors: list[str] = field(default_factory=list)
    posture: str | None = None
    posture_since: float | None = None
    last_change: float | None = None  # when the posture last changed
    decided_by: dict | None = None  # summary of the negotiation that set the posture
    decided_time: float = 0.0
    rekey_interval: float | None = None
    last_flow: dict | None = None  # initiator, responder, ports, transport, ip_version
    last_class: str | None = None
    pq_failing_since: float | None = None
    pq_last_failure: float | None = None
    pq_failures: list[dict] = field(default_factory=list)
    pq_failure_alerted: bool = False
    downgraded: bool = False
    visibility_lost: bool = False
    negotiations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def shown_posture(self) -> str:
        return self.posture or UNASSESSED


@dataclass(frozen=True)
class Alert:
    """One alert event; ``as_dict`` is the stable schema (ALERT_SCHEMA_VERSION)."""

    kind: str
    time: float
    sensor: str
    peer_a: str
    peer_b: str
    flow: dict
    summary: str
    evidence: dict
    trigger: str  # the negotiation key (or the tick) that raised it

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    @property
    def alert_id(self) -> str:
        text = "|".join((self.kind, self.peer_a, self.peer_b, self.trigger))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def as_dict(self) -> dict:
        return {"schema_version": ALERT_SCHEMA_VERSION, "id": self.alert_id, "kind": self.kind,
                "severity": self.severity, "time": _iso(self.time), "sensor": self.sensor,
                "tunnel": {"peers": [self.peer_a, self.peer_b]}, "flow": self.flow,
                "summary": self.summary, "evidence": self.evidence}  # fmt: skip


def _flow(n: Seen) -> dict:
    return {"initiator": n.initiator, "responder": n.responder, "initiator_port": n.initiator_port,
            "responder_port": n.responder_port, "transport": n.transport, "ip_version": n.ip_version}  # fmt: skip


def new_tunnel(n: Seen) -> Tunnel:
    a, b = n.peers
    return Tunnel(a, b, first_seen=n.time, last_seen=n.last_seen)


def seen_again(t: Tunnel, n: Seen) -> None:
    """Any sign of life of the tunnel, a negotiation stored before included; an old one
    (a late scan) restores no visibility."""
    if n.last_seen >= t.last_seen:
        t.last_seen = n.last_seen
        t.visibility_lost = False


def observe(t: Tunnel, n: Seen, sensor: str, rules: Rules = Rules()) -> list[Alert]:
    """A negotiation not seen before. Alerts only from negotiations newer than the one
    that decided the posture: an older one (a historical capture scanned late) is
    history, not news."""
    t.negotiations += 1
    seen_again(t, n)
    t.first_seen = min(t.first_seen, n.time)
    if sensor not in t.sensors:
        t.sensors.append(sensor)
    if n.time < t.decided_time:
        return []
    t.last_flow = _flow(n)
    t.last_class = n.classification
    alerts: list[Alert] = []

    def raise_(kind: str, summary: str, evidence: dict) -> None:
        alerts.append(Alert(kind, n.time, sensor, t.peer_a, t.peer_b, _flow(n), summary, evidence, n.key))

    pq_failed = n.pq_offered is True and not n.succeeded and n.state != "midstream"
    if pq_failed:
        if t.pq_failing_since is None:
            t.pq_failing_since, t.pq_failure_alerted, t.pq_failures = n.time, False, []
        t.pq_last_failure = n.time
        if len(t.pq_failures) < MAX_EVIDENCE_ATTEMPTS:
            t.pq_failures.append(n.summary())
    classical = n.classification in CLASSICAL_CLASSES and n.succeeded
    downgrade_reasons = []
    if "downgrade" in n.findings:
        downgrade_reasons.append("the negotiation carries a downgrade finding")
    if n.classification == "classical-pq-offered":
        downgrade_reasons.append("the initiator offered a post-quantum key exchange and classical was chosen")
    if classical and t.pq_failing_since is not None:
        downgrade_reasons.append(f"{len(t.pq_failures)} failed post-quantum attempt(s) since "
                                 f"{_iso(t.pq_failing_since)} preceded this classical success")
    if downgrade_reasons and not t.downgraded:
        raise_(DOWNGRADE, f"{t.peer_a} <-> {t.peer_b}: post-quantum key exchange offered, classical "
               f"{'chosen' if classical else 'negotiated'} ({'; '.join(downgrade_reasons)})",
               {"reasons": downgrade_reasons, "negotiation": n.summary(), "failed_attempts": list(t.pq_failures)})
        t.downgraded = True
    if not n.succeeded or n.classification not in PQ_CLASSES | CLASSICAL_CLASSES:
        return alerts
    # A success decides the posture.
    if not downgrade_reasons:
        t.downgraded = False
    previous, before = t.posture, t.decided_by
    if t.decided_by is not None and n.time - t.decided_time >= rules.min_rekey_gap:
        t.rekey_interval = n.time - t.decided_time
    posture = POST_QUANTUM if n.classification in PQ_CLASSES else CLASSICAL
    if posture == CLASSICAL and previous == POST_QUANTUM:
        raise_(FALLBACK, f"{t.peer_a} <-> {t.peer_b}: fell back to classical key exchange "
               f"({n.classification}) after {before['classification'] if before else 'post-quantum'} "
               f"at {before['time'] if before else '?'}",
               {"previous_posture": previous, "previous": before, "negotiation": n.summary()})
    elif posture == CLASSICAL and previous is None:
        raise_(NEW_CLASSICAL_TUNNEL, f"{t.peer_a} <-> {t.peer_b}: new tunnel with classical key "
               f"exchange only ({n.classification})", {"negotiation": n.summary()})
    if posture != previous:
        t.posture_since = n.time
        t.last_change = n.time
    t.posture = posture
    t.decided_by, t.decided_time = n.summary(), n.time
    t.pq_failing_since, t.pq_last_failure, t.pq_failures, t.pq_failure_alerted = None, None, [], False
    return alerts


def tick(t: Tunnel, now: float, sensor: str, rules: Rules = Rules(), *, end_of_input: bool = False) -> list[Alert]:
    """The clock moved to ``now`` (capture time); ``end_of_input``: nothing more will
    come (the end of a scan), so failed PQ attempts will see no success after them."""
    alerts: list[Alert] = []
    flow = t.last_flow or {}
    if t.pq_failing_since is not None and not t.pq_failure_alerted and (
            end_of_input or now - t.pq_failing_since >= rules.pq_failure_grace):
        # At the end of a scan, the time of the last failure: not the wall clock.
        when = t.pq_last_failure if end_of_input and t.pq_last_failure is not None else now
        alerts.append(Alert(PQ_FAILURE, when, sensor, t.peer_a, t.peer_b, flow,
                            f"{t.peer_a} <-> {t.peer_b}: {len(t.pq_failures)} post-quantum attempt(s) failed "
                            f"since {_iso(t.pq_failing_since)} with no successful negotiation after them",
                            {"failed_attempts": list(t.pq_failures), "since": _iso(t.pq_failing_since)},
                            f"pq-failure@{t.pq_failing_since:.6f}"))  # fmt: skip
        t.pq_failure_alerted = True
    if t.posture is not None and not t.visibility_lost:
        interval = t.rekey_interval or rules.rekey_interval
        silent = now - t.last_seen
        if silent > rules.visibility_factor * interval:
            alerts.append(Alert(VISIBILITY_LOST, now, sensor, t.peer_a, t.peer_b, flow,
                                f"{t.peer_a} <-> {t.peer_b}: not seen for {silent:.0f} s, longer than "
                                f"{rules.visibility_factor} x its rekey interval ({interval:.0f} s)",
                                {"last_seen": _iso(t.last_seen), "rekey_interval_seconds": interval,
                                 "rekey_interval_observed": t.rekey_interval is not None,
                                 "posture": t.posture}, f"visibility-lost@{t.last_seen:.6f}"))  # fmt: skip
            t.visibility_lost = True
    return alerts
