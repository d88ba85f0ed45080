"""Suricata EVE-shaped JSON lines.

The common section as Suricata writes it (`timestamp` with microseconds and a numeric
UTC offset, `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto` in
capitals, `community_id`), the IKE fields under `ike` with Suricata's names (so a SIEM
joins our events to Suricata's `ike` events on `ike.init_spi`/`ike.resp_spi` or on
`community_id`), and our record under `ikeaudit`. Two event types: `ikeaudit` (one per
negotiation) and `ikeaudit_alert`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from ikeaudit.monitor.events import ALERT, Event

EVENT_TYPES = {"negotiation": "ikeaudit", ALERT: "ikeaudit_alert"}


def eve_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def document(event: Event) -> dict:
    doc = {
        "timestamp": eve_timestamp(event.time),
        "event_type": EVENT_TYPES[event.kind],
        "src_ip": event.src_ip,
        "src_port": event.src_port,
        "dest_ip": event.dest_ip,
        "dest_port": event.dest_port,
        "proto": event.transport.upper(),
        "community_id": event.community_id,
        "host": event.sensor,
        "ike": event.ike,
        "ikeaudit": {"event": event.kind, "uid": event.uid, "summary": event.summary, **event.record},
    }
    return doc


def line(event: Event) -> str:
    return json.dumps(document(event), separators=(",", ":"), ensure_ascii=False) + "\n"
