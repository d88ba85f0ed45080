"""Audited negotiations as plain, JSON-ready dicts: the documented output schema.

Every renderer (table, JSON, JSONL, CSV) formats these dicts, so all formats say the
same thing. Field names are a contract with scripts: add freely, rename never.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from datetime import datetime, timezone
from typing import Iterable

from ikeaudit import __version__, iana, remediation, vendors
from ikeaudit.aggregate import ScanTally
from ikeaudit.certs import AuthInventory, CertificateInfo, SignatureAlgorithm
from ikeaudit.classify import KeCatalog, describe_proposal
from ikeaudit.peer import Implementation
from ikeaudit.mtu import FragmentationProfile, WhatIf, fragmentation_supported, intermediate_supported
from ikeaudit.pipeline import AuditedNegotiation, CaptureAudit
from ikeaudit.records import Anomaly, ChildExchange, Decryption, Identification, InnerPayloads, KeyExchange, \
    Proposal, TrackedMessage, Transform

# 2: fail closed (issue 12): `established` only on evidence of a successful IKE_AUTH
# (`established_basis`), `ppk` requested/negotiated/not-used, `pq_offered_by_initiator`
# null when the request was not seen, `observation`/`inferences`, new `confidence`
# values, tunnel `status`/`observation`, `exposure.unassessed_*` and `exposure.unanswered`.
SCHEMA_VERSION = 2


# Entries of the memos below (functools.lru_cache): whole seconds (a scan writes the time
# of every message, and the messages of a capture fall in far fewer seconds) and id
# tuples (a gateway's messages carry the same few payload and notify chains over and over).
MEMO_ENTRIES = 4096


def iso_time(epoch: float) -> str:
    """datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="microseconds"),
    "Z" for "+00:00": the microseconds rounded as datetime rounds them (CPython's
    _PyTime_DoubleToDenominator: the fraction times 10^6, half to even, carried into the
    second), the second's text made once."""
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    elif micros < 0:
        micros += 1_000_000
        whole -= 1.0
    return f"{_second_text(whole)}.{micros:06d}Z"


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _second_text(whole: float) -> str:
    return datetime.fromtimestamp(int(whole), tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "")


