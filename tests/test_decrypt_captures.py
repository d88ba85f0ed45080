"""Decryption on real captures: Wireshark's eight ikev2-decrypt-* captures with its
table, and the lab captures with the .keys files strongSwan's save-keys wrote. The
expectations come from manifest.json and FIPS 203 (via ikev2-pq-facts.md), and tshark
is the independent oracle for what the decrypted payloads are."""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache

import pytest
from click.testing import CliRunner

from conftest import PCAPS, RECORDS, THIRDPARTY, lab_path, needs_thirdparty, needs_tshark
from ikeaudit.cli import main
from ikeaudit.decrypt import parse_key_table
from ikeaudit.dissect import InnerReassembly, dissect
from ikeaudit.extract import Extractor
from ikeaudit.pipeline import audit_capture
from ikeaudit.records import IkeMessage
from ikeaudit.sources import iter_capture

WIRESHARK = THIRDPARTY / "wireshark"
WIRESHARK_TABLE = WIRESHARK / "ikev2_decryption_table.tmpl"
WIRESHARK_CAPTURES = sorted(p.name for p in WIRESHARK.glob("ikev2-decrypt-*")) if WIRESHARK.is_dir() else []
# FIPS 203 table 3: ML-KEM id -> (encapsulation key, ciphertext) bytes.
FIPS203 = {35: (800, 768), 36: (1184, 1088), 37: (1568, 1568)}
SA_SUBSTRUCTURES = {2, 3}  # tshark lists proposals and transforms among the payloads
EXCHANGE = {"IKE_SA_INIT": 34, "IKE_AUTH": 35, "CREATE_CHILD_SA": 36, "IKE_INTERMEDIATE": 43, "IKE_FOLLOWUP_KE": 44}


@lru_cache(maxsize=None)
def keys_of(path: str):
    with open(path) as handle:
        return parse_key_table(handle.read(), path)


@lru_cache(maxsize=None)
def audited(capture: str, keys: str | None):
    return audit_capture(capture, keys=keys_of(keys) if keys else None)


def records(capture: str, keys: str) -> list[IkeMessage]:
    """Dissected (and joined) records, one per datagram, as the pipeline makes them."""
    extractor, joiner, table, out = Extractor(), InnerReassembly(), keys_of(keys), []
    for item in iter_capture(capture):
        if hasattr(item, "linktype"):
            out += [joiner.feed(dissect(d, table)) for d in extractor.feed(item) if hasattr(d, "payload")]
    return out


# ---------------------------------------------------------------------------- Wireshark's captures


@needs_thirdparty
@pytest.mark.parametrize("name", WIRESHARK_CAPTURES)
def test_every_encrypted_message_of_wiresharks_captures_decrypts(name):
    audit = audited(str(WIRESHARK / name), str(WIRESHARK_TABLE))
    [item] = audit.negotiations
    encrypted = [m for m in item.negotiation.messages if m.decryption is not None]
    assert encrypted and all(m.inner is not None for m in encrypted), \
        [(m.first_frame, m.decryption.detail) for m in encrypted if m.inner is None]
    auth = [m for m in encrypted if m.exchange == 35]
    assert [m.response for m in auth] == [False, True]
    assert {35, 36} <= {i.payload for m in auth for i in m.inner.identifications}
    assert item.negotiation.child_sa_chosen is not None and item.negotiation.child_sa_chosen.protocol == 3
    assert not [a for a in item.negotiation.anomalies if a.kind == "undecryptable"]


@needs_thirdparty
def test_wiresharks_unchecked_ctr_line_is_marked_unchecked():
    # The table's AES-CTR-128 line checks no integrity ("ANY 96-bits [No Checking]"):
    # its messages open only because their plaintext is a well-formed payload chain.
    audit = audited(str(WIRESHARK / "ikev2-decrypt-aes128ccm12-2.pcap"), str(WIRESHARK_TABLE))
    statuses = {m.decryption.status for n in audit.negotiations for m in n.negotiation.messages if m.decryption}
    assert statuses == {"decrypted-unchecked"}


