"""The self-contained HTML report: one file, plots embedded, no external fetch, readable
on a phone. Every string that came from a packet or a file name is escaped here."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from html import escape
from itertools import chain

CSS = """
:root { color-scheme: light; --fg:#1d1d1f; --muted:#5b5b61; --line:#d9d9de; --bad:#b2182b;
        --warn:#b35806; --good:#1b7837; --bg:#ffffff; --panel:#f6f6f8; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 1rem; }
h1 { font-size: 1.5rem; margin: .2rem 0 .6rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
.headline { font-size: 1.15rem; background: var(--panel); border-left: 5px solid var(--bad);
            padding: .8rem 1rem; margin: 1rem 0; }
.headline.ok { border-left-color: var(--good); }
.meta { color: var(--muted); font-size: .9rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .6rem; }
.card { background: var(--panel); border-radius: 6px; padding: .6rem .8rem; }
.card b { display: block; font-size: 1.4rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .85em; }
td code { white-space: nowrap; }
.cls { white-space: nowrap; font-weight: 600; }
.cls-hybrid-pq, .cls-pq-only, .out-pass { color: var(--good); }
.cls-classical, .cls-classical-pq-offered, .out-fail { color: var(--bad); }
.cls-failed, .cls-incomplete, .cls-unknown, .cls-ikev1, .out-warn { color: var(--warn); }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .85rem; }
details { margin: .4rem 0; }
summary { cursor: pointer; }
ul.evidence { margin: .2rem 0 .4rem 1.2rem; padding: 0; }
@media (max-width: 600px) { body { padding: .6rem; font-size: 14px; } th, td { padding: .3rem; } }
"""


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(iso: str) -> str:
    """ISO time to the second, as a reader scans it: 2026-11-23 07:16:29."""
    return f"{_e(iso[:10])}&nbsp;{_e(iso[11:19])}"


def _cls(name: str) -> str:
    return f'<span class="cls cls-{_e(name)}">{_e(name)}</span>'


def _table(headers: list[str], rows: Iterable[list[str]], numeric: set[int] = frozenset()) -> str:
    return "".join(_table_pieces(headers, rows, numeric))


def _table_pieces(headers: list[str], rows: Iterable[list[str]], numeric: set[int] = frozenset()) -> Iterator[str]:
    """The table a row at a time: a streamed report's negotiations are read as it is written."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    yield f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
    for row in rows:
        yield "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                               for i, c in enumerate(row)) + "</tr>"
    yield "</tbody></table></div>"


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _count(value) -> str:
    return "not measured" if value is None else f"{value:,}"


def _cards(summary: dict) -> str:
    cards = [("negotiations", summary["negotiations"]), ("IKE SAs established", summary["ike_sas_established"])]
    cards += list(summary["by_classification"].items())
    return '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>'
                                           for k, v in cards) + "</div>"


def _tunnels(document: dict) -> str:
    rows = []
    for t in document["tunnels"]:
        by_class = ", ".join(f"{_e(k)} {_e(v)}" for k, v in t["by_class"].items())
        status = _e(t["status"]) + "".join(f"<br><small>{_e(r)}</small>" for r in t["reasons"])
        rows.append([_e(t["rank"]), f"<code>{_e(t['peers'][0])}</code><br>↔ <code>{_e(t['peers'][1])}</code>",
                     status, _e(t["observation"]), _time(t["first_seen"]), _time(t["last_seen"]), by_class,
                     _e(t["downgrades"]), _e(t["downgrade_prevention"] or "not seen"),
                     _count(t["esp_packets_exposed"]), _count(t["esp_bytes_exposed"]),
                     _count(t["esp_packets_unassessed"])])
    return _table(["rank", "peers", "status", "observation", "first seen", "last seen", "negotiations",
                   "downgrades", "downgrade prevention", "ESP packets exposed", "ESP bytes exposed",
                   "ESP packets unassessed"],
                  rows, numeric={0, 7, 9, 10, 11})


