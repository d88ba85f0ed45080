"""What to change on a tunnel's peers to get hybrid ML-KEM (issue 17), from the data file
shipped with the package (ikeaudit/data/remediation.toml).

One entry per implementation (named as `ikeaudit.vendors` names them), each with the
configuration lines that enable hybrid ML-KEM through RFC 9370, the minimum software
version and the public sources it rests on with the day they were checked. An
implementation without an entry, or a peer that could not be identified, gets the
generic RFC 9370 advice; an IKEv1 tunnel is told to move to IKEv2 first. Nothing is
guessed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    says: str
    checked: str  # ISO date


@dataclass(frozen=True, slots=True)
class Remediation:
    implementation: str | None  # None: the generic advice
    advice: str
    min_version: str | None = None
    config: tuple[str, ...] = ()
    note: str = ""
    sources: tuple[Source, ...] = ()

    def as_dict(self) -> dict:
        return {"implementation": self.implementation, "advice": self.advice, "min_version": self.min_version,
                "config": list(self.config), "note": self.note,
                "sources": [{"url": s.url, "says": s.says, "checked": s.checked} for s in self.sources]}


def _sources(table: dict) -> tuple[Source, ...]:
    return tuple(Source(s["url"], s["says"], str(s["checked"])) for s in table.get("sources", []))


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("ikeaudit").joinpath("data", "remediation.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@lru_cache(maxsize=1)
def entries() -> dict[str, Remediation]:
    """Implementation name -> its entry."""
    out = {}
    for e in _table()["implementations"]:
        advice = f"Upgrade {e['name']} to {e['min_version']} or later and add ML-KEM as an additional key exchange."
        out[e["name"]] = Remediation(e["name"], advice, e["min_version"], tuple(e["config"]), e.get("note", ""),
                                     _sources(e))
    return out


def generic(ike_version: int = 2) -> Remediation:
    table = _table()["ikev1" if ike_version == 1 else "generic"]
    return Remediation(None, " ".join(table["advice"].split()), sources=_sources(table))


def advise(implementations: list[str | None], ike_version: int = 2) -> list[Remediation]:
    """The advice for a tunnel whose peers run these implementations (None: unidentified):
    one entry per known implementation, the generic advice once for the rest."""
    if ike_version == 1:
        return [generic(1)]
    known = entries()
    out = [known[name] for name in dict.fromkeys(i for i in implementations if i in known)]
    if not out or any(i not in known for i in implementations):
        out.append(generic())
    return out
