"""Benchmark `ikeaudit live` under load: does every IKE message reach the audit?

Two network namespaces joined by a veth pair. Into one end go, at the same time,
  * background traffic (TCP bulk, ESP, DNS) at the highest rate the machine manages
    (tcpreplay --topspeed, looped for the whole run), and
  * IKE negotiations: every lab capture in pcaps/, copied N times with SPIs, addresses
    and IP identifications changed so that each copy is a negotiation of its own
    (tcpreplay at --ike-pps).
`ikeaudit live` sniffs the other end. At the end the bench prints what was sent (an
offline `ikeaudit scan` of the IKE file is the truth), what live saw, and what the
capture dropped.

    sudo .venv/bin/python bench/live_bench.py [--seconds 10] [--copies 40] [--ike-pps 5000]

Needs root, iproute2 and tcpreplay (apt-get install tcpreplay); without tcpreplay it
falls back to a Python sender, which is much slower. No assertions: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ikeaudit.live import PcapWriter  # noqa: E402
from ikeaudit.pipeline import audit_capture  # noqa: E402
from ikeaudit.records import Frame  # noqa: E402
from ikeaudit.sources import iter_capture  # noqa: E402

IKEAUDIT = [sys.executable, "-c", "from ikeaudit.cli import main; main(prog_name='ikeaudit')"]
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")

# Python sender, used only when tcpreplay is missing: raw frames onto an interface.
PY_SENDER = """
import socket, sys, time
from ikeaudit.records import Frame
from ikeaudit.sources import iter_capture
path, interface, seconds, loop = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
frames = [f.data for f in iter_capture(path) if isinstance(f, Frame)]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((interface, 0))
sent, start = 0, time.monotonic()
while True:
    for data in frames:
        try:
            sock.send(data)
            sent += 1
        except OSError:
            pass
    if not loop or time.monotonic() - start >= seconds:
        break
