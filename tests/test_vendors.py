"""The Vendor ID table: names agree with Wireshark's where Wireshark names them, the
entries of other sources reproduce their own definitions, and the IDs in public
captures are named."""

from __future__ import annotations

import hashlib
import subprocess
import struct

import pytest

from conftest import THIRDPARTY, needs_thirdparty, needs_tshark
from ikeaudit import vendors
from ikeaudit.vendors import LIBRESWAN, WIRESHARK, name_vendor_id

MORE = THIRDPARTY / "more"


def isakmp_with_vendor_id(vid: bytes) -> bytes:
    """An IKEv1 Main Mode header whose one payload is the Vendor ID."""
    payload = struct.pack("!BBH", 0, 0, 4 + len(vid)) + vid
    header = b"\x11" * 8 + bytes(8) + struct.pack("!BBBBII", 13, 0x10, 2, 0, 0, 28 + len(payload))
    return header + payload


def tshark_names(tmp_path, vids: list[bytes]) -> list[str]:
    from scapy.all import IP, UDP, Ether, Raw, wrpcap

    path = tmp_path / "vids.pcap"
    # Explicit MAC addresses: an Ether() left to fill them in sends ARP requests.
    link = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    wrpcap(str(path), [link / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500)
                       / Raw(isakmp_with_vendor_id(v)) for v in vids])
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "isakmp.vid_string"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def tshark_capture_vids(path) -> list[tuple[bytes, str]]:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "isakmp.vid_bytes", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=|",
                          "-e", "isakmp.vid_bytes", "-e", "isakmp.vid_string"],
                         capture_output=True, text=True, check=True).stdout
    pairs = []
    for line in out.splitlines():
        raw, names = line.split("\t")
        pairs += [(bytes.fromhex(r), n) for r, n in zip(raw.split("|"), names.split("|"))]
    return pairs


@needs_tshark
def test_every_wireshark_entry_gets_wiresharks_own_name(tmp_path):
    table = [(pattern, name) for pattern, name, _, source in vendors.entries() if source == WIRESHARK]
    names = tshark_names(tmp_path, [p for p, _ in table])
    assert len(names) == len(table)
    assert [(p.hex(), n) for (p, _), n in zip(table, names)] == [(p.hex(), n) for p, n in table]


@needs_tshark
def test_entries_of_other_sources_do_not_contradict_wireshark(tmp_path):
    """Where tshark names an ID another source gave us, it must name the same thing."""
    table = [(pattern, name) for pattern, name, _, source in vendors.entries() if source != WIRESHARK]
    names = tshark_names(tmp_path, [p for p, _ in table])
    assert len(names) == len(table)
    assert [(p.hex(), theirs) for (p, ours), theirs in zip(table, names)
            if theirs not in ("Unknown Vendor ID", ours)] == []


@needs_thirdparty
@needs_tshark
@pytest.mark.parametrize("capture", sorted(p.name for p in MORE.glob("*.pcap*")) if MORE.is_dir() else [])
def test_vendor_ids_in_public_captures_are_named_as_tshark_names_them(capture):
    for raw, theirs in tshark_capture_vids(MORE / capture):
        ours = name_vendor_id(raw)
        if theirs == "Unknown Vendor ID":
            continue
        assert ours is not None and ours.name == theirs, (raw.hex(), theirs, ours)


