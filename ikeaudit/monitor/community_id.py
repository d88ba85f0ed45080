"""Community ID flow hash, version 1 (https://github.com/corelight/community-id-spec).

The usual key to join a flow's events across Suricata, Zeek and other monitors:
SHA-1 over seed, the two endpoints in a canonical order, the protocol and the ports,
base64-encoded with a "1:" version prefix. ICMP's type/code port mapping is left out:
ikeaudit's events are UDP or TCP.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct

UDP, TCP, SCTP = 17, 6, 132
_WITH_PORTS = frozenset({TCP, UDP, SCTP})


def community_id_v1(src_ip: str, dst_ip: str, src_port: int | None, dst_port: int | None,
                    proto: int = UDP, seed: int = 0) -> str:  # fmt: skip
    src = ipaddress.ip_address(src_ip).packed
    dst = ipaddress.ip_address(dst_ip).packed
    ports = proto in _WITH_PORTS and src_port is not None and dst_port is not None
    sport, dport = (src_port or 0, dst_port or 0) if ports else (0, 0)
    # The smaller endpoint first, so that both directions hash the same.
    if (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed) + src + dst + struct.pack("!BB", proto, 0)
    if ports:
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
