"""The kernel (BPF) filter that keeps the bulk of span-port traffic out of Python.

It passes IKE on UDP 500/4500 and TCP 4500, over IPv4 and IPv6, untagged, 802.1Q- and
QinQ-tagged, and every IP fragment: non-first fragments carry no ports, so the kernel
cannot tell an IKE fragment from another; extraction drops the ones that turn out not
to be IKE. libpcap's `port` primitives cover IPv6 only when UDP follows the fixed
header directly, which is how IKE is sent.
"""

from __future__ import annotations

IKE_PORTS = "udp port 500 or udp port 4500 or tcp port 4500"
# IPv4: More Fragments set or a non-zero offset. IPv6: a Fragment header right after
# the fixed header (next header 44).
FRAGMENTS = "(ip and ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] == 44)"
ESP = "ip proto 50 or ip6 proto 50"


def ike_filter(*, esp: bool = False) -> str:
    """The filter expression; with esp=True native ESP passes too (to measure the traffic
    an IKE SA protects)."""
    base = f"{IKE_PORTS} or {FRAGMENTS}" + (f" or {ESP}" if esp else "")
    # After `vlan`, libpcap shifts every later offset by one tag: nest once per tag level.
    return f"({base}) or (vlan and (({base}) or (vlan and ({base}))))"
