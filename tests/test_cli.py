"""The command line, through click's CliRunner: formats, errors and exit codes."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import PCAPS, RECORDS, lab_path
from ikeaudit.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_scan_json_carries_the_documented_fields():
    result = run("scan", lab_path("h01"), "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema_version"] == 2
    [n] = document["negotiations"]
    for key in ("capture", "classification", "ke_method", "addke_methods", "pq_offered_by_initiator",
                "initiator", "responder", "spi_i", "spi_r", "messages", "observation", "inferences",
                "assessed", "established_basis", "downgrade_prevention", "midstream"):
        assert key in n
    assert n["capture"] == lab_path("h01")
    assert (n["classification"], n["ke_method"], n["addke_methods"]) == ("hybrid-pq", 31, [36])
    assert len(n["spi_i"]) == 16 and int(n["spi_i"], 16)


def test_scan_folder_covers_every_lab_capture():
    document = json.loads(run("scan", str(PCAPS), "--format", "json").stdout)
    assert {c["path"] for c in document["captures"]} == {str(PCAPS / r["file"]) for r in RECORDS.values()}


def test_scan_glob_expands(tmp_path):
    result = run("scan", str(PCAPS / "c0*.pcap"), "--format", "jsonl")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert {line["capture"] for line in lines} == {str(p) for p in PCAPS.glob("c0*.pcap")}


def test_table_has_one_row_per_negotiation():
    result = run("scan", lab_path("r01"))
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if "192.0.2.1 -> 192.0.2.2" in line]
    assert len(rows) == 2
    assert all("hybrid-pq" in row and "ML-KEM-768(36)" in row for row in rows)


def test_csv_has_a_header_and_a_row_per_negotiation():
    result = run("scan", lab_path("d01"), lab_path("x01"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["classification"] for r in rows] == ["classical-pq-offered", "failed"]


def test_gzip_capture_scans_like_the_plain_one(tmp_path):
    target = tmp_path / "h02.pcap.gz"
    target.write_bytes(gzip.compress((PCAPS / RECORDS["h02"]["file"]).read_bytes()))
    plain = json.loads(run("scan", lab_path("h02"), "--format", "json").stdout)["negotiations"]
    packed = json.loads(run("scan", str(target), "--format", "json").stdout)["negotiations"]
    for n in plain + packed:
        n.pop("capture")
    assert plain == packed


def test_missing_file_is_a_one_line_error_with_exit_2():
    result = run("scan", "/no/such/capture.pcap")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["Error: /no/such/capture.pcap: no such file or directory"]


def test_non_capture_file_is_a_one_line_error(tmp_path):
    text = tmp_path / "notes.pcap"
    text.write_text("hello, not a capture\n")
    result = run("scan", str(text))
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "not a pcap or pcapng capture" in result.output


def test_truncated_capture_reports_damage_and_keeps_what_came_before(tmp_path):
    data = (PCAPS / RECORDS["h01"]["file"]).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = run("scan", str(cut), "--format", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert any(a["kind"] == "capture" for a in document["captures"][0]["anomalies"])
    assert document["negotiations"] and document["negotiations"][0]["ke_method"] == 31


def test_bad_format_is_a_usage_error():
    assert run("scan", lab_path("c01"), "--format", "xml").exit_code == 2


def test_fail_on_high_fails_on_a_downgrade():
    assert run("scan", lab_path("d01"), "--fail-on", "high").exit_code == 1
    assert run("scan", lab_path("h01"), "--fail-on", "high").exit_code == 0
    assert run("scan", lab_path("d01")).exit_code == 0


@pytest.mark.parametrize("value", ["1081", "80=kyber", "1081=kyber:maybe", "x=y"])
def test_private_ke_option_rejects_bad_values(value):
    result = run("scan", lab_path("c01"), "--private-ke", value)
    assert result.exit_code == 2
    assert "--private-ke" in result.output


def test_empty_folder_scans_to_nothing(tmp_path):
    result = run("scan", str(tmp_path), "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["negotiations"] == []


def test_folder_skips_non_capture_files(tmp_path):
    shutil.copy(PCAPS / RECORDS["c01"]["file"], tmp_path / "a.pcap")
    (tmp_path / "a.keys").write_text("not a capture")
    document = json.loads(run("scan", str(tmp_path), "--format", "json").stdout)
    assert [c["path"] for c in document["captures"]] == [str(tmp_path / "a.pcap")]


def test_help_shows_an_example():
    assert "Example" in run("scan", "--help").output


@pytest.mark.parametrize("command", [["scan"], ["mtu"], ["report", "-o", "OUT"]])
def test_rekey_window_reaches_the_pipeline(command, monkeypatch, tmp_path):
    import ikeaudit.cli_common as cli_common

    seen = {}

    def audit_captures(paths, catalog=None, *, jobs=1, prefilter=True, esp=True, progress=None, keys=None,
                       rekey_window=300.0, **options):
        seen["rekey_window"] = rekey_window
        return []

    monkeypatch.setattr(cli_common, "audit_captures", audit_captures)
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    run(*args, lab_path("c01"), "--rekey-window", "42")
    assert seen["rekey_window"] == 42.0


def test_rekey_window_must_not_be_negative():
    result = run("scan", lab_path("c01"), "--rekey-window", "-1")
    assert result.exit_code == 2 and "--rekey-window" in result.output


def test_scan_table_calls_a_negotiation_without_its_handshake_unassessed(tmp_path):
    import captures

    packets = captures.read(lab_path("c01"))
    path = captures.write(captures.without_exchanges(packets, {captures.IKE_SA_INIT}), tmp_path / "c01.pcap")
    result = run("scan", path, "--fail-on", "medium")
    assert result.exit_code == 1
    [row] = [line for line in result.output.splitlines() if "192.0.2.1 -> 192.0.2.2" in line]
    assert "unassessed" in row.split()
    assert result.output.rstrip().endswith("1 unassessed (handshake not captured)")
