"""A busy VPN gateway's IKE traffic: `ikeaudit scan` against tshark (issue 14).

    python bench/gateway.py                              # 20,000 negotiations
    python bench/gateway.py --negotiations 20000 200000  # and 200,000
    python bench/gateway.py --negotiations 2000 --no-tshark --keep
    python bench/gateway.py --report                     # and `ikeaudit report` beside scan

The capture (bench/out/gateway-N.pcap, git-ignored) holds N copies of the lab
handshakes (pcaps/*.pcap, in turn), each with its own SPIs and initiator and responder
addresses, a new one every --every-ms milliseconds (0.5: 2,000 new negotiations a second),
each keeping its own timing, so that thousands are in flight at once. Nothing else is in
it: every frame is IKE. The ground truth per copy comes from pcaps/manifest.json (the
template's classification and IKE SA count).

Each tool runs as a child process, one after the other, the capture read once
beforehand: `ikeaudit scan --format json` with --jobs 1 and --jobs 2, `tshark -Y isakmp`
and `tshark -2 -R isakmp` (skipped when tshark is missing). Printed: wall time, the
child's peak RSS (GNU time, else wait4), the ratio to `tshark -Y isakmp`, IKE datagrams
per second, whether ikeaudit's class counts equal the ground truth, and the "overflow"
anomalies of its bounded tables (an SA evicted from a full table). Before that, the
dissection alone: microseconds per IKE datagram on the hot path and through Scapy alone.

Targets (issue 14): at 20,000 negotiations --jobs 1 at least 1.5x faster than
`tshark -Y isakmp`, class counts exact, peak RSS at most 150 MB; at 200,000 exact counts
and peak RSS at most 400 MB.
"""

from __future__ import annotations

import argparse
import json
import mmap
import random
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_span import START, Instance, Writer, _instance_addresses, _lab_templates, _materialize, _truth  # noqa: E402
from run import OUT, ikeaudit_argv, run, warm  # noqa: E402

TARGETS = {20_000: (1.5, 150), 200_000: (None, 400)}  # negotiations: (x tshark -Y, peak RSS MB)
OVERFLOW = re.compile(rb'"kind": "overflow",\s*"detail": "(more than \d+ [^"0-9]*)')


def build(negotiations: int, every: float, seed: int = 14) -> tuple[Path, dict]:
    """Write the gateway capture and its truth; reused when already there with the same parameters."""
    path = OUT / f"gateway-{negotiations}.pcap"
    truth_path = path.with_name(path.name + ".truth.json")
    if path.exists() and truth_path.exists():
        truth = json.loads(truth_path.read_text())
        if truth.get("seed") == seed and truth.get("every_ms") == every * 1000:
            return path, truth
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = random.Random(seed)
    templates = [t for t in _lab_templates() if t.frames]
    instances, frames = [], []
    for index in range(negotiations):
        template = templates[index % len(templates)]
        initiator, responder = _instance_addresses(index, template.frames[0].version)
        inst = Instance(template, index, index * every, 1.0, "plain", initiator, responder)
        inst.datagrams = template.datagrams
        instances.append(inst)
        frames.extend((when, order, data, index) for order, (when, data, _) in
                      enumerate(_materialize(inst, rng)))
    frames.sort(key=lambda f: (f[0], f[3], f[1]))
    writer = Writer(path, "pcap", compress=False)
    try:
        for when, _, data, index in frames:
            instances[index].frames.append(writer.add(START + when, data))
    finally:
        writer.close()
    truth = _truth(path, writer.frames, instances, "pcap", False, seed, time.perf_counter() - started)
    truth["every_ms"] = every * 1000
    truth_path.write_text(json.dumps(truth) + "\n")
    return path, truth


def dissection_cost(repeat: int = 5) -> tuple[float, float, int]:
    """Microseconds per IKE datagram of the lab captures: hot path (layouts already
    cached, as on a gateway), then Scapy alone; the best of `repeat` passes (a loaded
    machine only makes passes slower)."""
    from ikeaudit.dissect import dissect
    from ikeaudit.extract import Extractor
    from ikeaudit.records import Frame, IkeDatagram
    from ikeaudit.sources import iter_capture

    items = []
    for capture in sorted((HERE.parent / "pcaps").glob("*.pcap")):
        extractor = Extractor()
        items += [d for f in iter_capture(str(capture)) if isinstance(f, Frame)
                  for d in extractor.feed(f) if isinstance(d, IkeDatagram)]
    costs = []
    for scapy in (False, True):
        for d in items:
            dissect(d, scapy=scapy)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for d in items:
                dissect(d, scapy=scapy)
            best = min(best, time.perf_counter() - started)
        costs.append(best / len(items) * 1e6)
    return costs[0], costs[1], len(items)


