"""The aggregation stage: what a scan's output says about all its negotiations (the
summary, the worst finding), counted one negotiation at a time as they stream, so that
neither needs every negotiation in memory. It reads the negotiations' output views
(report.views.negotiation_view), the documented contract, so that a summary counted
while streaming and one counted over the whole list are the same by construction;
renderers print what it counted and compute nothing."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class ScanTally:
    negotiations: int = 0
    ike_sas_established: int = 0
    classes: Counter = field(default_factory=Counter)
    confidences: Counter = field(default_factory=Counter)
    observations: Counter = field(default_factory=Counter)
    severities: Counter = field(default_factory=Counter)  # of every finding

    @classmethod
    def of(cls, views: Iterable[dict]) -> ScanTally:
        tally = cls()
        for view in views:
            tally.add(view)
        return tally

    def add(self, view: dict) -> None:
        self.negotiations += 1
        self.ike_sas_established += bool(view["established"] and view["ike_version"] == 2)
        self.classes[view["classification"]] += 1
        if view["confidence"]:
            self.confidences[view["confidence"]] += 1
        self.observations[view["observation"]] += 1
        self.severities.update(f["severity"] for f in view["findings"])

    def summary(self) -> dict:
        """The scan document's "summary"."""
        return {
            "negotiations": self.negotiations,
            "ike_sas_established": self.ike_sas_established,
            "by_classification": dict(sorted(self.classes.items())),
            "by_confidence": dict(sorted(self.confidences.items())),
            "by_observation": dict(sorted(self.observations.items())),
        }


class ReportTally:
    """What `ikeaudit report` keeps of its negotiations as they stream: the summary
    (ScanTally), the severities of their findings, whether a policy verdict fails, and
    per IKE SA only the facts exposure reads (policy.exposure.ExposureItem, with its
    peers' implementations; opaque here): the tunnels, unanswered traffic and each
    tunnel's peers come from those, not from the negotiations."""

    def __init__(self) -> None:
        self.scan = ScanTally()
        self.verdicts_fail = False
        self._files, self._ranks = array("q"), array("q")
        self._items: list = []

    def add(self, file: int, rank: int, facts, view: dict, verdicts_fail: bool) -> None:
        self.scan.add(view)
        self.verdicts_fail |= verdicts_fail
        self._files.append(file)
        self._ranks.append(rank)
        self._items.append(facts)

    def items(self) -> list:
        """The negotiations' facts in (file, rank) order: the document's order."""
        files, ranks = self._files, self._ranks
        return [self._items[i] for i in sorted(range(len(files)), key=lambda i: (files[i], ranks[i]))]
