"""matplotlib figures. They draw what they are given; the numbers come from the views."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

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


def message_sizes(document: dict, paths: list[str]) -> list[str]:
    """Each message's IPv4 datagram size if sent whole, by exchange, against the MTU lines."""
    fig, ax = plt.subplots(figsize=(12, 6), layout="constrained")
    categories = [f"{x}\n{d}" for x in EXCHANGE_ORDER for d in ("request", "response")]
    short = {"IKE_": "", "CREATE_": "", "INFORMATIONAL": "INFO", "request": "req", "response": "resp"}
    ticks = []
    for c in categories:
        for long, brief in short.items():
            c = c.replace(long, brief)
        ticks.append(c)
    seen_classes = set()
    for i, n in enumerate(document["negotiations"]):
        colour = CLASS_COLOURS.get(n["classification"], "#636363")
        for m in n["messages"]:
            label = f"{m['exchange']}\n{'response' if m['response'] else 'request'}"
            if label not in categories:
                continue
            sizes = [w["ip_datagram_bytes"] for w in n["what_if"]
                     if w["exchange"] == m["exchange"] and w["message_id"] == m["message_id"]
                     and w["response"] == m["response"] and w["ip_version"] == 4 and w["port"] == 4500]
            if not sizes:
                continue
            x = categories.index(label) + (i % 7 - 3) * 0.05
            ax.scatter(x, sizes[0], color=colour, s=28, alpha=0.85,
                       label=n["classification"] if n["classification"] not in seen_classes else None)
            seen_classes.add(n["classification"])
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
    if seen_classes:
        ax.legend(title="classification", fontsize=8)
    written = []
    for path in paths:
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written
