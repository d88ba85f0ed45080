"""`ikeaudit report`: numbers against the manifest, safe rendering, self-contained HTML."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import PCAPS, RECORDS
from ikeaudit.cli import main
from test_lab_manifest import expected_class

CLASSICAL_ONLY = {"classical", "classical-pq-offered"}


@pytest.fixture(scope="module")
def lab_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", str(PCAPS), "-o", str(out), "--as-of", "2026-11-23"])
    assert result.exit_code == 0, result.output
    return out


def load(out) -> dict:
    return json.loads((out / "report.json").read_text())


def test_report_classes_match_manifest(lab_report):
    document = load(lab_report)
    for record in RECORDS.values():
        mine = [n for n in document["negotiations"]
                if n["capture"].endswith(record["file"]) and n["classification_basis"] == "IKE_SA_INIT"]
        assert [n["classification"] for n in mine] == [expected_class(record)], record["id"]


def test_report_ike_sa_count_matches_manifest(lab_report):
    assert load(lab_report)["summary"]["ike_sas_established"] == sum(r["n_ike_sas"] for r in RECORDS.values())


def test_exposed_esp_is_the_esp_of_classical_only_captures(lab_report):
    """Each lab capture's ESP follows its own IKE SA, so the ESP counted as exposed is the
    ESP of the captures whose negotiation the manifest calls classical-only."""
    expected = sum(r["esp_packets"] for r in RECORDS.values() if expected_class(r) in CLASSICAL_ONLY)
    assert load(lab_report)["exposure"]["esp_packets_exposed"] == expected


def test_tables_have_a_row_per_negotiation_and_message(lab_report):
    document = load(lab_report)
    negotiations = pd.read_parquet(lab_report / "negotiations.parquet")
    messages = pd.read_parquet(lab_report / "messages.parquet")
    assert len(negotiations) == len(document["negotiations"])
    assert len(messages) == sum(len(n["messages"]) for n in document["negotiations"])
    assert len(pd.read_csv(lab_report / "messages.csv")) == len(messages)
    expected = sum(len(r["ike_messages"]) for r in RECORDS.values())
    assert len(messages) == expected


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data") and value:
                self.references.append(value)


def test_html_parses_and_fetches_nothing(lab_report):
    text = (lab_report / "report.html").read_text()
    parser = _Links()
    parser.feed(text)
    parser.close()
    assert {"html", "head", "body", "table", "img"} <= set(parser.tags)
    assert all(ref.startswith("data:image/png;base64,") for ref in parser.references)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert not re.search(r"url\(|@import|https?://", text)
    assert 'name="viewport"' in text


def test_report_files_are_all_written(lab_report):
    names = {p.name for p in lab_report.iterdir()}
    assert {"report.html", "report.md", "report.json", "cbom.json", "negotiations.csv",
            "negotiations.parquet", "messages.csv", "messages.parquet"} <= names
    assert all((lab_report / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
               for stem in ("class-share", "timeline", "ke-methods", "message-sizes", "exposure"))


def test_report_cbom_validates(lab_report):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_7).validate_str((lab_report / "cbom.json").read_text())
    assert errors is None, errors


HOSTILE = '=HYPERLINK("http://x") <script>alert(1)</script> **bold** [a](http://x) | # x'


def hostile_capture(path):
    from scapy.all import IP, UDP, Ether, wrpcap

    from ikeaudit.layers import IKEv2, IKEv2_KE, IKEv2_Proposal, IKEv2_SA, IKEv2_Transform, IKEv2_VendorID

    transforms = (IKEv2_Transform(transform_type=1, transform_id=12, key_length=256)
                  / IKEv2_Transform(transform_type=2, transform_id=5)
                  / IKEv2_Transform(transform_type=3, transform_id=12)
                  / IKEv2_Transform(transform_type=4, transform_id=19))
    sa = IKEv2_SA(prop=IKEv2_Proposal(proposal=1, proto=1, trans_nb=4, trans=transforms))
    ike = IKEv2(init_SPI=b"\x11" * 8, resp_SPI=b"\x00" * 8, exch_type=34, flags=0x08) / sa \
        / IKEv2_KE(group=19, ke=b"\x01" * 64) / IKEv2_VendorID(vendorID=HOSTILE.encode())
    packet = Ether() / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(sport=500, dport=500) / ike
    packet.time = 1_700_000_000
    wrpcap(str(path), [packet])


def test_strings_from_packets_and_file_names_are_escaped(tmp_path):
    capture = tmp_path / "<b onclick=x>evil=cmd|.pcap"
    hostile_capture(capture)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["report", str(capture), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b onclick" not in html and "&lt;b onclick=x&gt;evil" in html
    markdown = (out / "report.md").read_text()
    assert "**bold**" not in markdown and r"\*\*bold\*\*" in markdown
    assert "[a](http://x)" not in markdown and r"\[a\](http://x)" in markdown
    assert not re.search(r"(?<!\\)<(script|b )", markdown) and r"\<script>" in markdown
    cell = pd.read_csv(out / "negotiations.csv", dtype=str)["vendor_ids"][0]
    assert cell == "'" + HOSTILE  # a spreadsheet shows it, never runs it
    report = json.loads((out / "report.json").read_text())
    assert report["negotiations"][0]["vendor_id_texts"] == [HOSTILE]  # JSON keeps the data as is


def test_unknown_policy_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(PCAPS / RECORDS["c01"]["file"]), "-o", str(tmp_path),
                                       "--policy", "no-such-policy"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1


def test_fail_on_uses_policy_verdicts(tmp_path):
    classical = str(PCAPS / RECORDS["c01"]["file"])
    result = CliRunner().invoke(main, ["report", classical, "-o", str(tmp_path), "--fail-on", "medium"])
    assert result.exit_code == 1
    hybrid = str(PCAPS / RECORDS["h02"]["file"])
    result = CliRunner().invoke(main, ["report", hybrid, "-o", str(tmp_path / "h"), "--fail-on", "medium"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- fail closed: what the capture cannot prove

def report_of(tmp_path, *captures: str, policy: str = "hybrid-required", fail_on: str = "none"):
    out = tmp_path / f"out-{policy}-{fail_on}"
    result = CliRunner().invoke(main, ["report", *captures, "-o", str(out), "--as-of", "2026-11-27",
                                       "--policy", policy, "--fail-on", fail_on])
    return result, (load(out) if (out / "report.json").exists() else None)


@pytest.fixture(scope="module")
def c01_without_sa_init(tmp_path_factory):
    import captures

    packets = captures.read(str(PCAPS / RECORDS["c01"]["file"]))
    kept = captures.without_exchanges(packets, {captures.IKE_SA_INIT})
    assert len(packets) - len(kept) == 2  # its request and response
    return captures.write(kept, tmp_path_factory.mktemp("variants") / "c01-no-sa-init.pcap")


def test_tunnel_without_its_ike_sa_init_is_unassessed_and_the_headline_says_so(tmp_path, c01_without_sa_init):
    result, document = report_of(tmp_path, c01_without_sa_init)
    assert result.exit_code == 0, result.output
    exposure = document["exposure"]
    record = RECORDS["c01"]  # classical, one IKE SA, its ESP
    assert (exposure["tunnels"], exposure["unassessed_tunnels"]) == (record["n_ike_sas"], 1)
    assert (exposure["exposed_tunnels"], exposure["protected_tunnels"]) == (0, 0)
    assert (exposure["esp_packets_unassessed"], exposure["esp_packets_exposed"]) == (record["esp_packets"], 0)
    assert "1 more could not be assessed because their handshake was not captured" in exposure["headline"]
    assert "None of" not in exposure["headline"]
    [tunnel] = document["tunnels"]
    assert (tunnel["status"], tunnel["observation"]) == ("unassessed", "unassessed")
    [n] = document["negotiations"]
    assert n["policy_outcome"] == "warn"  # never pass
    assert result.output.splitlines()[0] == exposure["headline"]


def test_report_fail_on_medium_exits_1_on_an_unassessed_tunnel(tmp_path, c01_without_sa_init):
    result, _ = report_of(tmp_path, c01_without_sa_init, fail_on="medium")
    assert result.exit_code == 1, result.output


def test_scan_fail_on_medium_exits_1_on_a_handshake_not_captured(c01_without_sa_init):
    result = CliRunner().invoke(main, ["scan", c01_without_sa_init, "--fail-on", "medium", "--format", "json"])
    [n] = json.loads(result.stdout)["negotiations"]
    assert any(f["code"] == "handshake-not-captured" and f["severity"] == "medium" for f in n["findings"])
    assert result.exit_code == 1


def test_tables_and_cbom_list_the_unassessed_tunnel(tmp_path, c01_without_sa_init):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["report", c01_without_sa_init, "-o", str(out)]).exit_code == 0
    for table in (pd.read_csv(out / "tunnels.csv"), pd.read_parquet(out / "tunnels.parquet")):
        assert table[["status", "observation"]].values.tolist() == [["unassessed", "unassessed"]]
        assert table["esp_packets_unassessed"].tolist() == [RECORDS["c01"]["esp_packets"]]
    assert "observation" in pd.read_csv(out / "negotiations.csv").columns
    cbom = json.loads((out / "cbom.json").read_text())
    [service] = cbom["services"]
    props = {p["name"]: p["value"] for p in service["properties"]}
    assert (props["ikeaudit:tunnel:status"], props["ikeaudit:tunnel:observation"]) == ("unassessed", "unassessed")


def test_markdown_escapes_only_what_would_render(lab_report):
    text = (lab_report / "report.md").read_text()
    assert "2026-11-23" in text and r"2026\-11" not in text
    assert "192.0.2.1" in text and r"192\.0" not in text
    assert "PRF_HMAC_SHA2_256" in text or "hybrid-pq" in text
    assert r"\_" not in text.replace(r"\_x", "")  # no word-inner underscore escaped


@pytest.mark.parametrize("policy", ["hybrid-required", "cnsa2", "nist-ir-8547", "bsi-tr-02102"])
def test_h02_without_its_ike_intermediate_passes_no_preset(tmp_path, policy):
    """h02 chose ML-KEM-1024 in ADDKE1 (manifest); with its IKE_INTERMEDIATE gone the
    ML-KEM exchange was never seen: no preset may pass it."""
    import captures

    record = RECORDS["h02"]
    assert [a["name"] for a in record["chosen_additional_kes"]] == ["ML-KEM-1024"]
    packets = captures.read(str(PCAPS / record["file"]))
    kept = captures.without_exchanges(packets, {captures.IKE_INTERMEDIATE})
    assert len(kept) < len(packets)
    path = captures.write(kept, tmp_path / "h02-no-intermediate.pcap")
    result, document = report_of(tmp_path, str(path), policy=policy)
    assert result.exit_code == 0, result.output
    [n] = [n for n in document["negotiations"] if n["classification_basis"] == "IKE_SA_INIT"]
    assert n["policy_outcome"] in ("warn", "fail")
    assert n["confidence"] not in ("verified", "negotiated")
    assert document["exposure"]["protected_tunnels"] == 0


# ---------------------------------------------------------------- public third-party captures

from conftest import THIRDPARTY, needs_thirdparty  # noqa: E402

MORE = THIRDPARTY / "more"


@needs_thirdparty
def test_ikev1_reflection_flood_is_no_tunnel_and_a_finding(tmp_path):
    """stopddos amp.UDP.isakmp: IKEv1 datagrams from thousands of reflectors toward one
    address, nothing established, no ESP (its README)."""
    result, document = report_of(tmp_path, str(MORE / "stopddos__amp.UDP.isakmp.pcap"))
    assert result.exit_code == 0, result.output
    exposure = document["exposure"]
    assert exposure["tunnels"] == 0 and document["tunnels"] == []
    unanswered = exposure["unanswered"]
    assert unanswered["negotiations"] == len(document["negotiations"]) > 1000
    assert unanswered["destination_addresses"] == 1
    [flood] = [f for f in document["findings"] if f["code"] == "ike-flood"]
    victim = unanswered["top_destinations"][0]["address"]
    assert flood["severity"] == "medium" and victim in flood["detail"]
    assert f"from {unanswered['source_addresses']} addresses" in flood["detail"]
    assert "tunnel(s) protected traffic" not in exposure["headline"]
    assert "formed no tunnel" in exposure["headline"]
    result, _ = report_of(tmp_path, str(MORE / "stopddos__amp.UDP.isakmp.pcap"), fail_on="medium")
    assert result.exit_code == 1


@needs_thirdparty
def test_esp_under_an_ikev1_sa_is_exposed_with_ikev1_named(tmp_path):
    """Arkime's IKEv1.pcap: 296 ESP packets under an IKEv1 SA (its README); IKEv1 has no
    post-quantum key exchange, so all of them are exposed."""
    result, document = report_of(tmp_path, str(MORE / "arkime__IKEv1.pcap"))
    assert result.exit_code == 0, result.output
    [tunnel] = document["tunnels"]
    assert tunnel["status"] == "exposed"
    assert tunnel["reasons"] == ["IKEv1 (no post-quantum key exchange)"]
    assert (tunnel["esp_packets_exposed"], document["exposure"]["esp_packets_exposed"]) == (296, 296)


@needs_thirdparty
def test_ike_sa_init_response_alone_is_not_called_safe(tmp_path):
    """Openswan ct14-bigkeyI2_parentR1: an IKE_SA_INIT response choosing MODP-2048 without
    its request; nothing shows the SA came up, so it is no tunnel and nothing is safe."""
    result, document = report_of(tmp_path, str(MORE / "openswan__ct14-bigkeyI2_parentR1.pcap"))
    assert result.exit_code == 0, result.output
    assert not document["exposure"]["headline"].startswith("None of")
    assert document["exposure"]["protected_tunnels"] == 0
