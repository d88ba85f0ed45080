"""The `ikeaudit` command line.

Exit codes (all commands):
  0  the audit ran; no finding at or above --fail-on
  1  the audit ran; at least one finding at or above --fail-on
  2  usage or input error (missing or unreadable file, not a capture, bad option)

A capture that is damaged (cut in the middle of a record, a bad block) or holds frames
that did not decode (snaplen cuts, malformed IKE) is still audited as far as it reads:
one warning line per file on stderr, the details as anomalies in the output, and the
exit code as above. A folder without any capture in it is a warning too.
"""

from __future__ import annotations

import sys
from collections import Counter

import click

from ikeaudit import __version__
from ikeaudit.classify import SEVERITIES, KeCatalog, PrivateKe
from ikeaudit.cli_keys import keys_option, load_keys
from ikeaudit.decrypt import KeyTable
from ikeaudit.mtu import DEFAULT_MTUS, what_if
from ikeaudit.pipeline import CaptureAudit, audit_captures
from ikeaudit.report import machine, mtu_text, text, views
from ikeaudit.sources import CaptureError, expand_capture_args

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
RENDERERS = {
    "table": text.render,
    "json": machine.render_json,
    "jsonl": machine.render_jsonl,
    "csv": machine.render_csv,
}


class InputError(click.ClickException):
    """A file that cannot be audited: one line on stderr, exit code 2 (click's own usage
    errors already exit with 2)."""

    exit_code = EXIT_USAGE


def _parse_private_ke(values: tuple[str, ...]) -> dict[int, PrivateKe]:
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


def output_options(func):
    func = click.option("--fail-on", type=click.Choice(["none", *SEVERITIES]), default="none",
                        show_default=True,
                        help="Exit with 1 when a finding of this severity or worse is found.")(func)
    func = click.option("--private-ke", "private_ke", multiple=True, metavar="ID=NAME[:pq|classical]",
                        help="Name a private-use KE method id (e.g. a vendor's pre-standard Kyber: "
                             "1081=kyber768:pq). Without ':pq' or ':classical' it stays unknown.")(func)
    func = click.option("--format", "fmt", type=click.Choice(list(RENDERERS)), default="table",
                        show_default=True, help="Output format.")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ikeaudit")
def main() -> None:
    """Audit IKEv2 handshakes in packet captures: did each tunnel really negotiate ML-KEM?"""


from ikeaudit.monitor.cli import monitor_options, scan_monitoring, tunnels  # noqa: E402
main.add_command(tunnels)  # continuous monitoring: ikeaudit/monitor/


@main.command()
@monitor_options("scan")
@click.argument("captures", nargs=-1, required=True)
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Work in N processes: N capture files read at once (a single file is read in "
                   "one while another dissects); the output is the same as with 1.")
@keys_option
@output_options
def scan(captures: tuple[str, ...], jobs: int, key_files: tuple[str, ...], fmt: str,
         private_ke: tuple[str, ...], fail_on: str) -> None:
    """Find and classify every IKE negotiation in CAPTURES (files, folders or globs;
    pcap or pcapng, gzip-compressed too).

    Only frames that can carry IKE are decoded: libpcap's BPF filter drops the rest in C
    (without libpcap every frame is decoded in Python, with the same result). Captures
    given together are read as one when they follow each other in time, so an IKE SA
    split by a capture rotation is one negotiation. A progress bar shows on stderr when
    it is a terminal and the scan is long.

    \b
    Example:
      ikeaudit scan pcaps/
      ikeaudit scan 'span-*.pcapng.gz' --jobs 4 --format json > audit.json
      ikeaudit scan lab.pcap --keys lab.keys
      ikeaudit scan old-spans/ --state tunnels.sqlite --format eve > eve.json
    """
    catalog = KeCatalog(_parse_private_ke(private_ke))
    audits = _audit(captures, catalog, jobs=jobs, esp=False, keys=load_keys(key_files))
    document = views.scan_document(audits, catalog)
    if scan_monitoring(document, fmt):  # --state, --sink, --syslog; it wrote --format eve|ecs|zeek
        sys.exit(exit_code(document, fail_on))
    if fmt == "json":  # written a negotiation at a time: a flood makes a large document
        for piece in machine.iter_json(document):
            sys.stdout.write(piece)
    else:
        click.echo(RENDERERS[fmt](document), nl=fmt == "table")
    sys.exit(exit_code(document, fail_on))


