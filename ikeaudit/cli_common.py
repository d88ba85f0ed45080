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

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterable

import click

from ikeaudit.classify import SEVERITIES, KeCatalog, PrivateKe
from ikeaudit.cli_keys import keys_option, load_keys  # noqa: F401  (re-exported for the commands)
from ikeaudit.decrypt import KeyTable
from ikeaudit.execution import DaskCluster, ExecutionError, parse_cluster
from ikeaudit.extract import undecoded
from ikeaudit.pipeline import CaptureAudit, Streamed, audit_captures
from ikeaudit.sources import CaptureError, capture_size, expand_capture_args
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


def jobs_option(func):
    return click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
                        help="Work in N processes: N capture files read at once (a single file is read in "
                             "one while another dissects); the output is the same as with 1.")(func)


def cluster_option(func):
    """--cluster: kept in click's context for run_audit, as --vxlan-port."""
    def remember(ctx, param, value):
        if value is not None:
            try:
                parse_cluster(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--cluster") from None
        ctx.meta["ikeaudit.cluster"] = value
    return click.option("--cluster", default=None, expose_value=False, callback=remember, metavar="ADDRESS|local:N",
                        help="Read the capture files on a Dask cluster instead of this machine's processes: "
                             "a running scheduler (tcp://host:8786), or local:N for N workers started and "
                             "stopped here. The output is the same as with --jobs 1. Needs "
                             "pip install 'ikeaudit[cluster]'.")(func)


SENSOR_HELP = ("NAME=PATH: the captures of one sensor (capture point), a file, folder, glob or URL; repeat for "
               "several. Files of different sensors are never joined; a tunnel two sensors saw is one tunnel, "
               "seen by both.")


def sensor_captures(ctx: click.Context, values: tuple[str, ...]) -> list[str]:
    """--sensor values: each NAME=PATH kept in click's context for run_audit; the plain
    NAMEs (the monitor's own sensor name, on scan and report) returned."""
    plain = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            plain.append(value)
            continue
        if not name.strip() or not path:
            raise click.BadParameter(f"{value!r}: expected NAME=PATH (a capture file, folder, glob or URL)",
                                     param_hint="--sensor")
        ctx.meta.setdefault("ikeaudit.sensors", []).append((name.strip(), path))
    return plain


def sensor_options(func=None, *, named: bool = True):
    """--sensor NAME=PATH (unless named=False: the command's monitoring options have
    --sensor, which hands NAME=PATH to sensor_captures) and --sensors-under: kept in
    click's context for run_audit, as --vxlan-port."""
    if func is None:
        return lambda f: sensor_options(f, named=named)

    def remember_named(ctx, param, values):
        plain = sensor_captures(ctx, values)
        if plain:
            raise click.BadParameter(f"{plain[0]!r}: expected NAME=PATH", param_hint="--sensor")

    def remember_folders(ctx, param, folders):
        for folder in folders:
            subfolders = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
            if not subfolders:
                raise click.BadParameter(f"{folder}: holds no sensor folder", param_hint="--sensors-under")
            ctx.meta.setdefault("ikeaudit.sensors", []).extend(
                (name, os.path.join(folder, name)) for name in subfolders)

    func = click.option("--sensors-under", "sensor_folders", multiple=True, expose_value=False,
                        callback=remember_folders, metavar="DIR",
                        type=click.Path(exists=True, file_okay=False),
                        help="Every folder in DIR holds the captures of one sensor, named after the folder.")(func)
    if not named:
        return func
    return click.option("--sensor", "sensors", multiple=True, expose_value=False, callback=remember_named,
                        metavar="NAME=PATH", help=SENSOR_HELP)(func)


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
    named = meta.get("ikeaudit.sensors", [])
    if not captures and not named:
        raise click.UsageError("no capture given: name CAPTURES, --sensor NAME=PATH or --sensors-under DIR")
    try:
        paths = expand_capture_args(captures)
        sensors: list[str | None] = [None] * len(paths)
        for name, path in named:
            found = expand_capture_args([path])
            if not found:
                click.echo(f"warning: sensor {name}: no capture file in {path}", err=True)
            paths += found
            sensors += [name] * len(found)
        if not paths and captures:
            click.echo(f"warning: no capture file in {', '.join(captures)}", err=True)
        with _cluster(meta.get("ikeaudit.cluster")) as cluster:
            options.update(execution=cluster, sensors=sensors if named else None)
            audits = _audit_with_progress(paths, catalog, options)
    except (CaptureError, ExecutionError) as exc:
        raise InputError(str(exc)) from None
    for audit in audits:
        warning = input_warning(audit)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    return audits


def _cluster(spec: str | None) -> contextlib.AbstractContextManager[DaskCluster | None]:
    """The Dask cluster of --cluster, told on stderr with its dashboard; None without
    --cluster (the pipeline runs --jobs itself, reading a single file alongside)."""
    if spec is None:
        return contextlib.nullcontext(None)
    try:
        cluster = DaskCluster(spec)
    except ExecutionError as exc:
        raise InputError(str(exc)) from None
    where = f"dashboard {cluster.dashboard}" if cluster.dashboard else "no dashboard (bokeh is not installed there)"
    click.echo(f"dask cluster {spec}: {cluster.workers} worker(s), {where}", err=True)
    return cluster


def _audit_with_progress(paths: list[str], catalog: KeCatalog, options: dict) -> list[CaptureAudit]:
    """audit_captures, with a progress bar (bytes read, files done, negotiations found) on
    stderr when it is a terminal; with a cluster, one closing line wherever stderr goes."""
    cluster = options["execution"] is not None
    counts = Counter()

    def found(files: int, negotiations: int) -> None:
        counts["files"] += files
        counts["negotiations"] += negotiations
        if bar is not None:
            bar.set_postfix_str(f"files {counts['files']}/{len(paths)}, negotiations {counts['negotiations']}",
                                refresh=False)

    bar = None
    if not paths or not sys.stderr.isatty():
        audits = audit_captures(paths, catalog, found=found, **options)
    else:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
        total = sum(capture_size(path) for path in paths)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, delay=1.0,
                  leave=False, dynamic_ncols=True, desc="scanning") as bar:  # fmt: skip
            audits = audit_captures(paths, catalog, progress=bar.update, found=found, **options)
    if cluster:
        read = sum(capture_size(path) for path in paths)
        click.echo(f"dask cluster: {counts['files']} file(s), {read / 1e6:.1f} MB read, "
                   f"{counts['negotiations']} negotiation(s) found", err=True)
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
    sensor = f" (sensor {audit.sensor})" if audit.sensor is not None else ""
    return f"{audit.capture}{sensor}: " + "; ".join(parts)


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
