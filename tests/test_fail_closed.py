"""Issue 12 (and issue 13's one-direction and slot-order cases): what a capture cannot
prove is never reported as safe. Every case is a real lab capture made into the field
situation with Scapy (tests/captures.py); the expected answer comes from manifest.json
or from how the variant was built, never from ikeaudit's own output."""

from __future__ import annotations

import pytest

import captures
from captures import CREATE_CHILD_SA, IKE_AUTH, IKE_FOLLOWUP_KE, IKE_INTERMEDIATE, IKE_SA_INIT, INFORMATIONAL
from conftest import PCAPS, RECORDS, THIRDPARTY, lab_ids, lab_path, needs_thirdparty
from ikeaudit import iana
from ikeaudit.mtu import fragmentation_supported, intermediate_supported
from ikeaudit.pipeline import audit_capture


def exchanges(record: dict) -> set[int]:
    return {int(e.split("(")[1].rstrip(")")) for e in record["exchange_types_seen"]}


def audited(packets, tmp_path, name: str = "variant.pcap", **kw):
    return audit_capture(captures.write(packets, tmp_path / name), **kw).negotiations


def codes(c) -> list[str]:
    return [f.code for f in c.findings]


def finding(c, code: str):
    return next(f for f in c.findings if f.code == code)


def primary(items):
    """The negotiation of the record's first IKE SA: the one that carried IKE_SA_INIT."""
    return next((i for i in items if i.negotiation.sa_init_seen
                 or any(m.exchange == IKE_SA_INIT for m in i.negotiation.messages)), items[0])


# --- a span port that met the SA after its IKE_SA_INIT

MIDSTREAM_PLAIN = [r for r in lab_ids() if RECORDS[r]["n_ike_sas"] == 1
                   and not exchanges(RECORDS[r]) & {CREATE_CHILD_SA, IKE_FOLLOWUP_KE}]


def mlkem_addke(record: dict) -> bool:
    return any(a["name"].startswith("ML-KEM") for a in record["chosen_additional_kes"])


@pytest.mark.parametrize("record_id", MIDSTREAM_PLAIN)
def test_without_its_ike_sa_init_an_sa_is_never_safe(record_id, tmp_path):
    # Without IKE_SA_INIT only the SA's own traffic speaks: an IKE_INTERMEDIATE request
    # larger than any classical key is an ML-KEM ADDKE (inferred); otherwise nothing
    # shows the key exchange and the SA is unassessed. Either way a finding says so.
    record = RECORDS[record_id]
    packets = captures.without_exchanges(captures.read(lab_path(record_id)), {IKE_SA_INIT})
    (item,) = audited(packets, tmp_path)
    n, c = item.negotiation, item.classification
    assert n.midstream and not n.sa_init_seen
    if IKE_INTERMEDIATE in exchanges(record) and mlkem_addke(record):
        assert (c.name, c.observation, c.confidence) == ("hybrid-pq", "inferred", "inferred")
        assert any("IKE_INTERMEDIATE" in i for i in c.inferences)
    else:
        assert (c.name, c.observation, c.confidence) == ("unknown", "not-observable", None)
    assert c.pq_offered_by_initiator is None
    assert finding(c, "handshake-not-captured").severity == "medium"
    assert n.intermediate_seen == (IKE_INTERMEDIATE in exchanges(RECORDS[record_id]))
    if IKE_INTERMEDIATE in exchanges(RECORDS[record_id]):
        assert intermediate_supported(n) == (True, True)


def test_midstream_r01_is_inferred_hybrid_from_its_own_followup_ke(tmp_path):
    # r01 rekeys with IKE_FOLLOWUP_KE carrying ML-KEM-768 (manifest): without its
    # IKE_SA_INIT the SA's own rekeys still show it, as an inference.
    record = RECORDS["r01"]
    assert record["ike_followup_ke_exchanges"] > 0
    assert [a["id"] for a in record["chosen_additional_kes"]] == [36]
    handshake = {IKE_SA_INIT, IKE_INTERMEDIATE, IKE_AUTH}  # met hours into the SA's life
    packets = captures.without_exchanges(captures.read(lab_path("r01")), handshake)
    items = audited(packets, tmp_path)
    first = min(items, key=lambda i: i.negotiation.first_seen)
    c = first.classification
    assert first.negotiation.midstream
    assert (c.name, c.observation, c.confidence) == ("hybrid-pq", "inferred", "inferred")
    assert any("IKE_FOLLOWUP_KE" in i for i in c.inferences)
    assert any("ML-KEM-768 (1184 B)" in i for i in c.inferences)  # what the sizes admit
    assert "handshake-not-captured" in codes(c)


