"""Who the peers are and what to change on them (issue 17).

Ground truth: the Vendor IDs tshark names in public captures (nDPI's Cisco IKEv2 pair,
Zeek's Windows client, Arkime's FortiGate IKEv1 responder); our lab captures send none.
Remediation entries come from ikeaudit/data/remediation.toml, which cites its sources.
"""

from __future__ import annotations

import subprocess
import tomllib
from datetime import date
from importlib import resources

import pytest

from conftest import PCAPS, THIRDPARTY, needs_thirdparty, needs_tshark
from ikeaudit import remediation
from ikeaudit.pipeline import audit_capture

MORE = THIRDPARTY / "more"


def _first(path):
    return audit_capture(str(path)).negotiations[0]


@needs_thirdparty
def test_cisco_ikev2_vendor_ids_identify_both_sides():
    item = _first(MORE / "ndpi__ah.pcapng")
    initiator, responder = item.peers
    assert (initiator.name, initiator.confidence) == ("Cisco", "high")
    assert (responder.name, responder.confidence) == ("Cisco", "high")
    assert any("Cisco FlexVPN Supported" in e for e in responder.evidence)


@needs_thirdparty
@needs_tshark
def test_ikev2_vendor_ids_are_kept_per_side_as_tshark_shows_them():
    done = subprocess.run(["tshark", "-r", str(MORE / "ndpi__ah.pcapng"), "-Y", "isakmp.vid_string",
                           "-T", "fields", "-e", "isakmp.flags", "-e", "isakmp.vid_string"],
                          capture_output=True, text=True, timeout=120, check=True)
    tshark = {}
    for line in done.stdout.splitlines():
        flags, names = line.split("\t")
        tshark[bool(int(flags, 16) & 0x08)] = names.split(",")
    from ikeaudit import vendors

    ours = {}
    for who, raw in _first(MORE / "ndpi__ah.pcapng").negotiation.peer_vendor_ids:
        ours.setdefault(who, []).append(vendors.name_vendor_id(raw).name)
    assert ours == tshark


@needs_thirdparty
def test_windows_client_is_named_with_its_version():
    initiator, responder = _first(THIRDPARTY / "corelight-zeek-spicy-ipsec" / "ipsec_client.pcap").peers
    assert initiator.name == "Microsoft" and initiator.confidence in ("high", "medium")
    assert "Windows" in (initiator.version or "")
    assert responder.name is None


@needs_thirdparty
def test_arkime_ikev1_fortigate_is_identified_with_its_capabilities():
    items = audit_capture(str(MORE / "arkime__IKEv1.pcap")).negotiations
    fortigate = [side for item in items for side in item.peers if side.name == "Fortinet FortiGate"]
    assert fortigate and fortigate[0].confidence == "medium"  # a product prefix followed by version bytes
    assert {"RFC 3706 DPD (Dead Peer Detection)", "Cisco Fragmentation"} <= set(fortigate[0].capabilities)


@needs_thirdparty
def test_a_side_without_vendor_id_or_distinctive_order_stays_unidentified():
    initiator, _ = _first(MORE / "packetgen__ikev2.pcapng").peers  # NAT-D notifies alone
    assert initiator.name is None and initiator.confidence is None
    assert initiator.evidence == ("no product Vendor ID was sent",)


# ---------------------------------------------------------------------------- remediation


def _data() -> dict:
    return tomllib.loads(resources.files("ikeaudit").joinpath("data", "remediation.toml").read_text())


def test_every_remediation_entry_cites_a_public_source_checked_on_a_date():
    data = _data()
    tables = [data["generic"], data["ikev1"], *data["implementations"]]
    for table in tables:
        assert table["sources"]
        for source in table["sources"]:
            assert source["url"].startswith("https://") and source["says"]
            assert isinstance(source["checked"], date)
    for entry in data["implementations"]:
        assert entry["config"] and entry["min_version"]


