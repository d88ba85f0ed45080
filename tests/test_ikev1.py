"""IKEv1: phase 1 proposals and Vendor IDs read, SAs established only on their own
evidence, classified ikev1 (classical by definition).

Ground truth is tshark's reading of the public captures in ../shared, and the captures'
README; the variants are those captures with messages taken away."""

from __future__ import annotations

import dataclasses
import subprocess
from functools import lru_cache

import pytest

from conftest import THIRDPARTY, audit, needs_thirdparty, needs_tshark, scan_view
from ikeaudit import iana
from ikeaudit.classify import classify
from ikeaudit.dissect import dissect
from ikeaudit.extract import Extractor
from ikeaudit.records import Ikev1Message, Ikev1Proposal, Ikev1Transform
from ikeaudit.sources import iter_capture
from ikeaudit.track import Tracker
from ikeaudit.vendors import name_vendor_id

MORE = THIRDPARTY / "more"
ARKIME = MORE / "arkime__IKEv1.pcap"
FLOOD = MORE / "stopddos__amp.UDP.isakmp.pcap"
# Every capture of ../shared with IKEv1 phase 1 SA payloads in clear.
IKEV1_CAPTURES = [
    "more/arkime__IKEv1.pcap", "more/tcpdump__isakmp4500.pcap", "more/tcpdump__ISAKMP_sa_setup.pcap",
    "more/libreswan__weirdike-eastwest.pcap", "more/arkime__arkime_synthetic.pcap",
    "suricata-verify/ikev1-rules__ikev1-isakmp-main-mode.pcap", "wireshark/ikev1-certs.pcap",
    "wireshark/ikev1-bug-12610.pcapng.gz", "wireshark/ikev1-bug-12620.pcapng.gz",
]
MAIN_MODE, QUICK_MODE, INFORMATIONAL, AGGRESSIVE = 2, 32, 5, 4


@lru_cache(maxsize=None)
def records(path: str) -> tuple:
    """Every IKE record of a capture, dissected, in capture order; mirrored copies kept,
    as tshark lists them (and as these captures hold real repeats with equal timestamps)."""
    extractor, found = Extractor(duplicate_window=0), []
    for item in iter_capture(path):
        if hasattr(item, "linktype"):
            found += [dissect(out) for out in extractor.feed(item) if hasattr(out, "payload")]
    return tuple(found)


def track(rs) -> list:
    tracker = Tracker("test")
    for r in rs:
        tracker.feed(r)
    return tracker.finish()


def tshark_fields(path, *fields: str, display: str = "isakmp.version == 0x10") -> dict[int, list[list[str]]]:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", display, "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=|", "-e", "frame.number", *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        number, *values = line.split("\t")
        rows[int(number)] = [v.split("|") if v else [] for v in values]
    return rows


# --- the Arkime capture: a FortiGate and a peer, Main Mode, Quick Mode, ESP


@needs_thirdparty
def test_arkime_ikev1_sa_is_established_by_quick_mode_after_main_mode():
    established = [n for n in track(records(str(ARKIME))) if n.established]
    assert len(established) == 1
    n = established[0]
    assert (n.established_basis, n.ikev1_mode, n.midstream) == ("inferred", "main", False)
    # tshark: frames 2-7 Main Mode from 2003:51:6012::4, then Quick Mode under the same cookies
    assert (n.initiator, n.spi_i, n.spi_r) == ("2003:51:6012::4", "63c268011254b771", "850b3a1845f947cc")


@needs_thirdparty
def test_arkime_ikev1_is_classical_with_the_group_tshark_reads():
    view = next(v for v in scan_view(str(ARKIME))["negotiations"] if v["established"])
    assert view["classification"] == "ikev1"
    assert view["ke"] == {"id": 20, "name": "384-bit random ECP", "kind": "classical"}
    c = next(a.classification for a in audit(str(ARKIME)).negotiations if a.negotiation.established)
    assert (c.observation, c.confidence) == ("observed", "negotiated")
    assert any("AES-CBC-256, SHA2-512, Pre-shared key, group 384-bit random ECP (20)" in e for e in c.evidence)
    assert any("Quick Mode" in e and "inferred" in e for e in c.evidence)