elapsed = time.monotonic() - start
print(f"Actual: {sent} packets sent in {elapsed:.2f} seconds")
print(f"Rated: 0 Bps, 0 Mbps, {sent / elapsed:.2f} pps")
"""


# ---------------------------------------------------------------------------- frames


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_span import checksum  # noqa: E402  (the same IP/UDP checksum as the span generator)


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF,
                                   0x4000, 64, proto, 0, src, dst))  # fmt: skip
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + payload


def ethernet(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + payload


def background_frames(count: int, rng: random.Random) -> list[bytes]:
    """Span-port filler: half TCP bulk (HTTPS-sized segments), 30 % ESP, 20 % DNS."""
    frames = []
    for i in range(count):
        a = bytes([198, 51, 100, rng.randrange(1, 255)])
        b = bytes([203, 0, 113, rng.randrange(1, 255)])
        kind = rng.random()
        if kind < 0.5:
            payload = rng.randbytes(rng.choice((1448, 1448, 536, 0)))
            tcp = struct.pack("!HHIIBBHHH", 443, rng.randrange(1024, 65535), i * 1448, 1, 0x50, 0x18,
                              502, 0, 0)  # fmt: skip
            frames.append(ethernet(ipv4(b, a, 6, tcp + payload, i)))
        elif kind < 0.8:
            esp = struct.pack("!II", 0x1000 + (i % 64), i) + rng.randbytes(rng.choice((1380, 120, 600)))
            frames.append(ethernet(ipv4(a, b, 50, esp, i)))
        else:
            body = rng.randbytes(rng.choice((40, 180)))
            udp = struct.pack("!HHHH", rng.randrange(1024, 65535), 53, 8 + len(body), 0) + body
            frames.append(ethernet(ipv4(a, b, 17, udp, i)))
    return frames


def rewrite_copy(data: bytes, copy: int) -> bytes:
    """One lab frame made part of copy number `copy` (>= 1): addresses, IP
    identification and IKE SPIs changed, so that every copy is a distinct negotiation
    between distinct peers. Checksums of UDP are left stale: nobody checks them here."""
    b = bytearray(data)
    if len(b) < 14:
        return data
    ethertype, off = struct.unpack_from("!H", b, 12)[0], 14
    while ethertype in (0x8100, 0x88A8):
        ethertype, off = struct.unpack_from("!H", b, off + 2)[0], off + 4
    high, low = copy >> 8, copy & 0xFF
    if ethertype == 0x0800:
        ihl, proto = (b[off] & 0x0F) * 4, b[off + 9]
        for base in (off + 12, off + 16):  # 192.0.2.x -> 192.0.(2^high).(x^low)
            b[base + 2] ^= high
            b[base + 3] ^= low
        flags_offset = struct.unpack_from("!H", b, off + 6)[0]
        fragment_offset = flags_offset & 0x1FFF
        if flags_offset & 0x3FFF:
            ident = struct.unpack_from("!H", b, off + 4)[0] ^ copy
            struct.pack_into("!H", b, off + 4, ident & 0xFFFF)
        struct.pack_into("!H", b, off + 10, 0)
        struct.pack_into("!H", b, off + 10, checksum(bytes(b[off : off + ihl])))
        l4, first = off + ihl, fragment_offset == 0
    elif ethertype == 0x86DD:
        for base in (off + 8, off + 24):
            b[base + 14] ^= high
            b[base + 15] ^= low
        proto, l4, first = b[off + 6], off + 40, True
        while proto in (0, 43, 60, 44) and l4 + 8 <= len(b):
            if proto == 44:
                first = struct.unpack_from("!H", b, l4 + 2)[0] & 0xFFF8 == 0
                ident = struct.unpack_from("!I", b, l4 + 4)[0] ^ copy
                struct.pack_into("!I", b, l4 + 4, ident)
                proto, l4 = b[l4], l4 + 8
            else:
                proto, l4 = b[l4], l4 + (b[l4 + 1] + 1) * 8
    else:
        return data
    if first and proto == 17 and l4 + 8 <= len(b):
        sport, dport = struct.unpack_from("!HH", b, l4)
        ike = l4 + 8
        if 4500 in (sport, dport):
            if b[ike : ike + 4] != b"\0\0\0\0":
                return bytes(b)  # ESP-in-UDP or keepalive
            ike += 4
        if 500 in (sport, dport) or 4500 in (sport, dport):
            if ike + 16 <= len(b):
                b[ike + 6] ^= high
                b[ike + 7] ^= low
                if any(b[ike + 8 : ike + 16]):
                    b[ike + 14] ^= high
                    b[ike + 15] ^= low
    return bytes(b)


def write_pcap(path: Path, frames: list[bytes], start: float = 1.9e9, step: float = 1e-3) -> None:
    writer = PcapWriter(str(path), 1)
    for i, data in enumerate(frames):
        writer.write(Frame(i + 1, start + i * step, 1, data, len(data)))
    writer.close()


def ike_frames(copies: int) -> list[bytes]:
    out = []
    for copy in range(1, copies + 1):
        for path in sorted((ROOT / "pcaps").glob("*.pcap")):
            out += [rewrite_copy(f.data, copy) for f in iter_capture(str(path)) if isinstance(f, Frame)]
    return out


# ---------------------------------------------------------------------------- namespaces


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def veth_namespaces(send_ns: str, sniff_ns: str) -> None:
    """Two network namespaces joined by a veth pair, each end named as its namespace,
    jumbo MTU so that no replayed frame is cut."""
    for ns in (send_ns, sniff_ns):
        ip("netns", "add", ns)
    ip("link", "add", send_ns, "netns", send_ns, "type", "veth", "peer", "name", sniff_ns, "netns", sniff_ns)
    for ns in (send_ns, sniff_ns):
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", ns, "mtu", "9000", "up")


def remove_namespaces(*names: str) -> None:
    """Delete namespaces (and the veth in them), quietly: run in `finally`, after a
    failure that may have left some of them uncreated."""
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def listening(live: subprocess.Popen, stderr: Path, timeout: float = 60.0) -> bool:
    """Wait until `ikeaudit live` says it listens; False (its stderr printed) when it
    exits or stays silent past the timeout."""
    deadline = time.monotonic() + timeout
    while "listening on" not in stderr.read_text():
        if live.poll() is not None or time.monotonic() > deadline:
            print(stderr.read_text(), file=sys.stderr)
            return False
        time.sleep(0.05)
    return True


def stop(*processes: subprocess.Popen | None) -> None:
    """Kill what still runs (in `finally`: after a failure some were never started)."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)


