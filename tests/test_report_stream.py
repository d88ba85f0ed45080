"""`ikeaudit report` streams (issue 14): each negotiation is judged and spooled as the
pipeline hands it out, the document's head is counted, and every file is written in
pieces. The folder it writes is the one the whole document gives, rendered as before
streaming: whole strings and one pandas frame per table (the reference below), byte for
byte but for Parquet's row groups (the same columns, dtypes, rows and schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import sensors
from conftest import PCAPS
from ikeaudit import cli_report
from ikeaudit.cli import main
from ikeaudit.report import cbom, html, markdown, plots, tables

KEYS = [arg for path in sorted(PCAPS.glob("*.keys")) for arg in ("--keys", str(path))]


def whole_document_render(out: Path, document: dict) -> list[str]:
    """The report's files as `_write` rendered them before streaming: each file one string
    from the whole document (report.json as json.dumps writes it), each table one DataFrame."""
    files, figures = [], []
    for stem, builder, caption in cli_report.FIGURES:
        png = plots.png(getattr(plots, builder)(document))
        (out / f"{stem}.png").write_bytes(png)
        figures.append((png, caption, f"{stem}.png"))
        files.append(f"{stem}.png")
    (out / "report.html").write_text(html.render(document, [(p, c) for p, c, _ in figures]), encoding="utf-8")
    (out / "report.md").write_text(markdown.render(document, [(f, c) for _, c, f in figures]), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "cbom.json").write_text(cbom.render(document), encoding="utf-8")
    files += ["report.html", "report.md", "report.json", "cbom.json"]
    for frame, stem in ((tables.negotiations_frame(document), "negotiations"),
                        (tables.messages_frame(document), "messages"), (tables.tunnels_frame(document), "tunnels")):
        files += [Path(p).name for p in tables.write(frame, str(out / stem))]
    return files


def report(out: Path, args: list[str]):
    args = [arg.replace("{out}", out.name) for arg in args]
    result = CliRunner().invoke(main, ["report", *args, "-o", str(out), "--as-of", "2026-11-27"])
    assert result.exit_code in (0, 1), result.output
    return result


def whole_and_streamed(tmp_path: Path, monkeypatch, args: list[str]):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795400000")
    with monkeypatch.context() as whole:
        whole.setattr(cli_report, "scan_monitored", lambda: True)  # the whole-document path
        whole.setattr(cli_report, "_render", whole_document_render)
        whole.setattr(tables, "write_dataset_batched", tables.write_dataset)  # one frame per table
        expected = report(tmp_path / "whole", args)
    with monkeypatch.context() as small:
        small.setattr(tables, "BATCH_ROWS", 3)  # several batches, even from the lab captures
        got = report(tmp_path / "streamed", args)
    return expected, got


def assert_same_folders(whole: Path, streamed: Path) -> None:
    names = sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(streamed)) for p in streamed.rglob("*") if p.is_file()) == names
    for name in names:
        if name.endswith(".parquet"):
            assert pq.read_schema(streamed / name).equals(pq.read_schema(whole / name), check_metadata=True), name
            pd.testing.assert_frame_equal(pd.read_parquet(streamed / name), pd.read_parquet(whole / name))
        else:
            assert (streamed / name).read_bytes() == (whole / name).read_bytes(), name


@pytest.mark.parametrize("fail_on", ["none", "medium"])
def test_the_lab_report_streamed_is_the_whole_documents(tmp_path, monkeypatch, fail_on):
    whole, streamed = whole_and_streamed(tmp_path, monkeypatch, [str(PCAPS), *KEYS, "--fail-on", fail_on])
    assert_same_folders(tmp_path / "whole", tmp_path / "streamed")
    assert (streamed.exit_code, streamed.output) == (whole.exit_code, whole.output.replace("whole", "streamed"))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_two_sensors_rotated_files_streamed_give_the_whole_documents_report(tmp_path, monkeypatch, jobs):
    """Rotated files (a negotiation across two of them), two sensors, one IKE SA both saw,
    ESP: what exposure dedups and attributes, from the facts kept per IKE SA."""
    spans = sensors.build(tmp_path / "spans", padding=20)
    args = [arg for name, paths in spans.items() for arg in ("--sensor", f"{name}={paths[0].parent}")]
    whole, streamed = whole_and_streamed(tmp_path, monkeypatch, [*args, "--jobs", jobs, "--parquet-dataset",
                                                                 str(tmp_path / "lake-{out}")])
    assert_same_folders(tmp_path / "whole", tmp_path / "streamed")
    assert any((tmp_path / "lake-whole" / "messages").rglob("*.parquet"))
    assert_same_folders(tmp_path / "lake-whole", tmp_path / "lake-streamed")
    assert streamed.exit_code == whole.exit_code
    shared = [t for t in pd.read_csv(tmp_path / "streamed" / "tunnels.csv")["sensors"] if t == "A B"]
    assert len(shared) == 1  # the d01 copy both sensors saw, counted once


def test_an_empty_capture_streamed_gives_the_whole_documents_report(tmp_path, monkeypatch):
    header = (PCAPS / "c01_classical_ecp256.pcap").read_bytes()[:24]
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(header)
    whole_and_streamed(tmp_path, monkeypatch, [str(empty)])
    assert_same_folders(tmp_path / "whole", tmp_path / "streamed")


def test_message_sizes_past_its_runs_draws_every_point_once_with_the_same_legend(monkeypatch):
    """Past MAX_RUNS collections the plot draws one collection per class: the same points
    and legend, only overlaps of two classes drawn in class order."""
    result = CliRunner().invoke(main, ["scan", str(PCAPS), "--format", "json"])
    document = json.loads(result.stdout)
    for n in document["negotiations"]:  # what the report adds: the what-if rows
        n["what_if"] = [{"exchange": m["exchange"], "message_id": m["message_id"], "response": m["response"],
                         "ip_version": 4, "port": 4500, "ip_datagram_bytes": sum(m["ip_datagram_bytes"])}
                        for m in n["messages"]]
    document["mtus"] = [1280, 1500]

    def drawn(fig):
        ax = fig.axes[0]
        points = sorted((round(x, 6), y) for c in ax.collections for x, y in c.get_offsets().tolist())
        return points, [t.get_text() for t in ax.get_legend().get_texts()], len(ax.collections)

    *exact, runs = drawn(plots.message_sizes(document))
    monkeypatch.setattr(plots._Points, "MAX_RUNS", 1)
    *by_class, collections = drawn(plots.message_sizes(document))
    assert by_class == exact and len(exact[0]) > len(exact[1]) > 1
    assert runs > collections == len(exact[1])  # a collection per class
