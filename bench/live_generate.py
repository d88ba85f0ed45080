"""`ikeaudit live` for a long run with distinct negotiations throughout (issue 18).

    sudo nice .venv/bin/python bench/live_generate.py --minutes 30 --pps 5000

Looping one capture repeats its SPIs; building a file big enough for half an hour at
5,000 pps takes gigabytes. So the sender makes the copies on the fly: the lab
handshakes (pcaps/*.pcap, in turn), each copy with SPIs, initiator and responder
addresses and IP identifications of its own (bench/make_span.py's `_materialize`, the
gateway capture's own copier), a new copy as often as the rate allows, their frames
interleaved in the order of their own timing and sent paced at --pps through an
AF_PACKET socket into one end of a veth pair in a network namespace. `ikeaudit live
--format jsonl` sniffs the other end; the bench reads its JSON lines as they come.

After --minutes the sender starts no new copy and finishes the ones in flight; live is
stopped (SIGTERM) once it has been still for a while. Printed: frames sent and the rate
reached, live's RSS after 5 minutes and at the end (and their ratio), its peak RSS,
kernel drops, shed counts, negotiations expected (each copy's manifest class) versus
handed out, and whether any SPI pair came twice. Needs root and iproute2. No
assertions: it measures.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from live_bench import IKEAUDIT, listening, netns_exec, remove_namespaces, rss_mib, stop, veth_namespaces  # noqa: E402
from make_span import Instance, _instance_addresses, _lab_templates, _materialize  # noqa: E402

DATAGRAMS = re.compile(r"(\d+) IKE datagram\(s\)")


def send(interface: str, pps: int, seconds: float, seed: int, clients: int) -> dict:
    """The sender (runs in the sending namespace): copies started for `seconds`, every
    frame sent at `pps`, the initiators and responders taken in turn from `clients`
    pairs of addresses (a gateway's remote clients come back; SPIs are new every time);
    returns what it sent and the negotiations expected by class."""
    templates = [t for t in _lab_templates() if t.frames]
    every = sum(len(t.frames) for t in templates) / len(templates) / pps  # seconds between copies
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((interface, 0))
    heap: list[tuple[float, int, bytes]] = []
    expected: Counter[str] = Counter()
    copies = order = sent = errors = 0
    next_copy = 0.0
    start = time.monotonic()
    starting = True
    while True:
        elapsed = time.monotonic() - start
        if starting and elapsed >= seconds:
            starting = False
        # Copies whose start precedes the next frame due: the order a file of them would have.
        while starting and (not heap or next_copy <= heap[0][0]):
            template = templates[copies % len(templates)]
            initiator, responder = _instance_addresses(copies % clients, template.frames[0].version)
            instance = Instance(template, copies, next_copy, 1.0, "plain", initiator, responder)
            for when, data, _ in _materialize(instance, rng):
                heapq.heappush(heap, (when, order, data))
                order += 1
            expected[template.classification] += template.negotiations
            copies += 1
            next_copy += every
        if not heap:
            break
        due = int((time.monotonic() - start) * pps) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        for _ in range(min(due, 256)):
            if not heap:
                break
            _, _, data = heapq.heappop(heap)
            try:
                sock.send(data)
            except OSError:
                errors += 1
            sent += 1
            if starting and heap and next_copy <= heap[0][0]:
                break  # a copy is due first
    elapsed = time.monotonic() - start
    return {"frames": sent, "seconds": elapsed, "pps": sent / elapsed, "copies": copies, "errors": errors,
            "expected": dict(expected), "expected_negotiations": sum(expected.values())}


class Lines:
    """live's JSON lines, counted as they come (a thread): classes and SPI pairs."""

    def __init__(self, stream) -> None:
        self.by_class: Counter[str] = Counter()
        self.pairs: set[tuple[str, str]] = set()
        self.repeated = 0
        self.count = 0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            try:
                n = json.loads(line)
            except ValueError:
                continue
            self.count += 1
            self.by_class[n["classification"]] += 1
            pair = (n["spi_i"], n["spi_r"])
            if pair in self.pairs:
                self.repeated += 1
            self.pairs.add(pair)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--pps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--clients", type=int, default=10_000,
                        help="pairs of addresses the copies take in turn (tunnels in the monitor's state)")
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--history", type=float, default=60.0)
    parser.add_argument("--buffer-mib", type=int, default=64)
    parser.add_argument("--rss-at", type=float, default=300.0, help="seconds after the start of the first RSS reading")
    parser.add_argument("--sender", metavar="IFACE", help=argparse.SUPPRESS)  # internal: run the sender
    options = parser.parse_args()
    if options.sender:
        print(json.dumps(send(options.sender, options.pps, options.minutes * 60, options.seed, options.clients)))
        return 0
    if os.geteuid() != 0:
        print("live_generate: needs root", file=sys.stderr)
        return 2
    tag = f"igg{secrets.token_hex(3)}"
    send_ns, sniff_ns = f"{tag}s", f"{tag}n"
    work = Path(tempfile.mkdtemp(prefix="ikeaudit-gen-"))
    live = sender = None
    try:
        veth_namespaces(send_ns, sniff_ns)
        out, err = work / "out", work / "live.err"
        with open(err, "wb") as stderr:
            live = subprocess.Popen(netns_exec(sniff_ns, *IKEAUDIT, "live", "-i", sniff_ns, "--format", "jsonl",
                                               "-o", str(out), "--status-every", "10",
                                               "--state", str(work / "state.db"),
                                               "--idle-timeout", str(options.idle_timeout),
                                               "--history", str(options.history),
                                               "--buffer-mib", str(options.buffer_mib)),
                                    stdout=subprocess.PIPE, stderr=stderr, text=True)  # fmt: skip
        lines = Lines(live.stdout)
        if not listening(live, err):
            return 1
        print(f"sending generated copies at {options.pps} pps for {options.minutes} min ...", file=sys.stderr)
        start = time.monotonic()
        sender = subprocess.Popen(netns_exec(send_ns, sys.executable, __file__, "--sender", send_ns,
                                             "--pps", str(options.pps), "--minutes", str(options.minutes),
                                             "--seed", str(options.seed), "--clients", str(options.clients)),
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        rss_first = peak = rss_last = 0.0
        samples = []
        while sender.poll() is None:
            time.sleep(1.0)
            now = time.monotonic() - start
            rss = rss_mib(live.pid) or 0.0
            peak = max(peak, rss)
            if not rss_first and now >= options.rss_at:
                rss_first = rss
                print(f"RSS of ikeaudit live after {now:.0f} s: {rss:.0f} MiB", file=sys.stderr, flush=True)
            if not samples or now - samples[-1][0] >= 60:
                samples.append((now, rss, lines.count))
                print(f"  {now:6.0f} s: RSS {rss:.0f} MiB, {lines.count} negotiations handed out",
                      file=sys.stderr, flush=True)
        sent = json.loads(sender.stdout.read() or "{}")
        # Until the JSON lines stop moving: what was sent last is audited.
        last, moved, waited = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - moved < 10 and time.monotonic() - waited < 900:
            time.sleep(1.0)
            if lines.count != last:
                last, moved = lines.count, time.monotonic()
                rss_last = rss_mib(live.pid) or rss_last
        rss_last = rss_mib(live.pid) or rss_last
        peak = max(peak, rss_mib(live.pid, "VmHWM") or 0.0)
        live.send_signal(signal.SIGTERM)
        live.wait(600)
        lines.join(60)
        report = json.loads((out / "live-report.json").read_text())
        stats = report["captures"][0]["stats"]
        expected = Counter(sent.get("expected", {}))
        rows = [
            ("frames sent (generated, AF_PACKET)", f"{sent.get('frames')} in {sent.get('seconds', 0):.0f} s: "
                                                   f"{sent.get('pps', 0):,.0f} pps ({sent.get('copies')} copies)"),
            ("IKE datagrams audited", f"{stats.get('ike_datagrams')}"),
            ("kernel drops / interface drops", f"{report['live']['capture']['dropped']} / "
                                               f"{report['live']['capture']['interface_dropped']}"),
            ("shed", ", ".join(f"{k} {v}" for k, v in report["live"].get("shed", {}).items()) or "nothing"),
            ("capture queue high-water mark", f"{report['live'].get('queue_high_water')} packets"),
            (f"RSS after {options.rss_at:.0f} s / at the end", f"{rss_first:.0f} / {rss_last:.0f} MiB "
                                                              f"({(rss_last / rss_first - 1) * 100 if rss_first else 0:+.1f} %)"),
            ("peak RSS (VmHWM)", f"{peak:.0f} MiB"),
            ("negotiations expected / handed out", f"{sum(expected.values())} / {lines.count}"),
            ("by class: expected", ", ".join(f"{k} {v}" for k, v in sorted(expected.items()))),
            ("by class: live", ", ".join(f"{k} {v}" for k, v in sorted(lines.by_class.items()))),
            ("classes equal", "yes" if expected == lines.by_class else "no"),
            ("SPI pairs handed out twice", str(lines.repeated)),
            ("pruned from memory (stats)", str(stats.get("negotiations_pruned", 0))),
            ("RSS every minute", " ".join(f"{s / 60:.0f}m:{r:.0f}" for s, r, _ in samples)),
        ]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        print(f"ikeaudit live, long run with generated negotiations ({os.cpu_count()} CPUs, shared; "
              f"--idle-timeout {options.idle_timeout:g} --history {options.history:g}; "
              f"{options.clients} client address pairs)")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        return 0
    finally:
        stop(sender, live)
        remove_namespaces(send_ns, sniff_ns)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
