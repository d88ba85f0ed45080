"""Elastic Common Schema documents, one JSON object a line.

ECS fields only where ECS defines them (checked in the tests against the field list of
ECS_VERSION, kept in tests/data/ecs/), everything else under `ikeaudit.*`, a custom
field set. Negotiations are `event.kind: event`, alerts `event.kind: alert`.
"""

from __future__ import annotations

import json

from ikeaudit import __version__
from ikeaudit.monitor.events import ALERT, Event, IANA_TRANSPORT
from ikeaudit.report.views import iso_time

ECS_VERSION = "8.12.0"
# ECS event.severity is numeric and free; ours, from the finding severities.
SEVERITY_NUMBER = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


def document(event: Event) -> dict:
    alert = event.kind == ALERT
    outcome = "unknown"
    if not alert:
        outcome = "success" if event.record["established"] or event.record["state"] == "established" else "failure"
    doc: dict = {
        "@timestamp": iso_time(event.time),
        "ecs": {"version": ECS_VERSION},
        "message": event.summary,
        "event": {
            "kind": "alert" if alert else "event",
            "category": ["network"],
            "type": ["info"] if alert else ["connection", "protocol"],
            "action": event.alert_kind if alert else "ike-negotiation",
            "dataset": "ikeaudit.alert" if alert else "ikeaudit.negotiation",
            "module": "ikeaudit",
            "provider": "ikeaudit",
            "id": event.record["id"] if alert else event.uid,
            "outcome": outcome,
        },
        "source": {"ip": event.src_ip, "address": event.src_ip},
        "destination": {"ip": event.dest_ip, "address": event.dest_ip},
        "network": {"transport": event.transport, "iana_number": str(IANA_TRANSPORT.get(event.transport, 17)),
                    "type": f"ipv{event.ip_version}", "protocol": "ike", "community_id": event.community_id},
        "observer": {"hostname": event.sensor, "name": event.sensor, "product": "ikeaudit",
                     "vendor": "ikeaudit", "type": "sensor", "version": __version__},
        "ikeaudit": {"event": event.kind, "uid": event.uid, "ike": event.ike, **event.record},
    }  # fmt: skip
    if event.src_port is not None:
        doc["source"]["port"] = event.src_port
    if event.dest_port is not None:
        doc["destination"]["port"] = event.dest_port
    if alert:
        doc["event"]["severity"] = SEVERITY_NUMBER[event.severity or "info"]
        doc["event"]["reason"] = event.summary
    else:
        doc["event"]["start"] = event.record["first_seen"]
        doc["event"]["end"] = event.record["last_seen"]
    return doc


def line(event: Event) -> str:
    return json.dumps(document(event), separators=(",", ":"), ensure_ascii=False) + "\n"