@needs_thirdparty
def test_arkime_unanswered_main_mode_offer_is_not_established():
    lone = [n for n in track(records(str(ARKIME))) if not n.established]
    assert [(n.initiator, n.ikev1_chosen, len(n.ikev1_offered)) for n in lone] == [("2003:51:6012::2", None, 1)]


@needs_thirdparty
@pytest.mark.parametrize("dropped, why", [
    ({QUICK_MODE}, "no exchange under the phase 1 keys"),
    ({QUICK_MODE, INFORMATIONAL}, "no exchange under the phase 1 keys"),
])
def test_arkime_without_what_followed_main_mode_is_not_established(dropped, why):
    kept = [r for r in records(str(ARKIME)) if not (isinstance(r, Ikev1Message) and r.exchange in dropped)]
    negotiations = track(kept)
    assert not any(n.established for n in negotiations)
    n = next(n for n in negotiations if n.ikev1_chosen)
    assert any(why in e for e in classify(n).evidence)


@needs_thirdparty
def test_arkime_without_main_mode_messages_5_and_6_is_not_established():
    kept = [r for r in records(str(ARKIME)) if not (isinstance(r, Ikev1Message) and r.exchange == MAIN_MODE
                                                    and r.encrypted)]
    assert not any(n.established for n in track(kept))


@needs_thirdparty
def test_arkime_quick_mode_alone_is_established_midstream_and_still_ikev1():
    kept = [r for r in records(str(ARKIME)) if isinstance(r, Ikev1Message) and r.exchange == QUICK_MODE]
    [n] = track(kept)
    assert (n.established, n.established_basis, n.midstream, n.ikev1_mode) == (True, "inferred", True, None)
    c = classify(n)
    assert (c.name, c.observation, c.confidence) == ("ikev1", "inferred", "inferred")
    assert c.inferences and "IKEv1" in c.inferences[0]


@needs_thirdparty
def test_arkime_quick_mode_in_one_direction_only_is_not_established():
    kept = [r for r in records(str(ARKIME)) if isinstance(r, Ikev1Message) and r.exchange == QUICK_MODE
            and r.src == "2003:51:6012::4"]
    [n] = track(kept)
    assert not n.established


@needs_thirdparty
def test_arkime_vendor_ids_name_fortigate_dpd_and_cisco_fragmentation_per_peer():
    n = next(n for n in track(records(str(ARKIME))) if n.established)
    named = {(who, name_vendor_id(raw).name) for who, raw in n.peer_vendor_ids if name_vendor_id(raw)}
    assert {(True, "Fortigate (Fortinet)"), (True, "RFC 3706 DPD (Dead Peer Detection)"),
            (True, "Cisco Fragmentation"), (False, "Cisco Fragmentation")} <= named
    c = classify(n)
    assert any(e.startswith("Vendor ID from the initiator: Fortigate (Fortinet)") for e in c.evidence)


@needs_thirdparty
@needs_tshark
def test_arkime_vendor_id_names_are_tsharks():
    theirs = tshark_fields(ARKIME, "isakmp.vid_bytes", "isakmp.vid_string")
    ours = {r.frame: r for r in records(str(ARKIME)) if isinstance(r, Ikev1Message)}
    compared = 0
    for frame, (raws, names) in theirs.items():
        assert [v.hex() for v in ours[frame].vendor_ids] == raws
        for raw, name in zip(raws, names):
            found = name_vendor_id(bytes.fromhex(raw))
            assert (found.name if found else "Unknown Vendor ID") == name
            compared += 1
    assert compared == 9


# --- proposals against tshark, over every public IKEv1 capture

ATTRIBUTES = [("isakmp.ike.attr.encryption_algorithm", "encryption"), ("isakmp.ike.attr.hash_algorithm", "hash"),
              ("isakmp.ike.attr.authentication_method", "auth_method"),
              ("isakmp.ike.attr.group_description", "group"), ("isakmp.ike.attr.key_length", "key_length"),
              ("isakmp.ike.attr.life_duration", "life_seconds")]


