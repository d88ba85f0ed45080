"""The Prometheus endpoint of `ikeaudit live --metrics-port N`.

A collector that reports a snapshot the capture loop replaces (so the HTTP thread never
touches the capture or the database): negotiations by class, tunnels by posture, alerts
by kind, packets captured and dropped, IKE datagrams (a counter, and a rate over the
last interval for dashboards without PromQL).
"""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.negotiations: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter()
        self.tunnels: dict[str, int] = {}
        self.capture = {"captured": 0, "dropped_kernel": 0, "dropped_interface": 0, "ike_datagrams": 0}
        self.ike_rate = 0.0
        self._last: tuple[float, int] | None = None
        self.registry.register(self)
        self.server = None

    def serve(self, port: int, address: str) -> None:
        self.server = start_http_server(port, addr=address, registry=self.registry)

    def note_capture(self, captured: int, dropped: int, interface_dropped: int, ike_datagrams: int,
                     now: float | None = None) -> None:  # fmt: skip
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last[0]:
            self.ike_rate = (ike_datagrams - self._last[1]) / (now - self._last[0])
        self._last = (now, ike_datagrams)
        self.capture = {"captured": captured, "dropped_kernel": dropped, "dropped_interface": interface_dropped,
                        "ike_datagrams": ike_datagrams}  # fmt: skip

    def move_tunnel(self, before: str | None, after: str) -> None:
        """A tunnel appeared (before None) or changed posture."""
        tunnels = dict(self.tunnels)
        if before is not None:
            tunnels[before] = max(0, tunnels.get(before, 0) - 1)
        tunnels[after] = tunnels.get(after, 0) + 1
        self.tunnels = tunnels  # replaced whole: the HTTP thread reads one or the other

    def collect(self):
        negotiations = CounterMetricFamily("ikeaudit_negotiations", "IKE negotiations audited, by classification",
                                           labels=["classification"])  # fmt: skip
        for name, count in sorted(self.negotiations.items()):
            negotiations.add_metric([name], count)
        yield negotiations
        alerts = CounterMetricFamily("ikeaudit_alerts", "Alerts raised, by kind", labels=["kind"])
        for kind, count in sorted(self.alerts.items()):
            alerts.add_metric([kind], count)
        yield alerts
        tunnels = GaugeMetricFamily("ikeaudit_tunnels", "Tunnels in the state database, by posture",
                                    labels=["posture"])  # fmt: skip
        for posture, count in sorted(self.tunnels.items()):
            tunnels.add_metric([posture], count)
        yield tunnels
        capture = dict(self.capture)
        yield CounterMetricFamily("ikeaudit_packets_captured", "Packets that passed the capture filter",
                                  value=capture["captured"])  # fmt: skip
        dropped = CounterMetricFamily("ikeaudit_packets_dropped", "Packets lost before ikeaudit read them",
                                      labels=["where"])  # fmt: skip
        dropped.add_metric(["kernel"], capture["dropped_kernel"])
        dropped.add_metric(["interface"], capture["dropped_interface"])
        yield dropped
        yield CounterMetricFamily("ikeaudit_ike_datagrams", "IKE datagrams read", value=capture["ike_datagrams"])
        yield GaugeMetricFamily("ikeaudit_ike_datagrams_per_second",
                                "IKE datagrams per second over the last status interval", value=self.ike_rate)

    def close(self) -> None:
        if self.server is not None and isinstance(self.server, tuple):
            server, _thread = self.server
            server.shutdown()
            server.server_close()
        self.server = None
