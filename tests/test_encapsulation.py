"""Field captures: every lab capture as a mirror, a tunnel or a provider link delivers it.

Each lab capture (pcaps/*.pcap) is wrapped frame by frame in an encapsulation built with
Scapy's own layers (ERSPAN, GRE, VXLAN, Geneve, MPLS, PPPoE, VLAN tags, IPv6 extension
headers, Linux cooked) and must give exactly the negotiations, capture anomalies and
malformed records of the plain capture, on the prefilter path (libpcap's BPF in C) and on
the fallback (every frame decoded in Python). Where the prefilter judges the
encapsulation in C, it must drop exactly the frames it drops in the plain capture; where
it cannot, it passes every frame to Python.
"""

from __future__ import annotations

import json
import re
import struct
from functools import lru_cache
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.all import GRE, IP, UDP, CookedLinuxV2, Dot1AD, Dot1Q, Ether, IPv6, Raw
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.mpls import MPLS, EoMCW
from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.utils import RawPcapReader

import ikeaudit.sources as sources
from conftest import PCAPS, RECORDS, ROOT, lab_path
from ikeaudit.classify import KeCatalog
from ikeaudit.cli import main
from ikeaudit.pipeline import audit_capture
from ikeaudit.report.views import scan_document

LAB = sorted(PCAPS.glob("*.pcap"))
# The shared captures sit beside the project, or beside the folder of worktrees.
MORE = next((p / "shared" / "pcaps" / "thirdparty" / "more" for p in (ROOT.parent, ROOT.parent.parent)
             if (p / "shared" / "pcaps" / "thirdparty" / "more").is_dir()), None)
MIRROR4 = ("198.51.100.1", "198.51.100.2")  # the mirror's own addresses: never IKE peers
MIRROR6 = ("2001:db8:ffff::1", "2001:db8:ffff::2")
MIRROR_MACS = {"src": "02:aa:00:00:00:01", "dst": "02:aa:00:00:00:02"}
PPP_PROTOCOL = {0x0800: 0x0021, 0x86DD: 0x0057}

needs_libpcap = pytest.mark.skipif(sources.libpcap_version() is None, reason="libpcap is not installed")


# ---------------------------------------------------------------------------- building


def outer4(payload, tags=()):
    """The mirror's Ethernet and IPv4 headers, VLAN-tagged with `tags`."""
    link = Ether(**MIRROR_MACS)
    for vlan in tags:
        link = link / Dot1Q(vlan=vlan)
    return link / IP(src=MIRROR4[0], dst=MIRROR4[1]) / payload


def vxlan(frame, ethertype, n, port=4789, tags=()):
    return outer4(UDP(sport=49152 + n % 1000, dport=port) / VXLAN(vni=4242) / Raw(frame), tags)


def ip_of(frame, ethertype):
    if ethertype not in PPP_PROTOCOL:
        raise NotIp  # ARP has no place on an MPLS or PPPoE link, nor inside GRE as IP
    return Raw(frame[14:])


class NotIp(Exception):
    """The frame is left as it was: the variant carries IP only."""


