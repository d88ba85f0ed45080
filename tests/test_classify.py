"""Tests for ikeaudit.classify, sans-IO: Negotiation records built directly and
classified. KE data sizes are FIPS 203's and the facts sheet's, written out here, not
read from ikeaudit.iana."""

from __future__ import annotations

import dataclasses

import pytest

from ikeaudit import iana
from ikeaudit.classify import KeCatalog, PrivateKe, classify, classify_all
from ikeaudit.records import KeyExchange, Negotiation, Proposal, SaInitRetry, TrackedMessage, Transform

A, B = "192.0.2.1", "192.0.2.2"
SPI_I, SPI_R = "1111111111111111", "2222222222222222"
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
IKE_INTERMEDIATE, IKE_FOLLOWUP_KE = 43, 44
USE_PPK = 16435

# FIPS 203 sizes (bytes): encapsulation key / ciphertext; a KE payload adds an 8-byte header.
MLKEM512 = (800, 768)
MLKEM768 = (1184, 1088)
MLKEM1024 = (1568, 1568)
KE_HEADER = 8
X25519 = 32


def proposal(ke: int = 31, *addke: tuple[int, int], number: int = 1) -> Proposal:
    """ENCR AES-GCM-16/256, PRF SHA2-256, KE `ke`, and (transform type, id) ADDKEs."""
    return Proposal(number, 1, "", (Transform(1, 20, 256), Transform(2, 5), Transform(4, ke),
                                    *(Transform(t, i) for t, i in addke)))


HYBRID_768 = proposal(31, (6, 36))
CLASSICAL_X25519 = proposal(31)


def tm(exchange: int, message_id: int, response: bool, *, encrypted: int = 0,
       ke: KeyExchange | None = None, frame: int = 1, ts: float = 1.0,
       ip_fragment_lengths: tuple[tuple[int, ...], ...] = ((),), retransmissions: int = 0,
       ike_fragments: int = 0, fragments_seen: tuple[int, ...] = (),
       notifies: tuple[int, ...] = ()) -> TrackedMessage:
    from_initiator = not response
    src, dst = (A, B) if from_initiator else (B, A)
    size = 28 + encrypted + (ke.data_length + KE_HEADER if ke else 0) + 100
    return TrackedMessage(
        exchange=exchange, message_id=message_id, response=response, from_initiator=from_initiator,
        src=src, dst=dst, sport=500, dport=500, first_frame=frame, frames=(frame,),
        first_timestamp=ts, last_timestamp=ts, udp_payload_bytes=(size,), ip_lengths=(size + 28,),
        ike_lengths=(size,), ike_bytes=size, assembly_seconds=0.0,
        encrypted_bytes=encrypted, ike_fragments=ike_fragments, fragments_seen=fragments_seen,
        ip_fragment_lengths=ip_fragment_lengths, retransmissions=retransmissions,
        payload_types=(46,) if encrypted else (33, 34, 40), notifies=notifies, key_exchange=ke,
    )


def sa_init(ke_i: KeyExchange | None = KeyExchange(31, X25519),
            ke_r: KeyExchange | None = KeyExchange(31, X25519)) -> list[TrackedMessage]:
    return [tm(IKE_SA_INIT, 0, False, ke=ke_i, frame=1, ts=1.0),
            tm(IKE_SA_INIT, 0, True, ke=ke_r, frame=2, ts=1.01)]


def intermediate(request_bytes: int, response_bytes: int, message_id: int = 1) -> list[TrackedMessage]:
    return [tm(IKE_INTERMEDIATE, message_id, False, encrypted=request_bytes, frame=10 + message_id, ts=1.02),
            tm(IKE_INTERMEDIATE, message_id, True, encrypted=response_bytes, frame=20 + message_id, ts=1.03)]


def auth(message_id: int = 2) -> list[TrackedMessage]:
    return [tm(IKE_AUTH, message_id, False, encrypted=400, frame=30, ts=1.04),
            tm(IKE_AUTH, message_id, True, encrypted=300, frame=31, ts=1.05)]


