"""`ikeaudit report`: the auditor's deliverable, written to a folder."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, timezone
from itertools import chain
from pathlib import Path

import click

from ikeaudit.aggregate import ReportTally
from ikeaudit.classify import KeCatalog
from ikeaudit.cli_common import (
    EXIT_FINDINGS, InputError, exit_code, exit_code_of, fail_on_option, keys_option, load_keys, parse_private_ke,
    private_ke_option, rekey_window_option, rotated_option, run_audit, vxlan_option, max_state_option,
    cluster_option, jobs_option, sensor_options,
)
from ikeaudit.mtu import DEFAULT_MTUS, what_if
from ikeaudit.monitor.cli import monitor_options, report_monitoring, scan_monitored
from ikeaudit.policy import (
    DEFAULT_POLICY,
    PRESETS,
    PolicyError,
    evaluate,
    exposure,
    fails_on,
    load_policy,
    worst,
)
from ikeaudit.policy.exposure import distinct_esp_flows, exposure_item, unanswered_traffic
from ikeaudit.report import cbom, html, machine, markdown, views
from ikeaudit.report.machine import iter_json

# (file stem, builder in report/plots.py, caption); matplotlib and pandas load only when
# a report is written, so that every other command starts fast.
FIGURES = [
    ("class-share", "class_share", "Negotiations by classification"),
    ("timeline", "timeline", "Negotiations over time, by classification"),
    ("ke-methods", "ke_methods", "Chosen key exchange methods"),
    ("message-sizes", "message_sizes", "IKE message sizes by exchange against path MTUs"),
    ("exposure", "exposure", "Tunnels by key exchange, most exposed first"),
]


def _generated_at() -> str:
    # SOURCE_DATE_EPOCH (reproducible-builds.org) lets a committed example report stay stable.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), tz=timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@click.command()
@monitor_options("report")
@click.argument("captures", nargs=-1)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the report into (created if missing).")
@click.option("--policy", "policy_name", default=DEFAULT_POLICY, show_default=True, metavar="NAME|FILE",
              help=f"Policy preset ({', '.join(PRESETS)}) or a TOML policy file.")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Judge dated policy rules as of this day (default: today, UTC).")
@click.option("--parquet-dataset", "dataset_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also write negotiations, messages and tunnels as a Parquet dataset under DIR, partitioned "
                   "by sensor and day (sensor=NAME/date=YYYY-MM-DD), for pandas, DuckDB or Spark.")
@fail_on_option
@private_ke_option
@jobs_option
@cluster_option
@sensor_options(named=False)
@keys_option
@rekey_window_option
@rotated_option
@vxlan_option
@max_state_option
def report(captures: tuple[str, ...], out_dir: str, policy_name: str, as_of: datetime | None,
           dataset_dir: str | None, fail_on: str, private_ke: tuple[str, ...], jobs: int, key_files: tuple[str, ...], rekey_window: float,
           rotated: bool) -> None:
    """Write the compliance report for CAPTURES into a folder: report.html (self-contained,
    plots embedded), report.md, report.json, negotiations, messages and tunnels as CSV and
    Parquet, a CycloneDX CBOM (cbom.json) and the plots as PNG.

    \b
    Example:
      ikeaudit report pcaps/ -o reports/
      ikeaudit report span/*.pcapng --policy cnsa2 --fail-on high -o /srv/audit/today
      ikeaudit report --sensors-under /srv/spans --cluster tcp://sched:8786 -o today --parquet-dataset lake/
    """
    catalog = KeCatalog(parse_private_ke(private_ke))
    try:
        policy = load_policy(policy_name)
    except PolicyError as exc:
        raise InputError(str(exc)) from None
    day = as_of.date() if as_of else datetime.now(timezone.utc).date()
    options = dict(jobs=jobs, keys=load_keys(key_files), rekey_window=rekey_window, rotated=rotated)
    # A monitor (--state, --sink, --syslog) takes the whole document; else it streams.
    streamed = None if scan_monitored() else _Streamed(catalog, policy, day, fail_on)
    out = Path(out_dir)
    try:
        audits = run_audit(captures, catalog, on_negotiation=streamed and streamed.take, **options)
        try:
            out.mkdir(parents=True, exist_ok=True)
            if streamed is None:
                written = _write(out, audits, catalog, policy, day, fail_on)
            else:
                written = streamed.write(out, audits)
        except OSError as exc:
            raise InputError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
        document = written["document"]
        if dataset_dir is not None:
            from ikeaudit.report import tables

            try:
                dataset = tables.write_dataset_batched(_reading(document, "messages"), dataset_dir)
            except OSError as exc:
                raise InputError(f"{dataset_dir}: cannot write the Parquet dataset: {exc.strerror or exc}") from None
    finally:
        if streamed is not None:
            streamed.spool.close()
    click.echo(document["exposure"]["headline"])
    click.echo(f"wrote {', '.join(str(out / name) for name in written['files'])}")
    if dataset_dir is not None:
        click.echo(f"wrote the Parquet dataset {', '.join(dataset) or '(empty: no negotiation)'}")
    sys.exit(EXIT_FINDINGS if written["verdicts_fail"] else written["exit"])


def _judged(item, catalog: KeCatalog, policy, day: date, fail_on: str) -> tuple[list[dict], str | None, bool]:
    """A negotiation's policy verdicts, its worst outcome, and whether --fail-on fails it."""
    judged = evaluate(policy, item, day, catalog)
    top = worst(judged)
    return [v.as_dict() for v in judged], top.outcome if top else None, fails_on(judged, fail_on)


def _policy_view(policy, day: date) -> dict:
    return {"name": policy.name, "description": policy.description, "source": policy.source,
            "origin": policy.origin, "as_of": day.isoformat()}


class _Streamed:
    """The report as the negotiations stream out of the pipeline: each is judged, its
    what-if computed and its view spooled to a temporary file as it comes, then dropped;
    what the document's head needs is counted (aggregate.ReportTally). The renderers
    then read the head and the spooled views, a negotiation at a time."""

    def __init__(self, catalog: KeCatalog, policy, day: date, fail_on: str) -> None:
        self.catalog, self.policy, self.day, self.fail_on = catalog, policy, day, fail_on
        self.spool = machine.Spool("views", apart=("messages", "what_if"))
        self.tally = ReportTally()

    def take(self, file: int, rank: int, item) -> None:
        verdicts, outcome, fails = _judged(item, self.catalog, self.policy, self.day, self.fail_on)
        view = views.report_negotiation_view(item, self.catalog, verdicts, outcome,
                                             what_if(item.negotiation, DEFAULT_MTUS))
        self.tally.add(file, rank, exposure_item(item, peers=True), view, fails)
        self.spool.add(file, rank, view)

    def write(self, out: Path, audits) -> dict:
        items = self.tally.items()
        flows = distinct_esp_flows(audits)  # an SPI two sensors saw counted once
        seen = [*audits, *items]  # the audits' ESP flows and sensors, the negotiations' facts
        tunnels = [t.as_dict() for t in exposure(seen, flows, self.catalog)]
        unanswered = unanswered_traffic(seen, flows).as_dict()
        head = views.report_head(audits, self.tally.scan.summary(), tunnels, views.tunnel_peers_of(items),
                                 _policy_view(self.policy, self.day), _generated_at(), list(DEFAULT_MTUS),
                                 unanswered)
        document = {**head, "negotiations": self.spool.views()}
        files = _render(out, document)
        severities = chain(self.tally.scan.severities.elements(), (f["severity"] for f in head["findings"]))
        return {"document": document, "files": files, "verdicts_fail": self.tally.verdicts_fail,
                "exit": exit_code_of(severities, self.fail_on)}


def _write(out: Path, audits, catalog: KeCatalog, policy, day: date, fail_on: str) -> dict:
    """The report from the whole document (every negotiation in memory), for a monitor."""
    verdicts = {}
    verdicts_fail = False
    for a in audits:
        for item in a.negotiations:
            judged, outcome, fails = _judged(item, catalog, policy, day, fail_on)
            verdicts[id(item)] = (judged, outcome)
            verdicts_fail |= fails
    flows = distinct_esp_flows(audits)  # an SPI two sensors saw counted once
    tunnels = [t.as_dict() for t in exposure(audits, flows, catalog)]
    unanswered = unanswered_traffic(audits, flows).as_dict()
    what_ifs = {id(item): what_if(item.negotiation, DEFAULT_MTUS) for a in audits for item in a.negotiations}
    document = views.report_document(audits, catalog, verdicts, tunnels, _policy_view(policy, day),
                                     _generated_at(), what_ifs, list(DEFAULT_MTUS), unanswered)
    return {"document": document, "files": _render(out, document), "verdicts_fail": verdicts_fail,
            "exit": exit_code(document, fail_on)}


def _render(out: Path, document: dict) -> list[str]:
    """Every file of the report; document["negotiations"] is read a negotiation at a time
    (a list, or a streamed report's spooled views), and each file written in pieces."""
    from ikeaudit.report import plots, tables

    files = []
    figures = []
    for stem, builder, caption in FIGURES:
        reads = ("messages", "what_if") if builder == "message_sizes" else ()
        png = plots.png(getattr(plots, builder)(_reading(document, *reads)))
        (out / f"{stem}.png").write_bytes(png)
        figures.append((png, caption, f"{stem}.png"))
        files.append(f"{stem}.png")
    for stem, png, caption in report_monitoring(document):  # --state, --sink, --syslog; posture plot
        (out / f"{stem}.png").write_bytes(png)
        figures.append((png, caption, f"{stem}.png"))
        files.append(f"{stem}.png")
    _write_pieces(out / "report.html", html.iter_render(document, [(p, c) for p, c, _ in figures]))
    _write_pieces(out / "report.md", markdown.iter_render(document, [(f, c) for _, c, f in figures]))
    _write_pieces(out / "report.json", iter_json(_reading(document, "messages", "what_if")))
    _write_pieces(out / "cbom.json", cbom.iter_render(document))
    files += ["report.html", "report.md", "report.json", "cbom.json"]
    negotiations, with_messages = document["negotiations"], _reading(document, "messages")["negotiations"]
    files += [Path(p).name for p in tables.write_batched(lambda: tables.negotiation_rows(negotiations),
                                                         str(out / "negotiations"))]
    files += [Path(p).name for p in tables.write_batched(lambda: tables.message_rows(with_messages),
                                                         str(out / "messages"))]
    files += [Path(p).name for p in tables.write(tables.tunnels_frame(document), str(out / "tunnels"))]
    return files


def _reading(document: dict, *keys: str) -> dict:
    """The document whose streamed negotiations carry these keys too (a streamed report's
    renderers read their messages and what-if rows only where they show them)."""
    negotiations = document["negotiations"]
    if isinstance(negotiations, machine.SpooledViews):
        return {**document, "negotiations": negotiations.including(*keys)}
    return document


def _write_pieces(path: Path, pieces) -> None:
    with path.open("w", encoding="utf-8") as f:
        for piece in pieces:
            f.write(piece)