def _names(name, values: tuple[int, ...]) -> list[str]:
    """[name(v) for v in values], the names of an id tuple met before remembered."""
    return list(_name_tuple(name, values))


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _name_tuple(name, values: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(map(name, values))


def anomaly_view(a: Anomaly) -> dict:
    return {"kind": a.kind, "detail": a.detail, "frame": a.frame}


def decryption_view(d: Decryption | None) -> dict | None:
    return {"status": d.status, "detail": d.detail, "key_line": d.key_line} if d else None


def identification_view(i: Identification) -> dict:
    return {"payload": iana.payload_name(i.payload), "type": iana.id_type_name(i.id_type),
            "value": printable(i.data) or i.data.hex()}


def _kex_view(k: KeyExchange | None) -> dict | None:
    return {"method": k.method, "data_bytes": k.data_length} if k else None


def _proposals_view(proposals: tuple[Proposal, ...], catalog: KeCatalog) -> list[dict]:
    return [{"protocol": iana.PROTOCOL_IDS.get(p.protocol, str(p.protocol)), "spi": p.spi,
             "proposal": describe_proposal(p, catalog)} for p in proposals]


def inner_view(inner: InnerPayloads | None, catalog: KeCatalog) -> dict | None:
    if inner is None:
        return None
    return {
        "payloads": _names(iana.payload_name, inner.payload_types),
        "ke_method": inner.key_exchange.method if inner.key_exchange else None,
        "ke_data_bytes": inner.key_exchange.data_length if inner.key_exchange else None,
        "notifies": [iana.notify_name(n.type) for n in inner.notifies],
        "proposals": _proposals_view(inner.proposals, catalog),
        "identities": [identification_view(i) for i in inner.identifications],
        "auth_method": iana.auth_method_name(inner.auth_method) if inner.auth_method is not None else None,
    }


def signature_view(s: SignatureAlgorithm | None) -> dict | None:
    if s is None:
        return None
    return {"name": s.name, "oid": s.oid, "post_quantum": s.post_quantum, "composite": s.composite,
            "nist_category": s.nist_category}


def certificate_view(c: CertificateInfo) -> dict:
    return {"from_initiator": c.from_initiator, "encoding": iana.cert_encoding_name(c.encoding),
            "subject": c.subject, "issuer": c.issuer, "serial": c.serial, "not_before": c.not_before,
            "not_after": c.not_after, "key_algorithm": c.key_algorithm, "key_oid": c.key_oid,
            "key_bits": c.key_bits, "curve": c.curve, "signature_algorithm": signature_view(c.signature),
            "post_quantum": c.post_quantum, "post_quantum_key": c.post_quantum_key, "bytes": c.size,
            "sha256": c.fingerprint_sha256, "error": c.error}


def authentication_view(inv: AuthInventory) -> dict:
    """What the negotiation shows of its authentication. `visible` false: IKE_AUTH was not
    decrypted (no key, or not captured), so methods and certificates are unknown."""
    return {
        "visible": inv.visible,
        "ike_auth_seen": inv.ike_auth_seen,
        "methods": [{"from_initiator": a.from_initiator, "method": a.method_name, "id": a.method,
                     "signature_algorithm": signature_view(a.algorithm), "shared_key": a.shared_key,
                     "post_quantum": a.post_quantum} for a in inv.authentications],
        "certificates": [certificate_view(c) for c in inv.certificates],
        "cert_requests": [{"from_initiator": who, "encoding": iana.cert_encoding_name(encoding),
                           "authorities": count} for who, encoding, count in inv.cert_requests],
        "signature_hash_algorithms": [{"from_initiator": who, "hashes": list(names)}
                                      for who, names in inv.signature_hashes],
        "summary": _auth_summary(inv),
    }


def _auth_summary(inv: AuthInventory) -> list[str]:
    """One sentence per side and per certificate, for the HTML and Markdown reports."""
    if not inv.ike_auth_seen:
        return ["no IKE_AUTH exchange captured"]
    lines = []
    for who, side in ((True, "initiator"), (False, "responder")):
        methods = inv.side(who)
        if not methods:
            lines.append(f"{side}: not visible (IKE_AUTH not decrypted)")
        for a in methods:
            algorithm = f" with {a.algorithm.name}" if a.algorithm else ""
            kind = "post-quantum" if a.post_quantum else "shared key" if a.shared_key else "classical"
            lines.append(f"{side}: {a.method_name}{algorithm} ({kind})")
    for c in inv.certificates:
        side = "initiator" if c.from_initiator else "responder"
        if c.error:
            lines.append(f"{side} certificate: {c.error}")
            continue
        key = c.key_algorithm + (f" {c.curve}" if c.curve else f" {c.key_bits}-bit" if c.key_bits else "")
        lines.append(f"{side} certificate {c.subject}, issuer {c.issuer}: {key} key, signed {c.signature.name}, "
                     f"valid {c.not_before} to {c.not_after}" + (" (post-quantum)" if c.post_quantum else ""))
    return lines


def implementation_view(i: Implementation) -> dict:
    return {"name": i.name, "version": i.version, "confidence": i.confidence, "evidence": list(i.evidence),
            "capabilities": list(i.capabilities), "label": implementation_label(i.name, i.version, i.confidence)}


def implementation_label(name: str | None, version: str | None, confidence: str | None) -> str:
    if name is None:
        return "unidentified"
    return f"{name}{' ' + version if version else ''} (confidence {confidence})"


def child_exchange_view(x: ChildExchange, catalog: KeCatalog) -> dict:
    return {
        "message_id": x.message_id,
        "frame": x.frame,
        "protocol": iana.PROTOCOL_IDS.get(x.protocol, str(x.protocol)) if x.protocol else None,
        "ike_sa_rekey": x.protocol == 1,
        "new_spis": list(x.new_spis) if x.new_spis else None,
        "chosen_proposal": describe_proposal(x.chosen, catalog) if x.chosen else None,
        "request_ke": _kex_view(x.request_ke),
        "response_ke": _kex_view(x.response_ke),
        "followup_ke": [{"message_id": f.message_id, "frame": f.frame, "request_ke": _kex_view(f.request_ke),
                         "response_ke": _kex_view(f.response_ke)} for f in x.followups],
    }


def message_view(m: TrackedMessage, catalog: KeCatalog | None = None) -> dict:
    return {
        "exchange": iana.exchange_name(m.exchange),
        "exchange_type": m.exchange,
        "message_id": m.message_id,
        "response": m.response,
        "from_initiator": m.from_initiator,
        "src": m.src,
        "dst": m.dst,
        "sport": m.sport,
        "dport": m.dport,
        "first_frame": m.first_frame,
        "frames": list(m.frames),
        "time": iso_time(m.first_timestamp),
        "udp_payload_bytes": list(m.udp_payload_bytes),
        "ip_datagram_bytes": list(m.ip_lengths),
        "ip_fragments_per_datagram": [len(x) or 1 for x in m.ip_fragment_lengths],
        "ike_bytes": m.ike_bytes,
        "encrypted_bytes": m.encrypted_bytes,
        "ike_fragments": m.ike_fragments,
        "ike_fragments_seen": list(m.fragments_seen),
        "ip_fragmented": m.ip_fragmented,
        "ip_fragment_lengths": [list(x) for x in m.ip_fragment_lengths],
        "retransmissions": m.retransmissions,
        "assembly_seconds": round(m.assembly_seconds, 6),
        "payloads": _names(iana.payload_name, m.payload_types),
        "notifies": _names(iana.notify_name, m.notifies),
        "ke_method": m.key_exchange.method if m.key_exchange else None,
        "ke_data_bytes": m.key_exchange.data_length if m.key_exchange else None,
        "decryption": decryption_view(m.decryption),
        "inner": inner_view(m.inner, catalog or KeCatalog()),
    }


def _message_label(m: TrackedMessage) -> str:
    return f"{iana.exchange_name(m.exchange)} {'response' if m.response else 'request'} message id {m.message_id}"


def fragmentation_view(p: FragmentationProfile) -> dict:
    largest = p.largest_message
    return {
        "supported": {"initiator": p.fragmentation_supported[0], "responder": p.fragmentation_supported[1]},
        "largest_message": ({"message": _message_label(largest),
                             "udp_payload_bytes": sum(largest.udp_payload_bytes),
                             "ike_bytes": largest.ike_bytes} if largest else None),
        "ip_fragmented_messages": [_message_label(m) for m in p.ip_fragmented],
        "ike_fragmented_messages": [_message_label(m) for m in p.ike_fragmented],
        "both_fragmented_messages": [_message_label(m) for m in p.ip_fragmented if m.ike_fragments],
        "sa_init_ip_fragmented": p.sa_init_ip_fragmented,
        "handshake_seconds": round(p.handshake_seconds, 6) if p.handshake_seconds is not None else None,
        "round_trips": p.round_trips,
        "handshake_retransmissions": p.handshake_retransmissions,
        "black_hole_suspected": p.black_hole_suspected,
    }


def what_if_view(row: WhatIf) -> dict:
    return {
        "exchange": iana.exchange_name(row.exchange),
        "message_id": row.message_id,
        "response": row.response,
        "mtu": row.mtu,
        "ip_version": row.ip_version,
        "port": row.port,
        "ike_bytes": row.ike_bytes,
        "udp_payload_bytes": row.udp_payload_bytes,
        "ip_datagram_bytes": row.ip_datagram_bytes,
        "ip_fragments": row.ip_fragments,
        "ip_fragmented": row.ip_fragmented,
        "ike_fragmentable": row.ike_fragmentable,
        "fragment_size": row.fragment_size,
        "ike_fragments": row.ike_fragments,
        "ike_fragment_ip_fragments": row.ike_fragment_ip_fragments,
    }


def transform_view(t: Transform, catalog: KeCatalog) -> dict:
    name = (catalog.method(t.id).name if t.type in iana.KE_TRANSFORM_TYPES
            else iana.transform_name(t.type, t.id))
    return {"type": iana.TRANSFORM_TYPES.get(t.type, str(t.type)), "type_id": t.type, "id": t.id,
            "name": name, "key_length": t.key_length}


def printable(raw: bytes) -> str | None:
    """A Vendor ID that is readable text (some vendors send their product name), else None."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None


def _ke_view(method_id: int | None, catalog: KeCatalog, slot: str | None = None) -> dict | None:
    if method_id is None:
        return None
    m = catalog.method(method_id)
    view = {"id": method_id, "name": m.name, "kind": m.kind}
    if slot:
        view = {"slot": slot, **view}
    if m.nist_category is not None:
        view["nist_category"] = m.nist_category
    return view


def negotiation_view(item: AuditedNegotiation, catalog: KeCatalog) -> dict:
    n, c = item.negotiation, item.classification
    requests = Counter(m.exchange for m in n.messages if not m.response)
    encrypted = [m for m in n.messages if m.decryption is not None]
    return {
        "capture": n.capture,
        "sensor": item.sensor,
        "classification": c.name,
        "classification_basis": c.basis,
        "confidence": c.confidence,
        "observation": c.observation,
        "inferences": list(c.inferences),
        "assessed": c.observation != "not-observable",
        "ke_method": c.ke_method,
        "addke_methods": list(c.addke_methods),
        "pq_offered_by_initiator": c.pq_offered_by_initiator,
        "initiator": n.initiator,
        "responder": n.responder,
        "spi_i": n.spi_i,
        "spi_r": n.spi_r,
        "ke": _ke_view(c.ke_method, catalog),
        "addke": [_ke_view(m, catalog, iana.addke_slot(t)) for t, m in c.addke],
        "mlkem_parameter_set": c.mlkem_parameter_set,
        "nist_category": c.nist_category,
        "classical_strength_bits": c.classical_strength_bits,
        "offered_ke_methods": list(c.offered_ke_methods),
        "ppk": c.ppk,
        "error": c.error,
        "ike_version": n.ike_version,
        "initiator_port": n.initiator_port,
        "responder_port": n.responder_port,
        "ip_version": n.ip_version,
        "transport": n.transport,
        "moved_to_4500": n.moved_to_4500,
        "first_seen": iso_time(n.first_seen),
        "last_seen": iso_time(n.last_seen),
        "first_frame": n.first_frame,
        "state": n.state,
        "established": n.established,
        "established_basis": n.established_basis,
        "midstream": n.midstream,
        "downgrade_prevention": c.downgrade_prevention,
        "offered_proposals": [describe_proposal(p, catalog) for p in n.offered],
        "offered_ke_payloads": list(n.offered_ke),
        "chosen_proposal": describe_proposal(n.chosen, catalog) if n.chosen else None,
        "chosen_transforms": ([transform_view(t, catalog) for t in n.chosen.transforms]
                              if n.chosen else None),
        "fragmentation_supported": dict(zip(("initiator", "responder"), fragmentation_supported(n))),
        "intermediate_supported": dict(zip(("initiator", "responder"), intermediate_supported(n))),
        "fragments_seen": n.fragments_seen,
        "intermediate_seen": n.intermediate_seen,
        "retries": [{"reason": r.reason, "frame": r.frame, "offered_ke": r.offered_ke,
                     "requested_ke": r.requested_ke, "new_spi_i": r.new_spi_i} for r in n.retries],
        "error_notifies": [{"exchange": iana.exchange_name(x), "notify": iana.notify_name(t)}
                           for x, t in n.error_notifies],
        "rekeyed_from": ({"spi_i": n.rekeyed_from[0], "spi_r": n.rekeyed_from[1]}
                         if n.rekeyed_from else None),
        "rekey_evidence": n.rekey_evidence,
        "rekey_linked_by": n.rekey_linked_by,
        "decryption": ({"encrypted_messages": len(encrypted),
                        "decrypted_messages": sum(1 for m in encrypted if m.inner is not None),
                        "undecryptable_messages": sum(1 for m in encrypted if m.inner is None)}
                       if encrypted else None),
        "child_sa_offered": _proposals_view(n.child_sa_offered, catalog),
        "child_sa_chosen": describe_proposal(n.child_sa_chosen, catalog) if n.child_sa_chosen else None,
        "identities": [identification_view(i) for i in n.identifications],
        "auth_methods": [{"from_initiator": who, "method": iana.auth_method_name(method), "id": method}
                         for who, method in n.auth_methods],
        "ppk_notifies": [{"exchange": iana.exchange_name(x), "notify": iana.notify_name(t)}
                         for x, t in n.ppk_notifies],
        "child_exchanges": [child_exchange_view(x, catalog) for x in n.child_exchanges],
        "exchanges": {iana.exchange_name(x): count for x, count in sorted(requests.items())},
        "largest_message_bytes": (sum(item.fragmentation.largest_message.udp_payload_bytes)
                                  if item.fragmentation.largest_message else 0),
        "ike_fragmented_messages": sum(1 for m in n.messages if m.ike_fragments),
        "ip_fragmented_messages": sum(1 for m in n.messages if m.ip_fragmented),
        "retransmissions": sum(m.retransmissions for m in n.messages),
        "messages": [message_view(m, catalog) for m in n.messages],
        "vendor_ids": [v.hex() for v in n.vendor_ids],
        "vendor_id_texts": [printable(v) for v in n.vendor_ids],
        "vendor_id_names": [named.label if (named := vendors.name_vendor_id(v)) else None for v in n.vendor_ids],
        "authentication": authentication_view(item.authentication),
        "implementation": {"initiator": implementation_view(item.peers[0]),
                           "responder": implementation_view(item.peers[1])},
        "evidence": list(c.evidence),
        "fragmentation": fragmentation_view(item.fragmentation),
        "findings": [{"severity": f.severity, "code": f.code, "detail": f.detail}
                     for f in (*c.findings, *item.fragmentation.findings)],
        "anomalies": [anomaly_view(a) for a in n.anomalies],
    }


def capture_view(audit: CaptureAudit) -> dict:
    return {
        "path": audit.capture,
        "sensor": audit.sensor,
        "stats": dict(sorted(audit.stats.items())),
        "anomalies": [anomaly_view(a) for a in audit.anomalies]
        + [anomaly_view(m.anomaly) for m in audit.malformed],
    }


def scan_document(audits: Iterable[CaptureAudit], catalog: KeCatalog) -> dict:
    audits = list(audits)
    negotiations = [negotiation_view(item, catalog) for a in audits for item in a.negotiations]
    return {**scan_head(audits, ScanTally.of(negotiations)), "negotiations": negotiations}


def scan_head(audits: Iterable[CaptureAudit], tally: ScanTally) -> dict:
    """The scan document without its negotiations (streamed: counted in tally)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ikeaudit", "version": __version__},
        "captures": [capture_view(a) for a in audits],
        "summary": tally.summary(),
    }


