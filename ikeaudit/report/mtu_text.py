"""The `ikeaudit mtu` table: each message, what was observed, and what each path MTU
would do to it (on the port the message used)."""

from __future__ import annotations

from ikeaudit.report.text import table


def _observed(m: dict) -> str:
    parts = ["+".join(str(b) for b in m["udp_payload_bytes"]) + " B"]
    if m["ike_fragments"]:
        parts.append(f"IKE {len(m['ike_fragments_seen'])}/{m['ike_fragments']}")
    if m["ip_fragmented"]:
        parts.append("IP " + "+".join(str(n) for n in m["ip_fragments_per_datagram"]))
    if m["retransmissions"]:
        parts.append(f"rtx {m['retransmissions']}")
    return ", ".join(parts)


def _cell(rows: list[dict]) -> str:
    """v4 and v6 outcome: "ok"; "IPn" when the message goes out in n IP fragments; "IKEn"
    when RFC 7383 would split it into n IKE fragments instead (with "+IP" if even those
    would be IP-fragmented)."""
    out = []
    for row in sorted(rows, key=lambda r: r["ip_version"]):
        if row["ike_fragmentable"] and (row["ike_fragments"] or 0) > 1:
            text = f"IKE{row['ike_fragments']}" + ("+IP" if (row["ike_fragment_ip_fragments"] or 1) > 1 else "")
        elif row["ip_fragmented"]:
            text = f"IP{row['ip_fragments']}"
        else:
            text = "ok"
        out.append(f"v{row['ip_version']} {text}")
    return " ".join(out) or "?"


def render(document: dict) -> str:
    mtus = document["mtus"]
    headers = ["SPIi", "class", "message", "observed", *(f"MTU {m}" for m in mtus)]
    rows = []
    for n in document["negotiations"]:
        for m in n["messages"]:
            port = 4500 if 4500 in (m["sport"], m["dport"]) else 500
            mine = [w for w in n["what_if"] if w["exchange"] == m["exchange"]
                    and w["message_id"] == m["message_id"] and w["response"] == m["response"]
                    and w["port"] == port]
            label = f"{m['exchange']} {'resp' if m['response'] else 'req'} #{m['message_id']}"
            rows.append([n["spi_i"][:8], n["classification"], label, _observed(m),
                         *(_cell([w for w in mine if w["mtu"] == mtu]) for mtu in mtus)])
    parts = [table(rows, headers), ""]
    for n in document["negotiations"]:
        f = n["fragmentation"]
        flags = []
        if f["sa_init_ip_fragmented"]:
            flags.append("IKE_SA_INIT IP-fragmented")
        if f["black_hole_suspected"]:
            flags.append("fragmentation black hole suspected")
        support = f["supported"]
        timing = (f"handshake {f['handshake_seconds'] * 1000:.1f} ms in {f['round_trips']} round trips"
                  if f["handshake_seconds"] is not None else "handshake not completed")
        parts.append(f"{n['spi_i'][:8]} {n['classification']}: IKE fragmentation "
                     f"{'both' if support['initiator'] and support['responder'] else 'not both'}; "
                     f"{timing}" + ("; " + "; ".join(flags) if flags else ""))
    size = document["fragment_size"]
    parts.append("")
    parts.append("Cells, for the port each message used: ok = fits in one datagram; IPn = sent in n IP "
                 "fragments; IKEn = split by RFC 7383 into n IKE fragments of at most "
                 f"{size if size else 'the MTU'} bytes (encrypted messages when both peers announced "
                 "IKEV2_FRAGMENTATION_SUPPORTED), +IP if those are IP-fragmented too.")
    return "\n".join(parts)
