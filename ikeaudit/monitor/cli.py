"""Command-line face of monitoring: the options `scan` and `live` share (one decorator,
so the commands only gain a `monitor` argument), and `ikeaudit tunnels`.

`--format` of the decorated command gains the values eve, ecs and zeek.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import re
import sqlite3
import sys
import time
from typing import TYPE_CHECKING

import click

from ikeaudit.cli_common import SENSOR_HELP, sensor_captures
from ikeaudit.monitor.alerts import Rules
from ikeaudit.monitor.sinks import FORMATS, SinkError, parse_sink
from ikeaudit.monitor.state import StateError, StateStore, default_path
from ikeaudit.monitor.syslog import DEFAULT_PEN, SyslogError, SyslogTarget
from ikeaudit.report.views import iso_time

if TYPE_CHECKING:
    from ikeaudit.monitor.service import Monitor

EXIT_USAGE = 2
MEMORY = ":memory:"
MONITOR_FORMATS = FORMATS
_META = "ikeaudit.monitor"


class MonitorError(click.ClickException):
    exit_code = EXIT_USAGE


def _extend_format_choices(func) -> None:
    for param in getattr(func, "__click_params__", []):
        if param.name == "fmt" and isinstance(param.type, click.Choice):
            param.type = click.Choice([*param.type.choices, *(f for f in FORMATS if f not in param.type.choices)])
            param.help = (param.help or "") + " eve, ecs, zeek: events and alerts for a SIEM (see README)."


def _sensor_values(ctx, param, values):
    """scan and report: --sensor NAME=PATH names a sensor's captures (cli_common); a plain
    NAME, at most one, names this sensor for monitoring."""
    plain = sensor_captures(ctx, values)
    if len(plain) > 1:
        raise click.BadParameter(f"{', '.join(plain)}: one monitoring sensor name at most; captures of a "
                                 "sensor are given as NAME=PATH", param_hint="--sensor")
    return plain[0] if plain else None


def monitor_options(command: str):
    """Options of monitoring for `scan` or `live`. The command's signature does not
    change: it finds its monitor with ``scan_monitoring`` / ``open_live_monitor``, and
    the decorator closes it whatever happens."""
    live = command == "live"

    def decorate(func):
        _extend_format_choices(func)

        @functools.wraps(func)
        def wrapper(*args, state, sinks, syslog, syslog_pen, sensor, retention_days, rekey_interval,
                    pq_failure_grace, metrics_port=None, metrics_address="127.0.0.1", **kwargs):  # fmt: skip
            fmt = kwargs.get("fmt")
            stdout_format = fmt if fmt in FORMATS else None
            spec = None
            if live or state or sinks or syslog or stdout_format:
                spec = DeferredMonitor(
                    state=state or (default_path() if live else MEMORY), sinks=sinks, syslog=syslog, pen=syslog_pen,
                    sensor=sensor, retention_days=retention_days, rules=Rules(rekey_interval=rekey_interval,
                    pq_failure_grace=pq_failure_grace), metrics_port=metrics_port,
                    metrics_address=metrics_address, stdout_format=stdout_format)  # fmt: skip
                if not live:  # at once: a bad --sink fails before a long scan
                    spec.open()
            click.get_current_context().meta[_META] = spec
            if spec is None:
                return func(*args, **kwargs)
            with monitor_closing(spec):
                return func(*args, **kwargs)

        options = [
            click.option("--state", default=None, metavar="FILE",
                         help="Tunnel posture history (SQLite): alerts once per change of a tunnel, across "
                              "runs. " + (f"Default: {default_path()} ($XDG_DATA_HOME); ':memory:' keeps "
                                          "nothing." if live else "Opt-in; without it alerts use memory.")),
            click.option("--sink", "sinks", multiple=True, metavar="FORMAT:FILE",
                         help="Also append events and alerts to FILE in FORMAT (eve, ecs, zeek); repeatable. "
                              "SIGHUP reopens the files (log rotation)." if live else
                              "Also write events and alerts to FILE in FORMAT (eve, ecs, zeek); repeatable."),
            click.option("--syslog", default=None, metavar="HOST:PORT[/udp|/tcp]",
                         help="Send alerts as RFC 5424 syslog (TCP: RFC 6587 octet counting)."),
            click.option("--syslog-pen", type=click.IntRange(1, 2**32 - 1), default=DEFAULT_PEN,
                         show_default=True, metavar="N",
                         help="IANA Private Enterprise Number of the structured data ID ikeaudit@N "
                              "(the default is RFC 5612's number for documentation)."),
            click.option("--sensor", default=None, metavar="NAME",
                         help="Name of this sensor in the state and events (default: the host name).")
            if live else
            click.option("--sensor", multiple=True, callback=_sensor_values, metavar="NAME|NAME=PATH",
                         help="NAME: name of this sensor in the state and events (default: the host name). "
                              + SENSOR_HELP),
            click.option("--retention-days", type=click.FloatRange(min=0, min_open=True), default=90.0,
                         show_default=True, metavar="DAYS",
                         help="Forget negotiations older than DAYS before the newest one."),
            click.option("--rekey-interval", type=click.FloatRange(min=1), default=Rules.rekey_interval,
                         show_default=True, metavar="S",
                         help="Expected rekey interval of a tunnel whose own was not seen yet: "
                              "visibility-lost after 1.5 times it without a negotiation."),
            click.option("--pq-failure-grace", type=click.FloatRange(min=0), default=Rules.pq_failure_grace,
                         show_default=True, metavar="S",
                         help="pq-failure when failed post-quantum attempts see no success for S seconds."),
        ]  # fmt: skip
        if live:
            options += [
                click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="N",
                             help="Serve Prometheus metrics on port N (/metrics)."),
                click.option("--metrics-address", default="127.0.0.1", show_default=True, metavar="ADDR",
                             help="Address of the metrics endpoint (0.0.0.0: every interface)."),
            ]  # fmt: skip
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


class DeferredMonitor:
    """The monitor of `live`, opened by the command when it is ready; ``close`` closes
    what was opened, so that the command can hand either this or a Monitor to
    ``monitor_closing``."""

    def __init__(self, **options) -> None:
        self.options = options
        self.monitor: Monitor | None = None

    def open(self) -> Monitor:
        self.monitor = open_monitor(**self.options)
        return self.monitor

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


def open_monitor(*, state: str, sinks: tuple[str, ...], syslog: str | None, pen: int, sensor: str | None,
                 retention_days: float, rules: Rules, metrics_port: int | None, metrics_address: str,
                 stdout_format: str | None) -> Monitor:  # fmt: skip
    # Here: the service loads Prometheus' client and the sinks, which a plain scan never needs.
    from ikeaudit.monitor.service import Monitor, MonitorConfig, default_sensor

    try:
        config = MonitorConfig(state_path=state, retention_days=retention_days, sensor=sensor or default_sensor(),
                               sinks=[parse_sink(s) for s in sinks],
                               syslog=SyslogTarget.parse(syslog) if syslog else None, pen=pen, rules=rules,
                               metrics_port=metrics_port, metrics_address=metrics_address)  # fmt: skip
        return Monitor(config, stdout_format=stdout_format,
                       warn=lambda text: click.echo(f"warning: {text}", err=True))
    except (SinkError, SyslogError, StateError) as exc:
        raise MonitorError(str(exc)) from None
    except OSError as exc:  # the metrics port
        raise MonitorError(f"--metrics-port {metrics_port}: cannot listen on {metrics_address}: "
                           f"{exc.strerror or exc}") from None


def scan_monitoring(document: dict, fmt: str) -> bool:
    """`scan`'s hook: the document's negotiations to the monitor, if the command line
    asked for one; True when the monitor wrote stdout itself (--format eve|ecs|zeek)."""
    spec = click.get_current_context().meta.get(_META)
    if spec is None or spec.monitor is None:
        return False
    spec.monitor.scan(document)
    return fmt in FORMATS


def scan_monitored() -> bool:
    """Whether `scan_monitoring` will want the whole document (a monitor was asked for)."""
    spec = click.get_current_context().meta.get(_META)
    return spec is not None and spec.monitor is not None


def report_monitoring(document: dict) -> list[tuple[str, bytes, str]]:
    """`report`'s hook: the negotiations to the monitor, as `scan` gives them; with a
    --state file, the posture over time of the report's tunnels as a figure
    (stem, PNG, caption) for the report."""
    spec = click.get_current_context().meta.get(_META)
    if spec is None or spec.monitor is None:
        return []
    monitor = spec.monitor
    monitor.scan(document)
    if monitor.state.path == MEMORY:
        return []
    from ikeaudit.report.plots import png
    from ikeaudit.report.posture import posture_timeline

    peers = {tuple(sorted((n["initiator"], n["responder"]))) for n in document["negotiations"]}
    rows = [r for r in tunnel_rows(monitor.state, None, history=True) if (r["peer_a"], r["peer_b"]) in peers]
    alerts = [a for a in monitor.state.alerts() if tuple(a["tunnel"]["peers"]) in peers]
    if not rows:
        return []
    return [("posture", png(posture_timeline(rows, alerts)),
             "Posture of these tunnels over time, from the state history: negotiations by class, alerts")]


def open_live_monitor(capture) -> Monitor:
    """`live`'s hook, once its capture is open (a missing privilege is the first thing to
    say): opens the state and outputs; if they cannot be, closes the capture."""
    spec = click.get_current_context().meta[_META]
    try:
        return spec.open()
    except click.ClickException:
        capture.close()
        raise


def live_negotiation_hook(monitor: Monitor, show, catalog):
    """Each negotiation to the monitor (state, alerts, eve/ecs/zeek, syslog, metrics), and
    to ``show`` (the table or JSONL output) unless the format is one of ours."""
    from ikeaudit.report.views import negotiation_view

    def negotiation(item) -> None:
        if show is not None:
            show(item)
        monitor.negotiation(negotiation_view(item, catalog))

    return negotiation


def attach_live(session, monitor: Monitor, show, catalog, fmt: str) -> None:
    """`live`'s hook on its LiveSession: negotiations and the clock to the monitor."""
    session.on_negotiation = live_negotiation_hook(monitor, None if fmt in FORMATS else show, catalog)
    session.on_tick = lambda now: monitor.live_tick(now, session.status)