def summary_view(negotiations: list[dict]) -> dict:
    return ScanTally.of(negotiations).summary()


def mtu_document(audits: Iterable[CaptureAudit], catalog: KeCatalog, what_ifs: dict[int, list[WhatIf]],
                 mtus: list[int], fragment_size: int | None) -> dict:
    """The scan document, each negotiation with its what-if rows (keyed by id of the
    AuditedNegotiation in what_ifs)."""
    audits = list(audits)
    negotiations = []
    for a in audits:
        for item in a.negotiations:
            view = negotiation_view(item, catalog)
            view["what_if"] = [what_if_view(row) for row in what_ifs.get(id(item), [])]
            negotiations.append(view)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ikeaudit", "version": __version__},
        "mtus": mtus,
        "fragment_size": fragment_size,
        "captures": [capture_view(a) for a in audits],
        "summary": summary_view(negotiations),
        "negotiations": negotiations,
    }


CLASSICAL_ONLY = ("classical", "classical-pq-offered", "ikev1")
EXPOSURE_METHOD = (
    "A tunnel is a pair of peer addresses, whoever initiated, with an established IKE SA (seen, "
    "or inferred from later exchanges or from ESP after it) or ESP between them; negotiations that "
    "formed no tunnel (unanswered requests, scans, floods, failed handshakes) are counted apart. "
    "An IKE SA is exposed when its key exchange was classical only (IKEv1 always), unless an RFC 8784 "
    "PPK was confirmed used; protected when ML-KEM was seen negotiated or verified; otherwise "
    "unassessed, which never counts as protected. ESP is attributed by address pair and time: a "
    "flow (one SPI, one direction) belongs to the most recent IKE SA between the same peers that "
    "began before its first packet, because Child SA SPIs travel encrypted; a flow under no captured "
    "IKE SA is unassessed. Tunnels are ranked by exposure score (classical-only negotiations, "
    "downgrades, unassessed SAs, traffic).")


