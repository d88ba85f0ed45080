"""Tests for ikeaudit.track, sans-IO: IkeMessage records built directly, fed to a Tracker,
and the Negotiations of finish() asserted. No bytes, no Scapy."""

from __future__ import annotations

import dataclasses
import hashlib

from ikeaudit.records import (
    Anomaly,
    Ikev1Message,
    IkeMessage,
    KeyExchange,
    Malformed,
    Notify,
    Proposal,
    SaInitRetry,
    Transform,
)
from ikeaudit.track import Tracker

A, B, C, D = "192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"
SPI_I = "1111111111111111"
SPI_R = "2222222222222222"
ZERO = "0" * 16
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
IKE_INTERMEDIATE, IKE_FOLLOWUP_KE = 43, 44
INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, COOKIE = 17, 14, 16390

HYBRID = Proposal(1, 1, "", (Transform(1, 20, 256), Transform(2, 7), Transform(4, 31), Transform(6, 36)))


def msg(*, exchange: int = IKE_SA_INIT, response: bool = False, initiator: bool = True,
        message_id: int = 0, spi_i: str = SPI_I, spi_r: str | None = None, frame: int = 1,
        ts: float = 1.0, src: str | None = None, dst: str | None = None,
        sport: int = 500, dport: int = 500, proposals: tuple[Proposal, ...] = (),
        ke: KeyExchange | None = None, notifies: tuple[Notify, ...] = (),
        fragment: tuple[int, int] | None = None, encrypted_length: int = 0,
        udp_payload_length: int = 300, ip_fragment_lengths: tuple[int, ...] = (),
        payload_types: tuple[int, ...] | None = None, anomalies: tuple[Anomaly, ...] = (),
        digest: bytes | None = None, vendor_ids: tuple[bytes, ...] = ()) -> IkeMessage:
    """An IkeMessage with sensible defaults: sent by the original initiator A to the
    responder B unless `initiator=False`; SPIr zero only for an IKE_SA_INIT request.
    The digest follows the content, so two calls with the same arguments are a
    retransmission; pass `digest` to make a changed message."""
    if spi_r is None:
        spi_r = ZERO if exchange == IKE_SA_INIT and not response else SPI_R
    if src is None:
        src, dst = (A, B) if initiator else (B, A)
    flags = (0x08 if initiator else 0) | (0x20 if response else 0)
    if payload_types is None:
        payload_types = (53,) if fragment else (46,) if exchange != IKE_SA_INIT else (33, 34, 40)
    if digest is None:
        key = repr((exchange, response, initiator, message_id, spi_i, spi_r, proposals, ke,
                    notifies, fragment, encrypted_length, udp_payload_length))
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return IkeMessage(
        frame=frame, frames=(frame,), timestamp=ts, first_timestamp=ts, ip_version=4,
        src=src, dst=dst, sport=sport, dport=dport, transport="udp",
        non_esp_marker=4500 in (sport, dport), ip_length=udp_payload_length + 28,
        ip_fragment_lengths=ip_fragment_lengths, udp_payload_length=udp_payload_length,
        spi_i=spi_i, spi_r=spi_r, exchange=exchange, flags=flags, message_id=message_id,
        length=udp_payload_length, payload_types=payload_types, proposals=proposals,
        key_exchange=ke, notifies=notifies, vendor_ids=vendor_ids, fragment=fragment,
        encrypted_length=encrypted_length, digest=digest, anomalies=anomalies,
    )


def ikev1(*, spi_r: str = ZERO, exchange: int = 2, frame: int = 1, ts: float = 1.0,
          initiator: bool = True, message_id: int = 0) -> Ikev1Message:
    src, dst = (A, B) if initiator else (B, A)
    return Ikev1Message(frame=frame, timestamp=ts, ip_version=4, src=src, dst=dst, sport=500,
                        dport=500, transport="udp", udp_payload_length=200, spi_i=SPI_I,
                        spi_r=spi_r, exchange=exchange, flags=0, message_id=message_id, length=200)


def track(*records, **kw):
    tracker = Tracker("test", **kw)
    for r in records:
        tracker.feed(r)
    return tracker.finish()