def _remediation(document: dict) -> str:
    """Sources are shown without their scheme: the page links to nothing (it is read offline)."""
    parts = []
    for t in document["tunnels"]:
        if not t.get("remediation"):
            continue
        peers = ", ".join(f"<code>{_e(i['address'])}</code> ({_e(i['label'])})" for i in t["implementations"])
        items = []
        for r in t["remediation"]:
            version = f", minimum version {_e(r['min_version'])}" if r["min_version"] else ""
            config = "".join(f"<li><code>{_e(c)}</code></li>" for c in r["config"])
            sources = "".join(f'<li>source: <code>{_e(s["url"].split("://", 1)[-1])}</code> ({_e(s["says"])}; '
                              f"checked {_e(s['checked'])})</li>" for s in r["sources"])
            note = f"<li>{_e(r['note'])}</li>" if r["note"] else ""
            items.append(f"<li><b>{_e(r['implementation'] or 'any implementation')}</b>{version}: "
                         f"{_e(r['advice'])}<ul>{config}{note}{sources}</ul></li>")
        parts.append(f"<p><b>#{_e(t['rank'])}</b> {_e(t['status'])}: {peers}</p><ul>{''.join(items)}</ul>")
    return "".join(parts) or "<p>Every tunnel is protected: nothing to change.</p>"


def _negotiation_row(n: dict) -> list[str]:
    ke = _e(n["ke"]["name"]) if n["ke"] else "-"
    addke = ", ".join(f"{_e(a['slot'])}={_e(a['name'])}" for a in n["addke"]) or "-"
    verdict = n.get("policy_outcome")
    return [_time(n["first_seen"]),
            f"<code>{_e(n['initiator'])}</code><br>→ <code>{_e(n['responder'])}</code>",
            f"<code>{_e(n['spi_i'])}</code>", _cls(n["classification"]), _e(n.get("confidence") or "-"),
            ke, addke,
            f'<span class="out-{_e(verdict)}">{_e(verdict)}</span>' if verdict else "-",
            _e(n["largest_message_bytes"]), _e(n["capture"])]


def _negotiations(document: dict) -> Iterator[str]:
    return _table_pieces(["time (UTC)", "initiator → responder", "SPIi", "class", "confidence", "KE", "ADDKEs",
                          "policy", "largest message", "capture"],
                         map(_negotiation_row, document["negotiations"]), numeric={8})


def _details(document: dict) -> Iterator[str]:
    for n in document["negotiations"]:
        items = "".join(f"<li>{_e(e)}</li>" for e in n["evidence"])
        findings = "".join(f"<li><b>{_e(f['severity'])}</b> {_e(f['code'])}: {_e(f['detail'])}</li>"
                           for f in n["findings"])
        verdicts = "".join(f'<li class="out-{_e(v["outcome"])}"><b>{_e(v["outcome"])}</b> {_e(v["rule"])}: '
                           f"{_e(v['detail'])}" + (f" <small>[{_e(v['reference'])}]</small>" if v.get("reference")
                                                   else "") + "</li>" for v in n.get("verdicts", []))
        inferred = "".join(f"<li>{_e(i)}</li>" for i in n.get("inferences", []))
        vendor = ", ".join(f"<code>{_e(v)}</code>" + (f" ({_e(t)})" if t else "")
                           for v, t in zip(n["vendor_ids"], n["vendor_id_texts"]))
        yield (
            f"<details><summary><code>{_e(n['spi_i'])}/{_e(n['spi_r'])}</code> {_cls(n['classification'])} "
            f"{_e(n['initiator'])} → {_e(n['responder'])}</summary>"
            f"<p>Chosen: {_e(n['chosen_proposal'] or '-')}</p>"
            f"<p>Observation: {_e(n.get('observation') or '-')}; established: "
            f"{_e(n.get('established_basis') or '-')}; downgrade prevention: "
            f"{_e(n.get('downgrade_prevention') or 'not seen')}</p>"
            + (f"<p>Inferred:</p><ul class=\"evidence\">{inferred}</ul>" if inferred else "")
            + f"<p>Evidence:</p><ul class=\"evidence\">{items}</ul>"
            + (f"<p>Findings:</p><ul class=\"evidence\">{findings}</ul>" if findings else "")
            + (f"<p>Policy:</p><ul class=\"evidence\">{verdicts}</ul>" if verdicts else "")
            + (f"<p>Vendor IDs: {vendor}</p>" if vendor else "")
            + f"<p>Implementations: initiator {_e(_label(n, 'initiator'))}, responder {_e(_label(n, 'responder'))}</p>"
            + "<p>Authentication:</p><ul class=\"evidence\">"
            + "".join(f"<li>{_e(line)}</li>" for line in n.get("authentication", {}).get("summary", [])) + "</ul>"
            + "</details>")