# Encrypted bytes that leave room for an ML-KEM-768 KE payload, with IV, padding and ICV.
ROOMY_768 = (MLKEM768[0] + KE_HEADER + 40, MLKEM768[1] + KE_HEADER + 40)


def negotiation(**kw) -> Negotiation:
    """An established hybrid Curve25519 + ML-KEM-768 negotiation unless told otherwise."""
    chosen = kw.pop("chosen", HYBRID_768)
    defaults = dict(
        capture="test", ike_version=2, spi_i=SPI_I, spi_r=SPI_R, initiator=A, responder=B,
        initiator_port=500, responder_port=500, ip_version=4, transport="udp", first_frame=1,
        first_seen=1.0, last_seen=1.05, state="established", sa_init_seen=True,
        offered=(chosen,) if chosen is not None else (HYBRID_768,), offered_ke=(31,), chosen=chosen,
        responder_ke=31, initiator_notifies=(16430, 16438), responder_notifies=(16430, 16438),
        error_notifies=(), retries=(),
        messages=(*sa_init(), *intermediate(*ROOMY_768), *auth()),
        vendor_ids=(), moved_to_4500=False, anomalies=(), established=True,
    )
    defaults.update(kw)
    return Negotiation(**defaults)


def codes(c) -> list[str]:
    return [f.code for f in c.findings]


def finding(c, code: str):
    matches = [f for f in c.findings if f.code == code]
    assert matches, (code, c.findings)
    return matches[0]


# --- hybrid (RFC 9370 + ML-KEM as ADDKE)


def test_hybrid_x25519_mlkem768_with_roomy_intermediate_is_hybrid_pq():
    c = classify(negotiation())
    assert c.name == "hybrid-pq"
    assert c.basis == "IKE_SA_INIT"
    assert c.ke_method == 31
    assert c.addke == ((6, 36),) and c.addke_methods == (36,)
    assert c.mlkem_parameter_set == "ML-KEM-768"
    assert c.nist_category == 3
    assert c.classical_strength_bits == 128
    assert c.pq_offered_by_initiator is True
    assert c.offered_ke_methods == (31, 36)
    assert "evidence-mismatch" not in codes(c)
    assert "downgrade" not in codes(c) and "classical-only" not in codes(c)
    assert any("room for the 1184-byte key" in e for e in c.evidence)
    assert any("room for the 1088-byte ciphertext" in e for e in c.evidence)


def test_hybrid_intermediate_exactly_the_ke_payload_size_is_enough():
    # 1184 + 8 = 1192 bytes for the key, 1088 + 8 = 1096 for the ciphertext.
    n = negotiation(messages=(*sa_init(), *intermediate(1192, 1096), *auth()))
    c = classify(n)
    assert c.name == "hybrid-pq"
    assert "evidence-mismatch" not in codes(c)


def test_hybrid_intermediate_request_too_small_is_evidence_mismatch():
    n = negotiation(messages=(*sa_init(), *intermediate(200, ROOMY_768[1]), *auth()))
    f = finding(classify(n), "evidence-mismatch")
    assert f.severity == "high"
    assert "200" in f.detail


def test_hybrid_intermediate_one_byte_short_of_the_key_is_evidence_mismatch():
    n = negotiation(messages=(*sa_init(), *intermediate(1191, 1096), *auth()))
    assert "evidence-mismatch" in codes(classify(n))


def test_hybrid_intermediate_response_too_small_for_the_ciphertext_is_evidence_mismatch():
    n = negotiation(messages=(*sa_init(), *intermediate(1192, 1095), *auth()))
    assert "evidence-mismatch" in codes(classify(n))


