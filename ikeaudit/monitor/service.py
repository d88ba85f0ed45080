"""The Monitor: each negotiation's view in, posture history, alerts and events out.

Used alike by `scan` (every negotiation of the captures, in time order, then the end
of input) and `live` (each negotiation as it completes, and a clock tick), so that a
scan over historical captures alerts as live would have.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field

from ikeaudit.monitor.alerts import Alert, Rules, Seen, new_tunnel, observe, seen_again, tick
from ikeaudit.monitor.events import Event, alert_event, negotiation_event
from ikeaudit.monitor.metrics import Metrics
from ikeaudit.monitor.sinks import Sink, SinkError
from ikeaudit.monitor.state import StateStore
from ikeaudit.monitor.syslog import DEFAULT_PEN, SyslogSender, SyslogTarget
from ikeaudit.monitor.syslog import message as syslog_message

TICK_EVERY = 1.0  # seconds of wall clock between live's capture counters for /metrics
# The rules that wait (pq-failure, visibility-lost) wait minutes; their clock visits every
# tunnel, so it runs at most every RULES_TICK_EVERY seconds and never more than a
# twentieth of the time (a gateway with 40,000 tunnels spent 18 % of live's time in it).
RULES_TICK_EVERY = 10.0
EXPIRE_EVERY = 3600.0


def default_sensor() -> str:
    return socket.gethostname() or "local"


@dataclass
class MonitorConfig:
    state_path: str = ":memory:"
    retention_days: float = 90.0
    sensor: str = field(default_factory=default_sensor)
    sinks: list[tuple[str, str]] = field(default_factory=list)
    syslog: SyslogTarget | None = None
    pen: int = DEFAULT_PEN
    rules: Rules = field(default_factory=Rules)
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"


class Monitor:
    """Opens the state, sinks, syslog and metrics of a config; ``stdout_format`` also
    writes events on ``stream`` in that format (eve, ecs or zeek)."""

    def __init__(self, config: MonitorConfig, stdout_format: str | None = None, stream=None,
                 warn=None) -> None:  # fmt: skip
        self.config = config
        self.warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
        self._sinks: list[Sink] = []
        self._reopen_requested = False
        self._last_tick = float("-inf")
        self._next_rules_tick = float("-inf")
        self._last_expire = float("-inf")
        self.metrics: Metrics | None = None
        self.syslog: SyslogSender | None = None
        self.state = StateStore(config.state_path, config.retention_days)
        try:
            if stdout_format:
                self._sinks.append(Sink(stdout_format, stream=stream or sys.stdout))
            for fmt, path in config.sinks:
                self._sinks.append(Sink(fmt, path))
            if config.syslog is not None:
                self.syslog = SyslogSender(config.syslog, warn=self.warn)
            if config.metrics_port is not None:
                self.metrics = Metrics()
                self.metrics.tunnels = dict(self.state.postures())
                self.metrics.serve(config.metrics_port, config.metrics_address)
        except BaseException:
            self.close()
            raise

    # -- input -------------------------------------------------------------------------
    def negotiation(self, view: dict) -> list[Alert]:
        """One negotiation (its JSON view); returns the alerts it raised."""
        self._maybe_reopen()
        seen = Seen.from_view(view)
        sensor = self.config.sensor
        alerts: list[Alert] = []
        with self.state.transaction():
            tunnel = self.state.tunnel(seen.peers)
            before = tunnel.shown_posture if tunnel else None
            if self.state.add_negotiation(seen, sensor):
                tunnel = tunnel or new_tunnel(seen)
                alerts = [a for a in observe(tunnel, seen, sensor, self.config.rules) if self.state.add_alert(a)]
                self.state.save(tunnel)
            elif tunnel is not None:  # seen before: still a sign of life
                seen_again(tunnel, seen)
                self.state.save(tunnel)
        posture = tunnel.shown_posture if tunnel else "unassessed"
        self._emit(negotiation_event(view, seen, sensor, posture))
        if self.metrics is not None:
            self.metrics.negotiations[seen.classification] += 1
            if tunnel is not None and before != posture:
                self.metrics.move_tunnel(before, posture)
        self._raise(alerts)
        return alerts

    def scan(self, document: dict) -> list[Alert]:
        """Every negotiation of a scan document in time order, then the end of input."""
        views = sorted(document["negotiations"], key=lambda v: (v["first_seen"], v["spi_i"]))
        alerts = [a for view in views for a in self.negotiation(view)]
        end = max((Seen.from_view(v).last_seen for v in views), default=None)
        if end is not None:
            alerts += self.tick(end, end_of_input=True)
        return alerts

    def tick(self, now: float, *, end_of_input: bool = False) -> list[Alert]:
        """The rules' clock (capture time) moved to ``now``."""
        self._maybe_reopen()
        alerts: list[Alert] = []
        with self.state.transaction():
            for tunnel in self.state.tunnels():
                raised = tick(tunnel, now, self.config.sensor, self.config.rules, end_of_input=end_of_input)
                if raised:
                    alerts += [a for a in raised if self.state.add_alert(a)]
                    self.state.save(tunnel)
            if now - self._last_expire >= EXPIRE_EVERY:
                self._last_expire = now
                if self.state.expire() and self.metrics is not None:
                    self.metrics.tunnels = dict(self.state.postures())
        self._raise(alerts)
        return alerts

    def live_tick(self, now: float, status=None) -> None:
        """From the live loop, often: the rules' clock once a second, and the capture
        counters for /metrics (``status``: a callable returning the session's LiveStatus)."""
        wall = time.monotonic()
        if wall - self._last_tick < TICK_EVERY:
            return
        self._last_tick = wall
        if self.metrics is not None and status is not None:
            status = status()
            cap = status.capture
            self.metrics.note_capture(status.frames, cap.dropped, cap.interface_dropped, status.ike_datagrams)
        if wall >= self._next_rules_tick:
            self.tick(now)
            took = time.monotonic() - wall
            self._next_rules_tick = wall + max(RULES_TICK_EVERY, 20 * took)

    # -- output ------------------------------------------------------------------------
    def _raise(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            event = alert_event(alert)
            self._emit(event)
            if self.syslog is not None:
                self.syslog.send(syslog_message(event, pen=self.config.pen, procid=os.getpid()))
            if self.metrics is not None:
                self.metrics.alerts[alert.kind] += 1

    def _emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink.write(event)
            except SinkError as exc:
                # A full disk must not stop the capture nor the other outputs: counted,
                # and said once per sink on stderr.
                sink.failed += 1
                if sink.failed == 1:
                    self.warn(f"{exc}; further events to it are lost until it can be written")

    def request_reopen(self) -> None:
        """Safe from a signal handler: the files are reopened before the next write."""
        self._reopen_requested = True

    def _maybe_reopen(self) -> None:
        if self._reopen_requested:
            self._reopen_requested = False
            for sink in self._sinks:
                sink.reopen()

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks = []
        if self.syslog is not None:
            self.syslog.close()
        if self.metrics is not None:
            self.metrics.close()
        self.state.close()