def test_arkime_ikev1_vendor_ids_name_fortigate_dpd_and_cisco_fragmentation():
    # The three payloads of the FortiGate's Main Mode response (frame 2 of arkime's IKEv1.pcap).
    fortigate = name_vendor_id(bytes.fromhex("8299031757a36082c6a621de00000000"))
    dpd = name_vendor_id(bytes.fromhex("afcad71368a1f1c96b8696fc77570100"))
    fragmentation = name_vendor_id(bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3c0000000"))
    assert (fortigate.vendor, fortigate.match) == ("Fortinet FortiGate", "prefix")
    assert dpd.name == "RFC 3706 DPD (Dead Peer Detection)" and dpd.match == "exact"
    assert fragmentation.name == "Cisco Fragmentation" and fragmentation.match == "prefix"


def test_md5_entries_reproduce_the_texts_their_sources_hash():
    """libreswan defines these as MD5 of a text; Wireshark lists the bytes: they agree."""
    for text, name in [("strongSwan", "strongSwan"), ("FRAGMENTATION", "Cisco Fragmentation"),
                       ("RFC 3947", "RFC 3947 Negotiation of NAT-Traversal in the IKE"),
                       ("draft-ietf-ipsec-nat-t-ike-02\n", "draft-ietf-ipsec-nat-t-ike-02\\n"),
                       ("Vid-Initial-Contact", "Microsoft Vid-Initial-Contact"),
                       ("Fortinet Endpoint Control", "Endpoint Control (Fortinet)"),
                       ("forticlient connect license", "Forticlient connect license (Fortinet)"),
                       ("KAME/racoon", "KAME/racoon")]:
        assert name_vendor_id(hashlib.md5(text.encode()).digest()).name == name


def test_strongswan_ikev2_vendor_ids_are_all_named():
    # strongSwan's ike_vendor.c vids[]: what a strongSwan peer may send or recognise.
    for raw in [hashlib.md5(b"strongSwan").digest(), b"CISCO-DELETE-REASON", b"FLEXVPN-SUPPORTED",
                b"CISCO(COPYRIGHT)&Copyright (c) 2009 Cisco Systems, Inc.",
                bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3"),
                bytes.fromhex("1e2b516905991c7d7c96fcbfb587e46100000007"),
                bytes.fromhex("fb1de3cdf341b7ea16b7e5be0855f120"),
                bytes.fromhex("26244d38eddb61b3172a36e3d0cfb819")]:
        assert name_vendor_id(raw) is not None, raw


def test_strongswan_release_ids_name_the_release():
    found = name_vendor_id(hashlib.md5(b"strongSwan 4.2.3").digest())
    assert (found.name, found.vendor, found.source) == ("strongSwan 4.2.3", "strongSwan", LIBRESWAN)


@pytest.mark.parametrize("raw, version", [
    ("12f5f28c457168a9702d9fe274cc0100", "1.0"),  # Cisco Unity major, minor
    ("1e2b516905991c7d7c96fcbfb587e46100000009", "Windows 8, 8.1, 10, Server 2012 R2, Server 2016"),
    ("1f07f70eaa6514d3b0fa96542a500306", "3.0.6"),  # libreswan's own example
    ("f4ed19e0c114eb516faaac0ee37daf2807b4381f" "00000001" "00001388" + "00" * 12, "Firewall-1 NG"),
])
def test_version_bytes_are_read_as_the_source_describes(raw, version):
    assert name_vendor_id(bytes.fromhex(raw)).version == version


def test_libreswan_and_openswan_are_told_apart_by_prefix():
    assert name_vendor_id(b"OE-Libreswan-4.12").label == "Libreswan (3.6+) 4.12"
    assert name_vendor_id(bytes.fromhex("4f45706c75746f756e697430")).vendor == "Openswan"
    assert name_vendor_id(b"OEN0123456789").name == "Libreswan 3.0 - 3.5"


def test_unknown_and_empty_vendor_ids_are_not_named():
    assert name_vendor_id(bytes.fromhex("a9b9b1034f7e50a2513b47b100bb85a9")) is None
    assert name_vendor_id(b"") is None
    assert name_vendor_id(b"\x00" * 16) is None


def test_implementations_lists_each_vendor_once():
    vids = [bytes.fromhex(h) for h in ("afcad71368a1f1c96b8696fc77570100", "8299031757a36082c6a621de00000000",
                                       "4048b7d56ebce88525e7de7f00d6c2d3", "8299031757a36082c6a621de00000000")]
    assert vendors.implementations(vids) == ("Fortinet FortiGate",)


def test_every_entry_names_a_known_source_and_no_pattern_repeats():
    table = vendors.entries()
    assert {source for *_, source in table} == set(vendors.SOURCES)
    patterns = [p for p, *_ in table]
    assert len(patterns) == len(set(patterns)) == vendors.TABLE_SIZE
