"""Posture over time: one row per tunnel, every stored negotiation a mark in its class's
colour, the alerts on top. Drawn from `ikeaudit tunnels --history` rows; it computes
nothing (the rows come from the state database through monitor.cli)."""

from __future__ import annotations

from datetime import datetime

from ikeaudit.report.plots import CLASS_COLOURS, plt

ALERT_MARKERS = {"fallback": "v", "downgrade": "X", "new-classical-tunnel": "s", "pq-failure": "P",
                 "visibility-lost": "d"}  # fmt: skip
MAX_TUNNELS = 40


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def posture_timeline(tunnels: list[dict], alerts: list[dict]):
    """``tunnels``: rows with ``history``; ``alerts``: alert records. The MAX_TUNNELS
    tunnels seen last are drawn (the title says how many were left out)."""
    shown = sorted(tunnels, key=lambda t: t["last_seen"], reverse=True)[:MAX_TUNNELS]
    fig, ax = plt.subplots(figsize=(12, 1.5 + 0.35 * max(1, len(shown))), layout="constrained")
    rows = {(t["peer_a"], t["peer_b"]): i for i, t in enumerate(shown)}
    seen_classes, seen_alerts = set(), set()
    for t in shown:
        y = rows[(t["peer_a"], t["peer_b"])]
        history = t.get("history") or []
        times = [_when(n["time"]) for n in history]
        if len(times) > 1:
            ax.plot(times, [y] * len(times), color="#cccccc", linewidth=1, zorder=1)
        for when, n in zip(times, history):
            name = n["classification"]
            ax.scatter([when], [y], color=CLASS_COLOURS.get(name, "#636363"), s=36, zorder=2,
                       label=name if name not in seen_classes else None)
            seen_classes.add(name)
    for a in alerts:
        y = rows.get(tuple(a["tunnel"]["peers"]))
        if y is None:
            continue
        kind = a["kind"]
        # Each kind at its own height under the row: alerts raised together stay apart.
        offset = 0.22 + 0.12 * (list(ALERT_MARKERS).index(kind) if kind in ALERT_MARKERS else len(ALERT_MARKERS))
        ax.scatter([_when(a["time"])], [y + offset], marker=ALERT_MARKERS.get(kind, "*"), color="black", s=40,
                   zorder=3, label=f"alert: {kind}" if kind not in seen_alerts else None)
        seen_alerts.add(kind)
    ax.set_yticks(range(len(shown)), [f"{t['peer_a']} - {t['peer_b']} ({t['posture']})" for t in shown])
    ax.set_ylim(-0.5, max(1, len(shown)) + 0.05)
    ax.invert_yaxis()
    ax.set_xlabel("time (UTC)")
    left_out = len(tunnels) - len(shown)
    ax.set_title("Posture over time: negotiations by class, alerts"
                 + (f" ({left_out} tunnels seen less recently left out)" if left_out else ""))
    if seen_classes or seen_alerts:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.autofmt_xdate()
    return fig
