"""The Markdown report: the HTML report's text, for tickets and wikis."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import chain

from ikeaudit.report.html import ALERT_CODES

# Escape only what would change the rendering (CommonMark with GFM tables): characters
# that start inline markup anywhere, `_` where it can open or close emphasis (not inside
# a word: PRF_HMAC_SHA2_256 stays as it is), an entity reference, and block markers at
# the start of the text. Dates, addresses and versions keep their - and . unescaped.
_INLINE = re.compile(r"([\\`*\[\]<|~])")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
# A list item (1. or - then a space), a heading (# then a space), a quote (>), or a
# line of = or - alone (a setext underline, or a rule); the marker's last character is
# escaped.
_BLOCK_START = re.compile(r"^(\s*(?:\d{1,9}(?=[.)](?:\s|$))|#{0,5}(?=#(?:\s|$))|(?=[-+>])|=*(?==\s*$)))(.)")


def md(value) -> str:
    """Escape a string so that Markdown shows it literally (packet data stays data)."""
    text = ("" if value is None else str(value)).replace("\r", " ").replace("\n", " ")
    text = _INLINE.sub(r"\\\1", text)
    text = _EMPHASIS_UNDERSCORE.sub(r"\\_", text)
    text = _ENTITY.sub(r"\\&", text)
    return _BLOCK_START.sub(r"\1\\\2", text, count=1)


def _cell(value) -> str:
    """A table cell; "-" (which a cell shows as it is) when there is nothing."""
    return md(value) if value else "-"


def _table(headers: list[str], rows: Iterable[list[str]]) -> Iterator[str]:
    yield "| " + " | ".join(headers) + " |"
    yield "|" + "---|" * len(headers)
    yield from ("| " + " | ".join(row) + " |" for row in rows)


def _remediation(document: dict) -> list[str]:
    lines = []
    for t in document["tunnels"]:
        if not t.get("remediation"):
            continue
        peers = ", ".join(f"{md(i['address'])} ({md(i['label'])})" for i in t["implementations"])
        lines.append(f"- **#{md(t['rank'])}** {md(t['status'])}: {peers}")
        for r in t["remediation"]:
            who = md(r["implementation"] or "any implementation")
            version = f", minimum version {md(r['min_version'])}" if r["min_version"] else ""
            lines.append(f"  - {who}{version}: {md(r['advice'])}")
            lines += [f"    - `{c}`" if "`" not in c else f"    - {md(c)}" for c in r["config"]]
            if r["note"]:
                lines.append(f"    - {md(r['note'])}")
            lines += [f"    - source: <{s['url']}> ({md(s['says'])}; checked {md(s['checked'])})" for s in r["sources"]]
    return lines


def render(document: dict, figure_files: list[tuple[str, str]]) -> str:
    return "".join(iter_render(document, figure_files))


def iter_render(document: dict, figure_files: list[tuple[str, str]]) -> Iterator[str]:
    """The report a line at a time, to be written as they come: document["negotiations"]
    may be a sequence read back from a spool (each section iterates it once)."""
    return (line + "\n" for line in _lines(document, figure_files))


def _lines(document: dict, figure_files: list[tuple[str, str]]) -> Iterator[str]:
    policy = document["policy"]
    yield from ["# IKEv2 post-quantum audit", "",
                f"Generated {md(document['generated_at'])} by ikeaudit {md(document['tool']['version'])}; "
                f"policy **{md(policy['name'])}** as of {md(policy['as_of'])}.", "",
                f"**{md(document['exposure']['headline'])}**", "", "## Alerts", ""]
    alerts = chain((f"- {md(n['first_seen'][:19])} {md(n['initiator'])} → {md(n['responder'])} `{n['spi_i']}` "
                    f"**{md(f['code'])}**: {md(f['detail'])}"
                    for n in document["negotiations"] for f in n["findings"] if f["code"] in ALERT_CODES),
                   (f"- **{md(f['code'])}** ({md(f['severity'])}): {md(f['detail'])}"
                    for f in document.get("findings", [])))
    first = next(alerts, None)
    yield from chain([first], alerts) if first is not None else \
        ["None: no downgrade, evidence mismatch or fragmentation black hole."]
    yield from ["", "## Tunnels by exposure", "", md(document["exposure"]["method"]), ""]
    yield from _table(["rank", "peers", "status", "observation", "first seen", "last seen", "negotiations",
                       "downgrades", "downgrade prevention", "ESP packets exposed", "ESP bytes exposed",
                       "ESP packets unassessed"],
                      [[md(t["rank"]), f"{md(t['peers'][0])} ↔ {md(t['peers'][1])}",
                        md(t["status"]) + "".join(f" ({md(r)})" for r in t["reasons"]), md(t["observation"]),
                        md(t["first_seen"]), md(t["last_seen"]),
                        md(", ".join(f"{k} {v}" for k, v in t["by_class"].items())),
                        md(t["downgrades"]), md(t["downgrade_prevention"] or "not seen"),
                        md(t["esp_packets_exposed"]), md(t["esp_bytes_exposed"]), md(t["esp_packets_unassessed"])]
                       for t in document["tunnels"]])
    yield from ["", "## What to change, per tunnel", ""]
    yield from _remediation(document) or ["Every tunnel is protected: nothing to change."]
    yield from ["", "## Negotiations", ""]
    yield from _table(["time (UTC)", "initiator → responder", "SPIi", "class", "confidence", "observation", "KE",
                       "ADDKEs", "policy"],
                      ([md(n["first_seen"][:19]), f"{md(n['initiator'])} → {md(n['responder'])}", md(n["spi_i"]),
                        md(n["classification"]), _cell(n.get("confidence")), _cell(n.get("observation")),
                        _cell(n["ke"]["name"] if n["ke"] else None),
                        _cell(", ".join(f"{a['slot']}={a['name']}" for a in n["addke"])),
                        _cell(n.get("policy_outcome"))] for n in document["negotiations"]))
    yield from ["", "## Authentication and implementations", ""]
    for n in document["negotiations"]:
        impl = n.get("implementation") or {}
        yield (f"- `{n['spi_i']}` {md(n['initiator'])} ({md(impl.get('initiator', {}).get('label', '-'))}) → "
               f"{md(n['responder'])} ({md(impl.get('responder', {}).get('label', '-'))}): "
               + "; ".join(md(s) for s in n.get("authentication", {}).get("summary", [])))
    vendors = sorted({t for n in document["negotiations"] for t in n["vendor_id_texts"] if t})
    if vendors:
        yield from ["", "## Vendor IDs in clear text", ""] + [f"- {md(v)}" for v in vendors]
    yield from ["", "## Findings", ""]
    for n in document["negotiations"]:
        for f in n["findings"]:
            yield f"- `{n['spi_i']}` **{md(f['severity'])}** {md(f['code'])}: {md(f['detail'])}"
        for v in n.get("verdicts", []):
            if v["outcome"] != "pass":
                yield f"- `{n['spi_i']}` policy **{md(v['outcome'])}** {md(v['rule'])}: {md(v['detail'])}"
    if figure_files:
        yield from ["", "## Plots", ""]
        yield from [f"![{md(caption)}]({path})" for path, caption in figure_files]
    anomalies = [(c["path"], a) for c in document["captures"] for a in c["anomalies"]]
    yield from ["", "## Input problems", ""]
    yield from [f"- {md(path)}: {md(a['kind'])} (frame {md(a['frame'])}): {md(a['detail'])}" for path, a in anomalies] \
        or ["None."]