def test_hybrid_mlkem1024_needs_room_for_a_1568_byte_key():
    n = negotiation(chosen=proposal(31, (6, 37)),
                    messages=(*sa_init(), *intermediate(1192 + 100, 1576 + 40), *auth()))
    c = classify(n)
    assert c.mlkem_parameter_set == "ML-KEM-1024" and c.nist_category == 5
    assert "evidence-mismatch" in codes(c)  # 1292 < 1568 + 8


def test_hybrid_going_on_without_any_intermediate_is_unconfirmed_addke_not_captured():
    # lab h02 with its IKE_INTERMEDIATE dropped: the class says what was chosen, the
    # confidence that it was never seen.
    n = negotiation(messages=(*sa_init(), *auth(message_id=1)))
    c = classify(n)
    assert finding(c, "addke-not-captured").severity == "high"
    assert c.name == "hybrid-pq" and c.confidence == "unconfirmed"


def test_hybrid_capture_ending_after_sa_init_is_not_a_mismatch():
    n = negotiation(state="sa-init-done", established=False, messages=tuple(sa_init()))
    c = classify(n)
    assert c.name == "hybrid-pq"
    assert "evidence-mismatch" not in codes(c)
    assert any("not captured" in e for e in c.evidence)


def test_two_addkes_need_two_intermediate_exchanges():
    n = negotiation(chosen=proposal(31, (6, 36), (7, 37)),
                    messages=(*sa_init(), *intermediate(*ROOMY_768), *auth()))
    c = classify(n)
    assert c.addke == ((6, 36), (7, 37))
    assert c.mlkem_parameter_set == "ML-KEM-1024" and c.nist_category == 5
    assert "addke-not-captured" in codes(c) and c.confidence == "unconfirmed"


def test_intermediate_without_chosen_addke_is_classical_and_not_pq_evidence():
    n = negotiation(chosen=CLASSICAL_X25519, messages=(*sa_init(), *intermediate(100, 100), *auth()))
    c = classify(n)
    assert c.name == "classical"
    assert c.addke == ()
    assert any("not evidence of post-quantum" in e for e in c.evidence)
    assert "classical-only" in codes(c)


def test_addke1_none_chosen_is_classical_with_empty_addke():
    optional = proposal(31, (6, 0))
    n = negotiation(chosen=optional, offered=(optional,), messages=(*sa_init(), *auth(message_id=1)))
    c = classify(n)
    assert c.addke == ()
    assert c.name == "classical"
    assert c.mlkem_parameter_set is None and c.nist_category is None
    assert "evidence-mismatch" not in codes(c)


def test_optional_mlkem_offered_and_none_chosen_is_classical_pq_offered():
    offered = Proposal(1, 1, "", (*HYBRID_768.transforms, Transform(6, 0)))
    n = negotiation(chosen=proposal(31, (6, 0)), offered=(offered,), messages=(*sa_init(), *auth(1)))
    c = classify(n)
    assert c.name == "classical-pq-offered"
    assert "downgrade" in codes(c)


# --- pure ML-KEM in transform type 4


def pq_only(method: int, key: tuple[int, int], ke_i: int | None = None, ke_r: int | None = None) -> Negotiation:
    p = proposal(method)
    return negotiation(chosen=p, offered=(p,), offered_ke=(method,), responder_ke=method,
                       messages=(*sa_init(KeyExchange(method, key[0] if ke_i is None else ke_i),
                                          KeyExchange(method, key[1] if ke_r is None else ke_r)),
                                 *auth(message_id=1)))


def test_pq_only_mlkem1024_is_pq_only_category_5():
    c = classify(pq_only(37, MLKEM1024))
    assert c.name == "pq-only"
    assert c.mlkem_parameter_set == "ML-KEM-1024" and c.nist_category == 5
    assert c.addke == ()
    assert c.classical_strength_bits is None
    assert "evidence-mismatch" not in codes(c)
    assert "classical-only" not in codes(c)


