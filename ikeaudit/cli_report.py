"""`ikeaudit report`: the auditor's deliverable, written to a folder."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import click

from ikeaudit.classify import KeCatalog
from ikeaudit.cli_common import (
    EXIT_FINDINGS, InputError, exit_code, fail_on_option, keys_option, load_keys, parse_private_ke,
    private_ke_option, rekey_window_option, rotated_option, run_audit, vxlan_option, max_state_option,
    cluster_option, jobs_option, sensor_options,
)
from ikeaudit.mtu import DEFAULT_MTUS, what_if
from ikeaudit.monitor.cli import monitor_options, report_monitoring
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
from ikeaudit.policy.exposure import distinct_esp_flows, unanswered_traffic
from ikeaudit.report import cbom, html, markdown, views
from ikeaudit.report.machine import render_json

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
    audits = run_audit(captures, catalog, jobs=jobs, keys=load_keys(key_files), rekey_window=rekey_window,
                       rotated=rotated)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = _write(out, audits, catalog, policy, day, fail_on)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    document = written.pop("document")
    if dataset_dir is not None:
        from ikeaudit.report import tables

        try:
            dataset = tables.write_dataset(document, dataset_dir)
        except OSError as exc:
            raise InputError(f"{dataset_dir}: cannot write the Parquet dataset: {exc.strerror or exc}") from None
    click.echo(document["exposure"]["headline"])
    click.echo(f"wrote {', '.join(str(out / name) for name in written['files'])}")
    if dataset_dir is not None:
        click.echo(f"wrote the Parquet dataset {', '.join(dataset) or '(empty: no negotiation)'}")
    sys.exit(EXIT_FINDINGS if written["verdicts_fail"] else exit_code(document, fail_on))


def _write(out: Path, audits, catalog: KeCatalog, policy, day: date, fail_on: str) -> dict:
    from ikeaudit.report import plots, tables

    verdicts = {}
    verdicts_fail = False
    for a in audits:
        for item in a.negotiations:
            judged = evaluate(policy, item, day, catalog)
            top = worst(judged)
            verdicts[id(item)] = ([v.as_dict() for v in judged], top.outcome if top else None)
            verdicts_fail |= fails_on(judged, fail_on)
    flows = distinct_esp_flows(audits)  # an SPI two sensors saw counted once
    tunnels = [t.as_dict() for t in exposure(audits, flows, catalog)]
    unanswered = unanswered_traffic(audits, flows).as_dict()
    what_ifs = {id(item): what_if(item.negotiation, DEFAULT_MTUS) for a in audits for item in a.negotiations}
    policy_view = {"name": policy.name, "description": policy.description, "source": policy.source,
                   "origin": policy.origin, "as_of": day.isoformat()}
    document = views.report_document(audits, catalog, verdicts, tunnels, policy_view, _generated_at(),
                                     what_ifs, list(DEFAULT_MTUS), unanswered)
    files = []
    figures = []
    for stem, builder, caption in FIGURES:
        png = plots.png(getattr(plots, builder)(document))
        (out / f"{stem}.png").write_bytes(png)
        figures.append((png, caption, f"{stem}.png"))
        files.append(f"{stem}.png")
    for stem, png, caption in report_monitoring(document):  # --state, --sink, --syslog; posture plot
        (out / f"{stem}.png").write_bytes(png)
        figures.append((png, caption, f"{stem}.png"))
        files.append(f"{stem}.png")
    (out / "report.html").write_text(html.render(document, [(p, c) for p, c, _ in figures]), encoding="utf-8")
    (out / "report.md").write_text(markdown.render(document, [(f, c) for _, c, f in figures]), encoding="utf-8")
    (out / "report.json").write_text(render_json(document), encoding="utf-8")
    (out / "cbom.json").write_text(cbom.render(document), encoding="utf-8")
    files += ["report.html", "report.md", "report.json", "cbom.json"]
    files += [Path(p).name for p in tables.write(tables.negotiations_frame(document), str(out / "negotiations"))]
    files += [Path(p).name for p in tables.write(tables.messages_frame(document), str(out / "messages"))]
    files += [Path(p).name for p in tables.write(tables.tunnels_frame(document), str(out / "tunnels"))]
    return {"document": document, "files": files, "verdicts_fail": verdicts_fail}
