"""A crafted flood of incomplete state through `ikeaudit scan`: peak RSS and bounds hit (issue 7).

    python bench/flood.py                 # the default flood: 320,000 frames
    python bench/flood.py --scale 0.1     # a tenth of it
    python bench/flood.py --keep          # leave bench/out/flood.pcap for a second look

The capture (written to bench/out/, git-ignored) holds, interleaved, frames that each
open state an attacker never completes:
  ipv4-frag   first IPv4 fragments of UDP 500 datagrams, every one with its own id
  ipv4-tail   non-first IPv4 fragments at large offsets (up to the 64 KiB limit)
  ipv6-frag   the same over IPv6 (fragment header, 32-bit ids)
  skf         IKE_AUTH fragments (SKF) of one IKE SA, each a new message id announcing a
              random Total Fragments, and of random IKE SAs
  sa-init     IKE_SA_INIT requests (the lab's c01 request) with random SPIi
Timestamps advance 10 microseconds a frame, so nothing reaches a timeout: only the
table bounds keep memory in check. `ikeaudit scan --format json` runs as a child
process; its peak RSS (GNU time, else wait4), wall time, the anomalies by kind and
detail (which bound said what), and the negotiation count are printed. Target: peak RSS
under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_span import LAB, START, Writer, fix_ipv4_checksum  # noqa: E402
from run import OUT, run  # noqa: E402

RSS_TARGET_MB = 200
KINDS = {"ipv4-frag": 100_000, "ipv4-tail": 50_000, "ipv6-frag": 50_000, "skf": 60_000, "sa-init": 60_000}
NUMBERS = re.compile(r"[0-9a-f]*:[0-9a-f:]+|0x[0-9a-f]+|[0-9a-f]{16}|\d+")  # addresses, ids, counts
MAC = bytes.fromhex("020000000002020000000001")


def ipv4(src: int, ident: int, offset_words: int, more: bool, payload: bytes) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident,
                                   (0x2000 if more else 0) | offset_words, 64, 17, 0,
                                   struct.pack("!I", src), bytes([198, 51, 100, 1])))
    frame = bytearray(MAC + b"\x08\x00") + header + payload
    fix_ipv4_checksum(frame, 14)
    return bytes(frame)


def ipv6_fragment(src: int, ident: int, offset_words: int, more: bool, payload: bytes) -> bytes:
    fragment = struct.pack("!BBHI", 17, 0, (offset_words << 3) | int(more), ident)
    header = struct.pack("!IHBB16s16s", 6 << 28, len(fragment) + len(payload), 44, 64,
                         b"\x20\x01\x0d\xb8" + bytes(8) + struct.pack("!I", src),
                         b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01")
    return MAC + b"\x86\xdd" + header + fragment + payload


def udp(payload: bytes, length: int | None = None) -> bytes:
    # Checksum 0 (none, allowed over IPv4): extraction does not verify it anyway.
    return struct.pack("!HHHH", 500, 500, 8 + (len(payload) if length is None else length), 0) + payload


def skf(spi_i: bytes, spi_r: bytes, message_id: int, number: int, total: int, body: bytes) -> bytes:
    length = 28 + 8 + len(body)
    header = spi_i + spi_r + struct.pack("!BBBBII", 53, 0x20, 35, 0x08, message_id, length)
    return header + struct.pack("!BBHHH", 35 if number == 1 else 0, 0, 8 + len(body), number, total) + body


def sa_init_template() -> tuple[bytes, int]:
    """The lab's c01 IKE_SA_INIT request frame and the offset of its IKE header."""
    sys.path.insert(0, str(HERE.parent))
    from ikeaudit.records import Frame
    from ikeaudit.sources import iter_capture

    ike = 14 + 20 + 8
    first = next(f for f in iter_capture(LAB / "c01_classical_ecp256.pcap") if isinstance(f, Frame)
                 and f.data[23] == 17 and f.data[36:38] == b"\x01\xf4" and f.data[ike + 18] == 34
                 and not f.data[ike + 19] & 0x20)
    return first.data, ike


