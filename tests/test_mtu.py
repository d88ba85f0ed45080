"""Sizes and fragmentation: observed against the manifest, what-if against hand arithmetic."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from conftest import RECORDS, THIRDPARTY, audit, lab_ids, lab_path, needs_thirdparty, scan_view
from ikeaudit import mtu
from ikeaudit.cli import main

DESCRIPTION = re.compile(r"(?P<exchange>\w+) (?P<dir>request|response) msgid=(?P<msgid>\d+) "
                         r"\((?P<count>\d+) (?P<kind>IP|SKF) fragments, (?:IP total lengths|UDP payloads) "
                         r"\[(?P<sizes>[\d, ]+)\]\)")


def parse(description: str) -> tuple:
    m = DESCRIPTION.fullmatch(description)
    assert m, description
    sizes = [int(x) for x in m["sizes"].split(",")]
    return m["exchange"], m["dir"] == "response", int(m["msgid"]), int(m["count"]), sizes


def messages(record_id: str) -> list[dict]:
    return [m for n in scan_view(lab_path(record_id))["negotiations"] for m in n["messages"]]


@pytest.mark.parametrize("record_id", lab_ids())
def test_ip_fragmented_messages_match_manifest(record_id):
    expected = sorted(parse(d) for d in RECORDS[record_id]["ip_fragmented_messages"])
    found = sorted((m["exchange"], m["response"], m["message_id"], len(m["ip_fragment_lengths"][0]),
                    m["ip_fragment_lengths"][0]) for m in messages(record_id) if m["ip_fragmented"])
    assert found == expected


@pytest.mark.parametrize("record_id", lab_ids())
def test_ike_fragmented_messages_match_manifest(record_id):
    expected = sorted(parse(d) for d in RECORDS[record_id]["ike_fragmented_messages"])
    found = sorted((m["exchange"], m["response"], m["message_id"], m["ike_fragments"], m["udp_payload_bytes"])
                   for m in messages(record_id) if m["ike_fragments"])
    assert found == expected


@pytest.mark.parametrize("record_id", lab_ids())
def test_ip_fragments_per_datagram_match_manifest(record_id):
    expected = sorted((m["exchange"], m["msgid"], m["direction"].startswith("response"),
                       m["udp_payload_bytes"], m["ip_fragments_per_datagram"])
                      for m in RECORDS[record_id]["ike_messages"])
    found = sorted((m["exchange"], m["message_id"], m["response"], m["udp_payload_bytes"],
                    m["ip_fragments_per_datagram"]) for m in messages(record_id))
    assert found == expected


@pytest.mark.parametrize("record_id", lab_ids())
def test_ike_message_bytes_match_manifest(record_id):
    expected = sorted((m["exchange"], m["msgid"], m["direction"].startswith("response"),
                       m["ike_message_bytes_total"]) for m in RECORDS[record_id]["ike_messages"])
    found = sorted((m["exchange"], m["message_id"], m["response"], m["ike_bytes"]) for m in messages(record_id))
    assert found == expected


@pytest.mark.parametrize("record_id", lab_ids())
def test_sa_init_ip_fragmentation_flag(record_id):
    expected = any(parse(d)[0] == "IKE_SA_INIT" for d in RECORDS[record_id]["ip_fragmented_messages"])
    [n] = [n for n in scan_view(lab_path(record_id))["negotiations"] if n["classification_basis"] == "IKE_SA_INIT"]
    assert n["fragmentation"]["sa_init_ip_fragmented"] is expected


@needs_thirdparty
def test_black_hole_found_on_windows_client_capture():
    view = scan_view(str(THIRDPARTY / "corelight-zeek-spicy-ipsec/ipsec_client.pcap"))
    [n] = view["negotiations"]
    assert n["fragmentation"]["black_hole_suspected"] is True
    assert any(f["code"] == "fragmentation-black-hole" for f in n["findings"])


@pytest.mark.parametrize("record_id", lab_ids())
def test_lab_captures_have_no_black_hole(record_id):
    assert not any(n["fragmentation"]["black_hole_suspected"]
                   for n in scan_view(lab_path(record_id))["negotiations"])


def what_if_for(record_id: str, exchange: int, response: bool, mtus, **kwargs) -> list[mtu.WhatIf]:
    [item] = [i for i in audit(lab_path(record_id)).negotiations if i.negotiation.sa_init_seen]
    return [w for w in mtu.what_if(item.negotiation, mtus, **kwargs)
            if w.exchange == exchange and w.response == response]


# Hand arithmetic: IPv4 header 20, IPv6 header 40 (+8 fragment header), UDP 8, non-ESP
# marker 4 on port 4500. A datagram is fragmented when IP header + UDP + payload > MTU;
# fragments carry multiples of 8 payload bytes: IPv4 (MTU-20)//8*8, IPv6 (MTU-48)//8*8.

def test_what_if_classical_sa_init_fits_everywhere():
    # c01: IKE_SA_INIT request, 272 bytes of IKE.
    rows = what_if_for("c01", 34, False, [1280])
    by = {(w.ip_version, w.port): w for w in rows}
    assert by[(4, 500)].ip_datagram_bytes == 272 + 8 + 20 == 300
    assert by[(6, 4500)].ip_datagram_bytes == 272 + 4 + 8 + 40 == 324
    assert all(w.ip_fragments == 1 and not w.ike_fragmentable for w in rows)


def test_what_if_pure_mlkem1024_sa_init_fragments_at_1500():
    # p02: IKE_SA_INIT request 1776 bytes (1568-byte ML-KEM-1024 key in clear).
    rows = {(w.mtu, w.ip_version, w.port): w for w in what_if_for("p02", 34, False, [1500, 1280])}
    assert rows[(1500, 4, 500)].ip_datagram_bytes == 1776 + 8 + 20 == 1804
    # IPv4, MTU 1500: 1784 IP payload bytes, 1480 per fragment -> 2 fragments (1500 + 324, as captured).
    assert rows[(1500, 4, 500)].ip_fragments == 2
    # IPv6, MTU 1280: (1280-48)//8*8 = 1232 per fragment; 1776+4+8 = 1788 -> 2 fragments.
    assert rows[(1280, 6, 4500)].ip_fragments == 2
    # IKE_SA_INIT is never IKE-fragmentable (RFC 7383): it goes out in IP fragments or not at all.
    assert not any(w.ike_fragmentable for w in rows.values())


def test_what_if_hybrid_mlkem768_intermediate_needs_two_ike_fragments_at_1280():
    # h01 (AES-CBC-256, HMAC-SHA2-256-128): IV 16, block 16, ICV 16. The IKE_INTERMEDIATE
    # request carries the ML-KEM-768 KE payload: 8 + 1184 = 1192 bytes of plaintext.
    # Unfragmented: 28 + 4 + 16 + ceil((1192+1)/16)*16 + 16 = 1264 bytes of IKE.
    rows = {(w.mtu, w.ip_version, w.port): w for w in what_if_for("h01", 43, False, [1500, 1280])}
    assert rows[(1500, 4, 4500)].ike_bytes == 28 + 4 + 16 + 1200 + 16 == 1264
    assert rows[(1500, 4, 4500)].ip_datagram_bytes == 1264 + 4 + 8 + 20 == 1296
    assert rows[(1500, 4, 4500)].ip_fragments == 1
    assert rows[(1280, 4, 4500)].ip_fragments == 2
    # One SKF fragment at 1280 bytes carries (1280-20-8-4-28-8-16-16)//16*16 - 1 = 1167 bytes:
    # 1192 bytes need 2 fragments, exactly what strongSwan sent (1240 + 104 bytes of UDP).
    assert rows[(1280, 4, 4500)].ike_fragments == 2
    assert rows[(1500, 4, 4500)].ike_fragments == 1  # fragment size = MTU 1500: fits in one


def test_mtu_command_json_has_what_if_and_messages():
    result = CliRunner().invoke(main, ["mtu", lab_path("p04"), "--format", "json", "--mtu", "1280"])
    assert result.exit_code == 0, result.output
    [n] = json.loads(result.output)["negotiations"]
    assert {w["mtu"] for w in n["what_if"]} == {1280}
    init = [m for m in n["messages"] if m["exchange"] == "IKE_SA_INIT"]
    assert all(m["ip_fragmented"] for m in init)


def test_mtu_command_rejects_a_tiny_mtu():
    result = CliRunner().invoke(main, ["mtu", lab_path("c01"), "--mtu", "100"])
    assert result.exit_code == 2


def test_mtu_plot_writes_png_and_svg(tmp_path):
    prefix = tmp_path / "sizes"
    result = CliRunner().invoke(main, ["mtu", lab_path("h02"), lab_path("p02"), "--plot", str(prefix)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sizes.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "sizes.svg").read_bytes()[:500]
