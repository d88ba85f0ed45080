"""Negotiations and alerts as flat events: the flow (initiator as source, responder as
destination), its Community ID, the IKE header fields named as Suricata's `ike` events
name them, and our own record. Every output format (eve, ecs, zeek, syslog) formats
these, so all say the same thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ikeaudit.monitor.alerts import Alert, Seen
from ikeaudit.monitor.community_id import TCP, UDP, community_id_v1

NEGOTIATION, ALERT = "negotiation", "alert"
IANA_TRANSPORT = {"udp": UDP, "tcp": TCP}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Event:
    kind: str  # NEGOTIATION or ALERT
    time: float
    sensor: str
    src_ip: str
    src_port: int | None
    dest_ip: str
    dest_port: int | None
    transport: str  # "udp" or "tcp"
    ip_version: int
    community_id: str
    ike: dict  # Suricata `ike` event names: init_spi, resp_spi, ...
    record: dict  # ours: the negotiation's summary or the alert's schema
    summary: str
    severity: str | None  # alerts only
    uid: str  # Zeek-style connection uid, the same for every event of the IKE SA

    @property
    def alert_kind(self) -> str | None:
        return self.record["kind"] if self.kind == ALERT else None


def _uid(text: str) -> str:
    """A Zeek-looking uid ("C" and 17 base62 digits), derived rather than random so that
    the negotiation and its alerts share it across restarts and sensors."""
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:13], "big")
    digits = []
    for _ in range(17):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "C" + "".join(digits)


def flow_id(src: str, dst: str, sport: int | None, dport: int | None, transport: str) -> str:
    return community_id_v1(src, dst, sport, dport, IANA_TRANSPORT.get(transport, UDP))


def _ike_fields(view: dict) -> dict:
    """The negotiation in the words of Suricata's EVE `ike` object (rust/src/ike/logger.rs):
    header fields of the last message seen, and the chosen algorithms by our names."""
    last = view["messages"][-1] if view.get("messages") else None
    version = view.get("ike_version") or 2
    fields = {"version_major": version, "version_minor": 0, "init_spi": view["spi_i"], "resp_spi": view["spi_r"]}
    if last is not None:
        fields["message_id"] = last["message_id"]
        fields["exchange_type"] = last["exchange_type"]
    chosen = {t["type"]: t["name"] for t in view.get("chosen_transforms") or []}
    for key, transform_type in (("alg_enc", "ENCR"), ("alg_prf", "PRF"), ("alg_auth", "INTEG"),
                                ("alg_dh", "KE"), ("alg_esn", "ESN")):  # fmt: skip
        if transform_type in chosen:
            fields[key] = chosen[transform_type]
    if version == 2:
        notifies = [x["notify"] for x in view.get("error_notifies", [])]
        fields["ikev2"] = {"errors": len(notifies), **({"notify": notifies} if notifies else {})}
    return fields


def negotiation_record(view: dict, seen: Seen, sensor: str, posture: str) -> dict:
    """Our record of one negotiation in events: what a SIEM filters on, not the whole
    JSON view (that stays `ikeaudit scan --format json`)."""
    return {
        "sensor": sensor,
        "classification": seen.classification,
        "confidence": seen.confidence,
        "observation": seen.observation,
        "ke_method": view.get("ke"),
        "addke": view.get("addke") or [],
        "chosen_proposal": seen.chosen_proposal,
        "pq_offered_by_initiator": seen.pq_offered,
        "established": seen.established,
        "state": seen.state,
        "error": seen.error,
        "initiator": seen.initiator,
        "responder": seen.responder,
        "spi_i": seen.spi_i,
        "spi_r": seen.spi_r,
        "first_seen": view["first_seen"],
        "last_seen": view["last_seen"],
        "findings": [{"severity": f["severity"], "code": f["code"]} for f in view.get("findings", [])],
        "tunnel": {"peers": list(seen.peers), "posture": posture},
    }


def negotiation_event(view: dict, seen: Seen, sensor: str, posture: str) -> Event:
    methods = "+".join(filter(None, [(view.get("ke") or {}).get("name"),
                                     *((a or {}).get("name") for a in view.get("addke") or [])])) or "none"
    summary = (f"IKEv{view.get('ike_version') or 2} {seen.initiator} -> {seen.responder}: "
               f"{seen.classification} ({methods}), tunnel {posture}")  # fmt: skip
    return Event(NEGOTIATION, seen.time, sensor, seen.initiator, seen.initiator_port, seen.responder,
                 seen.responder_port, seen.transport, seen.ip_version,
                 flow_id(seen.initiator, seen.responder, seen.initiator_port, seen.responder_port, seen.transport),
                 _ike_fields(view), negotiation_record(view, seen, sensor, posture), summary, None,
                 _uid(seen.key))  # fmt: skip


def alert_event(alert: Alert) -> Event:
    flow = alert.flow
    src, dst = flow.get("initiator", alert.peer_a), flow.get("responder", alert.peer_b)
    sport, dport = flow.get("initiator_port"), flow.get("responder_port")
    transport = flow.get("transport", "udp")
    record = alert.as_dict()
    negotiation = alert.evidence.get("negotiation") or {}
    ike = {"version_major": 2, "version_minor": 0}
    if negotiation:
        ike.update(init_spi=negotiation["spi_i"], resp_spi=negotiation["spi_r"])
    uid = _uid(alert.trigger if negotiation else f"{alert.peer_a}|{alert.peer_b}|{alert.trigger}")
    return Event(ALERT, alert.time, alert.sensor, src, sport, dst, dport, transport,
                 flow.get("ip_version") or (6 if ":" in src else 4), flow_id(src, dst, sport, dport, transport),
                 ike, record, alert.summary, alert.severity, uid)  # fmt: skip