def frames(rng: random.Random, counts: dict[str, int]):
    template, ike = sa_init_template()
    body = bytes(rng.randrange(256) for _ in range(256))
    sa_spi_i, sa_spi_r = rng.randbytes(8), rng.randbytes(8)
    schedule = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(schedule)
    for i, kind in enumerate(schedule):
        src = 0xC0000200 + (i & 0xFF)  # 256 sources in 192.0.2.0/24 and 2001:db8::/64
        if kind == "ipv4-frag":
            yield ipv4(src, rng.randrange(1 << 16), 0, True, udp(skf(rng.randbytes(8), bytes(8), 1, 1, 2, body), 1400)[:200])
        elif kind == "ipv4-tail":
            yield ipv4(src, rng.randrange(1 << 16), rng.randrange(1, 8000), rng.random() < 0.5, body[:64])
        elif kind == "ipv6-frag":
            offset = 0 if rng.random() < 0.5 else rng.randrange(1, 8000)
            payload = udp(skf(rng.randbytes(8), bytes(8), 1, 1, 2, body), 1400)[:200] if offset == 0 else body[:64]
            yield ipv6_fragment(src, rng.randrange(1 << 32), offset, True, payload)
        elif kind == "skf":
            total = rng.randrange(2, 1 << 16)
            number = rng.randrange(1, total + 1)
            if rng.random() < 0.5:
                message = skf(sa_spi_i, sa_spi_r, rng.randrange(1, 1 << 32), number, total, body[:96])
            else:
                message = skf(rng.randbytes(8), rng.randbytes(8), 1, number, total, body[:96])
            yield ipv4(src, i & 0xFFFF, 0, False, udp(message))
        else:
            frame = bytearray(template)
            frame[ike:ike + 8] = rng.randbytes(8)
            yield bytes(frame)


def write(path: Path, counts: dict[str, int], seed: int) -> int:
    writer = Writer(path, "pcap", compress=False)
    rng = random.Random(seed)
    for i, frame in enumerate(frames(rng, counts)):
        writer.add(START + i * 1e-5, frame)
    writer.close()
    return writer.frames


def bounds_hit(anomalies: list[dict]) -> Counter:
    """Anomalies by kind and detail, numbers blanked, so that one bound is one line."""
    return Counter(a["kind"] + ": " + NUMBERS.sub("N", a["detail"]) for a in anomalies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (default 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the capture and the JSON in bench/out/")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    counts = {kind: max(1, int(count * args.scale)) for kind, count in KINDS.items()}
    capture, result = OUT / "flood.pcap", OUT / "flood.json"
    total = write(capture, counts, args.seed)
    print(f"flood: {total} frames ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
          f"{capture.stat().st_size / 1e6:.0f} MB")
    ikeaudit = Path(sys.executable).with_name("ikeaudit")
    child = run("ikeaudit scan", [str(ikeaudit), "scan", str(capture), "--format", "json"], result)
    document = json.loads(result.read_text())
    [audit] = document["captures"]
    anomalies = audit["anomalies"] + [a for n in document["negotiations"] for a in n["anomalies"]]
    print(f"exit status {child.status}, {child.seconds:.1f} s wall, {total / child.seconds:.0f} frames/s, "
          f"peak RSS {child.peak_rss_mb:.0f} MB (target < {RSS_TARGET_MB} MB)")
    print(f"negotiations: {len(document['negotiations'])}; anomalies: {len(anomalies)} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(Counter(a['kind'] for a in anomalies).items()))})")
    print("stats: " + ", ".join(f"{k} {v}" for k, v in audit["stats"].items()))
    print("anomalies by detail (numbers as N):")
    for detail, count in bounds_hit(anomalies).most_common(40):
        print(f"  {count:9d}  {detail[:150]}")
    print("bounds that count what they do not keep:")
    for a in anomalies:
        if "counted, not kept" in a["detail"] or "not listed" in a["detail"]:
            print(f"  {a['detail'][:200]}")
    if not args.keep:
        capture.unlink()
        result.unlink()
    return 0 if child.status == 0 and child.peak_rss_mb < RSS_TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
