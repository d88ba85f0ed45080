"""Issue 16 end to end, as root: a hybrid-then-classical negotiation series (lab
captures h01 and c01 on one peer pair, tests/series.py) replayed with tcpreplay from a
network namespace over a veth pair to `ikeaudit live` on the other end, which must raise
exactly one `fallback` alert: received by a strict RFC 5424 collector on 127.0.0.1,
present in the eve, ecs and zeek sinks (the Zeek log read by zat, ECS names checked
against the field list), counted on /metrics (scraped, parsed with prometheus_client's
parser). Restarted on the same --state, the same negotiations raise nothing; its sink
files moved away and SIGHUP sent, it goes on writing into new files.

Skipped without root, `ip netns` or tcpreplay. The sniffing end stays in the root
namespace so that the collector and /metrics on 127.0.0.1 are the test's own.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import netns_problem
from series import INITIATOR, RESPONDER, make_series
from syslog5424 import Collector
from test_monitor import ecs_fields, flatten

IKEAUDIT = [sys.executable, "-c", "from ikeaudit.cli import main; main(prog_name='ikeaudit')"]


PROBLEM = netns_problem("tcpreplay")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def veth():
    """(namespace, its veth end, the root namespace's end)."""
    tag = secrets.token_hex(3)
    ns, inner, outer = f"iam{tag}", f"iam{tag}s", f"iam{tag}n"
    try:
        ip("netns", "add", ns)
        ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        ip("link", "set", inner, "netns", ns)
        ip("-n", ns, "link", "set", inner, "up")
        ip("link", "set", outer, "up")
        yield ns, inner, outer
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    def __init__(self, folder: Path, interface: str, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.stdout, self.stderr = folder / "stdout", folder / "stderr"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen([*IKEAUDIT, "live", "-i", interface, "--status-every", "0",
                                             "--format", "jsonl", *args], stdout=out, stderr=err)
        self.wait_for(lambda: "listening on" in self.stderr.read_text(errors="replace"), "start")

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"ikeaudit live exited ({self.process.returncode}) before {what}: "
                            f"{self.stderr.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {self.stderr.read_text(errors='replace')}")
            time.sleep(0.1)

    def negotiations(self) -> list[dict]:
        return [json.loads(x) for x in self.stdout.read_text().splitlines() if x.strip()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            pytest.fail("ikeaudit live did not stop on SIGTERM")


def replay(ns: str, interface: str, pcap: Path) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-q", "--pps=100", "-i", interface, str(pcap)],
                   check=True, capture_output=True, text=True, timeout=120)


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def alerts_in(folder: Path) -> dict[str, list]:
    from zat.zeek_log_reader import ZeekLogReader

    eve = [json.loads(x) for x in (folder / "eve.json").read_text().splitlines()]
    ecs = [json.loads(x) for x in (folder / "ecs.json").read_text().splitlines()]
    zeek = list(ZeekLogReader(str(folder / "ikeaudit.log")).readrows())
    known = ecs_fields()
    for doc in ecs:
        assert {n for n in flatten(doc) if not n.startswith("ikeaudit.")} <= known
    return {"eve": [e["ikeaudit"]["kind"] for e in eve if e["event_type"] == "ikeaudit_alert"],
            "ecs": [d["event"]["action"] for d in ecs if d["event"]["kind"] == "alert"],
            "zeek": [r["alert"] for r in zeek if r["event_type"] == "alert"],
            "negotiations": [e for e in eve if e["event_type"] == "ikeaudit"]}


def test_a_fallback_replayed_on_a_veth_alerts_once_everywhere_and_not_again_after_a_restart(veth, tmp_path):
    ns, inner, outer = veth
    series = make_series(tmp_path / "series.pcap")
    state = tmp_path / "state.sqlite"
    collector = Collector("tcp")
    runs = []
    try:
        def start(name: str, metrics_port: int) -> Live:
            out = tmp_path / name
            live = Live(out, outer, "--state", str(state), "--sensor", "veth-test", "--idle-timeout", "30",
                        "--sink", f"eve:{out / 'eve.json'}", "--sink", f"ecs:{out / 'ecs.json'}",
                        "--sink", f"zeek:{out / 'ikeaudit.log'}", "--syslog", collector.target,
                        "--metrics-port", str(metrics_port))  # fmt: skip
            runs.append(live)
            return live

        port = free_port()
        first = start("first", port)
        replay(ns, inner, series)
        first.wait_for(lambda: len(first.negotiations()) >= 2, "both negotiations")
        first.wait_for(lambda: collector.messages, "the syslog alert", timeout=30)
        metrics = {}

        def counted() -> bool:  # capture counters are refreshed once a second
            metrics.update(scrape(port))
            return (metrics.get(("ikeaudit_alerts_total", (("kind", "fallback"),))) == 1
                    and metrics.get(("ikeaudit_packets_captured_total", ()), 0) > 0)

        first.wait_for(counted, "the alert on /metrics", timeout=30)
        assert sum(v for (name, _), v in metrics.items() if name == "ikeaudit_negotiations_total") == 2
        assert metrics[("ikeaudit_tunnels", (("posture", "classical"),))] == 1
        assert metrics[("ikeaudit_packets_captured_total", ())] > 0
        assert first.stop() == 0

        assert [n["classification"] for n in first.negotiations()] == ["hybrid-pq", "classical"]
        assert collector.errors == []
        (message,) = collector.messages
        assert message.msgid == "fallback"
        sd = message.structured_data["ikeaudit@32473"]
        assert (sd["src_ip"], sd["dest_ip"], sd["sensor"]) == (INITIATOR, RESPONDER, "veth-test")
        found = alerts_in(tmp_path / "first")
        assert found["eve"] == found["ecs"] == found["zeek"] == ["fallback"]
        assert len(found["negotiations"]) == 2

        second = start("second", free_port())
        # logrotate's way: move the files away, SIGHUP; live goes on into new files.
        for name in ("eve.json", "ecs.json", "ikeaudit.log"):
            (tmp_path / "second" / name).rename(tmp_path / "second" / f"{name}.1")
        second.process.send_signal(signal.SIGHUP)
        second.wait_for(lambda: (tmp_path / "second" / "ikeaudit.log.1").read_text().rstrip().splitlines()[-1]
                        .startswith("#close"), "the rotated Zeek log's #close line", timeout=30)
        replay(ns, inner, series)
        second.wait_for(lambda: len(second.negotiations()) >= 2, "both negotiations again")
        assert second.stop() == 0
        assert not [x for x in (tmp_path / "second" / "eve.json.1").read_text().splitlines() if x]
        again = alerts_in(tmp_path / "second")
        assert again["eve"] == again["ecs"] == again["zeek"] == []
        assert len(again["negotiations"]) == 2
        assert len(collector.messages) == 1 and collector.errors == []
        tunnels = subprocess.run([*IKEAUDIT, "tunnels", "--state", str(state), "--format", "json"],
                                 capture_output=True, text=True, timeout=60)
        (tunnel,) = json.loads(tunnels.stdout)["tunnels"]
        assert tunnel["posture"] == "classical" and tunnel["negotiations"] == 2
    finally:
        for live in runs:
            if live.process.poll() is None:
                live.process.kill()
                live.process.wait(10)
        collector.close()
