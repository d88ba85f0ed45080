"""`ikeaudit live` at gateway rates: the dense gateway capture replayed on a veth pair (issue 18).

    sudo .venv/bin/python bench/live_gateway.py --negotiations 40000 --pps 20000 \
         --queue-frames 1000000 --buffer-mib 512        # 23 s burst, absorbed: no drop, no shedding
    sudo .venv/bin/python bench/live_gateway.py --negotiations 40000 --pps 60000   # overload: shed, dropped

The capture is bench/gateway.py's (N copies of the lab handshakes, distinct SPIs and
addresses, every frame IKE; built once into bench/out/). tcpreplay sends it at --pps
into one end of a veth pair in a network namespace; `ikeaudit live --format jsonl -o`
sniffs the other end. When live's IKE datagram count stops moving, it is stopped
(SIGTERM) and the bench prints: IKE datagrams/s sustained (datagrams audited over the
time from the first packet sent to the last datagram audited), kernel drops, shed
counts, the capture queue's high-water mark, live's peak RSS (VmHWM), and whether
live's negotiations (its JSON lines) equal an offline `scan` of the same file (same SPIs,
class, state), and how many of those that began with a captured IKE_SA_INIT got scan's class.
Needs root, iproute2 and tcpreplay. No assertions: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from gateway import build  # noqa: E402
from live_bench import (IKEAUDIT, listening, netns_exec, parse_replay, remove_namespaces, rss_mib, stop,  # noqa: E402
                        veth_namespaces)

from ikeaudit.pipeline import audit_capture  # noqa: E402

DATAGRAMS = re.compile(r"(\d+) IKE datagram\(s\)")


def wait_until_still(stderr: Path, live: subprocess.Popen, quiet: float, timeout: float) -> tuple[float, float]:
    """Until live's IKE datagram count has not moved for `quiet` seconds: (time of its
    last move, peak RSS seen meanwhile)."""
    last, moved, peak = -1, time.monotonic(), 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and live.poll() is None:
        time.sleep(0.5)
        peak = max(peak, rss_mib(live.pid, "VmHWM") or 0.0)
        counts = DATAGRAMS.findall(stderr.read_text())
        if counts and int(counts[-1]) != last:
            last, moved = int(counts[-1]), time.monotonic()
        elif time.monotonic() - moved >= quiet:
            break
    return moved, peak


def identity(n: dict) -> tuple:
    return n["spi_i"], n["spi_r"], n["classification"], n["state"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--negotiations", type=int, default=20_000)
    parser.add_argument("--every-ms", type=float, default=0.5)
    parser.add_argument("--pps", type=int, default=20_000, help="tcpreplay rate")
    parser.add_argument("--buffer-mib", type=int, default=64)
    parser.add_argument("--queue-frames", type=int, default=None)
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="keep live's report, its JSON lines and the differences from scan in DIR")
    options = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("tcpreplay"):
        print("live_gateway: needs root and tcpreplay", file=sys.stderr)
        return 2
    path, _ = build(options.negotiations, options.every_ms / 1000)
    print(f"scanning {path} offline for the truth ...", file=sys.stderr)
    truth = audit_capture(str(path))
    tag = f"iag{secrets.token_hex(3)}"
    send_ns, sniff_ns = f"{tag}s", f"{tag}n"
    work = Path(tempfile.mkdtemp(prefix="ikeaudit-gw-"))
    live = None
    try:
        veth_namespaces(send_ns, sniff_ns)
        out, err = work / "out", work / "live.err"
        queue = ["--queue-frames", str(options.queue_frames)] if options.queue_frames else []
        with open(work / "live.jsonl", "wb") as stdout, open(err, "wb") as stderr:
            live = subprocess.Popen(netns_exec(sniff_ns, *IKEAUDIT, "live", "-i", sniff_ns, "--format", "jsonl",
                                               "-o", str(out), "--status-every", "1", "--idle-timeout", "30",
                                               "--state", str(work / "state.db"),
                                               "--buffer-mib", str(options.buffer_mib), *queue),
                                    stdout=stdout, stderr=stderr)  # fmt: skip
        if not listening(live, err):
            return 1
        print(f"replaying {path.name} at {options.pps} pps ...", file=sys.stderr)
        start = time.monotonic()
        replay = subprocess.run(netns_exec(send_ns, "tcpreplay", "-q", f"--pps={options.pps}",
                                           f"--intf1={send_ns}", str(path)), capture_output=True, text=True)
        sent_for = time.monotonic() - start
        moved, peak = wait_until_still(err, live, quiet=4.0, timeout=900)
        live.send_signal(signal.SIGTERM)
        while live.poll() is None:
            peak = max(peak, rss_mib(live.pid, "VmHWM") or 0.0)
            time.sleep(0.2)
        report = json.loads((out / "live-report.json").read_text())
        stats = report["captures"][0]["stats"]
        sent, pps = parse_replay(replay.stdout + replay.stderr)
        datagrams = stats.get("ike_datagrams", 0)
        scanned = report_of(truth)
        expected = Counter(identity(n) for n in scanned)
        # What live handed out, as it handed them out: its JSON lines (the final report
        # lists only what is still in memory, --history).
        streamed = [json.loads(line) for line in (work / "live.jsonl").read_text().splitlines() if line.strip()]
        seen = Counter(identity(n) for n in streamed)
        missing, extra = expected - seen, seen - expected
        # Under overload: the negotiations whose IKE_SA_INIT live captured (not met
        # mid-stream), and whether each got scan's class all the same.
        scan_class = {(n["spi_i"], n["spi_r"]): n["classification"] for n in scanned}
        with_sa_init = [n for n in streamed if not n["midstream"]]
        as_scan = sum(scan_class.get((n["spi_i"], n["spi_r"])) == n["classification"] for n in with_sa_init)
        unclassified = Counter(n["classification"] for n in with_sa_init if n["classification"] in ("unknown", "incomplete"))
        shed = report["live"].get("shed", {})
        capture = report["live"]["capture"]
        rows = [
            ("frames sent (tcpreplay)", f"{sent} at {pps:,.0f} pps over {sent_for:.1f} s"),
            ("IKE datagrams in the file / audited", f"{truth.stats['ike_datagrams']} / {datagrams}"),
            ("IKE datagrams/s sustained", f"{datagrams / max(moved - start, 1e-9):,.0f} "
                                          f"(audited until {moved - start:.1f} s after the first packet)"),
            ("kernel drops / interface drops", f"{capture['dropped']} / {capture['interface_dropped']}"),
            ("shed", ", ".join(f"{k} {v}" for k, v in shed.items()) or "nothing"),
            ("capture queue high-water mark", f"{report['live'].get('queue_high_water')} of "
                                              f"{stats.get('queue_capacity')} packets"),
            ("peak RSS of ikeaudit live", f"{peak:.0f} MiB"),
            ("negotiations scan / live", f"{sum(expected.values())} / {sum(seen.values())}"),
            ("live's negotiations equal scan's", "yes" if not missing and not extra else
             f"no: {sum(missing.values())} of scan's missing, {sum(extra.values())} not in scan"),
            ("with IKE_SA_INIT captured: scan's class", f"{as_scan} of {len(with_sa_init)}; unknown/incomplete: "
                                                        f"{sum(unclassified.values())}"),
            ("classes live", ", ".join(f"{k} {v}" for k, v in sorted(Counter(n["classification"] for n in
                                                                          streamed).items()))),
        ]  # fmt: skip
        if options.keep:
            keep = Path(options.keep)
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "live-report.json", keep / "live-report.json")
            shutil.copy(work / "live.jsonl", keep / "live.jsonl")
            shutil.copy(err, keep / "live.err")
            differences = {"missing": [list(k) for k in missing.elements()], "extra": [list(k) for k in extra.elements()]}
            (keep / "differences.json").write_text(json.dumps(differences, indent=1) + "\n")
        width = max(len(k) for k, _ in rows)
        print(f"ikeaudit live at gateway rate ({os.cpu_count()} CPUs, machine shared with other jobs)")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        return 0
    finally:
        stop(live)
        remove_namespaces(send_ns, sniff_ns)
        shutil.rmtree(work, ignore_errors=True)


def report_of(audit) -> list[dict]:
    from ikeaudit.classify import KeCatalog
    from ikeaudit.report.views import scan_document

    return scan_document([audit], KeCatalog())["negotiations"]


if __name__ == "__main__":
    sys.exit(main())