def test_an_unrelated_sa_hours_later_between_the_same_peers_inherits_nothing(tmp_path):
    # r01 (hybrid, rekeying) and, spliced three hours after it onto r01's addresses, the
    # INFORMATIONAL traffic of c01 (classical, manifest) met mid-stream.
    r01 = captures.read(lab_path("r01"))
    c01 = captures.without_exchanges(captures.read(lab_path("c01")), {IKE_SA_INIT, IKE_AUTH})
    mapping = {captures.initiator_address(captures.read(lab_path("c01"))): captures.initiator_address(r01)}
    responder = next(captures.source(p) for p in captures.one_direction(r01, from_initiator=False))
    old_responder = next(captures.source(p) for p in captures.one_direction(captures.read(lab_path("c01")),
                                                                            from_initiator=False))
    mapping[old_responder] = responder
    late = captures.shifted(captures.readdressed(c01, mapping), float(r01[-1].time - c01[0].time) + 3 * 3600)
    items = audited(r01 + late, tmp_path)
    spliced = max(items, key=lambda i: i.negotiation.first_seen)
    assert spliced.negotiation.initiator == captures.initiator_address(r01)
    assert spliced.negotiation.rekeyed_from is None
    assert spliced.classification.name != "hybrid-pq"
    assert spliced.classification.observation != "observed"


def test_the_rekey_window_is_the_trackers_parameter(tmp_path):
    # r01's rekeyed IKE SA starts right after its parent's CREATE_CHILD_SA: a window of
    # zero seconds cannot reach it, the default can.
    packets = captures.read(lab_path("r01"))
    path = captures.write(packets, tmp_path / "r01.pcap")
    linked = [i.negotiation for i in audit_capture(path).negotiations if i.negotiation.rekeyed_from]
    assert linked and linked[0].rekey_linked_by == "addresses-time-and-size"
    assert not any(i.negotiation.rekeyed_from for i in audit_capture(path, rekey_window=0.0).negotiations)


# --- ADDKE chosen, its IKE_INTERMEDIATE never captured

HYBRIDS = [r for r in lab_ids() if RECORDS[r]["chosen_additional_kes"] and RECORDS[r]["n_ike_sas"] == 1]


@pytest.mark.parametrize("record_id", HYBRIDS)
def test_addke_without_its_intermediate_is_unconfirmed(record_id, tmp_path):
    packets = captures.without_exchanges(captures.read(lab_path(record_id)), {IKE_INTERMEDIATE})
    (item,) = audited(packets, tmp_path)
    c = item.classification
    assert c.name == RECORDS[record_id]["expected_classification"]  # what was chosen
    assert c.confidence == "unconfirmed"
    assert finding(c, "addke-not-captured").severity == "high"


def test_a_hybrid_whose_intermediate_is_too_small_is_contradicted(tmp_path):
    # h02 chose ML-KEM-1024 (manifest); h01's IKE_INTERMEDIATE carries ML-KEM-768 sizes.
    # Give h02's IKE_SA_INIT the h01 exchange: 1184-byte key data < 1568.
    assert [a["id"] for a in RECORDS["h02"]["chosen_additional_kes"]] == [37]
    assert [a["id"] for a in RECORDS["h01"]["chosen_additional_kes"]] == [36]
    h02 = captures.read(lab_path("h02"))
    h01 = captures.read(lab_path("h01"))
    sa_init = [p for p, h in zip(h02, captures.ike_headers(h02)) if h and h[0] == IKE_SA_INIT]
    rest = [p for p, h in zip(h01, captures.ike_headers(h01)) if h and h[0] != IKE_SA_INIT]
    # h01's messages carry h01's SPIs: rename them to h02's so they join its SA
    spis = bytes(sa_init[1][captures.UDP].payload)[:16]
    rest = [captures.edited([p], lambda q: _with_spis(q, spis), exchange=h[0])[0]
            for p, h in zip(rest, captures.ike_headers(rest))]
    items = audited(sa_init + captures.shifted(rest, float(sa_init[-1].time - rest[0].time) + 0.01), tmp_path)
    c = primary(items).classification
    assert c.name == "hybrid-pq"
    assert c.confidence == "contradicted"
    assert "evidence-mismatch" in codes(c)


def _with_spis(packet, spis: bytes):
    data, offset = captures._ike_bytes(packet)
    ike = data[offset:]
    return captures._with_ike(packet, (data, offset), spis + ike[16:])


# --- one direction (issue 13)