def one(*records, **kw):
    negotiations = track(*records, **kw)
    assert len(negotiations) == 1, [(n.spi_i, n.spi_r) for n in negotiations]
    return negotiations[0]


def invalid_ke(group: int) -> Notify:
    return Notify(INVALID_KE_PAYLOAD, 0, group.to_bytes(2, "big"))


def sa_init_request(ke: int = 31, *, frame: int = 1, ts: float = 1.0, spi_i: str = SPI_I, **kw) -> IkeMessage:
    return msg(proposals=(HYBRID,), ke=KeyExchange(ke, 32), frame=frame, ts=ts, spi_i=spi_i, **kw)


def sa_init_response(*, frame: int = 2, ts: float = 1.01, spi_i: str = SPI_I, spi_r: str = SPI_R, **kw) -> IkeMessage:
    kw.setdefault("proposals", (HYBRID,))
    kw.setdefault("ke", KeyExchange(31, 32))
    return msg(response=True, initiator=False, frame=frame, ts=ts, spi_i=spi_i, spi_r=spi_r, **kw)


def full_handshake(*, spi_i: str = SPI_I, spi_r: str = SPI_R, t0: float = 1.0, src: str = A,
                   dst: str = B, frame0: int = 1) -> list[IkeMessage]:
    def fwd(**kw):
        return dict(spi_i=spi_i, src=src, dst=dst, **kw)

    def back(**kw):
        return dict(spi_i=spi_i, src=dst, dst=src, **kw)

    return [
        msg(proposals=(HYBRID,), ke=KeyExchange(31, 32), frame=frame0, ts=t0, **fwd()),
        msg(response=True, initiator=False, spi_r=spi_r, proposals=(HYBRID,), ke=KeyExchange(31, 32),
            frame=frame0 + 1, ts=t0 + 0.01, **back()),
        msg(exchange=IKE_AUTH, message_id=1, spi_r=spi_r, frame=frame0 + 2, ts=t0 + 0.02, **fwd()),
        msg(exchange=IKE_AUTH, message_id=1, response=True, initiator=False, spi_r=spi_r,
            frame=frame0 + 3, ts=t0 + 0.03, **back()),
    ]


# --- the normal handshake


def test_sa_init_and_auth_pairs_make_one_negotiation_not_proven_established():
    # An IKE_AUTH response seen in clear headers only may carry AUTHENTICATION_FAILED.
    n = one(*full_handshake())
    assert (n.spi_i, n.spi_r) == (SPI_I, SPI_R)
    assert n.state == "established" and n.established is False and n.established_basis == "none"
    assert n.sa_init_seen is True
    assert (n.initiator, n.responder, n.initiator_port, n.responder_port) == (A, B, 500, 500)
    assert n.chosen == HYBRID and n.offered == (HYBRID,)
    assert n.offered_ke == (31,) and n.responder_ke == 31
    assert [(m.exchange, m.response) for m in n.messages] == \
        [(34, False), (34, True), (35, False), (35, True)]
    assert n.anomalies == () and n.retries == () and n.error_notifies == ()
    assert (n.ike_version, n.capture, n.first_frame) == (2, "test", 1)


def test_sa_init_response_alone_leaves_state_sa_init_done():
    n = one(*full_handshake()[:2])
    assert n.state == "sa-init-done" and n.established is False


def test_unanswered_request_stays_sa_init_requested():
    n = one(sa_init_request())
    assert n.state == "sa-init-requested" and n.spi_r == ZERO and n.chosen is None


def test_ike_intermediate_between_sa_init_and_auth_is_expected():
    h = full_handshake()
    inter = [msg(exchange=IKE_INTERMEDIATE, message_id=1, spi_r=SPI_R, ts=1.015, frame=10, encrypted_length=1300),
             msg(exchange=IKE_INTERMEDIATE, message_id=1, response=True, initiator=False, ts=1.016, frame=11,
                 encrypted_length=1200)]
    auth = [msg(exchange=IKE_AUTH, message_id=2, spi_r=SPI_R, ts=1.02, frame=12),
            msg(exchange=IKE_AUTH, message_id=2, response=True, initiator=False, ts=1.03, frame=13)]
    n = one(*h[:2], *inter, *auth)
    assert n.state == "established" and n.anomalies == ()
    assert [m.encrypted_bytes for m in n.messages if m.exchange == IKE_INTERMEDIATE] == [1300, 1200]