def test_pq_only_mlkem768_checks_key_and_ciphertext_sizes():
    c = classify(pq_only(36, MLKEM768))
    assert (c.name, c.nist_category) == ("pq-only", 3)
    assert "evidence-mismatch" not in codes(c)


def test_pq_only_mlkem512_is_category_1():
    c = classify(pq_only(35, MLKEM512))
    assert (c.name, c.mlkem_parameter_set, c.nist_category) == ("pq-only", "ML-KEM-512", 1)
    assert "evidence-mismatch" not in codes(c)


def test_pq_only_with_wrong_initiator_ke_length_is_evidence_mismatch():
    c = classify(pq_only(37, MLKEM1024, ke_i=MLKEM768[0]))
    f = finding(c, "evidence-mismatch")
    assert f.severity == "high" and "1184" in f.detail


def test_pq_only_with_wrong_responder_ke_length_is_evidence_mismatch():
    # ML-KEM-768's ciphertext is 1088 bytes, not the 1184-byte key size.
    c = classify(pq_only(36, MLKEM768, ke_r=MLKEM768[0]))
    assert "evidence-mismatch" in codes(c)


def test_ke_payload_method_differing_from_chosen_ke_is_evidence_mismatch():
    n = negotiation(messages=(*sa_init(ke_r=KeyExchange(19, 64)), *intermediate(*ROOMY_768), *auth()))
    assert "evidence-mismatch" in codes(classify(n))


# --- downgrade and weak groups


def test_mlkem_offered_classical_chosen_is_classical_pq_offered_with_high_downgrade():
    n = negotiation(chosen=CLASSICAL_X25519, offered=(HYBRID_768,), messages=(*sa_init(), *auth(1)))
    c = classify(n)
    assert c.name == "classical-pq-offered"
    assert c.pq_offered_by_initiator is True
    assert finding(c, "downgrade").severity == "high"


def test_classical_offered_classical_chosen_is_no_downgrade():
    n = negotiation(chosen=CLASSICAL_X25519, offered=(CLASSICAL_X25519,), messages=(*sa_init(), *auth(1)))
    c = classify(n)
    assert c.name == "classical" and c.pq_offered_by_initiator is False
    assert "downgrade" not in codes(c)


def test_pq_offered_in_a_second_proposal_counts_as_offered():
    n = negotiation(chosen=CLASSICAL_X25519, offered=(CLASSICAL_X25519, proposal(37, number=2)),
                    messages=(*sa_init(), *auth(1)))
    assert classify(n).name == "classical-pq-offered"


# Facts sheet: 1 (768-bit MODP) 96 bytes, 2 (1024-bit) 128, 5 (1536-bit) 192, 22 128;
# RFC 8247 section 2.4 adds 23 and 24 (SHOULD NOT; RFC 5114 2048-bit MODP, 256 bytes).
@pytest.mark.parametrize("group,size", [(1, 96), (2, 128), (5, 192), (22, 128), (23, 256), (24, 256)])
def test_weak_group_chosen_is_a_weak_group_finding(group, size):
    p = proposal(group)
    n = negotiation(chosen=p, offered=(p,), offered_ke=(group,), responder_ke=group,
                    messages=(*sa_init(KeyExchange(group, size), KeyExchange(group, size)), *auth(1)))
    c = classify(n)
    assert c.name == "classical"
    assert "weak-group" in codes(c)
    assert "evidence-mismatch" not in codes(c)


@pytest.mark.parametrize("group", [14, 19, 31])
def test_acceptable_group_chosen_is_no_weak_group_finding(group):
    p = proposal(group)
    assert "weak-group" not in codes(classify(negotiation(chosen=p, offered=(p,))))


def test_weak_group_in_an_addke_slot_is_flagged():
    p = proposal(31, (6, 2))
    assert "weak-group" in codes(classify(negotiation(chosen=p, offered=(p,))))


# --- private-use and unassigned ids


def private_hybrid(method: int = 1081) -> Negotiation:
    p = proposal(31, (6, method))
    return negotiation(chosen=p, offered=(p,))


