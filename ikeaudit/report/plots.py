"""matplotlib figures. They draw what they are given; the numbers come from the views."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import io  # noqa: E402
from array import array  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

CLASS_COLOURS = {
    "hybrid-pq": "#1b7837",
    "pq-only": "#2166ac",
    "classical": "#b2182b",
    "classical-pq-offered": "#e08214",
    "failed": "#762a83",
    "incomplete": "#999999",
    "unknown": "#636363",
    "ikev1": "#000000",
}
EXCHANGE_ORDER = ["IKE_SA_INIT", "IKE_INTERMEDIATE", "IKE_AUTH", "CREATE_CHILD_SA",
                  "IKE_FOLLOWUP_KE", "INFORMATIONAL"]


def save(fig, paths: list[str]) -> list[str]:
    for path in paths:
        # No creation date in SVG, so that regenerated reports diff cleanly.
        fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(fig)
    return paths


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def message_sizes(document: dict):
    """Each message's IPv4 datagram size if sent whole, by exchange, against the MTU lines."""
    fig, ax = plt.subplots(figsize=(12, 6), layout="constrained")
    categories = [f"{x}\n{d}" for x in EXCHANGE_ORDER for d in ("request", "response")]
    short = {"IKE_": "", "CREATE_": "", "INFORMATIONAL": "INFO", "request": "req", "response": "resp"}
    ticks = []
    for c in categories:
        for long, brief in short.items():
            c = c.replace(long, brief)
        ticks.append(c)
    points = _Points()
    for i, n in enumerate(document["negotiations"]):
        sizes: dict[tuple, int] = {}  # each message's first IPv4, UDP 4500 what-if row
        for w in n["what_if"]:
            if w["ip_version"] == 4 and w["port"] == 4500:
                sizes.setdefault((w["exchange"], w["message_id"], w["response"]), w["ip_datagram_bytes"])
        for m in n["messages"]:
            label = f"{m['exchange']}\n{'response' if m['response'] else 'request'}"
            size = sizes.get((m["exchange"], m["message_id"], m["response"]))
            if label in categories and size is not None:
                points.add(categories.index(label) + (i % 7 - 3) * 0.05, size, n["classification"])
    points.draw(ax)
    for k, mtu in enumerate(sorted(document["mtus"])):
        ax.axhline(mtu, color="#444444", linestyle="--", linewidth=0.8)
        # Alternate sides so that close MTUs (1500, 1492) keep readable labels.
        left = k % 2 == 1
        ax.annotate(f"MTU {mtu}", xy=(-0.55 if left else len(categories) - 0.45, mtu), xytext=(0, 2),
                    textcoords="offset points", fontsize=8, ha="left" if left else "right")
    ax.set_xticks(range(len(categories)), ticks, fontsize=8)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_ylabel("IPv4 datagram bytes if sent unfragmented (UDP 4500)")
    ax.set_title("IKE message sizes against path MTUs")
    if points.classes:
        ax.legend(title="classification", fontsize=8)
    return fig


