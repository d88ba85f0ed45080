"""The kernel (BPF) filter that keeps the bulk of span-port traffic out of Python.

One rule: the filter never drops a frame that extraction could turn into IKE (or ESP,
when asked). It judges in C what it can read at fixed or computable offsets, and passes
everything else to Python, which decides:

  judged   IKE on UDP 500/4500 and TCP 4500 over IPv4 and IPv6 (fixed header), under
           up to two VLAN tags; IP fragments (all of them: a non-first fragment has no
           ports); over an IPv4 outer header (any IHL, untagged or tagged), the packet
           inside VXLAN (UDP to the VXLAN ports, fixed 8-byte header), inside Geneve
           (UDP 6081, options skipped: Ethernet or IP by protocol type) and inside
           ERSPAN type II and III (GRE with the flags mirrors use: sequence number
           only, or none for type III; no platform subheader; Ethernet frames) and
           inside GRE without optional fields carrying IP, ERSPAN type I or transparent
           Ethernet
  passed   IPv6 with extension headers (ports lie past them), IPv6 fragments, IP-in-IP,
           every other GRE (checksum, key or routing present; other protocol types),
           tunnels over IPv6, MPLS, PPPoE sessions, transparent Ethernet, a third VLAN
           tag, and inside a tunnel: VLAN tags, MPLS, PPPoE, IPv6 extension headers,
           another tunnel

libpcap 1.10 has no `vxlan` keyword, and its `geneve` (like `vlan`) shifts the offsets
of the rest of the whole expression, which the nested structure below cannot take: the
tunnel headers are read at explicit offsets from the outer IPv4 header instead. Only
IPv4 headers without options (IHL 5, the rule for mirrors' and tunnels' headers) are
judged, outer and inner: libpcap's optimizer miscompiles loads whose index is itself
computed from a computed index (ip[a + (ip[a] & 0xf) * 4] with `a` from ip[0]), so the
only computed index left is Geneve's option length.
A load past the end of a frame rejects it, as libpcap's own `udp port` does for a frame
cut inside its headers.
"""

from __future__ import annotations

from collections.abc import Iterable

from ikeaudit.iana import (ETHERTYPE_ERSPAN_II, ETHERTYPE_ERSPAN_III, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_MPLS,
                           ETHERTYPE_PPPOE_SESSION, ETHERTYPE_TEB, ETHERTYPE_VLAN, GENEVE_PORT, IPPROTO_GRE,
                           IPPROTO_IPV4_IN_IP, IPPROTO_IPV6_IN_IP, IPV6_EXTENSION_HEADERS, IPV6_FRAGMENT_HEADER,
                           VXLAN_PORT)

IKE_PORTS = "udp port 500 or udp port 4500 or tcp port 4500"
# IPv4: More Fragments set or a non-zero offset. (IPv6 fragments: see _IPV6_UNJUDGED.)
FRAGMENTS = "(ip and ip[6:2] & 0x3fff != 0)"
ESP = "ip proto 50 or ip6 proto 50"

_TUNNEL_PROTOS = (IPPROTO_GRE, IPPROTO_IPV4_IN_IP, IPPROTO_IPV6_IN_IP)
# Next headers after which the IPv6 packet is Python's to judge.
_IPV6_ONWARD = (*IPV6_EXTENSION_HEADERS, IPV6_FRAGMENT_HEADER, *_TUNNEL_PROTOS)
# Ethertypes extraction opens beyond IP.
_ETHERTYPES_ONWARD = (*ETHERTYPE_VLAN, *ETHERTYPE_MPLS, ETHERTYPE_PPPOE_SESSION, ETHERTYPE_TEB)
_GRE = 20  # where the IPv4 payload starts, as an offset into ip[], when judged in C


def _any(value: str, choices: Iterable[int]) -> str:
    return "(" + " or ".join(f"{value} = {c:#x}" for c in choices) + ")"