# --- retransmissions and retries


def test_retransmitted_request_is_counted_not_a_second_message():
    req = sa_init_request(frame=1, ts=1.0)
    again = sa_init_request(frame=2, ts=2.0)
    assert again.digest == req.digest
    n = one(req, again, sa_init_response(frame=3, ts=2.1))
    (request,) = [m for m in n.messages if not m.response]
    assert request.retransmissions == 1
    assert request.frames == (1, 2)
    assert (request.first_timestamp, request.last_timestamp) == (1.0, 2.0)
    assert n.offered_ke == (31,) and n.offered == (HYBRID,)
    assert n.retries == ()


def test_retransmitted_auth_request_is_counted_once():
    h = full_handshake()
    n = one(*h[:3], h[2], h[2], h[3])
    (auth,) = [m for m in n.messages if m.exchange == IKE_AUTH and not m.response]
    assert auth.retransmissions == 2
    assert n.state == "established" and n.anomalies == ()


def test_changed_request_after_invalid_ke_is_a_retry_of_the_same_negotiation():
    first = sa_init_request(19, frame=1, ts=1.0)
    refusal = msg(response=True, initiator=False, spi_r=ZERO, notifies=(invalid_ke(31),), frame=2, ts=1.01,
                  payload_types=(41,))
    second = sa_init_request(31, frame=3, ts=1.02)
    assert first.digest != second.digest
    n = one(first, refusal, second, sa_init_response(frame=4, ts=1.03))
    assert n.retries == (SaInitRetry("INVALID_KE_PAYLOAD", 2, 1.01, offered_ke=19, requested_ke=31),)
    assert n.offered_ke == (19, 31)
    assert (34, INVALID_KE_PAYLOAD) in n.error_notifies
    assert n.state == "sa-init-done" and n.spi_r == SPI_R
    requests = [m for m in n.messages if m.exchange == IKE_SA_INIT and not m.response]
    assert [m.first_frame for m in requests] == [1, 3]
    assert all(m.retransmissions == 0 for m in requests)


def test_invalid_ke_answer_alone_leaves_state_retry_requested():
    refusal = msg(response=True, initiator=False, notifies=(invalid_ke(36),), frame=2, payload_types=(41,),
                  spi_r=ZERO)
    n = one(sa_init_request(31), refusal)
    assert n.state == "sa-init-retry-requested"
    assert [(r.offered_ke, r.requested_ke) for r in n.retries] == [(31, 36)]


def test_retransmitted_invalid_ke_answer_is_not_a_second_retry():
    refusal = msg(response=True, initiator=False, notifies=(invalid_ke(31),), frame=2, payload_types=(41,),
                  spi_r=ZERO)
    n = one(sa_init_request(19), refusal, refusal)
    assert len(n.retries) == 1


NEW_SPI = "9999999999999999"


def retry_with_new_spi(delay: float, src: str = A):
    first = sa_init_request(19, frame=1, ts=1.0)
    refusal = msg(response=True, initiator=False, spi_r=ZERO, notifies=(invalid_ke(31),), frame=2, ts=1.01,
                  payload_types=(41,))
    second = sa_init_request(31, frame=3, ts=1.01 + delay, spi_i=NEW_SPI, src=src, dst=B)
    answer = sa_init_response(frame=4, ts=1.02 + delay, spi_i=NEW_SPI, dst=src)
    return track(first, refusal, second, answer)


def test_retry_with_new_spi_within_30_s_is_tied_to_the_same_negotiation():
    (n,) = retry_with_new_spi(5.0)
    assert [(r.reason, r.offered_ke, r.requested_ke, r.new_spi_i) for r in n.retries] == \
        [("INVALID_KE_PAYLOAD", 19, 31, NEW_SPI)]
    assert n.offered_ke == (19, 31)
    assert (n.spi_i, n.spi_r) == (NEW_SPI, SPI_R)
    assert n.state == "sa-init-done"


def test_retry_with_new_spi_after_30_s_is_a_new_negotiation():
    old, new = retry_with_new_spi(31.0)
    assert old.spi_i == SPI_I and old.state == "sa-init-retry-requested"
    assert old.retries[0].new_spi_i is None
    assert new.spi_i == NEW_SPI and new.offered_ke == (31,) and new.retries == ()