def tshark_inner(capture: str, table_line: str) -> dict[int, list[int]]:
    """Frame -> payload types inside SK/SKF, as Wireshark decrypts them."""
    done = subprocess.run(["tshark", "-r", capture, "-Y", "isakmp", "-o", f"uat:ikev2_decryption_table:{table_line}",
                           "-T", "fields", "-e", "frame.number", "-e", "isakmp.typepayload"],
                          capture_output=True, text=True, timeout=120, check=True)
    inner = {}
    for line in done.stdout.splitlines():
        frame, _, types = line.partition("\t")
        chain = [int(t) for t in types.split(",") if t and int(t) not in SA_SUBSTRUCTURES]
        encrypted_at = next((i for i, t in enumerate(chain) if t in (46, 53)), None)
        if encrypted_at is not None and len(chain) > encrypted_at + 1:
            inner[int(frame)] = chain[encrypted_at + 1:]
    return inner


@needs_thirdparty
@needs_tshark
@pytest.mark.parametrize("name", WIRESHARK_CAPTURES)
def test_decrypted_payloads_match_tsharks(name):
    capture = str(WIRESHARK / name)
    ours = {r.frame: list(r.inner.payload_types) for r in records(capture, str(WIRESHARK_TABLE))
            if isinstance(r, IkeMessage) and r.inner is not None and r.inner.payload_types}
    spis = {(r.spi_i, r.spi_r) for r in records(capture, str(WIRESHARK_TABLE)) if isinstance(r, IkeMessage)}
    [line] = [k for k in WIRESHARK_TABLE.read_text().splitlines()
              if not k.startswith("#") and tuple(k.split(",")[:2]) in spis]
    assert ours == tshark_inner(capture, line)


# ---------------------------------------------------------------------------- lab captures


def keyed(record_id: str):
    record = RECORDS[record_id]
    return audited(lab_path(record_id), str(PCAPS / record["keys_file"]))


def with_keys(*, pq: bool = False) -> list[str]:
    return sorted(i for i, r in RECORDS.items() if r.get("keys_file")
                  and (not pq or r["expected_classification"] in ("hybrid-pq", "pq-only")))


def primary(audit):
    [item] = [i for i in audit.negotiations if i.negotiation.sa_init_seen]
    return item


@pytest.mark.parametrize("record_id", sorted(i for i, r in RECORDS.items()
                                             if r.get("keys_file") and r["chosen_additional_kes"]))
def test_every_ike_intermediate_carries_the_manifests_mlkem_at_its_fips203_size(record_id):
    n = primary(keyed(record_id)).negotiation
    [addke] = RECORDS[record_id]["chosen_additional_kes"]
    intermediates = [m for m in n.messages if m.exchange == EXCHANGE["IKE_INTERMEDIATE"]]
    assert {m.response for m in intermediates} == {False, True}
    for m in intermediates:
        assert m.inner is not None, m.decryption
        assert m.inner.key_exchange.method == addke["id"]
        assert m.inner.key_exchange.data_length == FIPS203[addke["id"]][1 if m.response else 0]


@pytest.mark.parametrize("record_id", with_keys())
def test_ike_auth_decrypts_in_the_same_negotiation(record_id):
    n = primary(keyed(record_id)).negotiation
    auth = [m for m in n.messages if m.exchange == EXCHANGE["IKE_AUTH"]]
    assert auth and all(m.inner is not None for m in auth)
    assert n.auth_methods and {i.payload for i in n.identifications} == {35, 36}
    # l01's responder refused the Child SA (TS_UNACCEPTABLE): the manifest says so.
    assert (n.child_sa_chosen is not None) == (RECORDS[record_id]["n_child_sas"] > 0)


def manifest_content(record: dict) -> dict[tuple[str, int, bool], list[str]]:
    """(exchange, message id, response) -> payload names, as the manifest lists them."""
    return {(m["exchange"], m["msgid"], m["direction"].startswith("response")):
            [c.split("(")[0] for c in m["content"]] for m in record["ike_messages"]}


@pytest.mark.parametrize("record_id", with_keys())
def test_decrypted_payloads_match_the_manifests_content(record_id):
    from ikeaudit import iana

    expected = manifest_content(RECORDS[record_id])
    seen = {}
    for item in keyed(record_id).negotiations:
        for m in item.negotiation.messages:
            if m.inner is not None:
                seen[(iana.exchange_name(m.exchange), m.message_id, m.response)] = \
                    [iana.payload_name(p) for p in m.inner.payload_types]
    assert seen and all(expected[key] == names for key, names in seen.items()), \
        {k: (expected.get(k), v) for k, v in seen.items() if expected.get(k) != v}


@pytest.mark.parametrize("record_id", with_keys())
def test_every_encrypted_lab_message_decrypts(record_id):
    audit = keyed(record_id)
    assert audit.stats["encrypted_datagrams_undecryptable"] == 0
    assert audit.stats["encrypted_datagrams_opened"] > 0
    assert not [a for item in audit.negotiations for a in item.negotiation.anomalies]


