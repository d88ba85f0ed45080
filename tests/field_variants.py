"""Field situations made from REAL lab captures: the same packets, some left out, as a
span port or a lossy tap would have recorded them.

Scapy reads and writes the captures (tests may use it; the package may not outside
dissect and layers). Only the IKE header's exchange type is read, at its fixed offset
(RFC 7296 section 3.1: byte 18), behind the non-ESP marker on port 4500.
"""

from __future__ import annotations

from pathlib import Path

IKE_PORTS = (500, 4500)
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL, IKE_INTERMEDIATE = 34, 35, 36, 37, 43


def exchange_type(packet) -> int | None:
    """The IKE exchange type a UDP datagram carries, or None when it carries no IKE."""
    from scapy.layers.inet import UDP

    if UDP not in packet:
        return None
    udp = packet[UDP]
    if not set(IKE_PORTS) & {udp.sport, udp.dport}:
        return None
    data = bytes(udp.payload)
    if 4500 in (udp.sport, udp.dport):
        if data[:4] != b"\0\0\0\0":
            return None  # ESP-in-UDP
        data = data[4:]
    return data[18] if len(data) >= 28 else None


def without_exchanges(source: str | Path, target: str | Path, exchanges: set[int]) -> int:
    """Copy a capture leaving out every datagram of the given IKE exchange types; return
    how many packets were left out (none of the lab's messages are IP-fragmented)."""
    from scapy.layers import inet, inet6, l2  # noqa: F401  (registers the link types PcapReader decodes)
    from scapy.utils import PcapReader, PcapWriter

    dropped = 0
    with PcapReader(str(source)) as reader, PcapWriter(str(target), linktype=reader.linktype, sync=True) as writer:
        for packet in reader:
            if exchange_type(packet) in exchanges:
                dropped += 1
                continue
            writer.write(packet)
    return dropped