def test_request_with_new_spi_from_another_initiator_is_not_a_retry():
    negotiations = retry_with_new_spi(5.0, src=C)
    assert len(negotiations) == 2
    assert negotiations[0].retries[0].new_spi_i is None


def test_cookie_response_then_retry_has_reason_cookie():
    cookie = msg(response=True, initiator=False, spi_r=ZERO, notifies=(Notify(COOKIE, 0, b"c" * 16),),
                 frame=2, ts=1.01, payload_types=(41,))
    second = msg(proposals=(HYBRID,), ke=KeyExchange(31, 32), notifies=(Notify(COOKIE, 0, b"c" * 16),),
                 frame=3, ts=1.02)
    n = one(sa_init_request(frame=1), cookie, second, sa_init_response(frame=4, ts=1.03))
    assert [(r.reason, r.frame, r.requested_ke) for r in n.retries] == [("COOKIE", 2, None)]
    assert n.state == "sa-init-done"
    assert n.error_notifies == ()


def test_no_proposal_chosen_fails_the_sa_init():
    refusal = msg(response=True, initiator=False, spi_r=ZERO, notifies=(Notify(NO_PROPOSAL_CHOSEN, 0, b""),),
                  frame=2, payload_types=(41,))
    n = one(sa_init_request(), refusal)
    assert n.state == "sa-init-failed"
    assert (34, NO_PROPOSAL_CHOSEN) in n.error_notifies
    assert n.chosen is None and n.established is False
    assert n.responder_notifies == (NO_PROPOSAL_CHOSEN,)


def test_notifies_of_the_sa_init_pair_are_recorded():
    req = msg(proposals=(HYBRID,), ke=KeyExchange(31, 32),
              notifies=(Notify(16430, 0, b""), Notify(16438, 0, b""), Notify(16435, 0, b"")))
    resp = sa_init_response(notifies=(Notify(16430, 0, b""), Notify(16435, 0, b"")))
    n = one(req, resp)
    assert n.initiator_notifies == (16430, 16438, 16435)
    assert n.responder_notifies == (16430, 16435)


# --- IKE fragments (SKF)


def skf(number: int, total: int, *, size: int, frame: int, ts: float, response: bool = False,
        message_id: int = 1) -> IkeMessage:
    return msg(exchange=IKE_INTERMEDIATE, message_id=message_id, response=response, initiator=not response,
               fragment=(number, total), udp_payload_length=size, encrypted_length=size - 40,
               frame=frame, ts=ts)


def test_two_skf_datagrams_make_one_tracked_message():
    h = full_handshake()
    n = one(*h[:2], skf(1, 2, size=1200, frame=10, ts=1.015), skf(2, 2, size=400, frame=11, ts=1.016))
    (m,) = [m for m in n.messages if m.exchange == IKE_INTERMEDIATE]
    assert m.ike_fragments == 2
    assert m.fragments_seen == (1, 2)
    assert m.udp_payload_bytes == (1200, 400)
    assert m.encrypted_bytes == 1160 + 360
    assert m.ike_bytes == 1600
    assert m.frames == (10, 11)
    assert m.retransmissions == 0
    assert m.complete
    assert n.anomalies == ()


def test_skf_fragments_out_of_order_are_grouped_in_fragment_order():
    h = full_handshake()
    n = one(*h[:2], skf(2, 2, size=400, frame=10, ts=1.015), skf(1, 2, size=1200, frame=11, ts=1.016))
    (m,) = [m for m in n.messages if m.exchange == IKE_INTERMEDIATE]
    assert m.fragments_seen == (1, 2)
    assert m.udp_payload_bytes == (1200, 400)
    assert m.complete


def test_retransmitted_skf_fragment_is_counted_not_added():
    h = full_handshake()
    frag1 = skf(1, 2, size=1200, frame=10, ts=1.015)
    n = one(*h[:2], frag1, skf(2, 2, size=400, frame=11, ts=1.016), frag1)
    (m,) = [m for m in n.messages if m.exchange == IKE_INTERMEDIATE]
    assert m.fragments_seen == (1, 2) and m.udp_payload_bytes == (1200, 400)
    assert m.retransmissions == 1