def _bytes(count: int | None) -> str:
    if count is None:
        return "not measured"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)


def tunnel_view(rank: int, tunnel: dict) -> dict:
    return {
        **tunnel,
        "rank": rank,
        "exposed": tunnel["status"] == "exposed",
        "still_classical": tunnel["latest_class"] in CLASSICAL_ONLY,
        "esp_packets_exposed": tunnel["esp_packets"],
        "esp_bytes_exposed": tunnel["esp_bytes"],
    }


def _esp_phrase(packets: int, octets: int, measured: bool) -> str:
    return f"{packets} ESP packets, {_bytes(octets)}" if measured else "ESP not measured"


def _unassessed_why(tunnels: list[dict]) -> str:
    reasons = Counter(r for t in tunnels for r in t["reasons"])
    if set(reasons) == {"their handshake was not captured"}:
        return " because their handshake was not captured"
    return ": " + "; ".join(f"{r} ({n})" for r, n in reasons.most_common())


def exposure_view(tunnels: list[dict], unanswered: dict | None = None) -> dict:
    """The headline figures. unanswered: `UnansweredTraffic.as_dict()` of the
    negotiations that formed no tunnel."""
    unanswered = unanswered or {"negotiations": 0, "pairs": 0, "findings": []}
    exposed = [t for t in tunnels if t["status"] == "exposed"]
    unassessed = [t for t in tunnels if t["status"] == "unassessed"]
    protected = [t for t in tunnels if t["status"] == "protected"]
    still = [t for t in exposed if t["still_classical"]]
    measured = any(t["esp_packets"] is not None for t in tunnels)

    def total(key: str, group: list[dict]) -> int:
        return sum(t[key] or 0 for t in group)

    packets, octets = total("esp_packets", exposed), total("esp_bytes", exposed)
    packets_u, octets_u = total("esp_packets_unassessed", tunnels), total("esp_bytes_unassessed", tunnels)
    parts = []
    if not tunnels and not unanswered["negotiations"]:
        headline = "No IKE negotiation was found in the capture(s)."
    else:
        if tunnels:
            first = f"{len(exposed)} of {len(tunnels)} tunnel(s) used classical-only key exchange"
            if exposed:
                first += (f" ({len(still) or 'none'} still at their last negotiation; "
                          f"{_esp_phrase(packets, octets, measured)} exposed to harvest-now-decrypt-later)")
            parts.append(first)
            if unassessed:
                parts.append(f"{len(unassessed)} more could not be assessed{_unassessed_why(unassessed)}"
                             + (f" ({_esp_phrase(packets_u, octets_u, measured)} unassessed)" if measured else ""))
            if protected:
                parts.append(f"{len(protected)} used ML-KEM (or a confirmed post-quantum preshared key)")
        else:
            parts.append("no tunnel was seen (no established IKE SA, no ESP)")
        if unanswered["negotiations"]:
            parts.append(f"{unanswered['negotiations']} negotiation(s) between {unanswered['pairs']} peer pair(s) "
                         "formed no tunnel (unanswered requests, failed handshakes, scans or floods) and are "
                         "counted apart")
        headline = "; ".join(parts) + "."
        headline = headline[0].upper() + headline[1:]
    return {"headline": headline, "method": EXPOSURE_METHOD, "tunnels": len(tunnels),
            "exposed_tunnels": len(exposed), "still_classical_tunnels": len(still),
            "unassessed_tunnels": len(unassessed), "protected_tunnels": len(protected),
            "esp_packets_exposed": packets, "esp_bytes_exposed": octets,
            "esp_packets_unassessed": packets_u, "esp_bytes_unassessed": octets_u,
            "unanswered": unanswered}