class _Points:
    """message_sizes' points as compact arrays, and how they are drawn. Each is drawn as
    a scatter call per point would draw it: markers stamped one by one in the order of
    the negotiations, the first of each class labelled for the legend. Consecutive points
    of one colour make one collection (the same stamps in the same order, far fewer
    artists), up to MAX_RUNS collections; past that (a gateway's thousands of
    negotiations), one collection per class in the order the classes came, the legend
    the same: where points of two classes overlap, the later class is on top."""

    MAX_RUNS = 2000

    def __init__(self) -> None:
        self.xs, self.ys, self.of, self.classes = array("d"), array("q"), array("H"), []
        self._index: dict[str, int] = {}

    def add(self, x: float, y: int, name: str) -> None:
        if name not in self._index:
            self._index[name] = len(self.classes)
            self.classes.append(name)
        self.xs.append(x)
        self.ys.append(y)
        self.of.append(self._index[name])

    def _runs(self) -> list[tuple[int, int, str | None]]:
        """(start, stop, label) of the consecutive points of one class; a labelled point alone."""
        runs, labelled = [], set()
        for i, c in enumerate(self.of):
            first = c not in labelled
            labelled.add(c)
            if first or not runs or runs[-1][2] is not None or self.of[runs[-1][0]] != c:
                runs.append([i, i + 1, self.classes[c] if first else None])
            else:
                runs[-1][1] = i + 1
            if len(runs) > self.MAX_RUNS:
                return []
        return [tuple(r) for r in runs]

    def draw(self, ax) -> None:
        if not self.xs:
            return
        # Autoscaled once at the end, not at each scatter call: each rescans every
        # collection (a gateway's 20,000 negotiations took hours).
        ax.set_autoscale_on(False)
        runs = self._runs()
        if runs:
            for start, stop, label in runs:
                ax.scatter(self.xs[start:stop], self.ys[start:stop], color=self._colour(self.of[start]), s=28,
                           alpha=0.85, label=label)
        else:
            for c, name in enumerate(self.classes):
                mine = [i for i, of in enumerate(self.of) if of == c]
                ax.scatter([self.xs[i] for i in mine], [self.ys[i] for i in mine], color=self._colour(c), s=28,
                           alpha=0.85, label=name)
        ax.set_autoscale_on(True)
        ax.autoscale_view()

    def _colour(self, c: int) -> str:
        return CLASS_COLOURS.get(self.classes[c], "#636363")


def class_share(document: dict):
    counts = document["summary"]["by_classification"]
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    names = [c for c in CLASS_COLOURS if c in counts]
    ax.barh(names, [counts[c] for c in names], color=[CLASS_COLOURS[c] for c in names])
    for i, c in enumerate(names):
        ax.annotate(str(counts[c]), xy=(counts[c], i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("negotiations")
    ax.set_title("Negotiations by classification")
    return fig


def timeline(document: dict):
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    names = [c for c in CLASS_COLOURS if c in document["summary"]["by_classification"]]
    times: dict[str, list[datetime]] = {name: [] for name in names}  # one pass over the negotiations
    for n in document["negotiations"]:
        if n["classification"] in times:
            times[n["classification"]].append(datetime.fromisoformat(n["first_seen"].replace("Z", "+00:00")))
    for row, name in enumerate(names):
        ax.scatter(times[name], [row] * len(times[name]), color=CLASS_COLOURS[name], s=30, alpha=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_title("Negotiations over time (UTC)")
    fig.autofmt_xdate()
    return fig


def ke_methods(document: dict):
    counts = Counter()
    for n in document["negotiations"]:
        if n["ke"]:
            label = n["ke"]["name"] + "".join(f" + {a['name']}" for a in n["addke"])
            counts[label] += 1
    fig, ax = plt.subplots(figsize=(8, max(2.4, 0.45 * len(counts) + 1)), layout="constrained")
    labels = [label for label, _ in counts.most_common()]
    colours = ["#1b7837" if "ML-KEM" in label else "#b2182b" for label in labels]
    ax.barh(labels, [counts[label] for label in labels], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("negotiations")
    ax.set_title("Chosen key exchange (green: includes ML-KEM)")
    return fig


def exposure(document: dict):
    tunnels = document["tunnels"][:15]
    fig, ax = plt.subplots(figsize=(9, max(2.4, 0.45 * len(tunnels) + 1)), layout="constrained")
    labels = [f"{t['peers'][0]} ↔ {t['peers'][1]}" for t in tunnels]
    exposed = [t["classical_only"] for t in tunnels]
    unassessed = [t["unassessed"] for t in tunnels]
    protected = [t["pq_protected"] + t["ppk"] for t in tunnels]
    ax.barh(labels, exposed, color="#b2182b", label="classical only (IKEv1 included)")
    ax.barh(labels, unassessed, left=exposed, color="#636363", label="unassessed")
    ax.barh(labels, protected, left=[a + b for a, b in zip(exposed, unassessed)], color="#1b7837",
            label="ML-KEM (or confirmed PPK)")
    ax.invert_yaxis()
    ax.set_xlabel("IKE SAs")
    ax.set_title("Tunnels (peer pairs) by key exchange, most exposed first")
    ax.legend(fontsize=8)
    return fig