def test_private_use_addke_is_unknown_with_private_ke_finding():
    c = classify(private_hybrid())
    assert c.name == "unknown"
    assert "private-ke" in codes(c)
    assert c.pq_offered_by_initiator is False


def test_private_use_addke_vouched_pq_by_the_user_is_hybrid_pq():
    c = classify(private_hybrid(), KeCatalog({1081: PrivateKe("kyber768", "pq")}))
    assert c.name == "hybrid-pq"
    f = finding(c, "private-ke")
    assert "kyber768" in f.detail
    assert "user" in f.detail
    assert c.mlkem_parameter_set is None  # not an ML-KEM id: no category claimed


def test_private_use_addke_named_but_not_vouched_stays_unknown():
    c = classify(private_hybrid(), KeCatalog({1081: PrivateKe("kyber768")}))
    assert c.name == "unknown"
    f = finding(c, "private-ke")
    assert "kyber768" in f.detail


def test_private_use_id_vouched_pq_counts_as_pq_offered():
    n = negotiation(chosen=CLASSICAL_X25519, offered=(proposal(31, (6, 1081)),), messages=(*sa_init(), *auth(1)))
    assert classify(n).name == "classical"
    vouched = classify(n, KeCatalog({1081: PrivateKe("kyber768", "pq")}))
    assert vouched.name == "classical-pq-offered" and "downgrade" in codes(vouched)


def test_unassigned_id_is_neither_pq_nor_classical():
    method = iana.ke_method(300)
    assert not method.is_pq and not method.is_classical
    c = classify(private_hybrid(300))
    assert c.name not in ("hybrid-pq", "pq-only", "classical", "classical-pq-offered")
    assert c.name == "unknown"
    assert "unassigned-ke" in codes(c)


def test_unassigned_id_as_main_ke_is_unknown():
    p = proposal(300)
    c = classify(negotiation(chosen=p, offered=(p,), messages=(*sa_init(), *auth(1))))
    assert c.name == "unknown"


# --- PPK (RFC 8784)


def test_use_ppk_in_both_sa_init_messages_is_only_requested():
    # RFC 8784 decides PPK use in IKE_AUTH, which is encrypted.
    n = negotiation(initiator_notifies=(16430, USE_PPK), responder_notifies=(16430, USE_PPK))
    c = classify(n)
    assert c.ppk == "requested"
    assert any("USE_PPK" in e for e in c.evidence)


def test_use_ppk_only_in_the_request_is_requested():
    assert classify(negotiation(initiator_notifies=(USE_PPK,), responder_notifies=())).ppk == "requested"


def test_no_use_ppk_is_none():
    assert classify(negotiation()).ppk == "none"


def test_use_ppk_only_in_the_response_is_not_negotiated():
    assert classify(negotiation(initiator_notifies=(), responder_notifies=(USE_PPK,))).ppk != "negotiated"


# --- failed and incomplete negotiations


def test_no_proposal_chosen_is_failed_with_its_error():
    n = negotiation(chosen=None, offered=(HYBRID_768,), state="sa-init-failed", established=False,
                    responder_ke=None, error_notifies=((IKE_SA_INIT, 14),),
                    messages=(tm(IKE_SA_INIT, 0, False, ke=KeyExchange(31, 32)),
                              tm(IKE_SA_INIT, 0, True, notifies=(14,))))
    c = classify(n)
    assert c.name == "failed"
    assert c.error == "NO_PROPOSAL_CHOSEN"
    assert "pq-refused" in codes(c)  # ML-KEM was offered


def test_request_never_answered_is_incomplete():
    n = negotiation(chosen=None, spi_r="0" * 16, state="sa-init-requested", established=False,
                    responder_ke=None, responder_notifies=(),
                    messages=(tm(IKE_SA_INIT, 0, False, ke=KeyExchange(31, 32), retransmissions=4),))
    c = classify(n)
    assert c.name == "incomplete"
    assert c.error is None
    assert any("5 time(s)" in e for e in c.evidence)
    assert "fragmented-sa-init-unanswered" not in codes(c)