@pytest.mark.parametrize("record_id", lab_ids())
def test_a_responder_only_capture_classifies_from_the_responders_choice(record_id, tmp_path):
    record = RECORDS[record_id]
    packets = captures.one_direction(captures.read(lab_path(record_id)), from_initiator=False)
    item = primary(audited(packets, tmp_path))
    n, c = item.negotiation, item.classification
    assert c.name == record["expected_classification"]  # the offer is unseen: no "pq offered"
    assert c.pq_offered_by_initiator is None
    assert not [a for a in n.anomalies if a.kind == "malformed"]
    if record["chosen_ke"]:
        assert c.ke_method == record["chosen_ke"]["id"]
        assert list(c.addke_methods) == [a["id"] for a in record["chosen_additional_kes"]]
        assert c.observation == "observed" and c.confidence in ("negotiated", "verified")


@pytest.mark.parametrize("record_id", lab_ids())
def test_an_initiator_only_capture_says_what_was_offered_and_that_the_choice_was_not_seen(record_id, tmp_path):
    record = RECORDS[record_id]
    packets = captures.one_direction(captures.read(lab_path(record_id)), from_initiator=True)
    item = primary(audited(packets, tmp_path))
    n, c = item.negotiation, item.classification
    assert c.pq_offered_by_initiator is record["pq_offered_by_initiator"]
    assert not [a for a in n.anomalies if a.kind == "malformed"]
    if IKE_AUTH in exchanges(record):  # the SA went on: a response was sent, not captured
        # what the initiator's own messages show, as an inference, never as observed
        assert c.name == expected_class(record)
        assert (c.observation, c.confidence) == ("inferred", "inferred")
        assert any("not captured" in e for e in c.evidence)
        assert "handshake-not-captured" in codes(c)
        assert c.ke_method == record["chosen_ke"]["id"]
    else:
        assert c.name == "incomplete"


def expected_class(record: dict) -> str:
    # The manifest calls a downgrade "classical" and records the offer (see test_lab_manifest).
    if record["expected_classification"] == "classical" and record["pq_offered_by_initiator"]:
        return "classical-pq-offered"
    return record["expected_classification"]


def test_a_responder_only_rekey_is_linked_and_inferred_from_the_responses(tmp_path):
    # r01's IKE SA rekey chose Curve25519 + ADDKE1 ML-KEM-768 (manifest create_child_sa,
    # proto IKE), each rekey with its IKE_FOLLOWUP_KE: the responses alone must carry
    # the 1,088-byte ciphertext, so their sizes agree with the parent's choice.
    assert any(x["proto"] == "IKE" and x["addke"] == ["ADDKE1=36(ML-KEM-768)"]
               for x in RECORDS["r01"]["create_child_sa"])
    packets = captures.one_direction(captures.read(lab_path("r01")), from_initiator=False)
    items = audited(packets, tmp_path)
    [rekeyed] = [i for i in items if i.negotiation.midstream]
    assert rekeyed.negotiation.rekey_linked_by == "addresses-time-and-size"
    c = rekeyed.classification
    assert (c.name, c.observation, c.confidence) == ("hybrid-pq", "inferred", "inferred")
    assert not any("too small" in i for i in c.inferences)


# --- ADDKE slots by transform type (issue 13)


def test_a_second_addke_listed_first_on_the_wire_keeps_slot_order(tmp_path):
    # h01 chose ADDKE1 ML-KEM-768 (manifest). Give both IKE_SA_INIT messages an ADDKE2
    # ML-KEM-1024, placed before ADDKE1 on the wire: by construction addke_methods is
    # [36, 37], and h01's one IKE_INTERMEDIATE (ML-KEM-768 sizes) belongs to ADDKE1.
    packets = captures.read(lab_path("h01"))
    packets = captures.edited(packets, lambda p: captures.add_transform(p, 7, 37, before_type=6),
                              exchange=IKE_SA_INIT)
    c = primary(audited(packets, tmp_path)).classification
    assert c.addke == ((6, 36), (7, 37))
    assert list(c.addke_methods) == [36, 37]
    assert "evidence-mismatch" not in codes(c)
    assert "chosen-not-offered" not in codes(c)
    assert "addke-not-captured" in codes(c)  # ADDKE2's IKE_INTERMEDIATE never ran


# --- established only on evidence


@pytest.mark.parametrize("record_id", ["c01", "h01"])
def test_an_ike_auth_exchange_alone_is_not_proof_of_establishment(record_id, tmp_path):
    # Without keys and without anything after IKE_AUTH, AUTHENTICATION_FAILED cannot be
    # told from success.
    packets = captures.without_exchanges(captures.read(lab_path(record_id)), {INFORMATIONAL})
    (item,) = audited(packets, tmp_path)
    assert (item.negotiation.established, item.negotiation.established_basis) == (False, "none")