def _audit(captures: tuple[str, ...], catalog: KeCatalog, *, jobs: int = 1, esp: bool = True,
           keys: KeyTable | None = None) -> list[CaptureAudit]:
    """Audit the captures named on the command line. A progress bar (bytes read) goes to
    stderr when it is a terminal, from one second into the scan on, so that short scans
    stay quiet; never to stdout. esp=False skips native ESP, for commands not showing it."""
    import os

    try:
        paths = expand_capture_args(captures)
        if not paths:
            click.echo(f"warning: no capture file in {', '.join(captures)}", err=True)
        if not paths or not sys.stderr.isatty():
            audits = audit_captures(paths, catalog, jobs=jobs, esp=esp, keys=keys)
        else:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
            total = sum(os.path.getsize(path) for path in paths)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, delay=1.0,
                      leave=False, dynamic_ncols=True, desc="scanning") as bar:  # fmt: skip
                audits = audit_captures(paths, catalog, jobs=jobs, esp=esp, progress=bar.update, keys=keys)
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
    kinds["malformed IKE"] = len(audit.malformed)
    counted = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()) if count)
    if damage is None and not counted:
        return None
    parts = [f"damaged capture, read up to the damage: {damage}"] if damage else []
    if counted:
        parts.append(f"input anomalies ({counted}), listed in the output")
    return f"{audit.capture}: " + "; ".join(parts)


def _check_mtu(ctx, param, values):
    for value in values or ():
        if not 576 <= value <= 65535:
            raise click.BadParameter(f"{value}: a path MTU is between 576 and 65535 bytes")
    return values


@main.command()
@click.argument("captures", nargs=-1, required=True)
@click.option("--mtu", "mtus", type=int, multiple=True, callback=_check_mtu, metavar="BYTES",
              help=f"Path MTU to test; repeat for several (default: {', '.join(map(str, DEFAULT_MTUS))}).")
@click.option("--fragment-size", type=int, default=None, metavar="BYTES",
              callback=lambda ctx, p, v: _check_mtu(ctx, p, (v,))[0] if v is not None else None,
              help="IKE fragment size (largest IP datagram of an SKF fragment) for the what-if; "
                   "default: the path MTU itself.")
@click.option("--plot", "plot_prefix", type=click.Path(dir_okay=False), default=None, metavar="PREFIX",
              help="Also draw message sizes against the MTUs to PREFIX.png and PREFIX.svg.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Work in N processes: N capture files read at once (a single file is read in "
                   "one while another dissects); the output is the same as with 1.")
@keys_option
@output_options
def mtu(captures: tuple[str, ...], mtus: tuple[int, ...], fragment_size: int | None,
        plot_prefix: str | None, jobs: int, key_files: tuple[str, ...], fmt: str,
        private_ke: tuple[str, ...], fail_on: str) -> None:
    """Show what each negotiation's message sizes do on the wire: IP and IKE
    fragmentation observed, and what-if figures for path MTUs over IPv4 and IPv6 on
    UDP 500 and 4500.

    \b
    Example:
      ikeaudit mtu pcaps/
      ikeaudit mtu vpn.pcapng --mtu 1500 --mtu 1400 --mtu 1280 --plot reports/sizes
    """
    catalog = KeCatalog(_parse_private_ke(private_ke))
    audits = _audit(captures, catalog, jobs=jobs, esp=False, keys=load_keys(key_files))
    chosen_mtus = list(mtus or DEFAULT_MTUS)
    rows = {id(item): what_if(item.negotiation, chosen_mtus, fragment_size=fragment_size)
            for a in audits for item in a.negotiations}
    document = views.mtu_document(audits, catalog, rows, chosen_mtus, fragment_size)
    if plot_prefix:
        from ikeaudit.report import plots

        try:
            plots.save(plots.message_sizes(document), [f"{plot_prefix}.png", f"{plot_prefix}.svg"])
        except OSError as exc:
            raise InputError(f"{plot_prefix}: cannot write the plot: {exc.strerror}") from None
    renderers = {**RENDERERS, "table": mtu_text.render}
    click.echo(renderers[fmt](document), nl=fmt == "table")
    sys.exit(exit_code(document, fail_on))


def exit_code(document: dict, fail_on: str) -> int:
    if fail_on == "none":
        return EXIT_OK
    threshold = SEVERITIES.index(fail_on)
    for n in document["negotiations"]:
        if any(SEVERITIES.index(f["severity"]) >= threshold for f in n["findings"]):
            return EXIT_FINDINGS
    return EXIT_OK


from ikeaudit.cli_live import live  # noqa: E402
main.add_command(live)
from ikeaudit.cli_report import report  # noqa: E402
main.add_command(report)