class _Inner:
    """BPF clauses over a packet inside a tunnel, at an offset into the outer ip[]."""

    def __init__(self, esp: bool, tunnel_ports: tuple[int, ...]) -> None:
        self.esp = esp
        self.tunnel_ports = tunnel_ports

    def _transport(self, proto: str, ports: str) -> str:
        sport, dport = f"ip[{ports}:2]", f"ip[{ports} + 2:2]"
        ike = _any(sport, (500, 4500)) + " or " + _any(dport, (500, 4500, *self.tunnel_ports))
        nat_t = f"{sport} = 4500 or {dport} = 4500"
        clauses = [f"({proto} = 17 and ({ike}))", f"({proto} = 6 and ({nat_t}))"]
        if self.esp:
            clauses.append(f"{proto} = 50")
        return " or ".join(clauses)

    def ipv4(self, at: str) -> str:
        proto = f"ip[{at} + 9]"  # options (IHL > 5) go to Python: see the module docstring
        return (f"(ip[{at}] != 0x45 or ip[{at} + 6:2] & 0x3fff != 0 or {_any(proto, _TUNNEL_PROTOS)} or "
                f"{self._transport(proto, f'{at} + 20')})")

    def ipv6(self, at: str) -> str:
        nh = f"ip[{at} + 6]"
        return f"({_any(nh, _IPV6_ONWARD)} or {self._transport(nh, f'{at} + 40')})"

    def ethernet(self, at: str, tags: int = 1) -> str:
        """An Ethernet frame at `at`; with up to `tags` VLAN tags judged (more: Python)."""
        return self._ethertype(f"{at} + 12", tags)

    def _ethertype(self, at: str, tags: int) -> str:
        ethertype, payload = f"ip[{at}:2]", f"{at} + 2"
        tagged = f"{_any(ethertype, ETHERTYPE_VLAN)} and " + (self._ethertype(f"{at} + 4", tags - 1) if tags else "1 = 1")
        return (f"(({ethertype} = {ETHERTYPE_IPV4:#x} and {self.ipv4(payload)}) or "
                f"({ethertype} = {ETHERTYPE_IPV6:#x} and {self.ipv6(payload)}) or "
                f"({tagged}) or {_any(ethertype, _ETHERTYPES_ONWARD[len(ETHERTYPE_VLAN):])})")


def _ipv4_tunnels(esp: bool, vxlan_ports: tuple[int, ...]) -> str:
    """Tunnels over IPv4: judged inside where the header allows, else passed whole."""
    inner = _Inner(esp, (*vxlan_ports, GENEVE_PORT))
    g = _GRE
    # A first fragment has the fragment clause, an outer header with options goes to Python.
    udp = "ip proto 17 and ip[6:2] & 0x3fff = 0 and ip[0] = 0x45"
    dport = f"ip[{g} + 2:2]"
    vxlan = f"({udp} and {_any(dport, vxlan_ports)} and {inner.ethernet(f'{g} + 16')})"
    at, ethertype = f"{g} + 8", f"ip[{g} + 10:2]"  # the Geneve header, its protocol type
    payload = f"{at} + 8 + ((ip[{at}] & 0x3f) << 2)"  # past its options
    geneve = (f"({udp} and {dport} = {GENEVE_PORT} and (ip[{at}] & 0xc0 != 0 or "
              f"({ethertype} = {ETHERTYPE_TEB:#x} and {inner.ethernet(payload)}) or "
              f"({ethertype} = {ETHERTYPE_IPV4:#x} and {inner.ipv4(payload)}) or "
              f"({ethertype} = {ETHERTYPE_IPV6:#x} and {inner.ipv6(payload)}) or "
              f"not {_any(ethertype, (ETHERTYPE_TEB, ETHERTYPE_IPV4, ETHERTYPE_IPV6))}))")  # unsupported: Python tells
    # ERSPAN II: GRE flags S only, version 1. III: flags none or S, version 2, Ethernet
    # frame type (FT 0), no platform subheader (O 0).
    flags, ptype = f"ip[{g}:2]", f"ip[{g} + 2:2]"
    erspan_ii = f"{flags} = 0x1000 and {ptype} = {ETHERTYPE_ERSPAN_II:#x} and ip[{g} + 8] & 0xf0 = 0x10"

    def erspan_iii(header: int) -> str:
        at = f"{g} + {header}"
        return (f"{flags} = {0x1000 if header == 8 else 0:#x} and {ptype} = {ETHERTYPE_ERSPAN_III:#x} and "
                f"ip[{at}] & 0xf0 = 0x20 and ip[{at} + 10] & 0x7c = 0 and ip[{at} + 11] & 1 = 0")

    judged = ((f"{flags} = 0 and {_any(ptype, (ETHERTYPE_ERSPAN_II, ETHERTYPE_TEB))}", inner.ethernet(f"{g} + 4")),
              (erspan_ii, inner.ethernet(f"{g} + 16")), (erspan_iii(4), inner.ethernet(f"{g} + 16")),
              (erspan_iii(8), inner.ethernet(f"{g} + 20")),
              (f"{flags} = 0 and {ptype} = {ETHERTYPE_IPV4:#x}", inner.ipv4(f"{g} + 4")),
              (f"{flags} = 0 and {ptype} = {ETHERTYPE_IPV6:#x}", inner.ipv6(f"{g} + 4")))
    gre = (f"(ip proto {IPPROTO_GRE} and (ip[0] != 0x45 or " + " and ".join(f"not ({case})" for case, _ in judged) + " or "
           + " or ".join(f"({case} and {clause})" for case, clause in judged) + "))")
    return f"{vxlan} or {geneve} or {gre} or ip proto {IPPROTO_IPV4_IN_IP} or ip proto {IPPROTO_IPV6_IN_IP}"