def _tunnel_peers(audits: list[CaptureAudit]) -> dict[frozenset, list[AuditedNegotiation]]:
    return tunnel_peers_of(item for a in audits for item in a.negotiations)


def tunnel_peers_of(items: Iterable) -> dict[frozenset, list]:
    """Negotiations by peer pair, for tunnel_peers_view."""
    out: dict[frozenset, list] = {}
    for item in items:
        n = item.negotiation
        out.setdefault(frozenset((n.initiator, n.responder)), []).append(item)
    return out


def tunnel_peers_view(tunnel: dict, items: list[AuditedNegotiation]) -> dict:
    """Each peer's implementation as its negotiations identified it, and for a tunnel that
    is not protected what to change (ikeaudit.remediation: sourced entries, else RFC 9370)."""
    named: dict[str, dict] = {address: {"address": address, "name": None, "version": None, "confidence": None,
                                        "evidence": []} for address in tunnel["peers"]}
    rank = {"high": 3, "medium": 2, "low": 1, None: 0}
    for item in items:
        n = item.negotiation
        for address, found in ((n.initiator, item.peers[0]), (n.responder, item.peers[1])):
            entry = named.get(address)
            if entry is None or found.name is None:
                continue
            if rank[found.confidence] > rank[entry["confidence"]]:
                entry.update(name=found.name, version=found.version, confidence=found.confidence,
                             evidence=list(found.evidence))
    for entry in named.values():
        entry["label"] = implementation_label(entry["name"], entry["version"], entry["confidence"])
    implementations = [named[a] for a in tunnel["peers"]]
    if tunnel["status"] == "protected":
        return {"implementations": implementations, "remediation": []}
    ikev1 = bool(items) and all(i.negotiation.ike_version == 1 for i in items)
    # A low-confidence name (a notify-order hint) gets its entry and the generic advice.
    names = [i["name"] for i in implementations]
    if any(i["confidence"] == "low" for i in implementations):
        names.append(None)
    advice = remediation.advise(names, 1 if ikev1 else 2)
    return {"implementations": implementations, "remediation": [r.as_dict() for r in advice]}


