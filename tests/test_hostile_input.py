"""Bad input end to end through the command line (issue 7): one clear line on stderr,
the readable part audited, and the documented exit code (0/1 by findings when the audit
ran, 2 for a usage or input error). Other such cases live in test_cli.py (missing file,
non-capture file, bad --format, bad --private-ke) and test_report.py (unknown policy)."""

from __future__ import annotations

import json
import os
import struct

import pytest
from click.testing import CliRunner

from conftest import PCAPS, RECORDS, lab_path
from ikeaudit.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    return line


def pcap_records(data: bytes) -> list[tuple[bytes, bytes]]:
    records, at = [], 24
    while at < len(data):
        header = data[at:at + 16]
        caplen = struct.unpack_from("<I", header, 8)[0]
        records.append((header, data[at + 16:at + 16 + caplen]))
        at += 16 + caplen
    return records


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "empty file"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "unreadable capture header"),  # cut inside the global header
    (b"XXXX" + bytes(20), "not a pcap or pcapng capture"),  # corrupt magic
    (b"\x0a\x0d\x0d\x0a" + bytes(24), "unreadable capture header"),  # pcapng without byte-order magic
], ids=["empty", "short-header", "bad-magic", "bad-pcapng-header"])
def test_unreadable_capture_header_is_one_line_and_exit_2(tmp_path, content, expected):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    line = one_error_line(run("scan", str(path)))
    assert line.startswith(f"Error: {path}: ") and expected in line


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "capture.pcap"
    os.mkfifo(fifo)
    assert one_error_line(run("scan", str(fifo))) == f"Error: {fifo}: not a regular file"


def test_fifo_inside_a_folder_is_skipped_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.pcap")
    (tmp_path / "c01.pcap").write_bytes((PCAPS / RECORDS["c01"]["file"]).read_bytes())
    result = run("scan", str(tmp_path), "--format", "json")
    assert result.exit_code == 0
    assert [c["path"] for c in json.loads(result.stdout)["captures"]] == [str(tmp_path / "c01.pcap")]


def test_permission_denied_is_one_line_and_exit_2(tmp_path, monkeypatch):
    import ikeaudit.sources

    path = tmp_path / "c01.pcap"
    path.write_bytes((PCAPS / RECORDS["c01"]["file"]).read_bytes())

    def refuse(*args, **kwargs):  # root ignores chmod 0: refuse the open itself
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ikeaudit.sources, "open", refuse, raising=False)
    assert one_error_line(run("scan", str(path))) == f"Error: {path}: permission denied"


def test_folder_without_captures_warns_and_exits_0(tmp_path):
    (tmp_path / "notes.txt").write_text("no capture here")
    result = run("scan", str(tmp_path), "--format", "json")
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == [f"warning: no capture file in {tmp_path}"]
    assert json.loads(result.stdout)["negotiations"] == []


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_capture_cut_mid_record_warns_keeps_the_readable_part_and_exits_by_findings(tmp_path, fmt):
    data = (PCAPS / RECORDS["d01"]["file"]).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:len(data) - 100])  # the last record loses its end
    result = run("scan", str(cut), "--format", fmt, "--fail-on", "high")
    assert result.exit_code == 1  # the downgrade before the cut is still found
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {cut}: damaged capture, read up to the damage: truncated pcap")
    if fmt == "json":
        document = json.loads(result.stdout)
        assert [a["kind"] for a in document["captures"][0]["anomalies"]] == ["capture"]
        assert document["negotiations"][0]["classification"] == "classical-pq-offered"


def test_snaplen_cut_packets_warn_and_are_counted_as_incomplete(tmp_path):
    data = (PCAPS / RECORDS["h01"]["file"]).read_bytes()
    out = bytearray(data[:24])
    struct.pack_into("<I", out, 16, 200)  # snaplen 200
    for header, frame in pcap_records(data):
        header = bytearray(header)
        struct.pack_into("<I", header, 8, min(len(frame), 200))
        out += header + frame[:200]
    path = tmp_path / "snap200.pcap"
    path.write_bytes(bytes(out))
    result = run("scan", str(path), "--format", "json")
    assert result.exit_code == 0
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {path}: input anomalies (incomplete ")
    document = json.loads(result.stdout)
    kinds = {a["kind"] for a in document["captures"][0]["anomalies"]}
    kinds |= {a["kind"] for n in document["negotiations"] for a in n["anomalies"]}
    assert "incomplete" in kinds
    assert document["negotiations"], "the IKE_SA_INIT headers that fit in 200 bytes still make a negotiation"


def test_intact_capture_gives_no_warning():
    result = run("scan", lab_path("h01"), "--format", "json")
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.parametrize("args", [
    ["scan", "--jobs", "0"],
    ["mtu", "--mtu", "100"],
    ["mtu", "--fragment-size", "70000"],
    ["scan", "--fail-on", "extreme"],
], ids=["jobs-0", "mtu-too-small", "fragment-size-too-large", "fail-on-unknown"])
def test_bad_option_values_are_usage_errors(args):
    result = run(*args, lab_path("c01"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "Error: Invalid value" in result.stderr


@pytest.mark.parametrize("policy", ['name = "x"\n[rules\n', 'name = "x"\nnot_a_rule = 3\n'],
                         ids=["not-toml", "unknown-key"])
def test_bad_policy_file_is_one_line_and_exit_2(tmp_path, policy):
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    result = run("report", lab_path("c01"), "-o", str(tmp_path / "out"), "--policy", str(path))
    line = one_error_line(result)
    assert line.startswith("Error: ") and "policy.toml" in line


@pytest.mark.parametrize(("cell", "shown"), [
    ("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("-42", "-42"), ("+1.5", "+1.5"), ("strongSwan", "strongSwan"),
])
def test_csv_cells_a_spreadsheet_would_run_get_a_quote(cell, shown):
    from ikeaudit.report.machine import csv_safe

    assert csv_safe(cell) == shown