def _network(esp: bool, vxlan_ports: tuple[int, ...]) -> str:
    """Clauses on the network layer: IPv4 and IPv6 and what they carry."""
    ipv6_onward = "ip6 and " + _any("ip6[6]", _IPV6_ONWARD)
    tunnel_ports = (*vxlan_ports, GENEVE_PORT)
    over_ipv6 = "ip6 and (" + " or ".join(f"udp dst port {p}" for p in tunnel_ports) + ")"
    with_options = "ip[0] != 0x45 and (" + " or ".join(f"udp dst port {p}" for p in tunnel_ports) + ")"
    clauses = [IKE_PORTS, FRAGMENTS, f"({ipv6_onward})", _ipv4_tunnels(esp, vxlan_ports), f"({over_ipv6})",
               f"({with_options})"]
    if esp:
        clauses.append(ESP)
    return " or ".join(clauses)


def _ports(vxlan_ports: Iterable[int] | None) -> tuple[int, ...]:
    return tuple(sorted({VXLAN_PORT, *(vxlan_ports or ())}))


def ike_filter(*, esp: bool = False, vxlan_ports: Iterable[int] | None = None) -> str:
    """The filter expression for Ethernet; with esp=True native ESP passes too (to measure
    the traffic an IKE SA protects). vxlan_ports: VXLAN ports besides 4789."""
    base = _linked(esp, vxlan_ports, _ETHERTYPES_ONWARD[len(ETHERTYPE_VLAN):])
    # After `vlan`, libpcap shifts every later offset by one tag: nest once per tag level;
    # a third tag is Python's to read.
    return f"({base}) or (vlan and (({base}) or (vlan and (({base}) or vlan))))"


def untagged_filter(*, esp: bool = False, vxlan_ports: Iterable[int] | None = None) -> str:
    """For link types without VLAN support in libpcap (Linux cooked): tags pass whole."""
    return _linked(esp, vxlan_ports, _ETHERTYPES_ONWARD)


def _linked(esp: bool, vxlan_ports: Iterable[int] | None, ethertypes: tuple[int, ...]) -> str:
    return f"{ip_filter(esp=esp, vxlan_ports=vxlan_ports)} or " + " or ".join(
        f"ether proto {t:#x}" for t in ethertypes)


def ip_filter(*, esp: bool = False, vxlan_ports: Iterable[int] | None = None) -> str:
    """For raw IP link types, which have no ethertype."""
    return _network(esp, _ports(vxlan_ports))
