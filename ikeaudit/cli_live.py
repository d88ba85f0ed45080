"""`ikeaudit live`: audit the IKE negotiations crossing a network interface as they happen.

Registered on the `ikeaudit` group by cli.py. The command only parses
options, opens the capture and the outputs, and formats what ikeaudit.live hands it:
the stages are the offline ones, composed by live.LiveAuditor.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from ikeaudit.classify import KeCatalog
from ikeaudit.cli_common import EXIT_OK, EXIT_USAGE, keys_option, load_keys, parse_private_ke, rekey_window_option
from ikeaudit.live import (
    DEFAULT_HISTORY,
    DEFAULT_QUEUE_FRAMES,
    CaptureStats,
    LiveAuditor,
    LiveCapture,
    LiveCaptureError,
    LiveSession,
    LiveStatus,
    PcapWriter,
    combined_filter,
    write_atomically,
)
from ikeaudit.monitor.cli import attach_live, monitor_options, open_live_monitor
from ikeaudit.pipeline import AuditedNegotiation, CaptureAudit
from ikeaudit.report import machine, text, views

REPORT_NAME = "live-report.json"
PROG = "ikeaudit live"
# Streaming rows cannot be measured first: fixed widths that fit IPv4 peers and the
# usual method names; longer cells push the rest of their row right.
WIDTHS = [23, 33, 33, 21, 18, 28, 22, 0]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGHUP reopens the --sink files (log rotation)


class LiveError(click.ClickException):
    """Cannot start (no such interface, no privilege, bad filter, unwritable output):
    one line on stderr, exit code 2."""

    exit_code = EXIT_USAGE


def _row(cells: list[str]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def _classes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _shed_text(shed: dict[str, int]) -> str:
    if not shed:
        return "nothing shed"
    return "WARNING: behind the capture, shed " + ", ".join(f"{count} {what}" for what, count in shed.items())


def _status_line(status: LiveStatus) -> str:
    cap = status.capture
    return (f"{PROG}: {status.elapsed:.0f} s: {status.frames} packet(s) captured, "
            f"{status.ike_datagrams} IKE datagram(s), {status.negotiations} negotiation(s) "
            f"({_classes(status.by_classification)}), dropped {cap.dropped} "
            f"(interface {cap.interface_dropped}), {cap.pending} waiting in the buffer, queue high-water "
            f"{status.queue_high_water}" + (f"; {_shed_text(status.shed)}" if status.shed else ""))  # fmt: skip


@click.command("live")
@monitor_options("live")
@click.option("-i", "--interface", required=True, metavar="IFACE",
              help="Network interface to capture on (a span/mirror port, a veth, lo, ...).")
@click.option("--bpf", default=None, metavar="EXPR",
              help="Capture filter ANDed with the built-in IKE filter, e.g. 'host 192.0.2.1'. "
                   "It can only narrow what is captured.")
@click.option("--esp", "with_esp", is_flag=True,
              help="Also capture native ESP (IP protocol 50) to count the traffic each IKE SA "
                   "protects; more packets then reach Python.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N captured packets (packets that passed the filter).")
@click.option("--write", "write_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.pcap",
              help="Keep the captured packets (those that passed the filter) in a pcap file "
                   "that 'ikeaudit scan' reads; frame numbers in the report refer to it.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True,
              help="How each negotiation is printed on stdout as it completes: a table row, or "
                   "one JSON object a line (the 'ikeaudit scan --format jsonl' fields).")
@click.option("--report-every", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S", help="Every S seconds, rewrite DIR/live-report.json (needs -o).")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help=f"Write DIR/{REPORT_NAME} (the scan JSON document plus a 'live' section) at "
                   "the start, every --report-every seconds, and in full when the capture stops.")
@click.option("--status-every", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="S", help="Print a status line on stderr every S seconds (0: never).")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, metavar="S",
              help="Report a negotiation without an outcome after S seconds of silence.")
@click.option("--buffer-mib", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Kernel capture buffer; raise it if packets are dropped.")
@click.option("--queue-frames", type=click.IntRange(1, 10_000_000), default=DEFAULT_QUEUE_FRAMES,
              show_default=True, metavar="N",
              help="Packets captured and waiting for the audit, at most. From half full, "
                   "INFORMATIONAL messages and retransmissions are shed; from three quarters, "
                   "encrypted payloads are not decrypted either (counted, and told in the "
                   "negotiations concerned).")
@click.option("--history", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_HISTORY,
              show_default=True, metavar="S",
              help="Seconds of capture time a negotiation handed out stays in memory after its last "
                   "message (in the periodic and final reports, as a rekey's parent); memory grows "
                   "with the rate of new negotiations times S. The JSON lines and the report's "
                   "counters keep every one.")
@click.option("--policy", "policy_name", default=None, metavar="NAME|FILE",
              help="Judge each negotiation against a policy preset or TOML file (see `ikeaudit "
                   "report --help`); verdicts go into each row or JSON line and the report.")
@click.option("--private-ke", "private_ke", multiple=True, metavar="ID=NAME[:pq|classical]",
              help="Name a private-use KE method id, as for 'ikeaudit scan'.")
@keys_option
@rekey_window_option
def live(interface: str, bpf: str | None, with_esp: bool, duration: float | None, count: int | None,
         write_path: str | None, fmt: str, report_every: float | None, output_dir: str | None,
         status_every: float, idle_timeout: float, buffer_mib: int, queue_frames: int, history: float,
         policy_name: str | None,
         private_ke: tuple[str, ...], key_files: tuple[str, ...], rekey_window: float) -> None:  # fmt: skip
    """Audit the IKE negotiations on a network interface as they happen: each one is
    printed (or emitted as a JSON line) when its handshake completes, fails or goes
    idle. Ctrl-C or SIGTERM stops the capture, reports what was in flight, writes the
    final report and pcap, and exits 0. Packets the kernel or the interface dropped are
    counted on stderr and in the report.

    Only IKE (UDP 500/4500, TCP 4500, IPv4 and IPv6, VLAN-tagged too) and IP fragments
    pass the kernel filter, so span traffic stays out of Python. Needs root or the
    CAP_NET_RAW and CAP_NET_ADMIN capabilities.

    Each tunnel's posture is kept in --state across runs; alerts (fallback,
    new-classical-tunnel, downgrade, pq-failure, visibility-lost) go with the events to
    --format eve|ecs|zeek, --sink files, --syslog and --metrics-port. SIGHUP reopens the
    --sink files.

    \b
    Example:
      sudo ikeaudit live -i eth1 --format jsonl >> /var/log/ikeaudit.jsonl
      sudo ikeaudit live -i eth1 --bpf 'host 192.0.2.1' --write span.pcap \\
           --report-every 300 -o /srv/ikeaudit
      ikeaudit live -i eth1 --sink eve:/var/log/ikeaudit/eve.json \\
           --syslog siem.example:6514/tcp --metrics-port 9500
    """
    if report_every is not None and output_dir is None:
        raise click.UsageError("--report-every needs -o DIR, the folder to write the report to")
    catalog = KeCatalog(parse_private_ke(private_ke))
    keys = load_keys(key_files)
    judge = _Judge(policy_name, catalog)
    report_path = _prepare_output_dir(output_dir)
    capture_filter = combined_filter(bpf, esp=with_esp)
    try:
        capture = LiveCapture(interface, capture_filter, buffer_bytes=buffer_mib << 20)
    except LiveCaptureError as exc:
        raise LiveError(str(exc)) from None
    monitor = open_live_monitor(capture)  # state, alerts and their outputs (ikeaudit/monitor)
    try:
        writer = PcapWriter(write_path, capture.linktype) if write_path else None
    except OSError as exc:
        capture.close()
        raise LiveError(f"{write_path}: cannot write the capture: {exc.strerror or exc}") from None
    name = f"live:{interface}"
    auditor = LiveAuditor(name, catalog, idle_timeout=idle_timeout, keys=keys, rekey_window=rekey_window,
                          history=history)
    output = _Output(fmt, catalog, judge)
    started = time.time()
    reporter = _Reporter(report_path, catalog, judge, interface, capture_filter, capture.linktype,
                         write_path, started) if report_path else None  # fmt: skip
    session = LiveSession(capture, auditor, on_negotiation=output.negotiation,
                          on_status=_print_status, on_report=reporter.write if reporter else None,
                          writer=writer, duration=duration, count=count,
                          status_every=status_every or None, report_every=report_every,
                          queue_frames=queue_frames)  # fmt: skip
    attach_live(session, monitor, output.negotiation, catalog, fmt)
    if reporter:
        _guarded_report(reporter, auditor.snapshot(), session.status())
    click.echo(f"{PROG}: listening on {interface} ({capture.linktype_name}, link type "
               f"{capture.linktype}); filter: {capture_filter}", err=True)
    output.start()

    def stop(signum, _frame) -> None:
        session.stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda _s, _f: monitor.request_reopen())
    try:
        audit = session.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    output.end(audit, catalog)
    _final_lines(session, audit, writer, report_path)
    if session.error:
        raise LiveError(session.error)
    sys.exit(EXIT_OK)


def _prepare_output_dir(output_dir: str | None) -> str | None:
    if output_dir is None:
        return None
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise LiveError(f"{output_dir}: cannot create the report folder: {exc.strerror or exc}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise LiveError(f"{output_dir}: the report folder is not writable")
    return os.path.join(output_dir, REPORT_NAME)


def _print_status(status: LiveStatus) -> None:
    if not status.final:
        click.echo(_status_line(status), err=True)


class _Judge:
    """The policy verdicts of each negotiation, when --policy was given."""

    def __init__(self, policy_name: str | None, catalog: KeCatalog) -> None:
        from ikeaudit.policy import PolicyError, load_policy

        self.catalog = catalog
        try:
            self.policy = load_policy(policy_name) if policy_name else None
        except PolicyError as exc:
            raise LiveError(str(exc)) from None

    def annotate(self, view: dict, item: AuditedNegotiation) -> dict:
        if self.policy is None:
            return view
        from ikeaudit.policy import evaluate, worst

        verdicts = evaluate(self.policy, item, catalog=self.catalog)
        top = worst(verdicts)
        view["verdicts"] = [v.as_dict() for v in verdicts]
        view["policy_outcome"] = top.outcome if top else None
        return view


class _Output:
    """stdout: one table row or one JSON line per negotiation, flushed at once."""

    def __init__(self, fmt: str, catalog: KeCatalog, judge: _Judge) -> None:
        self.fmt = fmt
        self.catalog = catalog
        self.judge = judge

    def start(self) -> None:
        if self.fmt == "table":
            rule = ["-" * w for w in WIDTHS[:-1]] + ["-" * 5]
            try:
                self._write(_row(text.HEADERS) + "\n" + _row(rule) + "\n")
            except BrokenPipeError:
                pass  # the first negotiation will find the reader gone and stop the capture

    def negotiation(self, item: AuditedNegotiation) -> None:
        view = self.judge.annotate(views.negotiation_view(item, self.catalog), item)
        if self.fmt == "jsonl":
            self._write(machine.render_jsonl({"negotiations": [view]}))
            return
        lines = [_row(text.row(view))]
        lines += [f"   ! {view['spi_i']}: {f['severity']} {f['code']}: {f['detail']}"
                  for f in view["findings"] if f["severity"] in ("high", "critical")]
        lines += [f"   ! {view['spi_i']}: policy {v['outcome']} {v['rule']}: {v['detail']}"
                  for v in view.get("verdicts", []) if v["outcome"] == "fail"]
        self._write("\n".join(lines) + "\n")

    def end(self, audit: CaptureAudit, catalog: KeCatalog) -> None:
        if self.fmt != "table":
            return
        document = views.scan_document([audit], catalog)
        lines = []
        for a in document["captures"][0]["anomalies"]:
            frame = f" (frame {a['frame']})" if a["frame"] is not None else ""
            lines.append(f"   ~ {a['kind']}{frame}: {a['detail']}")
        summary = document["summary"]
        lines.append(f"{summary['negotiations']} negotiation(s), {summary['ike_sas_established']} IKE "
                     f"SA(s) established: {_classes(summary['by_classification'])}")
        try:
            self._write("\n".join(lines) + "\n")
        except BrokenPipeError:
            pass

    @staticmethod
    def _write(data: str) -> None:
        sys.stdout.write(data)
        sys.stdout.flush()


class _Reporter:
    """DIR/live-report.json, replaced atomically each time."""

    def __init__(self, path: str, catalog: KeCatalog, judge: _Judge, interface: str,
                 capture_filter: str, linktype: int, write_path: str | None,
                 started: float) -> None:  # fmt: skip
        self.path = path
        self.catalog = catalog
        self.judge = judge
        self.live = {"interface": interface, "filter": capture_filter, "linktype": linktype,
                     "pcap": write_path, "started": views.iso_time(started)}  # fmt: skip

    def write(self, audit: CaptureAudit, status: LiveStatus) -> None:
        document = views.scan_document([audit], self.catalog)
        for view, item in zip(document["negotiations"], audit.negotiations):
            self.judge.annotate(view, item)
        cap = status.capture
        document["live"] = {
            **self.live,
            "updated": views.iso_time(time.time()),
            "elapsed_seconds": round(status.elapsed, 3),
            "final": status.final,
            "stopped_by": status.stopped_by,
            "packets_captured": status.frames,
            "capture": {"received": cap.received, "dropped": cap.dropped,
                        "interface_dropped": cap.interface_dropped, "pending": cap.pending},
            "queue_high_water": status.queue_high_water,
            "shed": status.shed,
        }  # fmt: skip
        write_atomically(self.path, machine.render_json(document))


def _guarded_report(reporter: _Reporter, audit: CaptureAudit, status: LiveStatus) -> None:
    try:
        reporter.write(audit, status)
    except OSError as exc:
        raise LiveError(f"{reporter.path}: cannot write the report: {exc.strerror or exc}") from None


def _final_lines(session: LiveSession, audit: CaptureAudit, writer: PcapWriter | None,
                 report_path: str | None) -> None:  # fmt: skip
    stats = audit.stats
    capture = CaptureStats(stats["capture_received"], stats["capture_dropped"],
                           stats["capture_interface_dropped"], stats["capture_unread"])
    status = session.status(final=True, capture=capture)
    reason = session.stopped_by or "stopped"
    click.echo(f"{PROG}: stopped ({reason}) after {status.elapsed:.1f} s: {status.frames} packet(s) "
               f"captured, {status.ike_datagrams} IKE datagram(s), {len(audit.negotiations)} "
               f"negotiation(s) ({_classes(status.by_classification)})", err=True)
    cap = status.capture
    lost = cap.dropped + cap.interface_dropped + cap.pending
    warning = "WARNING: packets were lost; " if lost else ""
    click.echo(f"{PROG}: {warning}dropped {cap.dropped} packet(s) in the kernel or libpcap, "
               f"{cap.interface_dropped} by the interface, {cap.pending} unread at the stop "
               f"({cap.received} passed the filter)", err=True)
    click.echo(f"{PROG}: queue high-water mark {status.queue_high_water} packet(s); "
               f"{_shed_text(status.shed)}", err=True)
    written = []
    if writer is not None:
        written.append(f"{writer.path} ({writer.frames} packets)")
    if report_path:
        written.append(report_path)
    if written:
        click.echo(f"{PROG}: wrote {', '.join(written)}", err=True)