def test_an_identified_implementation_gets_its_entry_and_an_unknown_one_the_generic_advice():
    strongswan, = remediation.advise(["strongSwan"])
    assert strongswan.min_version == "6.0.0" and any("ke1_mlkem768" in c for c in strongswan.config)
    [generic] = remediation.advise([None, "Cisco"])
    assert generic.implementation is None and "RFC 9370" in generic.advice
    assert [r.implementation for r in remediation.advise(["strongSwan", None])] == ["strongSwan", None]
    [ikev1] = remediation.advise(["Fortinet FortiGate"], ike_version=1)
    assert "IKEv2" in ikev1.advice and ikev1.sources[0].url.endswith("rfc9395")


@pytest.fixture(scope="module")
def c01_report(tmp_path_factory):
    from click.testing import CliRunner

    from ikeaudit.cli import main

    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", str(PCAPS / "c01_classical_ecp256.pcap"), "-o", str(out)])
    assert result.exit_code in (0, 1), result.output
    return out


def test_the_reports_show_what_to_change_per_exposed_tunnel(c01_report):
    import json

    document = json.loads((c01_report / "report.json").read_text())
    [tunnel] = document["tunnels"]
    assert tunnel["status"] == "exposed"
    # Both sides are strongSwan 6.0.6 (manifest), named from the notify order alone: a hint,
    # so the generic advice comes with the strongSwan entry.
    assert [i["label"] for i in tunnel["implementations"]] == ["strongSwan (confidence low)"] * 2
    assert [r["implementation"] for r in tunnel["remediation"]] == ["strongSwan", None]
    markdown = (c01_report / "report.md").read_text()
    assert "## What to change, per tunnel" in markdown and "<https://www.rfc-editor.org/rfc/rfc9370>" in markdown
    assert "not visible (IKE\\_AUTH not decrypted)" in markdown or "not visible (IKE_AUTH not decrypted)" in markdown
    html = (c01_report / "report.html").read_text()
    assert "What to change, per tunnel" in html and "www.rfc-editor.org/rfc/rfc9370" in html


# Ground truth for the notify-order hints: the manifest's implementation of each side.
@pytest.mark.parametrize("record", ["h01", "c01", "l01", "l03", "k01", "x01"])
def test_sides_without_vendor_ids_are_named_from_their_ike_sa_init_notify_order(record):
    from conftest import RECORDS

    entry = RECORDS[record]
    item = audit_capture(str(PCAPS / entry["file"])).negotiations[-1]
    for found, side in zip(item.peers, ("initiator", "responder")):
        product = entry["implementation"][side].split()[0]
        if record == "x01" and side == "responder":  # a lone NO_PROPOSAL_CHOSEN carries no order
            assert found.name is None
            continue
        assert (found.name, found.confidence) == (product, "low"), found.evidence
        assert any("notify order" in e for e in found.evidence)


def test_a_minimal_ike_sa_init_names_no_implementation():
    from ikeaudit import iana, peer

    assert peer.notify_order_hint((iana.NAT_DETECTION_SOURCE_IP, iana.NAT_DETECTION_DESTINATION_IP)) is None
    assert peer.notify_order_hint(()) is None
    assert peer.notify_order_hint((iana.IKEV2_FRAGMENTATION_SUPPORTED, 16406, 16431)) is None


def test_a_cookie_retry_keeps_the_order_hint():
    from ikeaudit import iana, peer

    order = (iana.COOKIE, iana.NAT_DETECTION_SOURCE_IP, iana.NAT_DETECTION_DESTINATION_IP,
             iana.IKEV2_FRAGMENTATION_SUPPORTED)
    assert peer.notify_order_hint(order).implementation == "strongSwan"


@needs_thirdparty
def test_a_vendor_id_outranks_the_notify_order():
    initiator, responder = _first(MORE / "ndpi__ah.pcapng").peers
    assert (initiator.name, initiator.confidence) == ("Cisco", "high")


def test_every_remediation_entry_names_an_implementation_the_identification_can_give():
    from ikeaudit import peer, vendors

    nameable = {vendor for _, _, vendor, _ in vendors.entries() if vendor} | {o.implementation for o in peer.NOTIFY_ORDERS}
    assert set(remediation.entries()) <= nameable