# variant -> (link type, build(frame, ethertype of its payload, frame number) -> new frame bytes)
VARIANTS = {
    "erspan-i": (1, lambda f, t, n: outer4(GRE(proto=0x88BE) / ERSPAN_I() / Raw(f))),
    "erspan-ii": (1, lambda f, t, n: outer4(GRE(proto=0x88BE, seqnum_present=1, sequence_number=n)
                                            / ERSPAN_II(session_id=7, index=n) / Raw(f))),
    "erspan-iii": (1, lambda f, t, n: outer4(GRE(proto=0x22EB) / ERSPAN_III(session_id=9, timestamp=n) / Raw(f))),
    "erspan-iii-platform": (1, lambda f, t, n: outer4(GRE(proto=0x22EB, seqnum_present=1, sequence_number=n)
                                                      / ERSPAN_III(session_id=9, o=1)
                                                      / ERSPAN_PlatformSpecific(platf_id=3) / Raw(f))),
    "gre-ip": (1, lambda f, t, n: outer4(GRE(proto=t) / ip_of(f, t))),
    "gre-key-ethernet": (1, lambda f, t, n: outer4(GRE(proto=0x6558, key_present=1, key=0x10203) / Raw(f))),
    "vxlan": (1, vxlan),
    "vxlan-8472": (1, lambda f, t, n: vxlan(f, t, n, port=8472)),
    "vxlan-tagged-twice": (1, lambda f, t, n: vxlan(f, t, n, tags=(10, 20))),
    "erspan-ii-tagged": (1, lambda f, t, n: outer4(GRE(proto=0x88BE, seqnum_present=1, sequence_number=n)
                                                   / ERSPAN_II(session_id=7, index=n) / Raw(f), tags=(30,))),
    "geneve-tagged": (1, lambda f, t, n: outer4(UDP(sport=50000, dport=6081) / GENEVE(proto=0x6558, vni=77, options=[
        GeneveOptions(classid=0x0108, type=1, data=b"\x00\x00\x00\x01")]) / Raw(f), tags=(40,))),
    "vxlan-cooked-v2": (276, lambda f, t, n: CookedLinuxV2(proto=0x0800, pkttype=0, lladdrtype=1)
                        / vxlan(f, t, n)[IP]),
    "geneve": (1, lambda f, t, n: outer4(UDP(sport=50000, dport=6081) / GENEVE(proto=0x6558, vni=77)
                                         / Raw(f))),
    "geneve-ip-options": (1, lambda f, t, n: outer4(UDP(sport=50000, dport=6081)
                                                    / GENEVE(proto=t, vni=77, options=[
                                                        GeneveOptions(classid=0x0108, type=1, data=b"\x00\x00\x00\x01"),
                                                        GeneveOptions(classid=0x0108, type=2, data=bytes(8))])
                                                    / ip_of(f, t))),
    "mpls": (1, lambda f, t, n: Ether(**MIRROR_MACS, type=0x8847) / MPLS(label=16, s=0, ttl=64)
             / MPLS(label=1017, s=1, ttl=64) / ip_of(f, t)),
    "mpls-pseudowire": (1, lambda f, t, n: Ether(**MIRROR_MACS, type=0x8847) / MPLS(label=300, s=1, ttl=64)
                        / EoMCW(seq=n & 0xFFFF) / Raw(f)),
    "pppoe": (1, lambda f, t, n: Ether(**MIRROR_MACS) / PPPoE(sessionid=0x2A) / PPP(proto=PPP_PROTOCOL.get(t, 0))
              / ip_of(f, t)),
    "vlan-triple": (1, lambda f, t, n: Ether(**MIRROR_MACS) / Dot1AD(vlan=100) / Dot1Q(vlan=200)
                    / Dot1Q(vlan=300, type=t) / Raw(f[14:])),
    "erspan-ii-over-ipv6-ext": (1, lambda f, t, n: Ether(**MIRROR_MACS) / IPv6(src=MIRROR6[0], dst=MIRROR6[1])
                                / IPv6ExtHdrDestOpt() / GRE(proto=0x88BE, seqnum_present=1, sequence_number=n)
                                / ERSPAN_II(session_id=7) / Raw(f)),
    "nested-ethernet-vlan-vxlan": (1, lambda f, t, n: outer4(GRE(proto=0x6558) / Ether(**MIRROR_MACS)
                                                             / Dot1Q(vlan=5) / IP(src="203.0.113.1", dst="203.0.113.2")
                                                             / UDP(sport=40000, dport=4789) / VXLAN(vni=1) / Raw(f))),
}
VXLAN_PORTS = {"vxlan-8472": (8472,)}
# Where the prefilter reads the inner packet in C (so it drops what it drops in the plain
# capture); every other variant reaches Python whole.
JUDGED_IN_C = {"erspan-i", "erspan-ii", "erspan-iii", "gre-ip", "vxlan", "vxlan-8472", "vxlan-cooked-v2",
               "geneve", "geneve-ip-options", "vxlan-tagged-twice", "erspan-ii-tagged", "geneve-tagged"}
ENCAP_STAT = {
    "erspan-i": "encap_erspan_i", "erspan-ii": "encap_erspan_ii", "erspan-iii": "encap_erspan_iii",
    "erspan-iii-platform": "encap_erspan_iii", "gre-ip": "encap_gre", "gre-key-ethernet": "encap_ethernet",
    "vxlan": "encap_vxlan", "vxlan-8472": "encap_vxlan", "vxlan-cooked-v2": "encap_vxlan",
    "vxlan-tagged-twice": "encap_vxlan", "erspan-ii-tagged": "encap_erspan_ii", "geneve-tagged": "encap_geneve",
    "geneve": "encap_geneve", "geneve-ip-options": "encap_geneve", "mpls": "encap_mpls",
    "mpls-pseudowire": "encap_mpls", "pppoe": "encap_pppoe", "vlan-triple": "encap_vlan",
    "erspan-ii-over-ipv6-ext": "encap_erspan_ii", "nested-ethernet-vlan-vxlan": "encap_vxlan",
}  # fmt: skip


