"""The terminal table: one row per negotiation, then what went wrong in the input."""

from __future__ import annotations

SHORT_CLASS = {"classical-pq-offered": "classical-pq-offered!"}


def _ke(view: dict | None) -> str:
    return f"{view['name']}({view['id']})" if view else "-"


def _sizes(n: dict) -> str:
    largest = n["largest_message_bytes"]
    fragmented = n["ike_fragmented_messages"]
    ip_fragmented = n["ip_fragmented_messages"]
    text = f"max {largest} B" if largest else "-"
    if fragmented:
        text += f", {fragmented} IKE-frag"
    if ip_fragmented:
        text += f", {ip_fragmented} IP-frag"
    return text


def _exchanges(n: dict) -> str:
    short = {"IKE_SA_INIT": "INIT", "IKE_AUTH": "AUTH", "IKE_INTERMEDIATE": "INT",
             "CREATE_CHILD_SA": "CCSA", "IKE_FOLLOWUP_KE": "FKE", "INFORMATIONAL": "INFO"}
    return " ".join(f"{short.get(k, k)}x{v}" for k, v in n["exchanges"].items()) or "-"


def row(n: dict) -> list[str]:
    endpoints = f"{n['initiator']} -> {n['responder']}"
    addke = ", ".join(f"{a['slot']}={_ke(a)}" for a in n["addke"]) or "-"
    return [n["first_seen"][:23].replace("T", " "), endpoints, f"{n['spi_i']}/{n['spi_r']}",
            SHORT_CLASS.get(n["classification"], n["classification"]), _confidence(n),
            _ke(n["ke"]), addke, _exchanges(n), _sizes(n), _decrypted(n)]


def _confidence(n: dict) -> str:
    if n.get("observation") == "not-observable":
        return "unassessed"
    return n.get("confidence") or "-"


def _decrypted(n: dict) -> str:
    d = n.get("decryption")
    return f"{d['decrypted_messages']}/{d['encrypted_messages']}" if d else "-"


HEADERS = ["time (UTC)", "initiator -> responder", "SPIi/SPIr", "class", "confidence", "KE", "ADDKEs",
           "exchanges", "sizes", "decrypted"]


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def render(document: dict) -> str:
    parts = []
    by_capture: dict[str, list[dict]] = {}
    for n in document["negotiations"]:
        by_capture.setdefault(n["capture"], []).append(n)
    for capture in document["captures"]:
        negotiations = by_capture.get(capture["path"], [])
        parts.append(f"== {capture['path']}: {len(negotiations)} negotiation(s)")
        if negotiations:
            parts.append(table([row(n) for n in negotiations], HEADERS))
        for n in negotiations:
            for f in n["findings"]:
                if f["severity"] in ("high", "critical") or f["code"] == "undecryptable":
                    parts.append(f"   ! {n['spi_i']}: {f['severity']} {f['code']}: {f['detail']}")
        for a in capture["anomalies"]:
            frame = f" (frame {a['frame']})" if a["frame"] is not None else ""
            parts.append(f"   ~ {a['kind']}{frame}: {a['detail']}")
        parts.append("")
    summary = document["summary"]
    classes = ", ".join(f"{k} {v}" for k, v in summary["by_classification"].items()) or "none"
    unassessed = summary.get("by_observation", {}).get("not-observable", 0)
    parts.append(f"{summary['negotiations']} negotiation(s), {summary['ike_sas_established']} IKE SA(s) "
                 f"established: {classes}"
                 + (f"; {unassessed} unassessed (handshake not captured)" if unassessed else ""))
    return "\n".join(parts)
