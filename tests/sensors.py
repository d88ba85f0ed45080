"""Two sensors' rotated captures built from the real lab captures (pcaps/*.pcap), for
the cluster tests and bench/cluster.py.

Each sensor wrote four files of a tcpdump -C -W 4 rotation (span.pcap0 .. span.pcap3),
one per 100-second slot. Their IKE traffic is lab handshakes rewritten with Scapy onto
addresses of their own (so each is its own tunnel):

- sensor A: c01 in file 0; h01 cut by the rotation, its IKE_SA_INIT at the end of
  file 1 and the rest (IKE_INTERMEDIATE with ML-KEM on) at the start of file 2 (one
  negotiation across a file boundary); d01 in file 3;
- sensor B: p01, h02, x01 in files 0 to 2; in file 3 the very same d01 frames as A's
  (one tunnel both sensors saw).

Every file is padded with `padding` ESP-in-UDP frames of a flow of its own: they pass
the BPF prefilter (port 4500) and cost extraction in Python, so that a file is work
long enough for a worker to be killed while it reads it.
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import captures
from conftest import PCAPS, RECORDS

SLOT = 100.0  # seconds of capture per rotated file
START = 1_795_400_000.0  # the first file's first second (Nov 2026, as the lab captures)
CROSSING = "h01"  # the negotiation cut by the rotation (sensor A, files 1 and 2)
CROSSING_CUT = 2  # its frames before this one in file 1: IKE_SA_INIT; IKE_INTERMEDIATE (ML-KEM) on in file 2
SHARED = "d01"  # the tunnel both sensors saw (file 3 of each)
SENSOR_FILES = {
    "A": [("c01", 0), (CROSSING, 1), (SHARED, 3)],
    "B": [("p01", 0), ("h02", 1), ("x01", 2), (SHARED, 3)],
}
ADDRESSES = {  # lab template -> (initiator, responder) of its copy
    "c01": ("198.51.100.1", "203.0.113.1"), CROSSING: ("198.51.100.2", "203.0.113.2"),
    SHARED: ("198.51.100.3", "203.0.113.3"), "p01": ("198.51.100.4", "203.0.113.4"),
    "h02": ("198.51.100.5", "203.0.113.5"), "x01": ("198.51.100.6", "203.0.113.6"),
}
LAB = ("192.0.2.1", "192.0.2.2")  # the lab's initiator and responder


def _ike_frames(record_id: str, start: float) -> list[tuple[float, bytes]]:
    """The lab capture's IPv4 frames onto its copy's addresses, from `start` on."""
    packets = [p for p in captures.read(str(PCAPS / RECORDS[record_id]["file"])) if IP in p]
    moved = captures.shifted(captures.readdressed(packets, dict(zip(LAB, ADDRESSES[record_id]))),
                             start - float(packets[0].time))
    return [(float(p.time), bytes(p)) for p in moved]


def _padding(sensor: str, index: int, count: int, first: float, last: float) -> list[tuple[float, bytes]]:
    """ESP-in-UDP frames of one flow (an SPI per file), spread over [first, last]."""
    if count <= 0:
        return []
    spi = 0x5E000000 + (ord(sensor) << 8) + index
    # UDP checksum 0 (none, RFC 768): the frames differ in their ESP sequence number alone.
    frame = bytes(Ether() / IP(src=f"10.{ord(sensor)}.0.1", dst=f"10.{ord(sensor)}.0.2")
                  / UDP(sport=4500, dport=4500, chksum=0) / (struct.pack("!II", spi, 1) + bytes(96)))
    head, tail = frame[:-100], frame[-96:]
    step = (last - first) / count
    return [(first + i * step, head + struct.pack("!II", spi, i + 1) + tail) for i in range(count)]


def _write(path: Path, frames: list[tuple[float, bytes]]) -> None:
    frames.sort(key=lambda f: f[0])
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))  # Ethernet
        for when, data in frames:
            seconds = int(when)
            out.write(struct.pack("<IIII", seconds, round((when - seconds) * 1e6), len(data), len(data)))
            out.write(data)


def build(folder: Path, padding: int = 0) -> dict[str, list[Path]]:
    """Write both sensors' files under folder/A and folder/B; their paths per sensor."""
    files: dict[str, list[Path]] = {}
    for sensor, placed in SENSOR_FILES.items():
        content: list[list[tuple[float, bytes]]] = [[] for _ in range(4)]
        for record_id, slot in placed:
            if record_id == CROSSING:
                frames = _ike_frames(record_id, 0.0)
                middle = CROSSING_CUT
                boundary = START + (slot + 1) * SLOT  # where file slot ends and file slot + 1 starts
                frames = [(when - frames[middle][0] + boundary, data) for when, data in frames]
                content[slot] += frames[:middle]
                content[slot + 1] += frames[middle:]
            else:
                content[slot] += _ike_frames(record_id, START + slot * SLOT + 10.0)
        (folder / sensor).mkdir(parents=True, exist_ok=True)
        files[sensor] = []
        for index, frames in enumerate(content):
            first = START + index * SLOT + (0.5 if index else 0.0)  # after the crossing's last IKE of the file before
            path = folder / sensor / f"span.pcap{index}"
            _write(path, frames + _padding(sensor, index, padding, first, START + (index + 1) * SLOT - 1.0))
            files[sensor].append(path)
    return files