@pytest.mark.parametrize("record_id", ["c01", "h01"])
def test_later_exchanges_under_the_spis_infer_establishment(record_id):
    (item,) = audit_capture(lab_path(record_id)).negotiations
    assert (item.negotiation.established, item.negotiation.established_basis) == (True, "inferred")


# --- chosen-not-offered, downgrade across attempts, downgrade prevention


def test_a_responder_choosing_a_ke_the_initiator_never_offered_is_a_finding(tmp_path):
    # c01 offered and chose ECP-256 (manifest); give the response alone a Curve448 ADDKE1.
    packets = captures.edited(captures.read(lab_path("c01")),
                              lambda p: captures.add_transform(p, 6, 32, before_type=4),
                              exchange=IKE_SA_INIT, response=True)
    c = primary(audited(packets, tmp_path)).classification
    f = finding(c, "chosen-not-offered")
    assert f.severity == "high" and "Curve448" in f.detail


def test_a_classical_retry_after_a_refused_pq_attempt_is_one_downgrade(tmp_path):
    # x01: ML-KEM offered, NO_PROPOSAL_CHOSEN (manifest). c01: classical, nothing PQ
    # offered. The same lab peers; c01 moved to 5 s after x01.
    assert RECORDS["x01"]["pq_offered_by_initiator"] and not RECORDS["c01"]["pq_offered_by_initiator"]
    x01, c01 = captures.read(lab_path("x01")), captures.read(lab_path("c01"))
    assert captures.initiator_address(x01) == captures.initiator_address(c01)
    later = captures.shifted(c01, float(x01[-1].time - c01[0].time) + 5)
    items = audited(x01 + later, tmp_path)
    classical = next(i for i in items if i.classification.name == "classical")
    refused = next(i for i in items if i.classification.name == "failed")
    downgrades = [f for f in classical.classification.findings if f.code == "downgrade"]
    assert len(downgrades) == 1 and refused.negotiation.spi_i in downgrades[0].detail
    assert "downgrade" not in codes(refused.classification)


def test_a_classical_retry_after_a_hybrid_attempt_stalled_in_intermediate_is_a_downgrade(tmp_path):
    # h01 chose ML-KEM-768 (manifest); keep its IKE_SA_INIT and the initiator's
    # IKE_INTERMEDIATE requests only (the large answer never came back), then c01 5 s later.
    h01 = captures.read(lab_path("h01"))
    stalled = [p for p, h in zip(h01, captures.ike_headers(h01))
               if h and (h[0] == IKE_SA_INIT or (h[0] == IKE_INTERMEDIATE and not h[1] & captures.FLAG_RESPONSE))]
    c01 = captures.read(lab_path("c01"))
    items = audited(stalled + captures.shifted(c01, float(stalled[-1].time - c01[0].time) + 5), tmp_path)
    hybrid = next(i for i in items if i.classification.name == "hybrid-pq")
    classical = next(i for i in items if i.classification.name == "classical")
    assert not hybrid.negotiation.established
    [f] = [f for f in classical.classification.findings if f.code == "downgrade"]
    assert hybrid.negotiation.spi_i in f.detail and "never completed IKE_AUTH" in f.detail


def test_a_classical_negotiation_hours_after_a_refused_pq_attempt_is_no_downgrade(tmp_path):
    x01, c01 = captures.read(lab_path("x01")), captures.read(lab_path("c01"))
    later = captures.shifted(c01, float(x01[-1].time - c01[0].time) + 3 * 3600)
    classical = next(i for i in audited(x01 + later, tmp_path) if i.classification.name == "classical")
    assert "downgrade" not in codes(classical.classification)


@pytest.mark.parametrize("where, expected", [(None, "neither"), (False, "initiator-only"),
                                             (True, "responder-only"), ("both", "both")])
def test_downgrade_prevention_notify_per_negotiation(where, expected, tmp_path):
    packets = captures.read(lab_path("h01"))
    if where is not None:
        packets = captures.edited(packets, lambda p: captures.add_notify(p, iana.IKE_SA_INIT_FULL_TRANSCRIPT_AUTH),
                                  exchange=IKE_SA_INIT, response=None if where == "both" else where)
    c = primary(audited(packets, tmp_path)).classification
    assert c.downgrade_prevention == expected


