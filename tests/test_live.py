"""`ikeaudit live`: the streaming composition, the capture loop, and real captures.

Without root: LiveAuditor against the offline pipeline on every lab capture, the
session loop with a stand-in capture, the pcap writer, atomic reports, CLI errors.

With root (skipped otherwise, or when `ip netns` is unavailable): two network
namespaces joined by a veth pair; each lab capture is replayed frame by frame onto one
end (raw Ethernet frames through an AF_PACKET socket, gaps compressed to a few ms)
while `ikeaudit live` sniffs the other end, and what live reports must equal what
`ikeaudit scan` finds in the capture. Then one real handshake between two strongSwan
daemons, which is skipped when strongSwan is not installed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import PCAPS, netns_problem, scan_view
from ikeaudit.capture_filter import ike_filter
from ikeaudit.classify import KeCatalog
from ikeaudit.decrypt import parse_key_table
from ikeaudit.extract import Extractor
from ikeaudit.live import (
    SHED_DECRYPTION,
    SHED_MINOR,
    CaptureStats,
    LiveAuditor,
    LiveCaptureError,
    LiveSession,
    PcapWriter,
    combined_filter,
    pressure_of,
    write_atomically,
)
from ikeaudit.pipeline import audit_frames
from ikeaudit.records import Frame
from ikeaudit.report.views import scan_document
from ikeaudit.sources import iter_capture

LAB_CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap"))
NEGOTIATION_FIELDS = (
    "classification", "classification_basis", "ke_method", "addke_methods", "spi_i", "spi_r",
    "pq_offered_by_initiator", "initiator", "responder", "ike_version", "ip_version", "state",
    "established", "exchanges", "moved_to_4500", "rekeyed_from", "error", "mlkem_parameter_set",
)  # fmt: skip
MESSAGE_FIELDS = (
    "exchange", "message_id", "response", "from_initiator", "udp_payload_bytes", "ike_fragments",
    "ike_fragments_seen", "ip_fragmented", "ip_fragment_lengths", "retransmissions", "payloads",
    "notifies", "ke_method", "ke_data_bytes",
)  # fmt: skip
STAT_FIELDS = ("ike_datagrams", "ikev1_datagrams", "reassembled", "tcp_ike")


def lab(record_id: str) -> str:
    """The lab capture of a manifest id, e.g. "h01"."""
    (path,) = PCAPS.glob(f"{record_id}_*.pcap")
    return str(path)


def frames_of(path: str) -> list[Frame]:
    return [f for f in iter_capture(path) if isinstance(f, Frame)]


def document(result) -> dict:
    return scan_document([result], KeCatalog())


def projected(n: dict) -> dict:
    view = {k: n[k] for k in NEGOTIATION_FIELDS}
    view["findings"] = sorted(f["code"] for f in n["findings"])
    view["messages"] = [{k: m[k] for k in MESSAGE_FIELDS} for m in n["messages"]]
    return view


# ---------------------------------------------------------------------------- LiveAuditor


@pytest.mark.parametrize("name", LAB_CAPTURES)
def test_live_auditor_finishes_exactly_as_the_offline_pipeline(name):
    """Fed every frame, drained all along, finish() is audit_frames' result, and each
    negotiation is handed out exactly once (by drain or in `late`)."""
    path = str(PCAPS / name)
    offline = audit_frames(path, iter_capture(path))
    auditor = LiveAuditor(path)
    drained = []
    for frame in iter_capture(path):
        auditor.feed(frame)
        if isinstance(frame, Frame):
            drained += auditor.drain(frame.timestamp)
    result = auditor.finish()
    assert document(result) == document(offline)
    assert result.esp_flows == offline.esp_flows
    handed_out = [(i.negotiation.spi_i, i.negotiation.first_frame) for i in drained + auditor.late]
    assert sorted(handed_out) == sorted((i.negotiation.spi_i, i.negotiation.first_frame)
                                        for i in result.negotiations)  # fmt: skip


def test_drain_hands_out_a_handshake_as_soon_as_it_completes():
    path = lab("h01")
    auditor = LiveAuditor(path)
    for frame in frames_of(path):
        auditor.feed(frame)
        items = auditor.drain(frame.timestamp)
        if items:
            break
    else:
        pytest.fail("drain never handed the negotiation out")
    (item,) = items
    assert item.negotiation.state == "established"  # IKE_AUTH answered (not proof of success)
    assert item.classification.name == "hybrid-pq"
    assert item.negotiation.messages[-1].exchange == 35 and item.negotiation.messages[-1].response
    assert auditor.drain(frame.timestamp + 1000) == []  # once only


def test_an_unanswered_negotiation_is_handed_out_when_idle():
    auditor = LiveAuditor("live:test", idle_timeout=30)
    for sa_init in frames_of(lab("c01")):
        auditor.feed(sa_init)
        if auditor.stats()["ike_datagrams"]:  # the IKE_SA_INIT request, never answered here
            break
    assert auditor.drain(sa_init.timestamp + 29) == []
    (item,) = auditor.drain(sa_init.timestamp + 31)
    assert item.classification.name == "incomplete"
    assert auditor.finish().negotiations[0].negotiation.spi_i == item.negotiation.spi_i
    assert auditor.late == []


def test_a_rekeyed_sa_drained_later_inherits_its_drained_parent():
    path = lab("r01")
    auditor = LiveAuditor(path)
    frames = frames_of(path)
    for frame in frames:
        auditor.feed(frame)
        auditor.drain(frame.timestamp)
    (child,) = auditor.drain(frames[-1].timestamp + 10_000)
    assert child.negotiation.rekeyed_from is not None
    assert child.classification.basis == "inherited from parent IKE SA"
    assert child.classification.name == "hybrid-pq"


def test_capture_losses_become_stats_and_an_anomaly():
    auditor = LiveAuditor("live:test")
    auditor.note_capture_stats(CaptureStats(received=100, dropped=7, interface_dropped=2))
    result = auditor.finish()
    assert result.stats["capture_dropped"] == 7 and result.stats["capture_interface_dropped"] == 2
    (anomaly,) = result.anomalies
    assert anomaly.kind == "incomplete" and "7 dropped" in anomaly.detail


# ---------------------------------------------------------------------------- the loop


class FakeCapture:
    """Stands in for LiveCapture: hands out frames, then None (a timeout) after a pause,
    as pcap_next_ex's timeout does. A session that never stops (no count, duration or
    stop()) ends in a capture error after `give_up` seconds, not in a spinning test."""

    def __init__(self, frames, linktype=1, give_up=120.0):
        self.pending = list(frames)
        self.linktype = linktype
        self.frames = 0
        self.closed = False
        self.give_up_at = time.monotonic() + give_up

    def next_frame(self):
        if not self.pending:
            if time.monotonic() > self.give_up_at:
                raise LiveCaptureError("fake capture: the session was never told to stop")
            time.sleep(0.001)
            return None
        self.frames += 1
        frame = self.pending.pop(0)
        return Frame(self.frames, frame.timestamp, frame.linktype, frame.data, frame.wire_length)

    def stats(self):
        return CaptureStats(self.frames, 3, 0)

    def close(self):
        self.closed = True


def run_session(frames, **options):
    emitted, reports, statuses = [], [], []
    session = LiveSession(FakeCapture(frames), LiveAuditor("live:fake"), on_negotiation=emitted.append,
                          on_report=lambda a, s: reports.append((a, s)), on_status=statuses.append,
                          **options)  # fmt: skip
    return session, session.run(), emitted, reports, statuses


def test_session_stops_at_count_and_hands_out_what_was_in_flight(tmp_path):
    frames = frames_of(lab("h01"))
    writer = PcapWriter(str(tmp_path / "w.pcap"), 1)
    session, result, emitted, reports, _ = run_session(frames, count=8, writer=writer)
    assert session.stopped_by == "count"
    assert session.capture.closed and session.capture.frames == 8
    assert len(frames_of(str(tmp_path / "w.pcap"))) == 8
    (item,) = emitted  # the handshake was cut short: emitted by finish, not drain
    assert item.negotiation.state != "established"
    final, status = reports[-1]
    assert final is result and status.final and status.stopped_by == "count"
    assert result.stats["capture_dropped"] == 3
    assert any(a.kind == "incomplete" and "3 dropped" in a.detail for a in result.anomalies)


def test_session_stop_reads_what_the_kernel_already_holds():
    frames = frames_of(lab("c01"))
    capture = FakeCapture(frames)
    emitted = []
    session = LiveSession(capture, LiveAuditor("live:fake"), on_negotiation=emitted.append)
    session.stop("SIGTERM")  # before the first frame: the buffered ones still count
    result = session.run()
    assert capture.frames == len(frames)
    assert [i.classification.name for i in emitted] == ["classical"]
    assert document(result)["negotiations"][0]["established"]


def test_session_duration_reports_and_status_with_a_fake_clock():
    ticks = iter(range(10_000))
    frames = frames_of(lab("c02"))
    session, result, emitted, reports, statuses = run_session(
        frames, duration=50, status_every=10, report_every=20, clock=lambda: next(ticks) * 1.0,
        wallclock=lambda: frames[0].timestamp)
    assert session.stopped_by == "duration"
    assert [r[1].final for r in reports] == [False, False, True]
    assert [s.final for s in statuses][-1] is True and len(statuses) >= 4
    assert len(emitted) == 1 and len(result.negotiations) == 1
    assert reports[0][0].negotiations  # periodic reports carry what was handed out so far


def test_a_backlog_does_not_make_negotiations_look_idle():
    """Python behind the kernel's buffer (frames hours older than the wall clock): idle
    time is measured on the capture clock, so the handshake is one negotiation, not one
    per message."""
    frames = frames_of(lab("c02"))
    ticks = iter(range(100_000))
    session, result, emitted, _, _ = run_session(frames, wallclock=lambda: frames[0].timestamp + 7200,
                                                 drain_every=0, duration=100,
                                                 clock=lambda: float(next(ticks)))  # fmt: skip
    assert len(emitted) == 1
    # two hours of capture time later it has left memory, counted (--history)
    assert result.negotiations == [] and result.stats["negotiations_pruned"] == 1
    assert emitted[0].negotiation.state == "established"


def test_slow_reports_are_spaced_out_so_capture_goes_on():
    ticks = iter(range(100_000))
    frames = frames_of(lab("c02"))
    reports = []

    def slow_report(audit, status):  # every report "takes" 10 ticks of the clock
        reports.append(status.final)
        for _ in range(9):
            next(ticks)

    session = LiveSession(FakeCapture(frames), LiveAuditor("live:fake"), on_negotiation=lambda i: None,
                          on_report=slow_report, report_every=1, duration=300,
                          clock=lambda: float(next(ticks)), wallclock=lambda: frames[0].timestamp)  # fmt: skip
    session.run()
    # Back to back, the 300 ticks would hold ~27 reports; spaced out, about 300 / 30.
    assert 5 <= reports.count(False) <= 12


def test_session_stops_when_the_reader_goes_away():
    def broken(item):
        raise BrokenPipeError

    frames = frames_of(lab("c01")) * 3
    session = LiveSession(FakeCapture(frames), LiveAuditor("live:fake"), on_negotiation=broken,
                          clock=iter(range(10_000)).__next__, drain_every=1)  # fmt: skip
    session.run()
    assert session.stopped_by == "output closed"


# ---------------------------------------------------------------------------- shedding

MANIFEST = {r["id"]: r for r in json.loads((PCAPS / "manifest.json").read_text())["records"]}
EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL", 43: "IKE_INTERMEDIATE",
             44: "IKE_FOLLOWUP_KE"}  # RFC 7296, RFC 9242, RFC 9370  # fmt: skip


def exchanges_on_the_wire(frames: list[Frame]) -> Counter:
    """Exchange type byte of each IKE datagram, read from the bytes, not by our dissector."""
    extractor, seen = Extractor(), Counter()
    for frame in frames:
        for out in extractor.feed(frame):
            if hasattr(out, "payload"):
                seen[EXCHANGES.get(out.payload[18], out.payload[18])] += 1
    return seen


def audited_under(frames: list[Frame], pressure: int, keys=None) -> tuple[LiveAuditor, list]:
    auditor = LiveAuditor("live:test", keys=keys)
    for frame in frames:
        auditor.feed(frame, pressure)
    return auditor, auditor.finish().negotiations


def test_queue_fill_raises_the_pressure_in_steps():
    assert [pressure_of(f) for f in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_overload_sheds_informational_and_retransmissions_and_keeps_every_handshake_message():
    frames = frames_of(lab("h01"))
    on_wire = exchanges_on_the_wire(frames)
    auth = next(f for f in frames if exchanges_on_the_wire([f]) == Counter({"IKE_AUTH": 1}))
    resent = Frame(len(frames) + 1, frames[-1].timestamp + 1, auth.linktype, auth.data, auth.wire_length)
    auditor, negotiations = audited_under([*frames, resent], SHED_MINOR)
    assert auditor.shedding.counts == Counter({"INFORMATIONAL": on_wire["INFORMATIONAL"], "retransmission": 1})
    (item,) = negotiations
    assert item.classification.name == MANIFEST["h01"]["expected_classification"]
    (whole,) = audit_frames("live:test", frames).negotiations

    def messages(n, exchanges):
        return [(m.exchange, m.message_id, m.response, m.frames) for m in n.messages if EXCHANGES[m.exchange] in exchanges]

    handshake = ("IKE_SA_INIT", "IKE_INTERMEDIATE", "IKE_AUTH")
    assert messages(item.negotiation, handshake) == messages(whole.negotiation, handshake)
    assert messages(item.negotiation, ("INFORMATIONAL",)) == []
    (shed,) = [a for a in item.negotiation.anomalies if a.kind == "shed"]
    assert "INFORMATIONAL" in shed.detail and "retransmission" in shed.detail
    stats = auditor.finish().stats
    assert stats["shed INFORMATIONAL"] == on_wire["INFORMATIONAL"] and stats["shed retransmission"] == 1


def test_without_pressure_nothing_is_shed_and_the_audit_is_the_offline_one():
    frames = frames_of(lab("h01"))
    auditor, negotiations = audited_under(frames, 0)
    assert not auditor.shedding.counts
    offline = audit_frames("live:test", frames)
    assert [projected(n) for n in document(auditor.finish())["negotiations"]] == \
        [projected(n) for n in document(offline)["negotiations"]]


def test_a_negotiation_whose_decryption_was_shed_keeps_its_class_and_is_not_verified():
    record = MANIFEST["h01"]
    keys = parse_key_table((PCAPS / record["keys_file"]).read_text(), record["keys_file"])
    frames = frames_of(lab("h01"))
    _, (full,) = audited_under(frames, 0, keys)
    assert full.classification.confidence == "verified"  # the premise: keys verify it
    auditor, (item,) = audited_under(frames, SHED_DECRYPTION, keys)
    assert item.classification.name == full.classification.name == record["expected_classification"]
    assert item.classification.confidence != "verified"
    assert any(a.kind == "shed" and "decryption of IKE_AUTH" in a.detail for a in item.negotiation.anomalies)
    assert auditor.shedding.counts["decryption of IKE_INTERMEDIATE"] == exchanges_on_the_wire(frames)["IKE_INTERMEDIATE"]


def test_the_session_reports_its_queue_high_water_mark():
    frames = frames_of(lab("c01"))
    session, result, _, reports, statuses = run_session(frames, count=len(frames))
    assert session.stopped_by == "count"
    assert 1 <= result.stats["queue_high_water"] <= len(frames)
    assert result.stats["queue_capacity"] == session.queue_frames
    assert statuses[-1].queue_high_water == result.stats["queue_high_water"]


def test_handed_out_negotiations_leave_memory_after_the_history_and_stay_counted():
    frames = frames_of(lab("c01"))
    auditor = LiveAuditor("live:test", history=60)
    for frame in frames:
        auditor.feed(frame)
    (item,) = auditor.drain(frames[-1].timestamp)
    assert auditor.snapshot().negotiations == [item]
    auditor.drain(item.negotiation.last_seen + 61)
    assert auditor.snapshot().negotiations == []
    stats = auditor.snapshot().stats
    assert stats["negotiations_handed_out"] == 1 and stats[f"handed_out {item.classification.name}"] == 1


# ---------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", ["v01_ipv6_hybrid_x25519_mlkem768.pcap", "p02_pq_mlkem1024_mtu1500.pcap"])
def test_pcap_writer_round_trip(tmp_path, name):
    frames = frames_of(str(PCAPS / name))
    writer = PcapWriter(str(tmp_path / "out.pcap"), frames[0].linktype)
    for frame in frames:
        writer.write(frame)
    writer.close()
    again = frames_of(str(tmp_path / "out.pcap"))
    assert [(f.number, f.timestamp, f.linktype, f.data, f.wire_length) for f in again] == \
        [(f.number, f.timestamp, f.linktype, f.data, f.wire_length) for f in frames]


def test_reports_are_replaced_atomically(tmp_path):
    target = tmp_path / "live-report.json"
    write_atomically(str(target), "one")
    write_atomically(str(target), "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["live-report.json"]


def test_user_filter_narrows_the_ike_filter():
    assert combined_filter(None) == ike_filter()
    assert combined_filter("host 192.0.2.1") == f"({ike_filter()}) and (host 192.0.2.1)"
    assert "proto 50" in combined_filter(None, esp=True)


def cli(*args):
    from ikeaudit.cli import main

    return CliRunner().invoke(main, ["live", *args])


def test_report_every_needs_an_output_dir():
    result = cli("-i", "lo", "--report-every", "5")
    assert result.exit_code == 2 and "-o DIR" in result.output


def test_a_missing_interface_is_one_line_and_exit_2():
    result = cli("-i", "nosuchif" + secrets.token_hex(3)[:5])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message and "Traceback" not in message
    assert "no such network interface" in message or "root" in message


# ---------------------------------------------------------------------------- namespaces


NETNS_PROBLEM = netns_problem()
needs_netns = pytest.mark.skipif(NETNS_PROBLEM is not None, reason=NETNS_PROBLEM or "")
IKEAUDIT = [sys.executable, "-c", "from ikeaudit.cli import main; main(prog_name='ikeaudit')"]

# Runs inside the sending namespace: the capture's raw frames onto the veth, in order,
# gaps compressed to at most MAX_GAP seconds; optional VLAN tags (TPID:VID,...).
REPLAY = textwrap.dedent("""
    import socket, struct, sys, time
    from ikeaudit.records import Frame
    from ikeaudit.sources import iter_capture
    path, interface, max_gap, tags, start, stop = sys.argv[1:7]
    frames = [f for f in iter_capture(path) if isinstance(f, Frame)][int(start):int(stop) or None]
    tag = b"".join(struct.pack("!HH", int(t.split(":")[0], 16), int(t.split(":")[1]))
                   for t in tags.split(",") if t)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((interface, 0))
    previous = None
    for f in frames:
        if previous is not None:
            time.sleep(max(0.0, min(f.timestamp - previous, float(max_gap))))
        previous = f.timestamp
        sock.send(f.data[:12] + tag + f.data[12:] if tag else f.data)
    print(len(frames))