def write_pcap(path: Path, linktype: int, records) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    for (seconds, micros), data in records:
        out += struct.pack("<IIII", seconds, micros, len(data), len(data)) + data
    path.write_bytes(bytes(out))


def lab_frames(path: Path):
    for data, meta in RawPcapReader(str(path)):
        yield (meta.sec, meta.usec), data


def wrap(source: Path, target: Path, variant: str) -> tuple[Path, int]:
    """The wrapped capture, and how many of its frames are wrapped."""
    linktype, build = VARIANTS[variant]
    records, count = [], 0
    for number, (stamp, frame) in enumerate(lab_frames(source), 1):
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        assert ethertype not in (0x8100, 0x88A8), "lab frames are untagged"
        try:
            records.append((stamp, bytes(build(frame, ethertype, number))))
            count += 1
        except NotIp:
            assert linktype == 1
            records.append((stamp, frame))
    write_pcap(target, linktype, records)
    return target, count


@pytest.fixture(scope="session")
def wrapped(tmp_path_factory):
    """variant -> lab capture -> its wrapped copy, built once per session when asked."""
    root = tmp_path_factory.mktemp("wrapped")
    built: dict[tuple[str, str], tuple[Path, int]] = {}

    def get(variant: str, source: Path) -> tuple[Path, int]:
        key = (variant, source.name)
        if key not in built:
            folder = root / variant
            folder.mkdir(exist_ok=True)
            built[key] = wrap(source, folder / source.name, variant)
        return built[key]

    return get


# ---------------------------------------------------------------------------- auditing


def view(path, prefilter: bool, vxlan_ports=()) -> dict:
    audit = audit_capture(str(path), esp=False, prefilter=prefilter, vxlan_ports=vxlan_ports)
    document = scan_document([audit], KeCatalog())
    capture = document["captures"][0]
    return {
        "negotiations": [{**n, "capture": None} for n in document["negotiations"]],
        "anomalies": capture.get("anomalies"),
        "malformed": capture.get("malformed"),
        "stats": audit.stats,
    }


@lru_cache(maxsize=None)
def plain(path: Path) -> dict:
    return view(path, prefilter=True)


def expected(source: Path) -> dict:
    return {k: v for k, v in plain(source).items() if k != "stats"}


def mirror_addresses_in(document: dict) -> set[str]:
    text = json.dumps(document["negotiations"])
    return {a for a in (*MIRROR4, *MIRROR6, "203.0.113.1") if a in text}


# ---------------------------------------------------------------------------- every capture, every variant


@pytest.mark.parametrize("prefilter", [pytest.param(True, marks=needs_libpcap, id="prefilter"),
                                       pytest.param(False, id="python")])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_lab_capture_wrapped_gives_the_plain_negotiations(wrapped, variant, prefilter):
    ports = VXLAN_PORTS.get(variant, ())
    for source in LAB:
        path, wrapped_frames = wrapped(variant, source)
        got = view(path, prefilter, ports)
        stats = got.pop("stats")
        assert got == expected(source), f"{variant}: {source.name}"
        assert not mirror_addresses_in(got), f"{variant}: {source.name}"
        if not prefilter:
            assert stats[ENCAP_STAT[variant]] >= wrapped_frames > stats["frames"] / 2, f"{variant}: {source.name}"
        elif variant in JUDGED_IN_C:  # the inner packet judged in C, as the plain frame is
            assert stats["prefiltered"] == plain(source)["stats"]["prefiltered"], f"{variant}: {source.name}"
        else:  # nothing it could not judge was dropped (only the frames left unwrapped: ARP)
            assert stats["prefiltered"] == stats["frames"] - wrapped_frames, f"{variant}: {source.name}"


def test_the_plain_captures_have_frames_the_prefilter_drops():
    """Else the prefiltered counts compared above would prove nothing."""
    assert sum(plain(source)["stats"]["prefiltered"] for source in LAB) > 100