def test_ip_fragmented_unanswered_request_raises_fragmentation_finding():
    n = negotiation(chosen=None, spi_r="0" * 16, state="sa-init-requested", established=False,
                    offered=(proposal(37),), offered_ke=(37,), responder_ke=None,
                    messages=(tm(IKE_SA_INIT, 0, False, ke=KeyExchange(37, 1568),
                                 ip_fragment_lengths=((1500, 180),), retransmissions=3),))
    c = classify(n)
    assert c.name == "incomplete"
    assert finding(c, "fragmented-sa-init-unanswered").severity == "high"


def test_unanswered_retry_after_invalid_ke_is_incomplete_and_flags_fragmentation():
    # k03-like in the field: the responder asks for ML-KEM-768, the initiator retries
    # with a 1184-byte key, that request is IP-fragmented and never answered.
    n = negotiation(
        chosen=None, spi_r="0" * 16, state="sa-init-requested", established=False, responder_ke=None,
        offered=(proposal(31), proposal(36, number=2)), offered_ke=(31, 36),
        error_notifies=((IKE_SA_INIT, 17),),
        retries=(SaInitRetry("INVALID_KE_PAYLOAD", 2, 1.01, 31, 36),),
        responder_notifies=(17,),
        messages=(tm(IKE_SA_INIT, 0, False, ke=KeyExchange(31, 32), frame=1, ts=1.0),
                  tm(IKE_SA_INIT, 0, True, notifies=(17,), frame=2, ts=1.01),
                  tm(IKE_SA_INIT, 0, False, ke=KeyExchange(36, 1184), frame=3, ts=1.02,
                     ip_fragment_lengths=((1280, 100),), retransmissions=4)))
    c = classify(n)
    assert c.name == "incomplete"
    assert "fragmented-sa-init-unanswered" in codes(c)


def test_invalid_ke_demand_never_followed_is_failed():
    n = negotiation(chosen=None, spi_r="0" * 16, state="sa-init-retry-requested", established=False,
                    responder_ke=None, error_notifies=((IKE_SA_INIT, 17),),
                    retries=(SaInitRetry("INVALID_KE_PAYLOAD", 2, 1.01, 19, 31),),
                    messages=(tm(IKE_SA_INIT, 0, False, ke=KeyExchange(19, 64)),
                              tm(IKE_SA_INIT, 0, True, notifies=(17,))))
    c = classify(n)
    assert c.name == "failed" and c.error == "INVALID_KE_PAYLOAD"


def test_invalid_ke_retry_is_described_in_evidence():
    n = negotiation(retries=(SaInitRetry("INVALID_KE_PAYLOAD", 2, 1.01, 19, 31),), offered_ke=(19, 31))
    c = classify(n)
    assert c.name == "hybrid-pq"
    assert any("INVALID_KE_PAYLOAD" in e and "(19)" in e and "(31)" in e for e in c.evidence)


# --- SAs without IKE_SA_INIT, rekeys


def midstream(**kw) -> Negotiation:
    defaults = dict(spi_i="5555555555555555", spi_r="6666666666666666", state="midstream",
                    sa_init_seen=False, offered=(), offered_ke=(), chosen=None, responder_ke=None,
                    initiator_notifies=(), responder_notifies=(), first_frame=50, first_seen=100.0,
                    last_seen=100.1,
                    messages=(tm(INFORMATIONAL, 7, False, encrypted=80, frame=50, ts=100.0),
                              tm(INFORMATIONAL, 7, True, encrypted=80, frame=51, ts=100.1)))
    defaults.update(kw)
    return negotiation(**defaults)


