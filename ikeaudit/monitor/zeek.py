"""A Zeek-format TSV log (ASCII writer, `LogAscii::use_json=F`), exactly as Zeek writes
one: the `#separator` line with the tab escaped as \\x09, `#set_separator`,
`#empty_field`, `#unset_field`, `#path`, `#open`, `#fields`, `#types`, the rows, and
`#close` when the file is closed. Readable by `zeek-cut` and by the `zat` library.

One log (`#path ikeaudit`) holds negotiations and alerts, told apart by `event_type`;
the connection columns (`uid`, `id.orig_h` ...) and `community_id` join it to Zeek's
own conn.log.
"""

from __future__ import annotations

import time

from ikeaudit.monitor.events import ALERT, Event

PATH = "ikeaudit"
SEPARATOR, SET_SEPARATOR, EMPTY, UNSET = "\t", ",", "(empty)", "-"
COLUMNS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
    ("id.resp_h", "addr"), ("id.resp_p", "port"), ("proto", "enum"), ("community_id", "string"),
    ("sensor", "string"), ("event_type", "string"), ("init_spi", "string"), ("resp_spi", "string"),
    ("classification", "string"), ("confidence", "string"), ("ke_methods", "vector[string]"),
    ("established", "bool"), ("posture", "string"), ("findings", "set[string]"), ("alert", "string"),
    ("severity", "string"), ("summary", "string"),
]  # fmt: skip


def _time_header(epoch: float) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(epoch))


def header(opened: float) -> str:
    return "".join([
        "#separator \\x09\n",
        f"#set_separator{SEPARATOR}{SET_SEPARATOR}\n",
        f"#empty_field{SEPARATOR}{EMPTY}\n",
        f"#unset_field{SEPARATOR}{UNSET}\n",
        f"#path{SEPARATOR}{PATH}\n",
        f"#open{SEPARATOR}{_time_header(opened)}\n",
        "#fields" + "".join(SEPARATOR + name for name, _ in COLUMNS) + "\n",
        "#types" + "".join(SEPARATOR + kind for _, kind in COLUMNS) + "\n",
    ])  # fmt: skip


def footer(closed: float) -> str:
    return f"#close{SEPARATOR}{_time_header(closed)}\n"


def _escape(text: str, element: bool = False) -> str:
    """Zeek's ASCII writer escapes the separator, backslashes and non-printable bytes as
    \\xHH, and the set separator inside set and vector elements."""
    out = []
    for ch in text:
        if ch in (SEPARATOR, "\\") or (element and ch == SET_SEPARATOR) or not ch.isprintable():
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    value = "".join(out)
    if value in (EMPTY, UNSET):  # a value that reads as a marker is escaped too
        value = "".join(f"\\x{b:02x}" for b in value.encode())
    return value


def _cell(value, kind: str) -> str:
    if value is None:
        return UNSET
    if kind.startswith(("set[", "vector[")):
        return SET_SEPARATOR.join(_escape(str(v), element=True) for v in value) if value else EMPTY
    if kind == "bool":
        return "T" if value else "F"
    if kind == "time":
        return f"{value:.6f}"
    text = str(value)
    return _escape(text) if text else EMPTY


def row(event: Event) -> str:
    r = event.record
    alert = event.kind == ALERT
    negotiation = r.get("evidence", {}).get("negotiation", {}) if alert else r
    if alert:
        methods = None
    else:
        methods = [m["name"] for m in [r.get("ke_method"), *r.get("addke", [])] if m]
    values = {
        "ts": event.time, "uid": event.uid, "id.orig_h": event.src_ip, "id.orig_p": event.src_port,
        "id.resp_h": event.dest_ip, "id.resp_p": event.dest_port, "proto": event.transport,
        "community_id": event.community_id, "sensor": event.sensor, "event_type": event.kind,
        "init_spi": event.ike.get("init_spi"), "resp_spi": event.ike.get("resp_spi"),
        "classification": negotiation.get("classification"),
        "confidence": negotiation.get("confidence"), "ke_methods": methods,
        "established": None if alert else r["established"],
        "posture": None if alert else r["tunnel"]["posture"],
        "findings": sorted({f["code"] for f in r["findings"]}) if not alert else None,
        "alert": r["kind"] if alert else None, "severity": event.severity, "summary": event.summary,
    }  # fmt: skip
    return SEPARATOR.join(_cell(values[name], kind) for name, kind in COLUMNS) + "\n"
