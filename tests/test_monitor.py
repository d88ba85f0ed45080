"""Continuous monitoring (issue 16) without root: the formats, the alert rules, the
state database and the syslog framing, with `ikeaudit scan` on lab captures made into a
negotiation series (tests/series.py). The veth replay through `ikeaudit live` is in
test_monitor_live.py."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RECORDS, lab_path, scan_view
from series import INITIATOR, RESPONDER, make_series
from syslog5424 import Collector, deframe, parse
from ikeaudit.cli import main
from ikeaudit.monitor import ecs, zeek
from ikeaudit.monitor.alerts import Rules, Seen, epoch
from ikeaudit.monitor.community_id import community_id_v1
from ikeaudit.monitor.metrics import Metrics
from ikeaudit.monitor.service import Monitor, MonitorConfig
from ikeaudit.monitor.state import StateStore
from ikeaudit.monitor.syslog import SyslogTarget, message

DATA = Path(__file__).parent / "data"
PQ = {"hybrid-pq", "pq-only"}
CLASSICAL = {"classical", "classical-pq-offered"}


def ecs_fields() -> set[str]:
    with open(DATA / "ecs" / "ecs_fields.csv", newline="") as file:
        return {row["Field"] for row in csv.DictReader(file)}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return make_series(tmp_path_factory.mktemp("series") / "h01-then-c01.pcap")


def monitor(tmp_path: Path, **config) -> Monitor:
    config.setdefault("state_path", str(tmp_path / "state.sqlite"))
    config.setdefault("sensor", "test-sensor")
    return Monitor(MonitorConfig(**config))


# ---------------------------------------------------------------------------- Community ID


@pytest.mark.parametrize("name, seed", [("baseline_deflt.json", 0), ("baseline_seed1.json", 1)])
def test_community_id_matches_the_spec_baseline(name, seed):
    vectors = [v for v in json.loads((DATA / "community_id" / name).read_text()) if v["proto"] in (6, 17, 46, 132)]
    assert len(vectors) >= 10
    for v in vectors:
        assert community_id_v1(v["saddr"], v["daddr"], v["sport"], v["dport"], v["proto"], seed) == v["communityid"]


# ---------------------------------------------------------------------------- the series


def test_a_hybrid_then_classical_series_raises_exactly_one_fallback(series):
    code, out = run("scan", str(series), "--format", "eve")
    assert code == 0
    events = lines(out)
    negotiations = [e for e in events if e["event_type"] == "ikeaudit"]
    alerts = [e for e in events if e["event_type"] == "ikeaudit_alert"]
    assert [n["ikeaudit"]["classification"] for n in negotiations] == [
        RECORDS["h01"]["expected_classification"], RECORDS["c01"]["expected_classification"]]
    assert [a["ikeaudit"]["kind"] for a in alerts] == ["fallback"]
    (fallback,) = alerts
    evidence = fallback["ikeaudit"]["evidence"]
    assert evidence["previous"]["classification"] in PQ
    assert evidence["negotiation"]["classification"] in CLASSICAL
    assert evidence["negotiation"]["spi_i"] == negotiations[1]["ike"]["init_spi"]
    assert fallback["ikeaudit"]["severity"] == "high"
    assert (fallback["src_ip"], fallback["dest_ip"]) == (INITIATOR, RESPONDER)


def test_eve_common_section_and_ike_names_are_suricatas(series):
    _, out = run("scan", str(series), "--format", "eve")
    for event in lines(out):
        assert {"timestamp", "event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto",
                "community_id", "ike", "ikeaudit"} <= set(event)
        assert event["proto"] == "UDP"
        # Suricata's timestamp: microseconds and a numeric offset, e.g. 2017-04-07T22:24:37.251547+0100
        assert event["timestamp"][-5:] == "+0000" and event["timestamp"][19] == "."
        assert event["community_id"] == community_id_v1(event["src_ip"], event["dest_ip"], event["src_port"],
                                                        event["dest_port"], 17)
        assert {"version_major", "init_spi", "resp_spi"} <= set(event["ike"])
        assert event["ike"]["version_major"] == 2
    negotiation = lines(out)[0]
    assert {"message_id", "exchange_type", "alg_dh", "alg_enc"} <= set(negotiation["ike"])
    assert negotiation["ike"]["alg_dh"] == RECORDS["h01"]["chosen_ke"]["name"]


def flatten(doc: dict, prefix: str = "") -> set[str]:
    names = set()
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            names |= flatten(value, name + ".")
        else:
            names.add(name)
    return names


def test_every_ecs_field_is_in_the_field_list_of_the_version_named(series):
    _, out = run("scan", str(series), lab_path("x01"), lab_path("d01"), "--format", "ecs")
    docs = lines(out)
    known = ecs_fields()
    assert len(docs) >= 4
    for doc in docs:
        assert doc["ecs"]["version"] == ecs.ECS_VERSION
        ours = {n for n in flatten(doc) if not n.startswith("ikeaudit.")}
        assert ours <= known, ours - known
        assert {"@timestamp", "event.kind", "source.ip", "destination.ip", "network.community_id",
                "observer.name"} <= ours
    assert ecs.ECS_VERSION.split(".")[:2] == ["8", "12"]  # the list's version (tests/data/ecs/README.md)
    kinds = [d["event"]["kind"] for d in docs]
    assert "alert" in kinds and "event" in kinds


def test_zeek_log_is_written_as_zeek_writes_one_and_zat_reads_it(series, tmp_path):
    from zat.zeek_log_reader import ZeekLogReader

    path = tmp_path / "ikeaudit.log"
    code, _ = run("scan", str(series), "--format", "json", "--sink", f"zeek:{path}")
    assert code == 0
    text = path.read_text()
    header = text.splitlines()[:8]
    assert header[0] == "#separator \\x09"
    assert [h.split("\t")[0] for h in header[1:]] == ["#set_separator", "#empty_field", "#unset_field", "#path",
                                                      "#open", "#fields", "#types"]
    assert header[1:5] == ["#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tikeaudit"]
    fields, types = header[6].split("\t")[1:], header[7].split("\t")[1:]
    assert fields[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert types[:6] == ["time", "string", "addr", "port", "addr", "port"]
    assert text.splitlines()[-1].startswith("#close\t")
    rows = list(ZeekLogReader(str(path)).readrows())
    assert [r["event_type"] for r in rows] == ["negotiation", "negotiation", "alert"]
    assert rows[2]["alert"] == "fallback"
    assert all(r["id.orig_h"] == INITIATOR and r["id.resp_h"] == RESPONDER for r in rows)
    assert all(len(r["uid"]) == 18 and r["uid"][0] == "C" for r in rows)
    for line in text.splitlines()[8:-1]:
        assert len(line.split("\t")) == len(fields)


def test_zeek_escapes_separators_inside_values():
    assert zeek._cell("a\tb", "string") == "a\\x09b"
    assert zeek._cell(["x,y", "z"], "set[string]") == "x\\x2cy,z"
    assert zeek._cell([], "set[string]") == "(empty)" and zeek._cell(None, "string") == "-"
    assert zeek._cell("-", "string") == "\\x2d"


# ---------------------------------------------------------------------------- state


def test_the_same_negotiations_fed_twice_store_once_and_alert_once(series, tmp_path):
    state = str(tmp_path / "state.sqlite")
    _, first = run("scan", str(series), "--format", "eve", "--state", state)
    _, second = run("scan", str(series), "--format", "eve", "--state", state)
    assert [e["ikeaudit"]["kind"] for e in lines(first) if e["event_type"] == "ikeaudit_alert"] == ["fallback"]
    assert [e for e in lines(second) if e["event_type"] == "ikeaudit_alert"] == []
    db = sqlite3.connect(state)
    assert db.execute("SELECT COUNT(*) FROM negotiations").fetchone()[0] == 2
    assert db.execute("SELECT kind FROM alerts").fetchall() == [("fallback",)]
    (posture,) = db.execute("SELECT posture FROM tunnels").fetchone()
    assert posture == "classical"


def test_a_classical_tunnel_never_seen_before_is_a_new_classical_tunnel(tmp_path):
    _, out = run("scan", lab_path("c01"), "--format", "eve", "--state", str(tmp_path / "s.sqlite"))
    assert [e["ikeaudit"]["kind"] for e in lines(out) if e["event_type"] == "ikeaudit_alert"] \
        == ["new-classical-tunnel"]


def test_pq_offered_and_classical_chosen_is_a_downgrade(tmp_path):
    assert RECORDS["d01"]["pq_offered_by_initiator"] and not RECORDS["d01"]["chosen_additional_kes"]
    _, out = run("scan", lab_path("d01"), "--format", "eve")
    kinds = [e["ikeaudit"]["kind"] for e in lines(out) if e["event_type"] == "ikeaudit_alert"]
    assert kinds.count("downgrade") == 1 and "new-classical-tunnel" in kinds


def view(path: str, index: int = 0) -> dict:
    return scan_view(path)["negotiations"][index]


def test_failed_pq_attempts_without_a_success_are_a_pq_failure_after_the_grace(tmp_path):
    failed = view(lab_path("x01"))
    assert failed["pq_offered_by_initiator"] and failed["classification"] == "failed"
    m = monitor(tmp_path, rules=Rules(pq_failure_grace=300))
    assert m.negotiation(failed) == []
    t = epoch(failed["first_seen"])
    assert m.tick(t + 299) == []
    (alert,) = m.tick(t + 301)
    assert alert.kind == "pq-failure" and alert.evidence["failed_attempts"][0]["spi_i"] == failed["spi_i"]
    assert m.tick(t + 900) == []  # once per change of state
    m.close()


def test_a_classical_success_after_failed_pq_attempts_is_a_downgrade_not_a_pq_failure(tmp_path, series):
    failed, classical = view(lab_path("x01")), view(lab_path("c01"))
    classical = {**classical, "first_seen": "2030-01-01T00:00:00Z", "last_seen": "2030-01-01T00:00:01Z"}
    m = monitor(tmp_path)
    m.negotiation(failed)
    kinds = [a.kind for a in m.negotiation(classical)]
    assert "downgrade" in kinds
    assert [a.kind for a in m.tick(epoch(classical["last_seen"]) + 3600, end_of_input=True)] == []
    m.close()


def test_a_monitored_tunnel_unseen_past_its_rekey_interval_is_visibility_lost(tmp_path):
    hybrid = view(lab_path("h01"))
    m = monitor(tmp_path, rules=Rules(rekey_interval=3600, visibility_factor=1.5))
    m.negotiation(hybrid)
    last = epoch(hybrid["last_seen"])
    assert m.tick(last + 5399) == []
    (alert,) = m.tick(last + 5401)
    assert alert.kind == "visibility-lost"
    assert m.tick(last + 20000) == []
    m.close()


def test_an_older_negotiation_scanned_late_is_history_not_news(tmp_path):
    hybrid, classical = view(lab_path("h01")), view(lab_path("c01"))
    assert epoch(classical["first_seen"]) < epoch(hybrid["first_seen"])  # c01 was captured first
    m = monitor(tmp_path)
    assert m.negotiation(hybrid) == []
    assert m.negotiation(classical) == []  # older than the posture: no fallback
    assert m.state.tunnel(Seen.from_view(hybrid).peers).posture == "post-quantum"
    assert len(m.state.history(Seen.from_view(hybrid).peers)) == 2
    m.close()


def test_retention_drops_what_is_older_than_the_window(tmp_path):
    hybrid, classical = view(lab_path("h01")), view(lab_path("c01"))
    later = {**hybrid, "spi_i": "00000000000000aa", "first_seen": "2030-01-01T00:00:00Z",
             "last_seen": "2030-01-01T00:00:01Z"}
    m = monitor(tmp_path, retention_days=1)
    m.negotiation(classical)
    m.negotiation(later)
    m.state.expire()
    assert [r["spi_i"] for r in m.state.history(Seen.from_view(hybrid).peers)] == ["00000000000000aa"]
    assert m.state.add_negotiation(Seen.from_view(hybrid), "x") is False  # older than the window
    m.close()


def test_tunnels_lists_posture_and_last_change(series, tmp_path):
    state = str(tmp_path / "state.sqlite")
    run("scan", str(series), "--state", state, "--format", "json")
    code, out = run("tunnels", "--state", state, "--format", "json")
    assert code == 0
    (tunnel,) = json.loads(out)["tunnels"]
    assert (tunnel["peer_a"], tunnel["peer_b"]) == tuple(sorted((INITIATOR, RESPONDER)))
    assert tunnel["posture"] == "classical" and tunnel["negotiations"] == 2
    assert tunnel["last_change"] == tunnel["decided_by"]["time"]
    _, table = run("tunnels", "--state", state)
    assert "classical" in table and INITIATOR in table
    _, text = run("tunnels", "--state", state, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["posture"] == "classical"
    _, out = run("tunnels", "--state", state, "--format", "json", "--history")
    (tunnel,) = json.loads(out)["tunnels"]
    assert [n["classification"] for n in tunnel["history"]] == [RECORDS["h01"]["expected_classification"],
                                                                RECORDS["c01"]["expected_classification"]]
    _, recent = run("tunnels", "--state", state, "--since", "1h", "--format", "json")
    assert json.loads(recent)["tunnels"] == []  # the lab captures are older than an hour


def test_tunnels_without_a_state_database_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["tunnels", "--state", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 2 and "no state database" in result.output


# ---------------------------------------------------------------------------- syslog


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_alerts_reach_a_syslog_collector_as_strict_rfc5424(series, transport):
    collector = Collector(transport)
    try:
        code, _ = run("scan", str(series), "--format", "json", "--syslog", collector.target,
                      "--syslog-pen", "99999")
        assert code == 0
        import time

        deadline = time.monotonic() + 10
        while not collector.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        collector.close()
    assert collector.errors == []
    (msg,) = collector.messages
    assert msg.msgid == "fallback" and msg.app_name == "ikeaudit" and msg.severity == 3 and msg.version == 1
    params = msg.structured_data["ikeaudit@99999"]
    assert params["kind"] == "fallback" and params["src_ip"] == INITIATOR and params["dest_ip"] == RESPONDER
    assert params["community_id"] == community_id_v1(INITIATOR, RESPONDER, int(params["src_port"]),
                                                     int(params["dest_port"]), 17)
    assert "fell back to classical" in msg.msg


def test_octet_counting_frames_what_was_sent():
    frames, rest = deframe(b"5 hello3 abc1")
    assert frames == [b"hello", b"abc"] and rest == b"1"


def test_structured_data_values_are_escaped(tmp_path):
    from ikeaudit.monitor.events import alert_event

    classical = view(lab_path("c01"))
    m = monitor(tmp_path, sensor='odd"name]\\')
    (alert,) = m.negotiation(classical)
    raw = message(alert_event(alert), pen=1)
    parsed = parse(raw)
    assert parsed.structured_data["ikeaudit@1"]["sensor"] == 'odd"name]\\'
    m.close()


def test_a_bad_syslog_target_is_one_line_and_exit_2(series):
    result = CliRunner().invoke(main, ["scan", str(series), "--syslog", "nohostport"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    assert SyslogTarget.parse("[::1]:514/tcp") == SyslogTarget("::1", 514, "tcp")


# ---------------------------------------------------------------------------- sinks, metrics


def test_sighup_reopen_begins_a_new_file_and_closes_the_old(tmp_path):
    path = tmp_path / "ike.log"
    m = monitor(tmp_path, sinks=[("zeek", str(path)), ("eve", str(tmp_path / "eve.json"))])
    m.negotiation(view(lab_path("h01")))
    path.rename(tmp_path / "ike.log.1")
    (tmp_path / "eve.json").rename(tmp_path / "eve.json.1")
    m.request_reopen()
    m.negotiation(view(lab_path("c01")))
    m.close()
    old, new = (tmp_path / "ike.log.1").read_text().splitlines(), path.read_text().splitlines()
    assert old[-1].startswith("#close") and new[0] == "#separator \\x09" and new[-1].startswith("#close")
    assert len([x for x in old if not x.startswith("#")]) == 1 and len([x for x in new if not x.startswith("#")]) == 1
    assert len((tmp_path / "eve.json").read_text().splitlines()) == 1


def test_metrics_count_negotiations_tunnels_and_alerts(series, tmp_path):
    m = monitor(tmp_path)
    m.metrics = Metrics()
    views = scan_view(str(series))["negotiations"]
    for v in views:
        m.negotiation(v)
    m.metrics.note_capture(100, 2, 1, 40, now=0.0)
    m.metrics.note_capture(150, 2, 1, 60, now=10.0)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(m.metrics.registry).decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("ikeaudit_alerts_total", (("kind", "fallback"),))] == 1
    assert samples[("ikeaudit_negotiations_total", (("classification", "hybrid-pq"),))] == 1
    assert samples[("ikeaudit_tunnels", (("posture", "classical"),))] == 1
    assert samples[("ikeaudit_packets_captured_total", ())] == 150
    assert samples[("ikeaudit_packets_dropped_total", (("where", "kernel"),))] == 2
    assert samples[("ikeaudit_ike_datagrams_per_second", ())] == 2.0
    m.close()


def test_scan_without_monitoring_options_is_unchanged(series):
    _, plain = run("scan", str(series), "--format", "jsonl")
    assert [json.loads(x)["classification"] for x in plain.splitlines()] == ["hybrid-pq", "classical"]


def test_scan_with_state_alerts_exactly_as_live_would_have(series, tmp_path):
    """The series fed frame by frame through live's auditor, each negotiation handed to
    the monitor as live hands it out, raises the very alerts (ids included) of a scan."""
    from ikeaudit.classify import KeCatalog
    from ikeaudit.live import LiveAuditor
    from ikeaudit.records import Frame
    from ikeaudit.report.views import negotiation_view
    from ikeaudit.sources import iter_capture

    scanned = monitor(tmp_path / "scan")
    scan_alerts = scanned.scan(scan_view(str(series)))
    scanned.close()
    live = monitor(tmp_path / "live")
    auditor, catalog, live_alerts = LiveAuditor("live:test"), KeCatalog(), []
    for frame in iter_capture(str(series)):
        auditor.feed(frame)
        if isinstance(frame, Frame):
            for item in auditor.drain(frame.timestamp):
                live_alerts += live.negotiation(negotiation_view(item, catalog))
            live_alerts += live.tick(frame.timestamp)
    auditor.finish()
    for item in auditor.late:
        live_alerts += live.negotiation(negotiation_view(item, catalog))
    live.close()
    assert [a.kind for a in scan_alerts] == ["fallback"]
    assert [(a.kind, a.alert_id) for a in live_alerts] == [(a.kind, a.alert_id) for a in scan_alerts]


def test_report_with_a_state_records_the_tunnels_and_sends_the_alerts(series, tmp_path):
    state, eve = tmp_path / "state.sqlite", tmp_path / "eve.json"
    result = CliRunner().invoke(main, ["report", str(series), "-o", str(tmp_path / "out"), "--state", str(state),
                                       "--sink", f"eve:{eve}"], catch_exceptions=False)
    assert result.exit_code in (0, 1)
    assert [json.loads(x)["ikeaudit"].get("kind") for x in eve.read_text().splitlines()] == [None, None, "fallback"]
    assert sqlite3.connect(state).execute("SELECT COUNT(*) FROM negotiations").fetchone()[0] == 2
    assert (tmp_path / "out" / "posture.png").read_bytes()[:4] == b"\x89PNG"
    assert "Posture of these tunnels over time" in (tmp_path / "out" / "report.html").read_text()
    assert "posture.png" in (tmp_path / "out" / "report.md").read_text()


def test_an_unwritable_state_is_one_line_and_exit_2(series, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["scan", str(series), "--state", str(blocker / "state.sqlite")])
    assert result.exit_code == 2 and "cannot open the state database" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_a_tunnel_seen_again_after_visibility_lost_can_lose_it_again(tmp_path):
    hybrid = view(lab_path("h01"))
    m = monitor(tmp_path, rules=Rules(rekey_interval=100, visibility_factor=1.5))
    m.negotiation(hybrid)
    last = epoch(hybrid["last_seen"])
    assert [a.kind for a in m.tick(last + 151)] == ["visibility-lost"]
    m.negotiation(hybrid)  # the same IKE SA fed again, nothing newer: still lost, not raised twice
    assert m.tick(last + 1000) == []
    later = {**hybrid, "spi_i": "00000000000000bb", "first_seen": iso(last + 2000), "last_seen": iso(last + 2001)}
    assert m.negotiation(later) == []  # back: and its rekey interval is now the observed ~2000 s
    assert m.tick(last + 2001 + 2900) == []
    assert [a.kind for a in m.tick(last + 2001 + 3100)] == ["visibility-lost"]
    m.close()


def iso(t: float) -> str:
    from ikeaudit.report.views import iso_time

    return iso_time(t)


def test_a_syslog_collector_that_is_away_costs_a_warning_not_the_scan(series):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(main, ["scan", str(series), "--format", "eve", "--syslog", f"127.0.0.1:{port}/tcp"])
    assert result.exit_code == 0
    assert result.stderr.count(f"syslog 127.0.0.1:{port}/tcp: cannot send") == 1
    assert [json.loads(x)["event_type"] for x in result.stdout.splitlines()].count("ikeaudit_alert") == 1


def test_tunnels_plot_draws_the_posture_over_time(series, tmp_path):
    state = str(tmp_path / "state.sqlite")
    run("scan", str(series), "--state", state, "--format", "json")
    code, out = run("tunnels", "--state", state, "--plot", str(tmp_path / "posture"))
    assert code == 0 and "classical" in out
    png = (tmp_path / "posture.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "posture.svg").read_text()
    assert "fallback" in svg and "hybrid-pq" in svg and "classical" in svg  # legend: classes and the alert