def test_no_sa_init_seen_is_unknown():
    c = classify(midstream())
    assert c.name == "unknown"
    assert c.basis == "none"
    assert c.ke_method is None and c.addke == ()


def followup(message_id: int = 3) -> list[TrackedMessage]:
    return [tm(IKE_FOLLOWUP_KE, message_id, False, encrypted=1300, frame=40, ts=50.0),
            tm(IKE_FOLLOWUP_KE, message_id, True, encrypted=1200, frame=41, ts=50.01)]


def create_child(message_id: int = 2) -> list[TrackedMessage]:
    return [tm(CREATE_CHILD_SA, message_id, False, encrypted=300, frame=38, ts=49.9),
            tm(CREATE_CHILD_SA, message_id, True, encrypted=300, frame=39, ts=49.95)]


def rekeyed_child() -> Negotiation:
    return midstream(rekeyed_from=(SPI_I, SPI_R), rekey_linked_by="addresses-time-and-size",
                     rekey_evidence=f"no IKE_SA_INIT; same addresses as IKE SA {SPI_I}/{SPI_R}")


def test_rekeyed_child_of_hybrid_parent_with_followup_ke_inherits_hybrid():
    parent = negotiation(messages=(*sa_init(), *intermediate(*ROOMY_768), *auth(), *create_child(3),
                                   *followup(4)))
    c_parent, c_child = classify_all([parent, rekeyed_child()])
    assert c_parent.name == "hybrid-pq"
    assert c_child.name == "hybrid-pq"
    assert c_child.basis.startswith("inherited from parent IKE SA")
    assert (c_child.observation, c_child.confidence) == ("inferred", "inferred")
    assert c_child.addke == ((6, 36),) and c_child.mlkem_parameter_set == "ML-KEM-768"


def test_child_listed_before_its_parent_still_inherits():
    parent = negotiation(messages=(*sa_init(), *intermediate(*ROOMY_768), *auth(), *create_child(3),
                                   *followup(4)))
    c_child, c_parent = classify_all([rekeyed_child(), parent])
    assert c_child.name == "hybrid-pq" and c_child.basis.startswith("inherited from parent IKE SA")


def test_rekeyed_child_of_hybrid_parent_without_followup_ke_is_unknown():
    parent = negotiation(messages=(*sa_init(), *intermediate(*ROOMY_768), *auth(), *create_child(3)))
    c_parent, c_child = classify_all([parent, rekeyed_child()])
    assert c_parent.name == "hybrid-pq"
    assert c_child.name == "unknown"
    assert c_child.basis.startswith("inherited from parent IKE SA")
    assert finding(c_child, "rekey-without-followup-ke")


def test_rekeyed_child_of_classical_parent_is_classical_and_keeps_its_findings():
    parent = negotiation(chosen=CLASSICAL_X25519, offered=(CLASSICAL_X25519,),
                         messages=(*sa_init(), *auth(1), *create_child(3)))
    _, c_child = classify_all([parent, rekeyed_child()])
    assert c_child.name == "classical"
    assert "classical-only" in codes(c_child)


def test_midstream_sa_with_a_link_to_a_missing_parent_is_unknown():
    (c,) = classify_all([rekeyed_child()])
    assert c.name == "unknown" and c.basis == "none"


# --- IKEv1


def test_ikev1_is_classified_ikev1():
    n = negotiation(ike_version=1, state="ikev1", sa_init_seen=False, chosen=None, offered=(),
                    offered_ke=(), responder_ke=None, messages=(), ikev1_exchanges=(2, 2, 2, 32))
    c = classify(n)
    assert c.name == "ikev1"
    assert "ikev1" in codes(c)


def test_classify_all_keeps_order_and_length():
    ns = [negotiation(), midstream(), negotiation(chosen=CLASSICAL_X25519, offered=(CLASSICAL_X25519,))]
    assert [c.name for c in classify_all(ns)] == ["hybrid-pq", "unknown", "classical"]