def test_fragmented_request_and_response_are_two_messages():
    h = full_handshake()
    n = one(*h[:2], skf(1, 2, size=1200, frame=10, ts=1.015), skf(2, 2, size=400, frame=11, ts=1.016),
            skf(1, 2, size=1100, frame=12, ts=1.017, response=True),
            skf(2, 2, size=300, frame=13, ts=1.018, response=True))
    inter = [m for m in n.messages if m.exchange == IKE_INTERMEDIATE]
    assert [(m.response, m.udp_payload_bytes) for m in inter] == [(False, (1200, 400)), (True, (1100, 300))]


def test_missing_skf_fragment_is_an_incomplete_anomaly():
    h = full_handshake()
    n = one(*h[:2], skf(1, 3, size=1200, frame=10, ts=1.015), skf(3, 3, size=400, frame=11, ts=1.016))
    (m,) = [m for m in n.messages if m.exchange == IKE_INTERMEDIATE]
    assert m.ike_fragments == 3 and m.fragments_seen == (1, 3)
    assert not m.complete
    incomplete = [a for a in n.anomalies if a.kind == "incomplete"]
    assert len(incomplete) == 1
    assert "2" in incomplete[0].detail


# --- SAs met in the middle, and rekeys


def midstream(spi_i: str = "5555555555555555", spi_r: str = "6666666666666666", *, ts: float = 100.0,
              src: str = A, dst: str = B, frame: int = 50) -> list[IkeMessage]:
    return [msg(exchange=INFORMATIONAL, message_id=7, spi_i=spi_i, spi_r=spi_r, src=src, dst=dst,
                frame=frame, ts=ts),
            msg(exchange=INFORMATIONAL, message_id=7, response=True, initiator=False, spi_i=spi_i,
                spi_r=spi_r, src=dst, dst=src, frame=frame + 1, ts=ts + 0.01)]


def test_sa_without_sa_init_is_midstream_and_established_by_inference():
    n = one(*midstream())
    assert n.sa_init_seen is False and n.midstream is True
    assert n.state == "midstream"
    assert n.established is True and n.established_basis == "inferred"
    assert n.anomalies == ()
    assert (n.initiator, n.responder) == (A, B)
    assert len(n.messages) == 2


def rekeying_parent(t: float = 50.0) -> list[IkeMessage]:
    return [*full_handshake(),
            msg(exchange=CREATE_CHILD_SA, message_id=2, spi_r=SPI_R, frame=20, ts=t),
            msg(exchange=CREATE_CHILD_SA, message_id=2, response=True, initiator=False, frame=21,
                ts=t + 0.01)]


def test_midstream_sa_after_parents_create_child_sa_is_linked_as_rekey():
    parent, child = track(*rekeying_parent(50.0), *midstream(ts=60.0))
    assert child.rekeyed_from == (parent.spi_i, parent.spi_r) == (SPI_I, SPI_R)
    assert child.rekey_evidence is not None
    assert SPI_I in child.rekey_evidence and SPI_R in child.rekey_evidence
    assert parent.rekeyed_from is None


def test_midstream_sa_between_other_addresses_is_not_linked():
    parent, other = track(*rekeying_parent(50.0), *midstream(ts=60.0, src=C, dst=D))
    assert other.rekeyed_from is None and other.rekey_evidence is None


def test_midstream_sa_before_parents_create_child_sa_is_not_linked():
    negotiations = track(*full_handshake(), *midstream(ts=20.0),
                         msg(exchange=CREATE_CHILD_SA, message_id=2, spi_r=SPI_R, frame=80, ts=50.0))
    child = next(n for n in negotiations if n.spi_i == "5555555555555555")
    assert child.rekeyed_from is None


def test_unexpected_exchange_order_is_an_anomaly_and_the_message_still_counts():
    late = msg(exchange=IKE_INTERMEDIATE, message_id=2, spi_r=SPI_R, frame=9, ts=2.0)
    n = one(*full_handshake(), late)
    assert any(a.kind == "malformed" and a.frame == 9 for a in n.anomalies)
    assert (IKE_INTERMEDIATE, False) in [(m.exchange, m.response) for m in n.messages]