def summary_of(output: Path) -> tuple[dict, Counter]:
    """The scan document's summary (it comes before the negotiations), and the overflow
    anomalies anywhere in it by what they say, without loading the whole document."""
    head = []
    with open(output, encoding="utf-8") as file:
        for line in file:
            if line.startswith('  "negotiations": '):
                break
            head.append(line)
    text = "".join(head).rstrip().rstrip(",") + "\n}"
    document = json.loads(text)
    overflows: Counter = Counter()
    if output.stat().st_size:
        with open(output, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for match in OVERFLOW.finditer(data):
                overflows[match.group(1).decode().strip()] += 1
    return document.get("summary", {}), overflows


def bench(negotiations: int, every: float, tshark: bool, keep: bool, report: bool = False) -> bool:
    path, truth = build(negotiations, every)
    size = path.stat().st_size
    print(f"\n{path.name}: {negotiations} negotiations ({truth['negotiations']} IKE SAs in the truth), "
          f"{truth['frames']} frames, {truth['ike_datagrams']} IKE datagrams, {size / 1e6:.0f} MB, "
          f"a new negotiation every {every * 1000:g} ms")
    warm(path)
    runs = []
    output = OUT / f"gateway-{negotiations}.json"
    for jobs in (1, 2):
        result = run(f"ikeaudit scan --jobs {jobs}", [*ikeaudit_argv(), "scan", str(path), "--format", "json",
                                                      "--jobs", str(jobs)], stdout_path=output)
        summary, overflows = summary_of(output)
        exact = summary.get("by_classification") == truth["by_classification"]
        runs.append((result, exact, summary, overflows))
    if report:  # the whole deliverable, streamed: its report.json's summary against the truth too
        folder = OUT / f"gateway-{negotiations}-report"
        result = run("ikeaudit report --jobs 1", [*ikeaudit_argv(), "report", str(path), "-o", str(folder),
                                                  "--jobs", "1"], stdout_path=Path("/dev/null"))
        summary, overflows = summary_of(folder / "report.json")
        runs.append((result, summary.get("by_classification") == truth["by_classification"], summary, overflows))
    if tshark and shutil.which("tshark"):
        for name, argv in (("tshark -Y isakmp", ["tshark", "-n", "-r", str(path), "-Y", "isakmp"]),
                           ("tshark -2 -R isakmp", ["tshark", "-n", "-2", "-r", str(path), "-R", "isakmp"])):
            runs.append((run(name, argv, stdout_path=Path("/dev/null")), None, None, None))
    base = next((r for r, *_ in runs if r.name == "tshark -Y isakmp"), None)
    print(f"{'':24} {'wall s':>8} {'peak RSS MB':>12} {'x tshark -Y':>12} {'datagrams/s':>12}  class counts")
    for result, exact, _, _ in runs:
        ratio = f"{base.seconds / result.seconds:.2f}" if base else "-"
        verdict = "" if exact is None else ("= ground truth" if exact else "DIFFER from ground truth")
        status = "" if result.status == 0 else f"  (exit {result.status})"
        print(f"{result.name:24} {result.seconds:8.2f} {result.peak_rss_mb:12.0f} {ratio:>12} "
              f"{truth['ike_datagrams'] / result.seconds:12.0f}  {verdict}{status}")
    ok = True
    for result, exact, summary, overflows in runs:
        if exact is None:
            continue
        if not exact:
            ok = False
            print(f"  {result.name}: {summary.get('by_classification')}\n    truth: {truth['by_classification']}")
        for detail, count in overflows.most_common():
            print(f"  {result.name}: {count} x overflow \"{detail}\"")
    speed, rss = TARGETS.get(negotiations, (None, None))
    jobs1 = runs[0][0]
    if speed and base:
        met = base.seconds / jobs1.seconds >= speed
        ok &= met
        print(f"  target: --jobs 1 at least {speed}x tshark -Y: {'met' if met else 'NOT met'}")
    if rss:
        met = jobs1.peak_rss_mb <= rss
        ok &= met
        print(f"  target: peak RSS at most {rss} MB: {'met' if met else 'NOT met'}")
    if not keep:
        path.unlink()
        path.with_name(path.name + ".truth.json").unlink()
        output.unlink()
        shutil.rmtree(OUT / f"gateway-{negotiations}-report", ignore_errors=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--negotiations", type=int, nargs="+", default=[20_000], metavar="N")
    parser.add_argument("--every-ms", type=float, default=0.5, help="a new negotiation every this many ms")
    parser.add_argument("--no-tshark", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the captures and outputs in bench/out/")
    parser.add_argument("--report", action="store_true",
                        help="also time `ikeaudit report --jobs 1` (every file of the report, streamed)")
    args = parser.parse_args(argv)
    fast, scapy, count = dissection_cost()
    print(f"dissection of the {count} lab IKE datagrams: hot path {fast:.1f} us a datagram, "
          f"Scapy alone {scapy:.1f} us ({scapy / fast:.1f}x)")
    ok = True
    for negotiations in args.negotiations:
        ok &= bench(negotiations, args.every_ms / 1000, not args.no_tshark, args.keep, args.report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