def test_classification_is_a_pure_function_of_the_negotiation():
    n = negotiation()
    assert classify(n) == classify(dataclasses.replace(n))


# --- PPK (RFC 8784 in IKE_AUTH, RFC 9867 in IKE_INTERMEDIATE), decided by decrypted responses

PPK_IDENTITY, NO_PPK_AUTH, USE_PPK_INT, PPK_IDENTITY_KEY = 16436, 16437, 16445, 16446


def decrypted(message: TrackedMessage, *notifies: int, payloads: tuple[int, ...] = (41,)) -> TrackedMessage:
    from ikeaudit.records import Decryption, InnerPayloads, Notify

    inner = InnerPayloads(payload_types=payloads, notifies=tuple(Notify(t, 0, b"") for t in notifies))
    return dataclasses.replace(message, decryption=Decryption("decrypted", "test"), inner=inner)


def with_auth(request_notifies=(), response_notifies=(), **kw) -> Negotiation:
    request, response = auth()
    return negotiation(messages=(*sa_init(), *intermediate(*ROOMY_768), decrypted(request, *request_notifies),
                                 decrypted(response, *response_notifies)), **kw)


def test_ppk_identity_in_the_decrypted_ike_auth_response_is_negotiated():
    n = with_auth((PPK_IDENTITY, NO_PPK_AUTH), (PPK_IDENTITY,),
                  initiator_notifies=(USE_PPK,), responder_notifies=(USE_PPK,))
    assert classify(n).ppk == "negotiated"


def test_no_ppk_identity_in_the_decrypted_response_is_the_no_ppk_auth_fallback():
    n = with_auth((PPK_IDENTITY, NO_PPK_AUTH), (), initiator_notifies=(USE_PPK,), responder_notifies=(USE_PPK,))
    c = classify(n)
    assert c.ppk == "not-used"
    assert any("NO_PPK_AUTH" in e for e in c.evidence)


def test_ppk_identity_key_answered_in_intermediate_is_negotiated():
    request, response = intermediate(*ROOMY_768)
    n = negotiation(initiator_notifies=(USE_PPK_INT,), responder_notifies=(USE_PPK_INT,),
                    messages=(*sa_init(), decrypted(request, PPK_IDENTITY_KEY), decrypted(response, PPK_IDENTITY_KEY),
                              *auth()))
    assert classify(n).ppk == "negotiated"


def test_ppk_identity_key_only_in_the_intermediate_request_is_only_requested():
    request, response = intermediate(*ROOMY_768)
    n = negotiation(initiator_notifies=(USE_PPK_INT,), responder_notifies=(USE_PPK_INT,),
                    messages=(*sa_init(), decrypted(request, PPK_IDENTITY_KEY), response, *auth()))
    assert classify(n).ppk == "requested"


# --- confidence and what only verified/negotiated may mean


def test_a_verified_or_negotiated_class_never_carries_a_contradiction():
    small = negotiation(messages=(*sa_init(), *intermediate(200, 200), *auth()))
    c = classify(small)
    assert c.name == "hybrid-pq" and "evidence-mismatch" in codes(c)
    assert c.confidence == "contradicted"


def test_a_chosen_addke_slot_left_out_of_the_offer_may_come_back_as_none():
    # RFC 9370 section 2.2.1: NONE (0) in an ADDKE slot the initiator did not offer is no finding.
    chosen = proposal(31, (6, 36), (7, 0))
    n = negotiation(chosen=chosen, offered=(HYBRID_768,))
    assert "chosen-not-offered" not in codes(classify(n))


def test_a_transform_from_another_offered_proposal_is_chosen_not_offered():
    # RFC 7296 section 3.3.6: one proposal, not a mix of several.
    n = negotiation(chosen=proposal(19, (6, 36)), offered=(proposal(31, (6, 36)), proposal(19, number=2)),
                    offered_ke=(19,), responder_ke=19)
    assert "chosen-not-offered" in codes(classify(n))
