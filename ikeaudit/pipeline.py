"""The one place that knows the order of the stages.

capture source -> extraction -> dissection -> negotiation tracking -> classification
and fragmentation profile.
Every command (scan, and later mtu, report, live) goes through `audit_frames`, so a
negotiation found offline and one found live are found by the same code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ikeaudit.classify import Classification, KeCatalog, classify_all
from ikeaudit.dissect import dissect
from ikeaudit.extract import Extractor
from ikeaudit.mtu import FragmentationProfile, profile
from ikeaudit.records import Anomaly, EspFlow, Frame, Malformed, Negotiation
from ikeaudit.sources import iter_capture
from ikeaudit.track import Tracker


@dataclass(frozen=True)
class AuditedNegotiation:
    negotiation: Negotiation
    classification: Classification
    fragmentation: FragmentationProfile


@dataclass
class CaptureAudit:
    """What one capture yielded: negotiations with their verdicts, and everything that
    did not become a negotiation (damage, malformed datagrams, counters)."""

    capture: str
    negotiations: list[AuditedNegotiation] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    esp_flows: list[EspFlow] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)


def audit_frames(capture: str, items: Iterable[Frame | Anomaly],
                 catalog: KeCatalog | None = None) -> CaptureAudit:
    audit = CaptureAudit(capture)
    extractor = Extractor()
    tracker = Tracker(capture)
    for record in _datagrams(items, extractor, audit):
        tracker.feed(dissect(record))
    audit.anomalies.extend(extractor.flush())
    audit.stats.update(extractor.stats)
    audit.esp_flows = extractor.esp_flows()
    negotiations = tracker.finish()
    audit.malformed.extend(tracker.malformed)
    audit.stats["malformed_ike"] += len(tracker.malformed)
    classifications = classify_all(negotiations, catalog)
    audit.negotiations = [AuditedNegotiation(n, c, profile(n))
                          for n, c in zip(negotiations, classifications)]
    return audit


def _datagrams(items: Iterable[Frame | Anomaly], extractor: Extractor, audit: CaptureAudit) -> Iterator:
    for item in items:
        if isinstance(item, Anomaly):
            audit.anomalies.append(item)
            continue
        for out in extractor.feed(item):
            if isinstance(out, Anomaly):
                audit.anomalies.append(out)
            else:
                yield out


def audit_capture(path: str, catalog: KeCatalog | None = None) -> CaptureAudit:
    """Audit one capture file. Raises sources.CaptureError for a file that is not a capture."""
    return audit_frames(path, iter_capture(path), catalog)