def netns_exec(ns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


def replay_command(ns: str, interface: str, path: Path, *, pps: int | None, seconds: float | None,
                   loop: bool) -> list[str]:  # fmt: skip
    if shutil.which("tcpreplay"):
        rate = [f"--pps={pps}"] if pps else ["--topspeed"]
        looping = ["--loop=0", f"--duration={max(1, round(seconds or 1))}"] if loop else []
        return netns_exec(ns, "tcpreplay", "-q", "-K", *rate, *looping, f"--intf1={interface}", str(path))
    return netns_exec(ns, sys.executable, "-c", PY_SENDER, str(path), interface, str(seconds or 0),
                      "1" if loop else "0")  # fmt: skip


def parse_replay(output: str) -> tuple[int, float]:
    sent = re.search(r"Actual: (\d+) packets", output)
    pps = re.search(r"([\d.]+) pps", output)
    return (int(sent.group(1)) if sent else 0), (float(pps.group(1)) if pps else 0.0)


def wait_until_read(stderr: Path, timeout: float) -> float:
    """Seconds until live has read everything the kernel holds (its status line says
    nothing is waiting in the buffer), so that lag is not mistaken for loss."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        waiting = re.findall(r"(\d+) waiting in the buffer", stderr.read_text())
        if waiting and waiting[-1] == "0" and time.monotonic() - start > 1.5:
            break
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="background traffic duration")
    parser.add_argument("--copies", type=int, default=40, help="copies of each lab capture")
    parser.add_argument("--ike-pps", type=int, default=5000, help="rate of the IKE replay (0: top speed)")
    parser.add_argument("--background-frames", type=int, default=20000,
                        help="distinct background frames, looped")
    parser.add_argument("--buffer-mib", type=int, default=32)
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("live_bench: needs root (network namespaces, raw sockets, capture)", file=sys.stderr)
        return 2
    if not shutil.which("tcpreplay"):
        print("live_bench: tcpreplay not found (apt-get install tcpreplay); using the slow Python "
              "sender", file=sys.stderr)  # fmt: skip

    tag = f"iab{secrets.token_hex(3)}"
    send_ns, sniff_ns = f"{tag}s", f"{tag}n"
    work = Path(tempfile.mkdtemp(prefix="ikeaudit-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        print(f"building traffic in {work} ...", file=sys.stderr)
        rng = random.Random(7)
        write_pcap(work / "background.pcap", background_frames(options.background_frames, rng))
        write_pcap(work / "ike.pcap", ike_frames(options.copies))
        truth = audit_capture(str(work / "ike.pcap"))

        veth_namespaces(send_ns, sniff_ns)

        out = work / "out"
        with open(work / "live.jsonl", "wb") as stdout, open(work / "live.err", "wb") as stderr:
            live = subprocess.Popen(netns_exec(sniff_ns, *IKEAUDIT, "live", "-i", sniff_ns, "--format",
                                               "jsonl", "-o", str(out), "--status-every", "1",
                                               "--buffer-mib", str(options.buffer_mib)),
                                    stdout=stdout, stderr=stderr)  # fmt: skip
        processes.append(live)
        if not listening(live, work / "live.err"):
            return 1

        lab_frames = sum(1 for f in iter_capture(str(work / "ike.pcap")) if isinstance(f, Frame))
        ike_seconds = lab_frames / options.ike_pps if options.ike_pps else 1.0
        seconds = max(options.seconds, ike_seconds + 3)
        print(f"replaying {options.background_frames} background frames (looped, top speed, {seconds:.0f} s) "
              f"and {lab_frames} lab frames ({options.copies} copies) at "
              f"{options.ike_pps or 'top speed'} pps ...", file=sys.stderr)  # fmt: skip
        start = time.monotonic()
        background = subprocess.Popen(replay_command(send_ns, send_ns, work / "background.pcap",
                                                     pps=None, seconds=seconds, loop=True),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        processes.append(background)
        time.sleep(1.0)
        ike = subprocess.run(replay_command(send_ns, send_ns, work / "ike.pcap", pps=options.ike_pps,
                                            seconds=None, loop=False),
                             capture_output=True, text=True)  # fmt: skip
        background_out, _ = background.communicate(timeout=seconds + 60)
        elapsed = time.monotonic() - start
        catch_up = wait_until_read(work / "live.err", timeout=300)
        live.send_signal(signal.SIGTERM)
        live.wait(120)

        report = json.loads((out / "live-report.json").read_text())
        lines = [json.loads(line) for line in (work / "live.jsonl").read_text().splitlines()]
        stats = report["captures"][0]["stats"]
        bg_sent, bg_pps = parse_replay(background_out)
        ike_sent, ike_pps = parse_replay(ike.stdout + ike.stderr)
        expected = {n.negotiation.spi_i: n.classification.name for n in truth.negotiations}
        seen = {n["spi_i"]: n["classification"] for n in report["negotiations"]}
        agree = sum(1 for spi, name in expected.items() if seen.get(spi) == name)
        capture = report["live"]["capture"]
        rows = [
            ("background frames sent", f"{bg_sent}  ({bg_pps:,.0f} pps, {elapsed:.1f} s)"),
            ("lab frames sent (IKE + their ESP)", f"{ike_sent}  ({ike_pps:,.0f} pps)"),
            ("frames passing the kernel filter", f"{report['live']['packets_captured']}  "
                                                 f"(of {bg_sent + ike_sent} sent)"),
            ("IKE messages (datagrams) sent", str(truth.stats["ike_datagrams"])),
            ("IKE messages (datagrams) seen", str(stats.get("ike_datagrams", 0))),
            ("IP fragments seen / reassembled", f"{stats.get('ip_fragments', 0)} / {stats.get('reassembled', 0)}"),
            ("negotiations sent", str(len(expected))),
            ("negotiations seen (final report)", str(len(seen))),
            ("negotiations streamed as JSONL", str(len(lines))),
            ("same classification as offline scan", f"{agree} of {len(expected)}"),
            ("capture dropped (kernel/libpcap)", str(capture["dropped"])),
            ("capture dropped (interface)", str(capture["interface_dropped"])),
            ("unread when stopped", str(capture["pending"])),
            ("Python caught up after the traffic", f"{catch_up:.1f} s"),
        ]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        print(f"ikeaudit live benchmark ({os.cpu_count()} CPUs, "
              f"{'tcpreplay' if shutil.which('tcpreplay') else 'python sender'})")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        print("  classes seen: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(seen.values()).items())))
        return 0
    finally:
        stop(*processes)
        remove_namespaces(send_ns, sniff_ns)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