@needs_thirdparty
@needs_tshark
@pytest.mark.parametrize("capture", IKEV1_CAPTURES)
def test_phase1_proposals_read_as_tshark_reads_them(capture):
    path = THIRDPARTY / capture
    theirs = tshark_fields(path, "isakmp.ike.attr.life_type", *(f for f, _ in ATTRIBUTES))
    ours = {r.frame: r for r in records(str(path)) if isinstance(r, Ikev1Message)}
    compared = 0
    for frame, (life_types, *columns) in theirs.items():
        transforms = [t for p in ours[frame].proposals if p.protocol == iana.IKEV1_PROTO_ISAKMP
                      for t in p.transforms]
        for (field, name), values in zip(ATTRIBUTES, columns):
            if field.endswith("life_duration") and set(life_types) - {"1"}:
                continue  # kilobyte lifetimes go to life_kilobytes
            assert [str(getattr(t, name)) for t in transforms if getattr(t, name) is not None] == values, \
                (frame, field)
            compared += len(values)
    assert compared or not theirs


@needs_thirdparty
@needs_tshark
def test_arkime_proposal_attributes_as_tshark_names_them():
    # frame 2: the FortiGate's offer (tshark: 7 AES-CBC, 6 SHA2-512, 1 PSK, group 20, 256, 28800)
    offer = next(r for r in records(str(ARKIME)) if r.frame == 2)
    [proposal] = offer.proposals
    [t] = proposal.transforms
    assert (t.encryption, t.hash, t.auth_method, t.group, t.key_length, t.life_seconds) == \
        (7, 6, 1, 20, 256, 28800)
    assert (iana.ikev1_encryption_name(t.encryption), iana.ikev1_hash_name(t.hash),
            iana.ikev1_auth_method_name(t.auth_method)) == ("AES-CBC", "SHA2-512", "Pre-shared key")


# --- the reflection flood


@needs_thirdparty
def test_reflection_flood_dissects_without_error_and_nothing_is_established():
    rs = records(str(FLOOD))
    assert len(rs) == 3984 and all(isinstance(r, Ikev1Message) and not r.anomalies for r in rs)
    negotiations = track(rs)
    assert not any(n.established for n in negotiations)
    # tshark: 2767 servers answer from port 4500 to 10.10.10.10; each answer makes its
    # sender the responder of an SA that 10.10.10.10 never asked for in this capture.
    assert {n.initiator for n in negotiations} == {"10.10.10.10"}
    assert len({n.responder for n in negotiations}) == 2767
    assert not any(n.sa_init_seen or n.ikev1_offered for n in negotiations)
    assert all(n.ikev1_chosen is not None for n in negotiations)


@needs_thirdparty
def test_reflection_flood_classifies_ikev1_not_established():
    c = classify(track(records(str(FLOOD))[:1])[0])
    assert c.name == "ikev1"
    assert any(e.startswith("not established") for e in c.evidence)


# --- other public captures


@needs_thirdparty
@pytest.mark.parametrize("capture, group", [
    ("more/tcpdump__isakmp4500.pcap", 5),
    ("more/tcpdump__ISAKMP_sa_setup.pcap", 1),
    ("suricata-verify/ikev1-rules__ikev1-isakmp-main-mode.pcap", 2),
    ("wireshark/ikev1-certs.pcap", 2),
])
def test_main_and_quick_mode_captures_are_established_ikev1_with_their_group(capture, group):
    [n] = [n for n in track(records(str(THIRDPARTY / capture))) if n.ike_version == 1]
    assert (n.established, n.established_basis, n.ikev1_mode) == (True, "inferred", "main")
    c = classify(n)
    assert (c.name, c.ke_method) == ("ikev1", group)
    assert "weak-group" in [f.code for f in c.findings]  # groups 1, 2 and 5: RFC 8247 MUST NOT / SHOULD NOT


@needs_thirdparty
@pytest.mark.parametrize("capture, vendor", [
    ("more/ndpi__ah.pcapng", "Cisco"),
    ("more/openswan__ct14-bigkeyI2_parentR1.pcap", "Openswan"),
    ("scapy/ikev2_nat_t.pcapng", None),
])
def test_ikev2_vendor_ids_in_public_captures_are_named(capture, vendor):
    views = scan_view(str(THIRDPARTY / capture))["negotiations"]
    names = [name for v in views for name in v["vendor_id_names"]]
    assert names and all(len(v["vendor_id_names"]) == len(v["vendor_ids"]) for v in views)
    if vendor == "Cisco":
        assert {"Cisco Delete Reason Supported", "Cisco VPN Revision 2", "Cisco Dynamic Route Supported",
                "Cisco FlexVPN Supported"} <= set(names)
    elif vendor == "Openswan":
        assert names == ["Openswan(project)"]
    else:
        assert "Cisco Fragmentation" in names


