"""The `ikeaudit` command line: the group, `scan` and `mtu` (`report` is in
cli_report.py, `live` in cli_live.py; what they share is in cli_common.py, whose
docstring lists the exit codes).

A capture that is damaged (cut in the middle of a record, a bad block) or holds frames
that did not decode (snaplen cuts, malformed IKE) is still audited as far as it reads:
one warning line per file on stderr, the details as anomalies in the output, and the
exit code as above. A folder without any capture in it is a warning too.
"""

from __future__ import annotations

import importlib
import sys

import click

from ikeaudit import __version__
from ikeaudit.aggregate import ScanTally
from ikeaudit.classify import KeCatalog
from ikeaudit.cli_common import (
    EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, InputError, exit_code, exit_code_of, input_warning, keys_option, load_keys,
    output_options, parse_private_ke, rekey_window_option, rotated_option, run_audit, vxlan_option, max_state_option,
    cluster_option, jobs_option, sensor_options,
)
from ikeaudit.mtu import DEFAULT_MTUS, what_if
from ikeaudit.report import machine, mtu_text, text, views

__all__ = ["main", "EXIT_OK", "EXIT_FINDINGS", "EXIT_USAGE", "InputError", "exit_code", "input_warning"]

RENDERERS = {
    "table": text.render,
    "json": machine.render_json,
    "jsonl": machine.render_jsonl,
    "csv": machine.render_csv,
}
_audit = run_audit  # the name tests and benches have used


class _Commands(click.Group):
    """The command group; the commands of other modules are imported when named (or
    listed by --help): `scan` never loads what `report`, `live` and `show` need (Scapy's
    tree printer, Prometheus, the policy engine)."""

    LAZY = {"live": "ikeaudit.cli_live", "report": "ikeaudit.cli_report", "show": "ikeaudit.show",
            "tunnels": "ikeaudit.monitor.cli"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            self.add_command(getattr(importlib.import_module(self.LAZY[name]), name), name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ikeaudit")
def main() -> None:
    """Audit IKEv2 handshakes in packet captures: did each tunnel really negotiate ML-KEM?"""


from ikeaudit.monitor.cli import monitor_options, scan_monitored, scan_monitoring  # noqa: E402


@main.command()
@monitor_options("scan")
@click.argument("captures", nargs=-1)
@jobs_option
@cluster_option
@sensor_options(named=False)
@keys_option
@rekey_window_option
@rotated_option
@vxlan_option
@max_state_option
@output_options(RENDERERS)
def scan(captures: tuple[str, ...], jobs: int, key_files: tuple[str, ...], fmt: str,
         private_ke: tuple[str, ...], fail_on: str, rekey_window: float, rotated: bool) -> None:
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
      ikeaudit scan --sensor dc1=/srv/dc1 --sensor branch=s3://caps/branch/ --cluster tcp://sched:8786
      ikeaudit scan old-spans/ --state tunnels.sqlite --format eve > eve.json
    """
    catalog = KeCatalog(parse_private_ke(private_ke))
    options = dict(jobs=jobs, esp=False, keys=load_keys(key_files), rekey_window=rekey_window, rotated=rotated)
    if fmt in ("json", "jsonl", "csv") and not scan_monitored():
        sys.exit(_scan_streamed(captures, catalog, fmt, fail_on, options))
    audits = run_audit(captures, catalog, **options)
    document = views.scan_document(audits, catalog)
    if scan_monitoring(document, fmt):  # --state, --sink, --syslog; it wrote --format eve|ecs|zeek
        sys.exit(exit_code(document, fail_on))
    if fmt == "json":  # written a negotiation at a time: a flood makes a large document
        for piece in machine.iter_json(document):
            sys.stdout.write(piece)
    else:
        click.echo(RENDERERS[fmt](document), nl=fmt == "table")
    sys.exit(exit_code(document, fail_on))


def _scan_streamed(captures: tuple[str, ...], catalog: KeCatalog, fmt: str, fail_on: str, options: dict) -> int:
    """JSON, JSONL and CSV as the negotiations stream out of the pipeline: each is rendered
    into a spool as it comes and dropped, the summary counted (aggregate.ScanTally); the
    same text as the whole document gives. Returns the exit code."""
    spool = machine.Spool(fmt)
    tally = ScanTally()

    def take(file: int, rank: int, item) -> None:
        view = views.negotiation_view(item, catalog)
        tally.add(view)
        spool.add(file, rank, view)

    audits = run_audit(captures, catalog, on_negotiation=take, **options)
    for piece in spool.pieces(views.scan_head(audits, tally)):
        sys.stdout.write(piece)
    return exit_code_of(tally.severities, fail_on)


def _check_mtu(ctx, param, values):
    for value in values or ():
        if not 576 <= value <= 65535:
            raise click.BadParameter(f"{value}: a path MTU is between 576 and 65535 bytes")
    return values


@main.command()
@click.argument("captures", nargs=-1)
@click.option("--mtu", "mtus", type=int, multiple=True, callback=_check_mtu, metavar="BYTES",
              help=f"Path MTU to test; repeat for several (default: {', '.join(map(str, DEFAULT_MTUS))}).")
@click.option("--fragment-size", type=int, default=None, metavar="BYTES",
              callback=lambda ctx, p, v: _check_mtu(ctx, p, (v,))[0] if v is not None else None,
              help="IKE fragment size (largest IP datagram of an SKF fragment) for the what-if; "
                   "default: the path MTU itself.")
@click.option("--plot", "plot_prefix", type=click.Path(dir_okay=False), default=None, metavar="PREFIX",
              help="Also draw message sizes against the MTUs to PREFIX.png and PREFIX.svg.")
@jobs_option
@cluster_option
@sensor_options
@keys_option
@rekey_window_option
@rotated_option
@vxlan_option
@max_state_option
@output_options(RENDERERS)
def mtu(captures: tuple[str, ...], mtus: tuple[int, ...], fragment_size: int | None,
        plot_prefix: str | None, jobs: int, key_files: tuple[str, ...], fmt: str,
        private_ke: tuple[str, ...], fail_on: str, rekey_window: float, rotated: bool) -> None:
    """Show what each negotiation's message sizes do on the wire: IP and IKE
    fragmentation observed, and what-if figures for path MTUs over IPv4 and IPv6 on
    UDP 500 and 4500.

    \b
    Example:
      ikeaudit mtu pcaps/
      ikeaudit mtu vpn.pcapng --mtu 1500 --mtu 1400 --mtu 1280 --plot reports/sizes
    """
    catalog = KeCatalog(parse_private_ke(private_ke))
    audits = run_audit(captures, catalog, jobs=jobs, esp=False, keys=load_keys(key_files),
                       rekey_window=rekey_window, rotated=rotated)
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