def test_vxlan_on_another_port_needs_the_option(wrapped):
    source = Path(lab_path("h01"))
    path, _ = wrapped("vxlan-8472", source)
    assert view(path, prefilter=False)["negotiations"] == []
    assert view(path, prefilter=False, vxlan_ports=(8472,))["negotiations"] == expected(source)["negotiations"]


def test_cli_vxlan_port_option(wrapped):
    path, _ = wrapped("vxlan-8472", Path(lab_path("h01")))
    args = ["scan", str(path), "--format", "json"]
    without = json.loads(CliRunner().invoke(main, args).stdout)
    with_port = json.loads(CliRunner().invoke(main, [*args, "--vxlan-port", "8472"]).stdout)
    assert without["summary"]["negotiations"] == 0
    assert [n["classification"] for n in with_port["negotiations"]] == [RECORDS["h01"]["expected_classification"]]
    mtu = CliRunner().invoke(main, ["mtu", str(path), "--format", "json", "--vxlan-port", "8472"])
    assert mtu.exit_code == 0 and len(json.loads(mtu.stdout)["negotiations"]) == 1


# ---------------------------------------------------------------------------- IPv6 extension headers


def with_extension_headers(frame: bytes) -> bytes:
    """Hop-by-Hop and Destination Options between the fixed header and what followed it
    (a Fragment header stays after them, as RFC 8200 orders the unfragmentable part)."""
    ip = frame[14:]
    first_nh, plen = ip[6], struct.unpack_from("!H", ip, 4)[0]
    chain = bytes(IPv6ExtHdrHopByHop(nh=60)) + bytes(IPv6ExtHdrDestOpt(nh=first_nh))
    fixed = ip[:4] + struct.pack("!HB", plen + len(chain), 0) + ip[7:40]
    return frame[:14] + fixed + chain + ip[40:]


@pytest.mark.parametrize("prefilter", [pytest.param(True, marks=needs_libpcap, id="prefilter"),
                                       pytest.param(False, id="python")])
def test_ipv6_capture_with_extension_headers_gives_the_same_negotiations(tmp_path, prefilter):
    ipv6_labs = [Path(lab_path(i)) for i, r in RECORDS.items() if r["ipv6"]]
    assert ipv6_labs
    for source in ipv6_labs:
        records = [(stamp, with_extension_headers(f)) for stamp, f in lab_frames(source)]
        write_pcap(tmp_path / source.name, 1, records)
        got = view(tmp_path / source.name, prefilter)
        want = expected(source)
        assert len(got["negotiations"]) == len(want["negotiations"]) > 0
        for mine, theirs in zip(got["negotiations"], want["negotiations"]):
            # 16 bytes more in each IP packet: sizes differ, nothing else does.
            assert without_sizes(mine) == without_sizes(theirs)
            for a, b in zip(mine["messages"], theirs["messages"], strict=True):
                assert a["ip_datagram_bytes"] == [size + 16 for size in b["ip_datagram_bytes"]]
                assert a["ike_bytes"] == b["ike_bytes"]


def without_sizes(value):
    """A negotiation without the fields that count IP bytes."""
    if isinstance(value, dict):
        return {k: without_sizes(v) for k, v in value.items()
                if not any(word in k for word in ("bytes", "length", "size", "fragmentation", "mtu"))}
    if isinstance(value, list):
        return [without_sizes(v) for v in value]
    return value


# ---------------------------------------------------------------------------- duplicates


def span_copies(source: Path) -> list:
    """Every frame twice, 10 microseconds apart, as a SPAN session mirroring both ports
    delivers it: the copy in other ERSPAN framing and, for IPv4, one hop later (TTL and
    checksum differ)."""
    records = []
    for number, ((seconds, micros), frame) in enumerate(lab_frames(source), 1):
        copy = Ether(frame)
        if IP in copy:
            copy[IP].ttl -= 1
            del copy[IP].chksum
        elif IPv6 in copy:
            copy[IPv6].hlim -= 1
        first = outer4(GRE(proto=0x88BE, seqnum_present=1, sequence_number=2 * number) / ERSPAN_II(session_id=1)
                       / Raw(frame))
        second = outer4(GRE(proto=0x88BE, seqnum_present=1, sequence_number=2 * number + 1)
                        / ERSPAN_II(session_id=2) / Raw(bytes(copy)))
        records += [((seconds, micros), bytes(first)), ((seconds, micros + 10), bytes(second))]
    return records