""")


class VethPair:
    """Namespaces <tag>s (sender) and <tag>n (sniffer), joined by veths of the same names."""

    def __init__(self) -> None:
        self.tag = f"ia{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.send_ns = self.send_if = f"{self.tag}s"
        self.sniff_ns = self.sniff_if = f"{self.tag}n"
        self.processes: list[subprocess.Popen] = []

    def create(self) -> None:
        for ns in (self.send_ns, self.sniff_ns):
            self.ip("netns", "add", ns)
        self.ip("link", "add", self.send_if, "netns", self.send_ns, "type", "veth",
                "peer", "name", self.sniff_if, "netns", self.sniff_ns)  # fmt: skip
        for ns, interface in ((self.send_ns, self.send_if), (self.sniff_ns, self.sniff_if)):
            self.ip("-n", ns, "link", "set", "lo", "up")
            # Room for QinQ tags on full-size frames.
            self.ip("-n", ns, "link", "set", interface, "mtu", "9000", "up")

    def destroy(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for ns in (self.send_ns, self.sniff_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @staticmethod
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def exec(self, ns: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *command]

    def replay(self, path: str, *, max_gap: float = 0.005, tags: str = "", start: int = 0,
               stop: int = 0) -> int:  # fmt: skip
        command = self.exec(self.send_ns, sys.executable, "-c", REPLAY, path, self.send_if,
                            str(max_gap), tags, str(start), str(stop))  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        return int(done.stdout)


@pytest.fixture(scope="module")
def veth():
    if NETNS_PROBLEM is not None:
        pytest.skip(NETNS_PROBLEM)
    pair = VethPair()
    try:
        pair.create()
        yield pair
    finally:
        pair.destroy()


class LiveRun:
    """`ikeaudit live` running in the sniffing namespace, output in files."""

    def __init__(self, pair: VethPair, folder: Path, *args: str, interface: str | None = None,
                 ns: str | None = None) -> None:  # fmt: skip
        self.folder = folder
        self.stdout_path, self.stderr_path = folder / "stdout", folder / "stderr"
        command = pair.exec(ns or pair.sniff_ns, *IKEAUDIT, "live", "-i", interface or pair.sniff_if,
                            "--status-every", "0", *args)  # fmt: skip
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err)
        pair.processes.append(self.process)
        self.wait_listening()

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "listening on" not in self.stderr():
            if self.process.poll() is not None:
                pytest.fail(f"ikeaudit live exited with {self.process.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"ikeaudit live did not start: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if sig is not None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines()]

    def report(self) -> dict:
        return json.loads((self.folder / "out" / "live-report.json").read_text())


def assert_prefix_of(seen: list[dict], whole: list[dict]) -> None:
    """A negotiation emitted mid-capture shows its messages as they then stood: all but
    the last are whole; the last may still lack IKE fragments or retransmissions that
    arrived after the emission."""
    assert seen[:-1] == whole[: len(seen) - 1]
    if not seen:
        return
    last, final = seen[-1], whole[len(seen) - 1]
    growing = ("udp_payload_bytes", "ike_fragments_seen", "ip_fragment_lengths", "retransmissions",
               "ip_fragmented")
    assert {k: v for k, v in last.items() if k not in growing} \
        == {k: v for k, v in final.items() if k not in growing}
    pieces = len(last["udp_payload_bytes"])
    assert last["udp_payload_bytes"] == final["udp_payload_bytes"][:pieces]
    assert last["ip_fragment_lengths"] == final["ip_fragment_lengths"][:pieces]
    assert set(last["ike_fragments_seen"]) <= set(final["ike_fragments_seen"])
    assert last["retransmissions"] <= final["retransmissions"]


def check_against_scan(path: str, run: LiveRun, report: dict) -> None:
    """The final live report equals `ikeaudit scan` of the capture; the JSONL stream held
    each negotiation once, as it then stood (so its messages are a prefix of the final ones)."""
    expected = {n["spi_i"]: projected(n) for n in scan_view(path)["negotiations"]}
    final = {n["spi_i"]: projected(n) for n in report["negotiations"]}
    assert final == expected
    streamed = Counter(n["spi_i"] for n in run.lines())
    assert streamed == Counter(list(expected))  # every negotiation, once
    for n in run.lines():
        seen, whole = projected(n), expected[n["spi_i"]]
        # A line is streamed when IKE_AUTH is answered; the exchanges that show the SA came
        # up (established, inferred) may come after it, so the final report carries them.
        later = ("messages", "state", "exchanges", "findings", "established", "established_basis")
        assert {k: v for k, v in seen.items() if k not in later} == {k: v for k, v in whole.items() if k not in later}
        assert_prefix_of(seen["messages"], whole["messages"])
    stats, scanned = report["captures"][0]["stats"], scan_view(path)["captures"][0]["stats"]
    assert {k: stats.get(k, 0) for k in STAT_FIELDS} == {k: scanned.get(k, 0) for k in STAT_FIELDS}
    assert stats["capture_dropped"] == 0


@needs_netns
@pytest.mark.parametrize("name", LAB_CAPTURES)
def test_live_on_a_veth_reports_what_scan_finds(veth, tmp_path, name):
    path = str(PCAPS / name)
    run = LiveRun(veth, tmp_path, "--format", "jsonl", "-o", str(tmp_path / "out"),
                  "--write", str(tmp_path / "seen.pcap"))  # fmt: skip
    sent = veth.replay(path)
    assert run.stop(signal.SIGTERM) == 0, run.stderr()
    report = run.report()
    assert report["live"]["final"] and report["live"]["stopped_by"] == "SIGTERM"
    check_against_scan(path, run, report)
    # The kernel filter kept ESP, ARP and the rest out of Python; IKE and its fragments
    # all came through, and the pcap kept them: scanned again, it tells the same story
    # with the same frame numbers. IPv6 packets with extension headers (MLD's Hop-by-Hop,
    # the veth's own among them) pass as they pass the scan's prefilter: a filter cannot
    # see the ports past them.
    stats, scanned = report["captures"][0]["stats"], scan_view(path)["captures"][0]["stats"]
    assert not any(stats.get(k) for k in ("esp", "non_ip", "ah"))
    assert stats.get("non_ike", 0) >= scanned.get("non_ike", 0)
    ike_frames = sum(scanned.get(k, 0) for k in ("ike_datagrams", "ip_fragments", "esp_in_udp",
                                                 "nat_keepalive")) - scanned.get("reassembled", 0)
    assert report["live"]["packets_captured"] == stats["frames"] == ike_frames + stats.get("non_ike", 0)
    assert ike_frames < sent
    rescanned = scan_view(str(tmp_path / "seen.pcap"))
    for live_n, again in zip(report["negotiations"], rescanned["negotiations"], strict=True):
        assert {**live_n, "capture": None} == {**again, "capture": None}
    assert "dropped 0 packet(s)" in run.stderr()


@needs_netns
@pytest.mark.parametrize("name, tags", [
    ("v01_ipv6_hybrid_x25519_mlkem768.pcap", "8100:100"),
    ("p02_pq_mlkem1024_mtu1500.pcap", "88a8:200,8100:100"),
])  # fmt: skip
def test_vlan_tagged_ike_and_fragments_pass_the_kernel_filter(veth, tmp_path, name, tags):
    path = str(PCAPS / name)
    run = LiveRun(veth, tmp_path, "--format", "jsonl", "-o", str(tmp_path / "out"),
                  "--write", str(tmp_path / "tagged.pcap"))  # fmt: skip
    veth.replay(path, tags=tags)
    assert run.stop(signal.SIGINT) == 0, run.stderr()
    check_against_scan(path, run, run.report())
    # The tags reached the extractor (libpcap puts back the one the kernel strips).
    tpids = {int(t.split(":")[0], 16) for t in tags.split(",")}
    # The kernel's own IPv6 multicast (MLD reports of the new veth, to 33:33:...: a
    # Hop-by-Hop header, which the filter lets through) may be captured too, untagged.
    replayed = [f for f in frames_of(str(tmp_path / "tagged.pcap")) if f.data[:2] != b"\x33\x33"]
    assert replayed
    for frame in replayed:
        assert {int.from_bytes(frame.data[12 + 4 * i : 14 + 4 * i], "big") for i in range(len(tpids))} == tpids


@needs_netns
def test_user_bpf_narrows_what_is_captured(veth, tmp_path):
    path = lab("c01")
    run = LiveRun(veth, tmp_path, "--format", "jsonl", "-o", str(tmp_path / "out"),
                  "--bpf", "host 203.0.113.77")  # fmt: skip
    veth.replay(path)
    assert run.stop() == 0
    assert run.lines() == [] and run.report()["live"]["packets_captured"] == 0


@needs_netns
def test_policy_verdicts_ride_along_each_negotiation(veth, tmp_path):
    run = LiveRun(veth, tmp_path, "--format", "jsonl", "-o", str(tmp_path / "out"), "--policy", "cnsa2")
    veth.replay(lab("h01"))
    assert run.stop() == 0
    [line] = run.lines()
    # h01 is X25519 + ML-KEM-768 with AES-256/SHA-256: CNSA 2.0 wants ML-KEM-1024 and SHA-384.
    assert line["policy_outcome"] == "fail"
    assert {v["policy"] for v in line["verdicts"]} == {"cnsa2"}
    [n] = run.report()["negotiations"]
    assert n["policy_outcome"] == "fail"


def test_unknown_policy_is_one_line_and_exit_2():
    result = cli("-i", "lo", "--policy", "no-such-policy")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


@needs_netns
def test_interrupted_handshake_is_reported_on_sigint(veth, tmp_path):
    """Ctrl-C in the middle: what was in flight is reported, report and pcap are written."""
    path = lab("h01")
    run = LiveRun(veth, tmp_path, "--format", "table", "-o", str(tmp_path / "out"),
                  "--write", str(tmp_path / "cut.pcap"), "--report-every", "0.3")  # fmt: skip
    veth.replay(path, stop=12)  # IKE_SA_INIT and IKE_INTERMEDIATE, no IKE_AUTH yet
    time.sleep(0.8)
    interim = run.report()
    assert interim["live"]["final"] is False and interim["negotiations"] == []
    assert interim["live"]["packets_captured"] > 0
    assert run.stop(signal.SIGINT) == 0
    stdout = (tmp_path / "stdout").read_text()
    assert "time (UTC)" in stdout.splitlines()[0]
    assert "hybrid-pq" in stdout and "1 negotiation(s), 0 IKE SA(s) established" in stdout
    report = run.report()
    assert report["live"]["final"] and report["live"]["stopped_by"] == "SIGINT"
    (n,) = report["negotiations"]
    assert n["classification"] == "hybrid-pq" and not n["established"]
    assert len(frames_of(str(tmp_path / "cut.pcap"))) == report["live"]["packets_captured"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "live-report.json"]


@needs_netns
def test_duration_and_count_stop_by_themselves(veth, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    timed = LiveRun(veth, tmp_path / "a", "--duration", "1", "-o", str(tmp_path / "a" / "out"))
    assert timed.stop(None, timeout=30) == 0
    assert timed.report()["live"]["stopped_by"] == "duration"
    counted = LiveRun(veth, tmp_path / "b", "--count", "5", "--format", "jsonl",
                      "--write", str(tmp_path / "five.pcap"))  # fmt: skip
    veth.replay(lab("c02"))
    assert counted.stop(None, timeout=30) == 0
    assert len(frames_of(str(tmp_path / "five.pcap"))) == 5
    assert "stopped (count)" in counted.stderr()


@needs_netns
def test_bad_filter_and_missing_privilege_are_one_line_errors(veth, tmp_path):
    bad = subprocess.run(veth.exec(veth.sniff_ns, *IKEAUDIT, "live", "-i", veth.sniff_if,
                                   "--bpf", "port port"), capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--bpf" in bad.stderr
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    home = tempfile.mkdtemp(prefix="ikeaudit-nobody-")  # a writable HOME for libraries' caches
    os.chmod(home, 0o777)
    # nobody keeps CAP_DAC_READ_SEARCH alone (ambient, so that it survives the exec): it
    # reads the checkout and the interpreter wherever they sit (a clone in a 0700 folder,
    # a Python under /root) and still has no capture privilege.
    readable = ["--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search"]
    try:
        unprivileged = subprocess.run(
            veth.exec(veth.sniff_ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      *readable, *IKEAUDIT, "live", "-i", veth.sniff_if),
            capture_output=True, text=True, cwd=home,
            env={**os.environ, "HOME": home, "MPLCONFIGDIR": home, "XDG_CACHE_HOME": home})  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert unprivileged.returncode == 2, unprivileged.stderr
    assert unprivileged.stderr.count("\n") == 1 and "Traceback" not in unprivileged.stderr
    assert "root" in unprivileged.stderr and "CAP_NET_RAW" in unprivileged.stderr


# ---------------------------------------------------------------------------- strongSwan

CHARON = "/usr/lib/ipsec/charon"
STRONGSWAN_CONF = """\
charon {{
  load = random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 x509 pubkey kernel-netlink socket-default vici
  install_routes = no
  install_virtual_ip = no
  plugins {{
    vici {{
      socket = unix://{folder}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {folder}/charon.log
      default = 1
      ike = 2
    }}
  }}
}}
"""
SWANCTL_CONF = """\
connections {{
  lab {{
    version = 2
    local_addrs = {me}
    remote_addrs = {peer}
    proposals = aes256-sha256-modp2048
    local {{
      auth = psk
      id = {my_id}
    }}
    remote {{
      auth = psk
      id = {peer_id}
    }}
    children {{
      net {{
        local_ts = {me}/32
        remote_ts = {peer}/32
        esp_proposals = aes256-sha256
      }}
    }}
  }}
}}
secrets {{
  ike-lab {{
    id-1 = initiator
    id-2 = responder
    secret = "ikeaudit-live-test-only"
  }}
}}
"""


def _strongswan_problem() -> str | None:
    if not os.access(CHARON, os.X_OK) or shutil.which("swanctl") is None:
        return ("strongSwan is not installed (apt-get install strongswan-swanctl "
                "strongswan-charon; .ci/run does it)")  # fmt: skip
    return None


@needs_netns
def test_a_real_strongswan_handshake_is_reported_classical_modp2048(veth, tmp_path):
    problem = _strongswan_problem()
    if problem:
        pytest.skip(problem)
    addresses = {veth.send_ns: ("10.99.0.1", "10.99.0.2", "initiator", "responder", veth.send_if),
                 veth.sniff_ns: ("10.99.0.2", "10.99.0.1", "responder", "initiator", veth.sniff_if)}
    for ns, (me, peer, my_id, peer_id, interface) in addresses.items():
        folder = tmp_path / ns
        folder.mkdir()
        (folder / "strongswan.conf").write_text(STRONGSWAN_CONF.format(folder=folder))
        (folder / "swanctl.conf").write_text(SWANCTL_CONF.format(me=me, peer=peer, my_id=my_id,
                                                                 peer_id=peer_id))  # fmt: skip
        VethPair.ip("-n", ns, "addr", "add", f"{me}/24", "dev", interface)
    try:
        run = LiveRun(veth, tmp_path, "--format", "jsonl", "-o", str(tmp_path / "out"))
        for ns in addresses:
            folder = tmp_path / ns
            # Each charon gets a private /run (its pid file) inside the namespace's own
            # mount namespace, and its own config, log and vici socket.
            charon = subprocess.Popen(
                veth.exec(ns, "sh", "-c", f"mount -t tmpfs tmpfs /run && exec {CHARON}"),
                env={**os.environ, "STRONGSWAN_CONF": str(folder / "strongswan.conf")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            veth.processes.append(charon)
            _wait_for(folder / "charon.vici", charon, f"charon in {ns}")
            loaded = subprocess.run(veth.exec(ns, "swanctl", "--load-all", "--file",
                                              str(folder / "swanctl.conf"), "--uri",
                                              f"unix://{folder}/charon.vici"),
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            if loaded.returncode != 0:
                pytest.skip(f"swanctl could not load the connection: {loaded.stdout[-300:]}")
        initiated = subprocess.run(veth.exec(veth.send_ns, "swanctl", "--initiate", "--child", "net",
                                             "--timeout", "20", "--uri",
                                             f"unix://{tmp_path / veth.send_ns}/charon.vici"),
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
        if "IKE_SA lab" not in initiated.stdout or "established" not in initiated.stdout:
            pytest.skip(f"strongSwan did not establish the IKE SA: {initiated.stdout[-500:]}")
        # The handshake is handed out as it completes, before any stop: waited for, since
        # a first run with empty caches may load Scapy to dissect it (half a second or more).
        deadline = time.monotonic() + 20
        while not run.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        streamed = run.lines()
        assert run.stop() == 0
    finally:
        for process in veth.processes[-2:]:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        for ns, (me, *_rest, interface) in addresses.items():
            subprocess.run(["ip", "-n", ns, "addr", "del", f"{me}/24", "dev", interface],
                           capture_output=True)  # fmt: skip
    (n,) = streamed
    assert n["classification"] == "classical"
    assert n["ke_method"] == 14 and n["ke"]["name"] == "2048-bit MODP"
    assert n["addke_methods"] == [] and not n["pq_offered_by_initiator"]
    assert n["state"] == "established" and n["initiator"] == "10.99.0.1" and n["responder"] == "10.99.0.2"
    assert [(m["exchange"], m["response"]) for m in n["messages"]][:4] == [
        ("IKE_SA_INIT", False), ("IKE_SA_INIT", True), ("IKE_AUTH", False), ("IKE_AUTH", True)]
    assert any(f["code"] == "classical-only" for f in n["findings"])
    (final,) = run.report()["negotiations"]
    assert final["classification"] == "classical" and final["spi_i"] == n["spi_i"]


def _wait_for(path: Path, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.skip(f"{what} exited with {process.returncode} (see {path.parent}/charon.log)")
        if time.monotonic() > deadline:
            pytest.skip(f"{what} did not open its vici socket within {timeout} s")
        time.sleep(0.05)


def copies_with_new_spis(frames: list[Frame], copies: int, every: float):
    """The lab handshake again and again, `every` seconds apart, each copy with SPIs of
    its own (read from the IKE headers' bytes, replaced in every frame), so that each is
    a negotiation of its own."""
    spis = {out.payload[at:at + 8] for f in frames for out in Extractor().feed(f) if hasattr(out, "payload")
            for at in (0, 8)} - {bytes(8)}  # fmt: skip
    for copy in range(copies):
        fresh = {spi: (copy + 1).to_bytes(4, "big") + spi[4:] for spi in spis}
        for frame in frames:
            data = frame.data
            for old, new in fresh.items():
                data = data.replace(old, new)
            yield Frame(frame.number, frame.timestamp + copy * every, frame.linktype, data, frame.wire_length)


def test_the_tracker_and_the_history_stay_bounded_over_many_finished_negotiations():
    frames = frames_of(lab("c01"))
    every = frames[-1].timestamp - frames[0].timestamp + 20
    auditor = LiveAuditor("live:test", idle_timeout=30, history=60)
    tracker, held = auditor._stages.tracker, []
    for frame in copies_with_new_spis(frames, 300, every):
        auditor.feed(frame)
        auditor.drain(frame.timestamp)
        held.append((len(tracker._closed), len(tracker._closed_by_pair), len(tracker._by_peers[
            next(iter(tracker._by_peers))]) if tracker._by_peers else 0, len(auditor.emitted)))
    stats = auditor.stats()
    assert stats["negotiations_handed_out"] == stats["handed_out classical"] == 300  # c01: classical
    # what a copy needs: idle timeout plus history plus a tenth of it (the pruning step)
    bound = (30 + 60 + 6) / every + 2
    assert max(max(h) for h in held) <= bound
    assert stats["negotiations_pruned"] >= 300 - bound
    result = auditor.finish()
    assert len(result.negotiations) + result.stats["negotiations_pruned"] == 300
    assert auditor.late == [] and result.stats["negotiations_handed_out"] == 300


def test_a_negotiation_evicted_from_a_full_table_is_handed_out_by_the_next_drain_once():
    auditor = LiveAuditor("live:test", idle_timeout=3600)
    auditor._stages.tracker.max_negotiations = 1  # the table holds one IKE SA
    for first in frames_of(lab("c01")):
        auditor.feed(first)
        if auditor.stats()["ike_datagrams"]:  # c01's IKE_SA_INIT request alone
            break
    assert auditor.drain(first.timestamp) == []  # neither ended nor idle
    second = frames_of(lab("c02"))
    for frame in second:
        auditor.feed(frame)
    drained = auditor.drain(second[-1].timestamp)
    evicted = [i for i in drained if i.negotiation.first_seen == first.timestamp]
    assert len(evicted) == 1
    assert any(a.kind == "overflow" for a in evicted[0].negotiation.anomalies)
    auditor.finish()
    assert all(i.negotiation.first_seen != first.timestamp for i in auditor.late)