@contextlib.contextmanager
def monitor_closing(monitor: Monitor | DeferredMonitor):
    """Close the monitor (Zeek footers, files, sockets, the database); a sink that
    cannot be written becomes a one-line error."""
    try:
        yield monitor
    except (SinkError, StateError, sqlite3.Error) as exc:
        raise MonitorError(f"{exc}") from None
    finally:
        try:
            monitor.close()
        except (SinkError, StateError, sqlite3.Error):
            pass


# ---------------------------------------------------------------------------- tunnels

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TUNNEL_COLUMNS = ["peer_a", "peer_b", "posture", "since", "last_change", "last_seen", "last_class",
                  "negotiations", "rekey_interval_s", "flags", "sensors"]  # fmt: skip


def parse_since(text: str, now: float) -> float:
    """"24h", "7d", "30m", "90s", "2w", or an ISO 8601 date or time (UTC unless given)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a duration (24h, 7d, 30m) or an ISO date",
                                 param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def tunnel_rows(store: StateStore, since: float | None, history: bool = False) -> list[dict]:
    rows = []
    for t in store.tunnels():
        if since is not None and t.last_seen < since:
            continue
        flags = [name for name, on in (("downgraded", t.downgraded), ("pq-failing", t.pq_failing_since is not None),
                                       ("visibility-lost", t.visibility_lost)) if on]  # fmt: skip
        rows.append({
            "peer_a": t.peer_a, "peer_b": t.peer_b, "posture": t.shown_posture,
            "since": iso_time(t.posture_since) if t.posture_since else None,
            "last_change": iso_time(t.last_change) if t.last_change else None,
            "last_seen": iso_time(t.last_seen), "first_seen": iso_time(t.first_seen),
            "last_class": t.last_class, "negotiations": t.negotiations,
            "rekey_interval_s": round(t.rekey_interval) if t.rekey_interval else None,
            "flags": flags, "sensors": list(t.sensors),
            "decided_by": t.decided_by,
        })  # fmt: skip
        if history:  # the posture over time, for a plot or a spreadsheet
            rows[-1]["history"] = [
                {"time": iso_time(n["time"]), "classification": n["classification"], "confidence": n["confidence"],
                 "observation": n["observation"], "spi_i": n["spi_i"], "spi_r": n["spi_r"], "sensor": n["sensor"]}
                for n in store.history((t.peer_a, t.peer_b))]  # fmt: skip
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def render_tunnels(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"tunnels": rows}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(TUNNEL_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in TUNNEL_COLUMNS])
        return out.getvalue().rstrip("\n")
    table = [TUNNEL_COLUMNS] + [[_cell(row[c]) for c in TUNNEL_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(TUNNEL_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(no tunnel)")
    return "\n".join(lines)


@click.command("tunnels")
@click.option("--state", default=None, metavar="FILE",
              help=f"The state database of `live`/`scan --state` (default: {default_path()}).")
@click.option("--since", default=None, metavar="WHEN",
              help="Only tunnels seen since WHEN: a duration back from now (24h, 7d) or an ISO date.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@click.option("--history", is_flag=True, help="With --format json: every stored negotiation of each tunnel "
                                               "(time, class, confidence), its posture over time.")
@click.option("--plot", "plot_prefix", default=None, metavar="PREFIX",
              help="Also draw the posture over time of the tunnels (their negotiations and alerts) "
                   "to PREFIX.png and PREFIX.svg.")
def tunnels(state: str | None, since: str | None, fmt: str, history: bool, plot_prefix: str | None) -> None:
    """List the tunnels of a state database with their current posture (post-quantum,
    classical, unassessed), when it last changed, and open conditions (downgraded,
    pq-failing, visibility-lost).

    \b
    Example:
      ikeaudit tunnels --since 24h
      ikeaudit tunnels --since 30d --plot reports/posture
      ikeaudit tunnels --state /var/lib/ikeaudit/state.sqlite --format json
    """
    import os

    path = state or default_path()
    if not os.path.exists(path):
        raise MonitorError(f"{path}: no state database (write one with `ikeaudit live` or `ikeaudit scan --state`)")
    try:
        store = StateStore(path)
    except StateError as exc:
        raise MonitorError(str(exc)) from None
    try:
        cutoff = parse_since(since, time.time()) if since else None
        rows = tunnel_rows(store, cutoff, history=(history and fmt == "json") or bool(plot_prefix))
        alerts = store.alerts() if plot_prefix else []
    finally:
        store.close()
    if plot_prefix:
        from ikeaudit.report.plots import save
        from ikeaudit.report.posture import posture_timeline

        try:
            save(posture_timeline(rows, alerts), [f"{plot_prefix}.png", f"{plot_prefix}.svg"])
        except OSError as exc:
            raise MonitorError(f"{plot_prefix}: cannot write the plot: {exc.strerror or exc}") from None
        if not (history and fmt == "json"):
            for row in rows:
                row.pop("history", None)
    click.echo(render_tunnels(rows, fmt))
    sys.exit(0)