def renumbered(value, key=None):
    """A plain capture's output as the doubled capture numbers its frames (n -> 2n - 1)."""
    if isinstance(value, dict):
        return {k: renumbered(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [renumbered(v, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and key is not None and "frame" in key:
        return 2 * value - 1
    if isinstance(value, str):  # evidence in words: "... (message id 1, frame 9) ..."
        return re.sub(r"\bframes? (\d+)", lambda m: m[0][: -len(m[1])] + str(2 * int(m[1]) - 1), value)
    return value


@pytest.mark.parametrize("prefilter", [pytest.param(True, marks=needs_libpcap, id="prefilter"),
                                       pytest.param(False, id="python")])
def test_span_copies_are_dropped_not_taken_for_retransmissions(tmp_path, prefilter):
    for source in (Path(lab_path(i)) for i in ("h01", "f01", "v01", "n01", "r01")):
        path = tmp_path / source.name
        write_pcap(path, 1, span_copies(source))
        got = view(path, prefilter)
        stats = got.pop("stats")
        assert got == renumbered(expected(source)), source.name
        assert stats["duplicates"] > 0


@pytest.mark.skipif(MORE is None, reason="third-party captures absent")
def test_suricata_capture_with_every_frame_twice():
    """suricata-verify's detect-bypass-udp: each frame twice, same IP identification,
    about 10 microseconds apart. Every copy is dropped, none counts as retransmitted."""
    path = MORE / "suricata-verify__detect-bypass-udp_input.pcap"
    audit = audit_capture(str(path), esp=True)
    frames = audit.stats["frames"]
    assert frames % 2 == 0 and audit.stats["duplicates"] == frames // 2
    negotiations = scan_document([audit], KeCatalog())["negotiations"]
    assert negotiations and all(n["retransmissions"] == 0 for n in negotiations)


# ---------------------------------------------------------------------------- what cannot be read


@pytest.mark.parametrize("prefilter", [pytest.param(True, marks=needs_libpcap, id="prefilter"),
                                       pytest.param(False, id="python")])
def test_a_capture_of_which_nothing_decodes_gets_a_warning_line(tmp_path, prefilter, monkeypatch):
    """The lab capture inside a GRE protocol type extraction does not read (WCCP's): no
    negotiation, an 'unsupported' anomaly at frame 1, and one warning line that says why."""
    if not prefilter:
        monkeypatch.setattr(sources, "_LIBPCAP", None)
    source = Path(lab_path("h01"))
    path = tmp_path / "wccp.pcap"
    write_pcap(path, 1, [(stamp, bytes(outer4(GRE(proto=0x883E) / Raw(bytes(4) + frame))))
                         for stamp, frame in lab_frames(source)])
    result = CliRunner().invoke(main, ["scan", str(path), "--format", "json"])
    document = json.loads(result.stdout)
    assert document["summary"]["negotiations"] == 0
    (anomaly,) = document["captures"][0]["anomalies"]
    assert (anomaly["kind"], anomaly["frame"]) == ("unsupported", 1)
    frames = document["captures"][0]["stats"]["frames"]
    assert f"none of its {frames} frames could be decoded" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_capture_with_some_frames_decoded_gets_no_such_warning():
    result = CliRunner().invoke(main, ["scan", lab_path("h01"), "--format", "json"])
    assert "could be decoded" not in result.stderr


def public_captures() -> list[Path]:
    if MORE is None:
        return []
    suffixes = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")
    return sorted(p for p in MORE.parent.rglob("*") if p.name.endswith(suffixes))


@needs_libpcap
@pytest.mark.skipif(MORE is None, reason="third-party captures absent")
@pytest.mark.parametrize("path", public_captures(), ids=lambda p: p.name)
def test_prefilter_and_python_agree_on_every_public_capture(path):
    """The public captures are what others captured in the field: whatever the prefilter
    cannot judge must reach Python, so both paths find the same."""
    try:
        fast, slow = view(path, prefilter=True), view(path, prefilter=False)
    except sources.CaptureError:
        pytest.skip("not a capture ikeaudit reads")
    for document in (fast, slow):
        document.pop("stats")
    assert fast == slow
