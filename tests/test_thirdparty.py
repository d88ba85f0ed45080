"""Captures from public projects (Wireshark, Scapy, Suricata, Zeek packages) must read
without error and give the results their origin describes. They stay in ../shared for
licence reasons; these tests skip when it is absent."""

from __future__ import annotations

import pytest

from conftest import THIRDPARTY, audit, needs_thirdparty, scan_view

pytestmark = needs_thirdparty

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcapng.gz")


def third(path: str) -> str:
    return str(THIRDPARTY / path)


def negotiations(path: str) -> list[dict]:
    return scan_view(third(path))["negotiations"]


def all_captures() -> list[str]:
    if not THIRDPARTY.is_dir():
        return []
    return sorted(str(p.relative_to(THIRDPARTY)) for p in THIRDPARTY.rglob("*")
                  if p.name.endswith(CAPTURE_SUFFIXES))


# Captures whose damage their origin documents (more/README.md), with what we must report of it.
DAMAGED = {
    # "Two corrupted messages (frames 192 and 207)"
    "more/ndpi__ipsec_isakmp_esp.pcap": {192, 207},
    # Lone IKE_AUTH requests with "trailing bytes"
    "more/tcpdump__ikev2-id-normal.pcap": {1},
    "more/tcpdump__ikev2-id-short.pcap": {1},
    # "Fuzzed SA_INIT: transform counts wrong, KE length 43690"
    "more/tcpdump__ikev2pI2-segfault.pcapng": {1},
    # "Fuzzed ISAKMP, bogus IP fragments"
    "more/tcpdump__isakmp-various-oobr.pcap": {1, 2},
    # tshark too calls the second INVALID_KE_PAYLOAD response malformed; we stop at the first
    # message's two bytes past its last payload.
    "more/openswan__lp08-parentR1notify.pcap": {1},
    # Fuzzed ISAKMP: "ISAKMP header length 0 but 30 bytes present"
    "more/tcpdump__isakmp-pointer-loop.pcap": {1},
}


@pytest.mark.parametrize("path", [p for p in all_captures() if p not in DAMAGED])
def test_reads_without_anomaly(path):
    result = audit(third(path))
    assert result.anomalies == []
    assert result.malformed == []
    assert all(not n.negotiation.anomalies for n in result.negotiations)


@pytest.mark.parametrize("path", sorted(DAMAGED))
def test_documented_damage_is_reported_at_its_frames(path):
    result = audit(third(path))
    frames = {a.frame for a in result.anomalies} | {m.frame for m in result.malformed}
    frames |= {a.frame for n in result.negotiations for a in n.negotiation.anomalies}
    assert DAMAGED[path] <= frames


def test_weak_dh_sa_init_is_classical_offer_with_weak_group():
    [n] = negotiations("suricata-verify/ikev2-weak-dh__IKEv2_SA_INIT_2-8-weak.pcap")
    # The capture holds the request only: by definition the negotiation is incomplete.
    assert n["classification"] == "incomplete"
    assert n["offered_ke_methods"] == [2]
    assert any("classical only" in e for e in n["evidence"])
    assert {"severity": "high", "code": "weak-group-offered"}.items() <= \
        next(f for f in n["findings"] if f["code"] == "weak-group-offered").items()


def test_invalid_ke_capture_asks_for_group_15_then_retries():
    [n] = negotiations("ukncsc-zeek-plugin-ikev2/ikev2.pcap")
    assert [(r["reason"], r["offered_ke"], r["requested_ke"]) for r in n["retries"]] == \
        [("INVALID_KE_PAYLOAD", 19, 15)]
    assert n["classification"] == "classical"
    assert n["ke_method"] == 15
    # IKE_AUTH answered, nothing after it and no keys: AUTHENTICATION_FAILED cannot be ruled out
    assert n["state"] == "established" and n["established"] is False
    assert n["moved_to_4500"] is True


@pytest.mark.parametrize("path", [
    "suricata-verify/ikev1-rules__ikev1-isakmp-main-mode.pcap",
    "wireshark/ikev1-certs.pcap",
    "wireshark/ikev1-bug-12610.pcapng.gz",
    "wireshark/ikev1-bug-12620.pcapng.gz",
    "corelight-zeek-spicy-ipsec/ipsec.cap",
])
def test_ikev1_captures_are_reported_as_ikev1(path):
    found = negotiations(path)
    assert found and {n["classification"] for n in found} == {"ikev1"}
    assert all(n["ike_version"] == 1 and n["messages"] == [] for n in found)


def test_nat_t_capture_runs_on_4500_from_a_high_port():
    found = negotiations("scapy/ikev2_nat_t.pcapng")
    assert len(found) == 3
    for n in found:
        assert (n["initiator_port"], n["responder_port"]) == (10954, 4500)
        assert n["classification"] == "classical" and n["ke_method"] == 19
        assert n["established"]
    assert scan_view(third("scapy/ikev2_nat_t.pcapng"))["captures"][0]["stats"]["esp_in_udp"] > 0


def test_fragmented_ike_auth_retransmitted_without_answer():
    [n] = negotiations("corelight-zeek-spicy-ipsec/ipsec_client.pcap")
    [auth] = [m for m in n["messages"] if m["exchange"] == "IKE_AUTH"]
    assert auth["ip_fragmented"] and len(auth["ip_fragment_lengths"][0]) == 3
    assert auth["retransmissions"] == 2  # sent three times
    assert not n["established"]
    assert n["ke_method"] == 2
    assert any(f["code"] == "weak-group" for f in n["findings"])


def test_redirect_ends_the_attempt():
    first, second = negotiations("scapy/ikev2_notify_redirect.pcap")
    assert (first["classification"], first["error"]) == ("failed", "REDIRECT")
    assert (second["classification"], second["error"]) == ("failed", "NO_PROPOSAL_CHOSEN")


def test_esp_only_capture_has_no_negotiation():
    assert negotiations("suricata-verify/eve-flow-esp__input.pcap") == []