def test_auth_request_after_an_uncaptured_sa_init_response_is_one_direction_not_an_anomaly():
    auth = msg(exchange=IKE_AUTH, message_id=1, spi_r=SPI_R, frame=2, ts=1.01)
    n = one(sa_init_request(frame=1), auth)
    assert n.anomalies == () and n.state == "auth-requested"
    assert [(m.exchange, m.response) for m in n.messages] == [(34, False), (35, False)]


def test_auth_response_without_its_request_is_one_direction_not_an_anomaly():
    h = full_handshake()
    n = one(*h[:2], h[3])
    assert n.anomalies == () and n.state == "established"


def test_message_anomalies_are_carried_to_the_negotiation():
    bad = Anomaly("malformed", "3 bytes after the last payload", 1)
    n = one(msg(proposals=(HYBRID,), ke=KeyExchange(31, 32), anomalies=(bad,)))
    assert bad in n.anomalies


def test_malformed_records_are_kept_aside_not_negotiations():
    tracker = Tracker("t")
    bad = Malformed(3, 1.0, A, B, 500, 500, Anomaly("malformed", "short", 3))
    tracker.feed(bad)
    assert tracker.finish() == []
    assert tracker.malformed == [bad]


# --- bounded tables


def test_full_table_overflows_with_an_anomaly_and_keeps_every_sa():
    sas = [sa_init_request(spi_i=f"{i:016x}", frame=i, ts=float(i)) for i in (1, 2, 3)]
    negotiations = track(*sas, max_negotiations=2)
    assert sorted(n.spi_i for n in negotiations) == [f"{i:016x}" for i in (1, 2, 3)]
    overflow = [a for n in negotiations for a in n.anomalies if a.kind == "overflow"]
    assert len(overflow) == 1


def test_overflow_closes_the_sa_idle_the_longest():
    one_ = sa_init_request(spi_i="0000000000000001", frame=1, ts=1.0)
    two = sa_init_request(spi_i="0000000000000002", frame=2, ts=2.0)
    one_answer = sa_init_response(spi_i="0000000000000001", spi_r="00000000000000a1", frame=3, ts=3.0)
    three = sa_init_request(spi_i="0000000000000003", frame=4, ts=4.0)
    negotiations = {n.spi_i: n for n in track(one_, two, one_answer, three, max_negotiations=2)}
    assert [a.kind for a in negotiations["0000000000000002"].anomalies] == ["overflow"]
    assert negotiations["0000000000000001"].anomalies == ()
    assert negotiations["0000000000000001"].state == "sa-init-done"


# --- IKEv1


def test_ikev1_messages_with_the_same_cookies_are_one_negotiation():
    n = one(ikev1(frame=1, ts=1.0),
            ikev1(spi_r="bbbbbbbbbbbbbbbb", frame=2, ts=1.1, initiator=False),
            ikev1(spi_r="bbbbbbbbbbbbbbbb", frame=3, ts=1.2),
            ikev1(spi_r="bbbbbbbbbbbbbbbb", frame=4, ts=1.3, exchange=32, message_id=9))
    assert n.ike_version == 1
    assert (n.spi_i, n.spi_r) == (SPI_I, "bbbbbbbbbbbbbbbb")
    assert n.ikev1_exchanges == (2, 2, 2, 32)
    assert (n.initiator, n.responder) == (A, B)
    assert (n.first_seen, n.last_seen) == (1.0, 1.3)


def test_ikev1_and_ikev2_are_kept_apart():
    negotiations = track(ikev1(), *full_handshake())
    assert sorted(n.ike_version for n in negotiations) == [1, 2]


# --- roles come from the I flag


def test_i_flag_decides_roles_when_the_first_captured_message_is_a_response():
    resp = sa_init_response(frame=1, ts=1.0, sport=500, dport=500)
    auth = msg(exchange=IKE_AUTH, message_id=1, spi_r=SPI_R, frame=2, ts=1.1)
    n = one(resp, auth)
    assert (n.initiator, n.responder) == (A, B)
    assert n.sa_init_seen is False


