"""A negotiation series made of real lab captures: the hybrid h01, then the classical
c01 for the same peers later on, both rewritten with Scapy onto one documentation peer
pair, so that a monitor sees a tunnel fall back from hybrid ML-KEM to classical."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap, wrpcap

from conftest import PCAPS

# The lab's initiator and responder (192.0.2.1, 192.0.2.2: manifest "capture_point" side
# first) move to these, so that the series is one tunnel whatever the lab addresses were.
INITIATOR, RESPONDER = "198.51.100.10", "203.0.113.20"
LAB_ADDRESSES = {"192.0.2.1": INITIATOR, "192.0.2.2": RESPONDER}


def lab(record_id: str) -> Path:
    (path,) = PCAPS.glob(f"{record_id}_*.pcap")
    return path


def _rewritten(path: Path, start: float) -> list:
    packets = [p for p in rdpcap(str(path)) if IP in p]  # IPv6 ND and ARP noise stays out
    offset = start - float(packets[0].time)
    out = []
    for p in packets:
        p = p.copy()
        p[IP].src = LAB_ADDRESSES.get(p[IP].src, p[IP].src)
        p[IP].dst = LAB_ADDRESSES.get(p[IP].dst, p[IP].dst)
        del p[IP].chksum
        if UDP in p:
            if p[IP].frag == 0 and not p[IP].flags.MF:
                del p[UDP].chksum
            else:
                p[UDP].chksum = 0  # no checksum over a fragmented datagram (legal in IPv4)
        p.time = float(p.time) + offset
        out.append(p)
    return out


def make_series(out: Path, ids: tuple[str, ...] = ("h01", "c01"), gap: float = 600.0) -> Path:
    """The captures of ``ids`` one after the other, ``gap`` seconds apart, on one peer pair."""
    packets: list = []
    start = float(rdpcap(str(lab(ids[0])))[0].time)
    for record_id in ids:
        part = _rewritten(lab(record_id), start)
        packets += part
        start = float(part[-1].time) + gap
    wrpcap(str(out), packets)
    return out