# --- dissection details, on a real message made malformed


@needs_thirdparty
def test_attribute_running_past_its_transform_is_malformed_not_an_error():
    extractor = Extractor()
    datagram = next(out for item in iter_capture(str(ARKIME)) if hasattr(item, "linktype")
                    for out in extractor.feed(item) if hasattr(out, "payload"))
    data = bytearray(datagram.payload)
    # frame 1's Life Duration 28800 is a TV attribute (800c 7080): clear its AF bit and the
    # value becomes the length of a TLV attribute that runs far past the transform
    at = data.index(bytes.fromhex("800c7080"))
    data[at] = 0x00
    record = dissect(dataclasses.replace(datagram, payload=bytes(data)))
    assert isinstance(record, Ikev1Message)
    assert any("runs past the transform" in a.detail for a in record.anomalies)


def test_encrypted_message_reads_no_payload():
    header = b"\xaa" * 8 + b"\xbb" * 8 + bytes([8, 0x10, 32, 0x01]) + (5).to_bytes(4, "big") + (60).to_bytes(4, "big")
    from ikeaudit.records import IkeDatagram

    datagram = IkeDatagram(frame=1, frames=(1,), timestamp=1.0, first_timestamp=1.0, ip_version=4, src="192.0.2.1",
                           dst="192.0.2.2", sport=500, dport=500, transport="udp", non_esp_marker=False,
                           ip_length=88, ip_fragment_lengths=(), udp_payload_length=60,
                           payload=header + bytes(32), ike_version=1)
    record = dissect(datagram)
    assert record.encrypted and record.payload_types == () and record.anomalies == ()


def test_ipsec_transform_reads_the_esp_cipher_from_its_transform_id():
    from ikeaudit.dissect import _ikev1_transform_record  # the reading rules of RFC 2407 section 4.5

    t = _ikev1_transform_record(1, 12, 3, ((1, 1), (2, 3600), (4, 1), (5, 2), (6, 256), (3, 14)))
    assert (t.encryption, t.hash, t.group, t.key_length, t.life_seconds, t.auth_method) == (12, 2, 14, 256, 3600, None)


def test_ikev1_classification_without_any_phase_1_is_inferred_classical():
    n = track([Ikev1Message(frame=1, timestamp=1.0, ip_version=4, src="192.0.2.1", dst="192.0.2.2", sport=500,
                            dport=500, transport="udp", udp_payload_length=92, spi_i="aa" * 8, spi_r="bb" * 8,
                            exchange=INFORMATIONAL, flags=1, message_id=9, length=92)])[0]
    assert not n.established
    c = classify(n)
    assert (c.name, c.observation, c.ke_method) == ("ikev1", "inferred", None)
    assert "ikev1" in [f.code for f in c.findings]


def test_aggressive_mode_is_established_by_its_third_message_and_quick_mode():
    offer = Ikev1Proposal(1, 1, "", (Ikev1Transform(1, 1, encryption=7, hash=2, auth_method=1, group=14),))

    def m(frame, src, dst, exchange, spi_r="bb" * 8, flags=0, payloads=(), proposals=(), message_id=0):
        return Ikev1Message(frame=frame, timestamp=float(frame), ip_version=4, src=src, dst=dst, sport=500,
                            dport=500, transport="udp", udp_payload_length=300, spi_i="aa" * 8, spi_r=spi_r,
                            exchange=exchange, flags=flags, message_id=message_id, length=300,
                            payload_types=payloads, proposals=proposals)
    a, b = "192.0.2.1", "192.0.2.2"
    am1 = m(1, a, b, AGGRESSIVE, spi_r="00" * 8, payloads=(1, 4, 10, 5), proposals=(offer,))
    am2 = m(2, b, a, AGGRESSIVE, payloads=(1, 4, 10, 5, 8), proposals=(offer,))
    am3 = m(3, a, b, AGGRESSIVE, payloads=(8,))
    qm = [m(4, a, b, QUICK_MODE, flags=1, message_id=7), m(5, b, a, QUICK_MODE, flags=1, message_id=7)]
    [done] = track([am1, am2, am3, *qm])
    assert (done.established, done.ikev1_mode, done.ikev1_chosen) == (True, "aggressive", offer)
    [unfinished] = track([am1, am2, *qm])  # no third message: the initiator never authenticated
    assert not unfinished.established