def test_i_flag_decides_roles_when_the_responder_sends_the_first_request():
    dpd = msg(exchange=INFORMATIONAL, message_id=4, initiator=False, spi_r=SPI_R, frame=1, ts=1.0,
              src=B, dst=A, sport=4500, dport=4501)
    n = one(dpd)
    assert (n.initiator, n.responder) == (A, B)
    assert (n.initiator_port, n.responder_port) == (4501, 4500)
    (m,) = n.messages
    assert m.from_initiator is False and m.response is False


def test_requests_of_both_sides_with_the_same_message_id_are_distinct():
    h = full_handshake()
    from_initiator = msg(exchange=INFORMATIONAL, message_id=2, spi_r=SPI_R, frame=10, ts=2.0)
    from_responder = msg(exchange=INFORMATIONAL, message_id=2, initiator=False, spi_r=SPI_R, frame=11, ts=2.1)
    n = one(*h, from_initiator, from_responder)
    info = [m for m in n.messages if m.exchange == INFORMATIONAL]
    assert [(m.from_initiator, m.retransmissions) for m in info] == [(True, 0), (False, 0)]


def test_request_retransmitted_after_the_response_was_captured_is_still_a_retransmission():
    # Seen at the responder: its answer was lost on the way back, so the initiator
    # repeats the very same request (RFC 7296 section 2.1) and the responder repeats
    # its answer. One negotiation, one request sent twice.
    req = sa_init_request(frame=1, ts=1.0)
    resp = sa_init_response(frame=2, ts=1.01)
    n = one(req, resp, sa_init_request(frame=3, ts=2.0), sa_init_response(frame=4, ts=2.01))
    request = [m for m in n.messages if m.exchange == IKE_SA_INIT and not m.response]
    response = [m for m in n.messages if m.exchange == IKE_SA_INIT and m.response]
    assert [m.retransmissions for m in request] == [1]
    assert [m.retransmissions for m in response] == [1]
    assert n.state == "sa-init-done" and n.offered_ke == (31,)


def test_retry_after_refusal_with_a_responder_spi_stays_one_attempt():
    """Some responders put their SPI in an INVALID_KE_PAYLOAD answer; the retry (SPIr 0)
    and its answer (another SPIr) still belong to the same attempt."""
    refusal = Notify(INVALID_KE_PAYLOAD, 0, (31).to_bytes(2, "big"))
    [n] = track(
        msg(frame=1, ke=KeyExchange(19, 64), proposals=(HYBRID,)),
        msg(frame=2, response=True, initiator=False, spi_r="3333333333333333", notifies=(refusal,),
            payload_types=(41,)),
        msg(frame=3, ke=KeyExchange(31, 32), proposals=(HYBRID,), udp_payload_length=280),
        msg(frame=4, response=True, initiator=False, proposals=(HYBRID,), ke=KeyExchange(31, 32)),
    )
    assert n.spi_r == SPI_R
    assert [(r.reason, r.offered_ke, r.requested_ke) for r in n.retries] == [("INVALID_KE_PAYLOAD", 19, 31)]
    assert n.chosen == HYBRID


# --- established only on evidence


def decrypted_auth_response(*payloads: int, notifies: tuple[int, ...] = (), message_id: int = 1, frame: int = 4):
    from ikeaudit.records import Decryption, InnerPayloads

    m = msg(exchange=IKE_AUTH, message_id=message_id, response=True, initiator=False, frame=frame, ts=1.03 + frame)
    inner = InnerPayloads(payload_types=payloads, notifies=tuple(Notify(t, 0, b"") for t in notifies))
    return dataclasses.replace(m, decryption=Decryption("decrypted", "test"), inner=inner)


def test_decrypted_auth_response_with_auth_is_observed_establishment():
    n = one(*full_handshake()[:3], decrypted_auth_response(36, 39, 33, 44, 45))
    assert (n.established, n.established_basis) == (True, "observed")


def test_decrypted_authentication_failed_is_not_established_whatever_follows():
    n = one(*full_handshake()[:3], decrypted_auth_response(41, notifies=(24,)),
            msg(exchange=INFORMATIONAL, message_id=2, spi_r=SPI_R, frame=9, ts=9.0))
    assert (n.established, n.established_basis) == (False, "none")


