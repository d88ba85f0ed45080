"""What every `ikeaudit` command shares: exit codes, the input error, the output and
decoding options, and the wiring from command-line arguments to the pipeline.

Commands (cli.py, cli_report.py, cli_live.py) import this module; it imports none of
them, so each command module can be imported alone.

Exit codes (all commands):
  0  the audit ran; no finding at or above --fail-on
  1  the audit ran; at least one finding at or above --fail-on
  2  usage or input error (missing or unreadable file, not a capture, bad option)
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable

import click

from ikeaudit.classify import SEVERITIES, KeCatalog, PrivateKe
from ikeaudit.cli_keys import keys_option, load_keys  # noqa: F401  (re-exported for the commands)
from ikeaudit.decrypt import KeyTable
from ikeaudit.extract import undecoded
from ikeaudit.pipeline import CaptureAudit, Streamed, audit_captures
from ikeaudit.sources import CaptureError, expand_capture_args
from ikeaudit.track import DEFAULT_MAX_STATE_MB

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
DEFAULT_REKEY_WINDOW = 300.0  # seconds: a few minutes, longer than any rekey's own exchange


class InputError(click.ClickException):
    """A file that cannot be audited: one line on stderr, exit code 2 (click's own usage
    errors already exit with 2)."""

    exit_code = EXIT_USAGE


def parse_private_ke(values: tuple[str, ...]) -> dict[int, PrivateKe]:
    """--private-ke 1081=kyber768[:pq|classical]"""
    named: dict[int, PrivateKe] = {}
    for value in values:
        ident, sep, rest = value.partition("=")
        name, _, kind = rest.partition(":")
        try:
            method_id = int(ident, 0)
        except ValueError:
            method_id = -1
        if not sep or not name or not 1024 <= method_id <= 65535 or kind not in ("", "pq", "classical"):
            raise click.BadParameter(f"{value!r}: expected ID=NAME or ID=NAME:pq|classical with "
                                     "ID a private-use KE method id (1024..65535)",
                                     param_hint="--private-ke")
        named[method_id] = PrivateKe(name, kind or None)
    return named


def private_ke_option(func):
    return click.option("--private-ke", "private_ke", multiple=True, metavar="ID=NAME[:pq|classical]",
                        help="Name a private-use KE method id (e.g. a vendor's pre-standard Kyber: "
                             "1081=kyber768:pq). Without ':pq' or ':classical' it stays unknown.")(func)


def fail_on_option(func):
    return click.option("--fail-on", type=click.Choice(["none", *SEVERITIES]), default="none",
                        show_default=True,
                        help="Exit with 1 when a finding (or policy verdict) of this severity or worse "
                             "is found.")(func)


def vxlan_option(func):
    """--vxlan-port: kept in click's context for run_audit, so commands need no parameter."""
    def remember(ctx, param, ports):
        ctx.meta["ikeaudit.vxlan_ports"] = ports
    return click.option("--vxlan-port", "vxlan_ports", type=click.IntRange(1, 65535), multiple=True,
                        expose_value=False, callback=remember, metavar="PORT",
                        help="Also read UDP PORT as VXLAN (4789 always is): a mirror or overlay on "
                             "another port, e.g. Linux's default 8472. Repeat for several.")(func)


def max_state_option(func):
    """--max-state-mb: kept in click's context for run_audit, as --vxlan-port."""
    def remember(ctx, param, megabytes):
        ctx.meta["ikeaudit.max_state_mb"] = megabytes
    return click.option("--max-state-mb", type=click.IntRange(min=1), default=DEFAULT_MAX_STATE_MB,
                        show_default=True, expose_value=False, callback=remember, metavar="MB",
                        help="Bound on the IKE SAs held in flight, in estimated megabytes (about 4 KiB an SA "
                             "and 2 KiB a datagram it holds, an estimate that errs high); past it the SA idle "
                             "the longest is closed early with an 'overflow' anomaly. The default holds "
                             "240,000 SAs of 11 datagrams (a lab handshake on average).")(func)


def rotated_option(func):
    return click.option("--rotated", is_flag=True,
                        help="The captures are one capture cut by a rotation, whatever their names: track "
                             "them as one, in time order. Without it, files are joined only when their names "
                             "are those of a tcpdump -C/-W/-G or dumpcap -b rotation.")(func)