def report_document(audits: list[CaptureAudit], catalog: KeCatalog,
                    verdicts: dict[int, tuple[list[dict], str | None]], tunnels: list[dict], policy: dict,
                    generated_at: str, what_ifs: dict[int, list[WhatIf]], mtus: list[int],
                    unanswered: dict | None = None) -> dict:
    """Everything the report renderers show. verdicts (each negotiation's verdicts and
    its worst outcome) and what_ifs are keyed by id() of the AuditedNegotiation;
    unanswered is `UnansweredTraffic.as_dict()`, whose findings become the document's."""
    negotiations = [report_negotiation_view(item, catalog, *verdicts.get(id(item), ([], None)),
                                            what_ifs.get(id(item), []))
                    for a in audits for item in a.negotiations]
    head = report_head(audits, ScanTally.of(negotiations).summary(), tunnels, _tunnel_peers(audits), policy,
                       generated_at, mtus, unanswered)
    return {**head, "negotiations": negotiations}


def report_negotiation_view(item: AuditedNegotiation, catalog: KeCatalog, verdicts: list[dict],
                            outcome: str | None, what_ifs: list[WhatIf]) -> dict:
    """A negotiation as the report shows it: its view, its policy verdicts and worst
    outcome, its what-if rows."""
    view = negotiation_view(item, catalog)
    view["verdicts"], view["policy_outcome"] = verdicts, outcome
    view["what_if"] = [what_if_view(row) for row in what_ifs]
    return view


def report_head(audits: list[CaptureAudit], summary: dict, tunnels: list[dict], peers: dict[frozenset, list],
                policy: dict, generated_at: str, mtus: list[int], unanswered: dict | None = None) -> dict:
    """The report document without its negotiations (a streamed report counts them in
    summary). peers: each peer pair's negotiations (AuditedNegotiation, or exposure's
    ExposureItem with its peers), in the document's order."""
    ranked = [tunnel_view(i + 1, t) for i, t in enumerate(tunnels)]
    for t in ranked:
        t.update(tunnel_peers_view(t, peers.get(frozenset(t["peers"]), [])))
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ikeaudit", "version": __version__},
        "generated_at": generated_at,
        "policy": policy,
        "mtus": mtus,
        "fragment_size": None,
        "captures": [capture_view(a) for a in audits],
        "summary": summary,
        "exposure": exposure_view(ranked, unanswered),
        "findings": list((unanswered or {}).get("findings", [])),
        "tunnels": ranked,
    }