def test_an_eap_round_is_a_round_not_establishment():
    # RFC 7296 section 2.16: the responder's first IKE_AUTH response carries its AUTH with EAP.
    n = one(*full_handshake()[:3], decrypted_auth_response(36, 37, 39, 48))
    assert (n.established, n.established_basis) == (False, "none")
    eap_done = msg(exchange=IKE_AUTH, message_id=2, spi_r=SPI_R, frame=6, ts=7.0)
    n = one(*full_handshake()[:3], decrypted_auth_response(36, 37, 39, 48), eap_done,
            decrypted_auth_response(39, 33, 44, 45, message_id=2, frame=7))
    assert (n.established, n.established_basis) == (True, "observed")


def test_a_stray_ike_auth_request_never_opens_an_established_sa():
    n = one(msg(exchange=IKE_AUTH, message_id=1, spi_r=SPI_R))
    assert n.midstream and (n.established, n.established_basis) == (False, "none")


def test_an_unrelated_sa_past_the_rekey_window_is_not_linked():
    parent, child = track(*rekeying_parent(50.0), *midstream(ts=50.0 + 3 * 3600))
    assert child.rekeyed_from is None
    parent, child = track(*rekeying_parent(50.0), *midstream(ts=60.0), rekey_window=5.0)
    assert child.rekeyed_from is None


def test_an_sa_whose_own_ike_auth_was_captured_is_never_a_rekey():
    own_auth = [msg(exchange=IKE_AUTH, message_id=1, spi_i="5555555555555555", spi_r="6666666666666666",
                    frame=60, ts=60.0), *midstream(ts=60.5)]
    parent, child = track(*rekeying_parent(50.0), *own_auth)
    assert child.rekeyed_from is None


def test_a_create_child_sa_too_small_for_the_parents_ke_is_no_rekey_link():
    small = [*full_handshake(),
             msg(exchange=CREATE_CHILD_SA, message_id=2, spi_r=SPI_R, frame=20, ts=50.0, udp_payload_length=80),
             msg(exchange=CREATE_CHILD_SA, message_id=2, response=True, initiator=False, frame=21, ts=50.01,
                 udp_payload_length=80)]
    parent, child = track(*small, *midstream(ts=60.0))
    assert child.rekeyed_from is None


def test_wire_evidence_flags_intermediate_and_fragments():
    n = one(*full_handshake()[:2],
            msg(exchange=IKE_INTERMEDIATE, message_id=1, spi_r=SPI_R, fragment=(1, 2), frame=3, ts=1.02),
            msg(exchange=IKE_INTERMEDIATE, message_id=1, spi_r=SPI_R, fragment=(2, 2), frame=4, ts=1.03))
    assert n.intermediate_seen and n.fragments_seen and not n.midstream


def test_a_long_chain_of_rekeys_between_the_same_peers_links_each_sa_to_the_one_before():
    # Two gateway pairs, each rekeying every 100 s for hours; every SA after the first of its
    # pair is met mid-stream 10 s after its predecessor's CREATE_CHILD_SA, and the
    # predecessor falls silent then, so each SA's parent is the one before it by construction.
    count = 150
    records: list[IkeMessage] = []
    expected: dict[str, tuple[str, str] | None] = {}
    for pair, (src, dst) in enumerate(((A, B), (C, D))):
        previous = None
        for k in range(count):
            spi_i, spi_r = f"{pair + 1:02x}{k:014x}", f"{pair + 8:02x}{k:014x}"
            start = 100.0 * k + 10 + pair
            records += midstream(spi_i, spi_r, ts=start, src=src, dst=dst, frame=1)
            records += [msg(exchange=CREATE_CHILD_SA, message_id=8, spi_i=spi_i, spi_r=spi_r, src=src, dst=dst,
                            ts=start + 90),
                        msg(exchange=CREATE_CHILD_SA, message_id=8, response=True, initiator=False, spi_i=spi_i,
                            spi_r=spi_r, src=dst, dst=src, ts=start + 90.01)]
            expected[spi_i] = previous
            previous = (spi_i, spi_r)
    records.sort(key=lambda m: m.timestamp)
    negotiations = track(*records, max_negotiations=10 * count)
    assert {n.spi_i: n.rekeyed_from for n in negotiations} == expected