def test_downgrade_prevention_is_unknown_without_both_ike_sa_init_messages(tmp_path):
    packets = captures.one_direction(captures.read(lab_path("h01")), from_initiator=False)
    assert primary(audited(packets, tmp_path)).classification.downgrade_prevention is None


# --- fragments on the wire


def test_ike_fragments_on_the_wire_prove_fragmentation_without_ike_sa_init(tmp_path):
    record = RECORDS["f01"]
    assert record["ike_fragmented"]
    packets = captures.without_exchanges(captures.read(lab_path("f01")), {IKE_SA_INIT})
    (item,) = audited(packets, tmp_path)
    assert item.negotiation.fragments_seen
    assert fragmentation_supported(item.negotiation) == (True, True)
    assert item.fragmentation.fragmentation_supported == (True, True)


# --- with keys: what decryption proves


def keyed(record_id: str):
    from ikeaudit.decrypt import parse_key_table

    path = str(PCAPS / RECORDS[record_id]["keys_file"])
    with open(path) as handle:
        return audit_capture(lab_path(record_id), keys=parse_key_table(handle.read(), path)).negotiations


@pytest.mark.parametrize("record_id", ["c01", "h01"])
def test_a_decrypted_ike_auth_response_with_auth_is_observed_establishment(record_id):
    (item,) = keyed(record_id)
    assert (item.negotiation.established, item.negotiation.established_basis) == (True, "observed")


def test_the_decrypted_ike_sa_rekey_proposal_is_the_rekeyed_sas_chosen_proposal():
    # r01: the IKE SA rekey (manifest create_child_sa, proto IKE) chose Curve25519 and
    # ADDKE1 ML-KEM-768 under aes256-sha256 (ike_proposals_responder): PRF_HMAC_SHA2_256.
    record = RECORDS["r01"]
    assert any(x["proto"] == "IKE" and x["addke"] == ["ADDKE1=36(ML-KEM-768)"] for x in record["create_child_sa"])
    assert record["ike_proposals_responder"].startswith("aes256-sha256-x25519")
    [child] = [i for i in keyed("r01") if not i.negotiation.sa_init_seen]
    chosen = child.classification.chosen_proposal
    assert chosen is not None and chosen.protocol == 1
    assert (chosen.ids(2), chosen.ids(4), chosen.ids(6)) == ((5,), (31,), (36,))
    assert chosen.ids(1) == (12,)
    assert child.classification.observation == "observed"


def test_the_ike_sa_init_chosen_proposal_is_the_classifications():
    (item,) = audit_capture(lab_path("c01")).negotiations
    assert item.classification.chosen_proposal == item.negotiation.chosen


# --- public third-party captures (../shared/pcaps/thirdparty/more)

MORE = THIRDPARTY / "more"


@needs_thirdparty
def test_openswan_response_alone_choosing_modp2048_is_classical_and_coherent():
    (item,) = audit_capture(str(MORE / "openswan__ct14-bigkeyI2_parentR1.pcap")).negotiations
    c = item.classification
    assert (c.name, c.ke_method, c.pq_offered_by_initiator) == ("classical", 14, None)
    assert c.observation == "observed"
    assert not any("no IKE_SA_INIT captured" in e for e in c.evidence)


@needs_thirdparty
def test_tcpdump_single_ike_auth_request_is_not_an_established_sa():
    items = audit_capture(str(MORE / "tcpdump__ikev2-id-normal.pcap")).negotiations
    assert items and not any(i.negotiation.established for i in items)


@needs_thirdparty
def test_arkime_synthetic_choice_never_offered_is_a_finding():
    items = audit_capture(str(MORE / "arkime__arkime_synthetic.pcap")).negotiations
    found = [f for i in items for f in i.classification.findings if f.code == "chosen-not-offered"]
    assert len(found) == 1 and found[0].severity == "high"
    assert "CHACHA20-POLY1305" in found[0].detail and "Curve448 (32)" in found[0].detail  # ENCR 28, KE 32


@needs_thirdparty
def test_suricata_midstream_strongswan_run_shows_fragmentation_and_intermediate_in_use():
    # README: captured mid-stream, IKE_INTERMEDIATE message ids 1-3, SKF fragments.
    items = audit_capture(str(MORE / "suricata-verify__detect-bypass-udp_input.pcap")).negotiations
    [n] = [i.negotiation for i in items if i.negotiation.intermediate_seen]
    assert n.midstream and n.fragments_seen
    assert intermediate_supported(n) == (True, True) and fragmentation_supported(n) == (True, True)
    assert not n.established  # IKE_AUTH seen, nothing after it