def rekey_window_option(func):
    return click.option(
        "--rekey-window", "rekey_window", type=click.FloatRange(min=0.0), default=DEFAULT_REKEY_WINDOW,
        show_default=True, metavar="SECONDS",
        help="Longest gap between a CREATE_CHILD_SA and an IKE SA met mid-stream between the same "
             "peers for the two to be linked as a rekey (an inference, checked by sizes); 0 links "
             "none. Set it to the longest rekey interval your gateways use.")(func)


def output_options(renderers):
    """--format (one of renderers), --private-ke, --fail-on."""
    def decorate(func):
        func = fail_on_option(func)
        func = private_ke_option(func)
        return click.option("--format", "fmt", type=click.Choice(list(renderers)), default="table",
                            show_default=True, help="Output format.")(func)
    return decorate


def run_audit(captures: tuple[str, ...], catalog: KeCatalog, *, jobs: int = 1, esp: bool = True,
              keys: KeyTable | None = None, rekey_window: float | None = None,
              rotated: bool = False, on_negotiation: Streamed | None = None) -> list[CaptureAudit]:
    """Audit the captures named on the command line. A progress bar (bytes read) goes to
    stderr when it is a terminal, from one second into the scan on, so that short scans
    stay quiet; never to stdout. esp=False skips native ESP, for commands not showing it.
    Input that cannot be read is an InputError; damage that was read around is one
    warning line per capture on stderr. on_negotiation streams (pipeline.audit_captures)."""
    context = click.get_current_context(silent=True)
    meta = context.meta if context is not None else {}
    options = dict(jobs=jobs, esp=esp, keys=keys, rotated=rotated, vxlan_ports=meta.get("ikeaudit.vxlan_ports", ()),
                   max_state_mb=meta.get("ikeaudit.max_state_mb", DEFAULT_MAX_STATE_MB), on_negotiation=on_negotiation)
    if rekey_window is not None:
        options["rekey_window"] = rekey_window
    try:
        paths = expand_capture_args(captures)
        if not paths:
            click.echo(f"warning: no capture file in {', '.join(captures)}", err=True)
        if not paths or not sys.stderr.isatty():
            audits = audit_captures(paths, catalog, **options)
        else:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
            total = sum(os.path.getsize(path) for path in paths)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, delay=1.0,
                      leave=False, dynamic_ncols=True, desc="scanning") as bar:  # fmt: skip
                audits = audit_captures(paths, catalog, progress=bar.update, **options)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    for audit in audits:
        warning = input_warning(audit)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    return audits


def input_warning(audit: CaptureAudit) -> str | None:
    """One line on what in the capture could not be read or decoded, if anything."""
    damage = next((a.detail for a in audit.anomalies if a.kind == "capture"), None)
    kinds = Counter(a.kind for a in audit.anomalies if a.kind != "capture")
    kinds.update(a.kind for item in audit.negotiations for a in item.negotiation.anomalies)
    kinds.update(audit.negotiation_anomalies)  # those streamed
    kinds["malformed IKE"] = len(audit.malformed)
    counted = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()) if count)
    unread = undecoded(audit.stats)
    if damage is None and not counted and not unread:
        return None
    parts = [f"damaged capture, read up to the damage: {damage}"] if damage else []
    parts += [unread] if unread else []
    if counted:
        parts.append(f"input anomalies ({counted}), listed in the output")
    return f"{audit.capture}: " + "; ".join(parts)


def exit_code(document: dict, fail_on: str) -> int:
    """EXIT_FINDINGS when a negotiation's finding, or a document-wide finding (unanswered
    traffic, reflection floods), is at or above fail_on."""
    findings = [f for n in document["negotiations"] for f in n["findings"]]
    findings += document.get("findings", [])
    return exit_code_of((f["severity"] for f in findings), fail_on)


def exit_code_of(severities: Iterable[str], fail_on: str) -> int:
    """EXIT_FINDINGS when one of the findings' severities is at or above fail_on."""
    if fail_on == "none":
        return EXIT_OK
    threshold = SEVERITIES.index(fail_on)
    if any(SEVERITIES.index(severity) >= threshold for severity in severities):
        return EXIT_FINDINGS
    return EXIT_OK