def _label(n: dict, side: str) -> str:
    return (n.get("implementation") or {}).get(side, {}).get("label", "-")


ALERT_CODES = ("downgrade", "rekey-without-followup-ke", "evidence-mismatch", "decrypted-ke-mismatch",
               "fragmentation-black-hole", "chosen-not-offered", "addke-not-captured")


def _alerts(document: dict) -> Iterator[str]:
    rows = chain(([_time(n["first_seen"]), f"<code>{_e(n['initiator'])}</code><br>→ <code>{_e(n['responder'])}</code>",
                   f"<code>{_e(n['spi_i'])}</code>", _e(f["code"]), _e(f["detail"])]
                  for n in document["negotiations"] for f in n["findings"] if f["code"] in ALERT_CODES),
                 (["-", "-", "-", _e(f["code"]), _e(f["detail"])] for f in document.get("findings", [])))
    first = next(rows, None)
    if first is None:
        yield "<p>No downgrade, evidence mismatch or fragmentation black hole.</p>"
        return
    yield from _table_pieces(["time (UTC)", "initiator → responder", "SPIi", "alert", "detail"], chain([first], rows))


def _anomalies(document: dict) -> str:
    rows = [[_e(c["path"]), _e(a["kind"]), _e(a["frame"]), _e(a["detail"])]
            for c in document["captures"] for a in c["anomalies"]]
    if not rows:
        return "<p>No damaged, malformed or incomplete input.</p>"
    return _table(["capture", "kind", "frame", "detail"], rows, numeric={2})


def render(document: dict, figures: list[tuple[bytes, str]]) -> str:
    return "".join(iter_render(document, figures))


def iter_render(document: dict, figures: list[tuple[bytes, str]]) -> Iterator[str]:
    """The report in pieces, to be written as they come: document["negotiations"] may be
    a sequence read back from a spool (each section iterates it once)."""
    exposure = document["exposure"]
    headline_class = "headline ok" if not exposure["exposed_tunnels"] and not exposure.get("unassessed_tunnels") \
        else "headline"
    policy = document["policy"]
    for piece in ([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ikeaudit report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>IKEv2 post-quantum audit</h1>",
        f'<p class="meta">Generated {_e(document["generated_at"])} by ikeaudit {_e(document["tool"]["version"])} '
        f'from {len(document["captures"])} capture(s). Policy: <b>{_e(policy["name"])}</b> '
        f'(evaluated as of {_e(policy["as_of"])}).</p>',
        f'<p class="{headline_class}">{_e(document["exposure"]["headline"])}</p>',
        _cards(document["summary"]),
        "<h2>Alerts</h2>",
        _alerts(document),
        "<h2>Tunnels by exposure</h2>",
        f'<p class="meta">{_e(document["exposure"]["method"])}</p>',
        _tunnels(document),
        "<h2>What to change, per tunnel</h2>",
        _remediation(document),
        "<h2>Plots</h2>",
        "".join(_figure(png, caption) for png, caption in figures),
        "<h2>Negotiations</h2>",
        _negotiations(document),
        "<h2>Evidence per negotiation</h2>",
        _details(document),
        "<h2>Policy</h2>",
        f"<p>{_e(policy['description'])}</p>",
        "<h2>Input problems</h2>",
        _anomalies(document),
        "</body></html>\n",
    ]):
        if isinstance(piece, str):
            yield piece
        else:
            yield from piece