@pytest.mark.parametrize("record_id", with_keys(pq=True))
def test_pq_classification_is_verified_with_keys_and_negotiated_without(record_id):
    assert primary(keyed(record_id)).classification.confidence == "verified"
    assert primary(audited(lab_path(record_id), None)).classification.confidence == "negotiated"


def test_rekey_capture_links_the_ike_sa_rekey_by_spis():
    audit = keyed("r01")
    parent = primary(audit).negotiation
    [child] = [i for i in audit.negotiations if not i.negotiation.sa_init_seen]
    assert child.negotiation.rekeyed_from == (parent.spi_i, parent.spi_r)
    assert child.negotiation.rekey_linked_by == "spis"
    [rekey] = [x for x in parent.child_exchanges if x.protocol == 1]
    assert rekey.new_spis == (child.negotiation.spi_i, child.negotiation.spi_r)
    assert child.classification.name == "hybrid-pq" and child.classification.confidence == "verified"


def test_rekey_capture_each_followup_ke_carries_mlkem768():
    record = RECORDS["r01"]
    [addke] = record["chosen_additional_kes"]
    followups = [m for item in keyed("r01").negotiations for m in item.negotiation.messages
                 if m.exchange == EXCHANGE["IKE_FOLLOWUP_KE"]]
    assert len([m for m in followups if not m.response]) == record["ike_followup_ke_exchanges"]
    for m in followups:
        assert m.inner.key_exchange.method == addke["id"] == 36
        assert m.inner.key_exchange.data_length == FIPS203[36][1 if m.response else 0]
    # Every CREATE_CHILD_SA of the manifest is seen decrypted with its follow-up.
    exchanges = [x for item in keyed("r01").negotiations for x in item.negotiation.child_exchanges]
    assert sorted(x.message_id for x in exchanges) == sorted(c["msgid"] for c in record["create_child_sa"])
    assert all(len(x.followups) == 1 for x in exchanges)


def test_a_key_table_for_another_capture_leaves_messages_undecryptable_and_says_so():
    audit = audited(lab_path("h01"), str(PCAPS / RECORDS["r01"]["keys_file"]))
    item = primary(audit)
    assert item.classification.confidence == "negotiated"
    assert any(f.code == "undecryptable" for f in item.classification.findings)
    assert any(a.kind == "undecryptable" for a in item.negotiation.anomalies)
    assert audit.stats["encrypted_datagrams_undecryptable"] > 0


# ---------------------------------------------------------------------------- command line


def test_scan_with_keys_shows_verified_and_the_inner_ke():
    keys = str(PCAPS / RECORDS["h01"]["keys_file"])
    result = CliRunner().invoke(main, ["scan", lab_path("h01"), "--keys", keys, "--format", "json"])
    assert result.exit_code == 0, result.output
    [n] = json.loads(result.output)["negotiations"]
    assert n["confidence"] == "verified"
    assert n["decryption"]["undecryptable_messages"] == 0
    inner = [m["inner"] for m in n["messages"] if m["exchange"] == "IKE_INTERMEDIATE" and m["inner"]]
    assert [i["ke_method"] for i in inner] == [36, 36]
    table = CliRunner().invoke(main, ["scan", lab_path("h01"), "--keys", keys])
    assert "verified" in table.output


def test_mtu_and_report_take_keys_too(tmp_path):
    keys = str(PCAPS / RECORDS["r01"]["keys_file"])
    result = CliRunner().invoke(main, ["mtu", lab_path("r01"), "--keys", keys, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert {n["confidence"] for n in json.loads(result.output)["negotiations"]} == {"verified"}
    result = CliRunner().invoke(main, ["report", lab_path("r01"), "--keys", keys, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [n["rekey_linked_by"] for n in report["negotiations"]] == [None, "spis"]


def test_a_bad_key_file_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.keys"
    bad.write_text('0102030405060708,a1a2a3a4a5a6a7a8,00,00,"ROT13",,,"NONE [RFC4306]"\n')
    result = CliRunner().invoke(main, ["scan", lab_path("h01"), "--keys", str(bad)])
    assert result.exit_code == 2
    assert "bad.keys:1: unknown cipher" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["scan", lab_path("h01"), "--keys", str(tmp_path / "none.keys")])
    assert missing.exit_code == 2
