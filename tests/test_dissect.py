"""Tests for ikeaudit.dissect, sans-IO: IKE messages built with Scapy's own IKEv2 layers
(extended by ikeaudit.layers) or by hand with struct, wrapped in an IkeDatagram, and the
returned record asserted. Sizes come from FIPS 203 (see ikev2-pq-facts.md), not from
ikeaudit's own tables."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.ikev2 import IKEv2_Nonce

from ikeaudit.dissect import dissect
from ikeaudit.layers import (
    IKEv2,
    IKEv2_Encrypted,
    IKEv2_Encrypted_Fragment,
    IKEv2_KE,
    IKEv2_Notify,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2_VendorID,
)
from ikeaudit.records import (
    IkeDatagram,
    Ikev1Message,
    IkeMessage,
    KeyExchange,
    Malformed,
    Notify,
    Transform,
)

A, B = "192.0.2.1", "192.0.2.2"
SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")

# FIPS 203, table 3: encapsulation key / ciphertext sizes in bytes.
MLKEM768_EK, MLKEM768_CT = 1184, 1088
MLKEM1024_EK = 1568


def datagram(payload: bytes, *, frame: int = 1, ts: float = 10.0, ike_version: int = 2,
             src: str = A, dst: str = B, sport: int = 500, dport: int = 500,
             ip_fragment_lengths: tuple[int, ...] = ()) -> IkeDatagram:
    return IkeDatagram(
        frame=frame, frames=(frame,), timestamp=ts, first_timestamp=ts, ip_version=4,
        src=src, dst=dst, sport=sport, dport=dport, transport="udp",
        non_esp_marker=sport == 4500 or dport == 4500, ip_length=20 + 8 + len(payload),
        ip_fragment_lengths=ip_fragment_lengths, udp_payload_length=len(payload),
        payload=payload, ike_version=ike_version,
    )


def run(payload: bytes, **kw):
    return dissect(datagram(payload, **kw))


def message(payload: bytes, **kw) -> IkeMessage:
    record = run(payload, **kw)
    assert isinstance(record, IkeMessage), record
    return record


def header(exchange=34, flags="Initiator", message_id=0, spi_r=bytes(8), **kw) -> IKEv2:
    return IKEv2(init_SPI=SPI_I, resp_SPI=spi_r, exch_type=exchange, flags=flags, id=message_id, **kw)


def hybrid_proposal(trans_nb: int | None = 5) -> IKEv2_Proposal:
    """AES-GCM-16/256, PRF-HMAC-SHA2-512, KE Curve25519, ADDKE1 ML-KEM-768, ADDKE2 NONE."""
    return IKEv2_Proposal(
        proposal=1, proto=1, trans_nb=trans_nb,
        trans=IKEv2_Transform(transform_type=1, transform_id=20, length=12, key_length=256)
        / IKEv2_Transform(transform_type=2, transform_id=7)
        / IKEv2_Transform(transform_type=4, transform_id=31)
        / IKEv2_Transform(transform_type=6, transform_id=36)
        / IKEv2_Transform(transform_type=7, transform_id=0),
    )


def sa_init_request(**kw) -> bytes:
    return bytes(header(**kw) / IKEv2_SA(prop=hybrid_proposal())
                 / IKEv2_KE(group=31, ke=b"\x42" * 32) / IKEv2_Nonce(nonce=b"\x07" * 32))


def raw_message(first_payload: int, body: bytes, *, exchange: int = 34, flags: int = 0x20,
                length: int | None = None) -> bytes:
    """An IKEv2 message built by hand: the header's Length is right unless given."""
    length = 28 + len(body) if length is None else length
    return SPI_I + SPI_R + struct.pack("!BBBBII", first_payload, 0x20, exchange, flags, 0, length) + body


def raw_payload(next_payload: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BBH", next_payload, 0, 4 + len(body) if length is None else length) + body


def with_length(data: bytes, length: int) -> bytes:
    return data[:24] + struct.pack("!I", length) + data[28:]


def kinds(m: IkeMessage) -> list[str]:
    return [a.kind for a in m.anomalies]


# --- Scapy's own layers know the post-quantum numbers (ikeaudit.layers)


def test_scapy_names_addke_transform_types_and_mlkem_ids():
    t = IKEv2_Transform(bytes(IKEv2_Transform(transform_type=6, transform_id=36)))
    assert t.sprintf("%transform_type% %transform_id%") == "ADDKE1 ML-KEM-768"
    t = IKEv2_Transform(bytes(IKEv2_Transform(transform_type=7, transform_id=0)))
    assert t.sprintf("%transform_type% %transform_id%") == "ADDKE2 NONE"
    t = IKEv2_Transform(bytes(IKEv2_Transform(transform_type=4, transform_id=37)))
    assert t.sprintf("%transform_type% %transform_id%") == "KE ML-KEM-1024"


def test_scapy_repr_of_a_dissected_hybrid_proposal_shows_names_not_numbers():
    text = repr(IKEv2(sa_init_request()))
    assert "ADDKE1" in text and "ML-KEM-768" in text and "Curve25519" in text
    assert "transform_type=6" not in text and "transform_id=36" not in text


def test_scapy_names_exchange_44_ike_followup_ke():
    assert IKEv2(bytes(header(exchange=44))).sprintf("%exch_type%") == "IKE_FOLLOWUP_KE"
    assert IKEv2(bytes(header(exchange=43))).sprintf("%exch_type%") == "IKE_INTERMEDIATE"


def test_scapy_names_notify_16441_additional_key_exchange():
    n = IKEv2_Notify(bytes(IKEv2_Notify(type=16441)))
    assert n.sprintf("%type%") == "ADDITIONAL_KEY_EXCHANGE"


def test_scapy_names_ppk_notifies_without_legacy_prefix():
    for value, name in ((16435, "USE_PPK"), (16436, "PPK_IDENTITY"), (16437, "NO_PPK_AUTH"),
                        (16438, "INTERMEDIATE_EXCHANGE_SUPPORTED")):
        assert IKEv2_Notify(bytes(IKEv2_Notify(type=value))).sprintf("%type%") == name


def test_building_a_transform_by_name_gives_the_registry_bytes():
    built = bytes(IKEv2_Transform(transform_type="ADDKE2", transform_id="ML-KEM-1024"))
    # next payload 0, reserved, length 8, type 7 (ADDKE2), reserved, id 37 (ML-KEM-1024)
    assert built == struct.pack("!BBHBBH", 0, 0, 8, 7, 0, 37)


def test_building_header_notify_and_ke_by_name_gives_the_registry_numbers():
    assert bytes(IKEv2(exch_type="IKE_FOLLOWUP_KE"))[18] == 44
    assert bytes(IKEv2_Notify(type="ADDITIONAL_KEY_EXCHANGE"))[6:8] == struct.pack("!H", 16441)
    assert bytes(IKEv2_KE(group="ML-KEM-768"))[4:6] == struct.pack("!H", 36)


# --- clear payloads become records


def test_hybrid_proposal_dissects_into_transforms_with_addke_slots():
    m = message(sa_init_request())
    (p,) = m.proposals
    assert (p.number, p.protocol, p.spi) == (1, 1, "")
    assert p.transforms == (
        Transform(type=1, id=20, key_length=256),
        Transform(type=2, id=7),
        Transform(type=4, id=31),
        Transform(type=6, id=36),
        Transform(type=7, id=0),
    )
    assert p.ids(6) == (36,) and p.ids(7) == (0,) and p.ids(4) == (31,)
    assert m.anomalies == ()


def test_header_fields_and_payload_chain_are_recorded():
    m = message(sa_init_request())
    assert (m.spi_i, m.spi_r) == (SPI_I.hex(), "0" * 16)
    assert (m.exchange, m.flags, m.message_id) == (34, 0x08, 0)
    assert m.length == len(sa_init_request())
    assert m.payload_types == (33, 34, 40)
    assert m.from_original_initiator and not m.is_response


def test_message_carries_the_datagrams_transport_facts():
    data = sa_init_request()
    m = message(data, frame=9, ts=3.25, src=B, dst=A, sport=4500, dport=4500, ip_fragment_lengths=(1500, 200))
    assert (m.frame, m.frames, m.timestamp, m.first_timestamp) == (9, (9,), 3.25, 3.25)
    assert (m.src, m.dst, m.sport, m.dport, m.transport) == (B, A, 4500, 4500, "udp")
    assert m.non_esp_marker is True
    assert m.ip_fragment_lengths == (1500, 200)
    assert m.udp_payload_length == len(data)


def test_several_proposals_are_all_kept_in_order():
    second = IKEv2_Proposal(proposal=2, trans_nb=2,
                            trans=IKEv2_Transform(transform_type=1, transform_id=20, length=12, key_length=128)
                            / IKEv2_Transform(transform_type=4, transform_id=19))
    first = hybrid_proposal()
    data = bytes(header() / IKEv2_SA(prop=first / second))
    m = message(data)
    assert [p.number for p in m.proposals] == [1, 2]
    assert m.proposals[1].transforms == (Transform(1, 20, 128), Transform(4, 19))
    assert m.anomalies == ()


def test_ke_payload_gives_method_and_mlkem768_key_length():
    data = bytes(header(exchange=43, message_id=1, spi_r=SPI_R) / IKEv2_KE(group=36, ke=bytes(MLKEM768_EK)))
    m = message(data)
    assert m.key_exchange == KeyExchange(method=36, data_length=1184)
    assert m.payload_types == (34,)


def test_ke_payload_of_pure_mlkem1024_sa_init():
    data = bytes(header() / IKEv2_KE(group=37, ke=bytes(MLKEM1024_EK)))
    assert message(data).key_exchange == KeyExchange(37, 1568)


def test_responder_ke_payload_with_mlkem768_ciphertext():
    data = bytes(header(exchange=43, flags="Response", message_id=1, spi_r=SPI_R)
                 / IKEv2_KE(group=36, ke=bytes(MLKEM768_CT)))
    assert message(data).key_exchange == KeyExchange(36, 1088)


def test_skf_payload_gives_fragment_number_and_total():
    data = bytes(header(exchange=43, message_id=1, spi_r=SPI_R)
                 / IKEv2_Encrypted_Fragment(next_payload=0, frag_number=2, frag_total=3, load=b"\x5a" * 500))
    m = message(data)
    assert m.fragment == (2, 3)
    assert m.encrypted_length == 500  # IV, ciphertext and ICV after the 8-byte SKF header
    assert m.payload_types == (53,)
    assert m.anomalies == ()


def test_first_skf_fragment_names_inner_payload_without_it_being_walked():
    data = bytes(header(exchange=43, message_id=1, spi_r=SPI_R)
                 / IKEv2_Encrypted_Fragment(next_payload=34, frag_number=1, frag_total=2, load=b"\x5a" * 900))
    m = message(data)
    assert m.fragment == (1, 2)
    assert m.payload_types == (53,)
    assert m.key_exchange is None
    assert m.anomalies == ()


def test_skf_fragment_number_beyond_total_is_malformed():
    data = bytes(header(exchange=43, message_id=1, spi_r=SPI_R)
                 / IKEv2_Encrypted_Fragment(frag_number=3, frag_total=2, load=b"x" * 40))
    assert "malformed" in kinds(message(data))


def test_sk_payload_gives_encrypted_length():
    data = bytes(header(exchange=35, message_id=1, spi_r=SPI_R)
                 / IKEv2_Encrypted(next_payload=35, load=b"\x33" * 300))
    m = message(data)
    assert m.encrypted_length == 300  # everything after the 4-byte generic header
    assert m.payload_types == (46,)
    assert m.fragment is None
    assert m.anomalies == ()


def test_invalid_ke_payload_notify_keeps_its_two_byte_group_raw():
    data = bytes(header(flags="Response") / IKEv2_Notify(type=17, notify=struct.pack("!H", 31)))
    m = message(data)
    assert m.notifies == (Notify(type=17, protocol=0, data=b"\x00\x1f"),)
    assert m.notify_types() == (17,)


def test_notify_data_leaves_out_the_spi():
    data = bytes(header(exchange=36, message_id=3, spi_r=SPI_R)
                 / IKEv2_Notify(proto=3, SPI=b"\xde\xad\xbe\xef", type=16393, notify=b""))
    (n,) = message(data).notifies
    assert (n.type, n.protocol, n.data) == (16393, 3, b"")


def test_redirect_notify_data_kept_raw_from_hand_built_bytes():
    # RFC 5685: GW Ident Type 1 (IPv4), length 4, 192.0.2.9, then the initiator's nonce.
    redirect_data = b"\x01\x04" + bytes([192, 0, 2, 9]) + b"N" * 16
    notify = struct.pack("!BBHBBH", 40, 0, 8 + len(redirect_data), 0, 0, 16407) + redirect_data
    nonce = raw_payload(0, b"\x07" * 32)
    m = message(raw_message(41, notify + nonce))
    assert m.notifies == (Notify(16407, 0, redirect_data),)
    assert m.payload_types == (41, 40)
    assert m.anomalies == ()


def test_redirect_notify_with_fqdn_gateway_kept_raw():
    gw = b"vpn2.example.net"
    redirect_data = bytes([3, len(gw)]) + gw  # IKE_AUTH response form: no nonce
    notify = struct.pack("!BBHBBH", 0, 0, 8 + len(redirect_data), 0, 0, 16407) + redirect_data
    m = message(raw_message(41, notify, exchange=35))
    assert m.notifies == (Notify(16407, 0, redirect_data),)
    assert m.anomalies == ()


def test_redirect_built_with_scapy_fields_is_kept_raw():
    data = bytes(header(flags="Response")
                 / IKEv2_Notify(type=16407, gw_id_type=1, gw_id="192.0.2.9", nonce=b"N" * 16))
    (n,) = message(data).notifies
    assert n.data == b"\x01\x04\xc0\x00\x02\x09" + b"N" * 16


def test_vendor_ids_are_kept():
    data = bytes(header() / IKEv2_VendorID(vendorID=b"strongSwan") / IKEv2_VendorID(vendorID=b"\x01\x02"))
    assert message(data).vendor_ids == (b"strongSwan", b"\x01\x02")


# --- lengths that contradict the bytes become anomalies


def test_header_length_larger_than_bytes_present_is_incomplete():
    data = sa_init_request()
    m = message(with_length(data, len(data) + 100))
    assert m.length == len(data) + 100
    assert kinds(m) == ["incomplete"]


def test_header_length_smaller_than_bytes_present_is_malformed():
    data = sa_init_request()
    m = message(with_length(data, len(data) - 10))
    assert kinds(m)[0] == "malformed"
    assert "header length" in m.anomalies[0].detail.lower()


def test_payload_length_beyond_remaining_bytes_is_an_anomaly():
    body = raw_payload(0, b"\x07" * 32, length=200)  # a Nonce announcing 200 bytes, carrying 36
    m = message(raw_message(40, body, flags=0x08))
    assert m.payload_types == (40,)
    assert set(kinds(m)) & {"incomplete", "malformed"}
    assert any("200" in a.detail for a in m.anomalies)


def test_payload_length_below_four_is_malformed():
    for bad in (0, 2, 3):
        body = raw_payload(0, b"\x07" * 32, length=bad)
        m = message(raw_message(40, body, flags=0x08))
        assert "malformed" in kinds(m), bad


def test_trailing_bytes_after_the_last_payload_are_malformed():
    data = sa_init_request() + b"\x00" * 8
    m = message(with_length(data, len(data)))
    assert kinds(m) == ["malformed"]
    assert "8 bytes" in m.anomalies[0].detail


def test_proposal_announcing_wrong_transform_count_is_malformed():
    data = bytes(header() / IKEv2_SA(prop=hybrid_proposal(trans_nb=4)))
    m = message(data)
    assert len(m.proposals[0].transforms) == 5
    assert kinds(m) == ["malformed"]


def test_more_than_one_ke_payload_is_malformed():
    data = bytes(header() / IKEv2_KE(group=31, ke=bytes(32)) / IKEv2_KE(group=36, ke=bytes(MLKEM768_EK)))
    m = message(data)
    assert "malformed" in kinds(m)
    assert any("KE" in a.detail for a in m.anomalies)


def test_next_payload_announced_with_no_bytes_left_is_an_anomaly():
    nonce = raw_payload(41, b"\x07" * 32)  # says a Notify follows; nothing does
    m = message(raw_message(40, nonce, flags=0x08))
    assert m.anomalies


def test_anomalies_carry_the_frame_number():
    data = sa_init_request()
    m = message(with_length(data, len(data) + 1), frame=42)
    assert [a.frame for a in m.anomalies] == [42]


# --- IKEv1 and datagrams too short to be IKE


def ikev1_header(exchange: int = 2, flags: int = 0, message_id: int = 0, spi_r: bytes = bytes(8)) -> bytes:
    return b"\xaa" * 8 + spi_r + struct.pack("!BBBBII", 1, 0x10, exchange, flags, message_id, 28)


def test_ikev1_datagram_becomes_ikev1_message_with_cookies_and_exchange():
    record = run(ikev1_header(exchange=2, spi_r=b"\xbb" * 8, message_id=7), ike_version=1, frame=5)
    assert isinstance(record, Ikev1Message)
    assert (record.spi_i, record.spi_r) == ("aa" * 8, "bb" * 8)
    assert (record.exchange, record.message_id, record.length) == (2, 7, 28)
    assert (record.frame, record.src, record.dst, record.sport) == (5, A, B, 500)


def test_ikev1_aggressive_mode_exchange_number_kept():
    record = run(ikev1_header(exchange=4), ike_version=1)
    assert isinstance(record, Ikev1Message) and record.exchange == 4


def test_ikev1_bytes_labelled_as_ikev2_do_not_become_an_ike_message():
    record = run(ikev1_header(), ike_version=2)
    assert not isinstance(record, IkeMessage)


def test_fewer_than_28_bytes_is_malformed():
    for version in (1, 2):
        for size in (0, 1, 27):
            record = run(sa_init_request()[:size], ike_version=version, frame=3)
            assert isinstance(record, Malformed), (version, size)
            assert record.anomaly.kind == "malformed"
            assert (record.frame, record.anomaly.frame) == (3, 3)


def test_exactly_28_byte_header_without_payloads_dissects():
    m = message(bytes(header()))
    assert m.payload_types == () and m.anomalies == ()


# --- digests: retransmissions repeat them


def test_retransmission_has_the_same_digest():
    data = sa_init_request()
    first, again = message(data, frame=1, ts=1.0), message(data, frame=8, ts=2.0)
    assert first.digest and first.digest == again.digest


def test_different_bytes_have_a_different_digest():
    data = sa_init_request()
    changed = data[:-1] + bytes([data[-1] ^ 1])
    assert message(data).digest != message(changed).digest


# --- hostile input never raises


RESULT_TYPES = (IkeMessage, Malformed, Ikev1Message)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), version=st.sampled_from([1, 2]))
def test_arbitrary_bytes_never_raise(data, version):
    assert isinstance(run(data, ike_version=version), RESULT_TYPES)


@settings(max_examples=300, deadline=None)
@given(next_payload=st.integers(0, 255), exchange=st.integers(0, 255), flags=st.integers(0, 255),
       body=st.binary(max_size=400), length_delta=st.integers(-30, 30))
def test_arbitrary_payloads_after_a_valid_header_never_raise(next_payload, exchange, flags, body, length_delta):
    length = max(0, 28 + len(body) + length_delta)
    data = SPI_I + SPI_R + struct.pack("!BBBBII", next_payload, 0x20, exchange, flags, 0, length) + body
    assert isinstance(run(data), RESULT_TYPES)


@settings(max_examples=300, deadline=None)
@given(prefix=st.integers(0, 120), flip=st.integers(0, 255))
def test_a_valid_message_with_one_byte_changed_never_raises(prefix, flip):
    data = bytearray(sa_init_request())
    data[28 + prefix % (len(data) - 28)] ^= flip
    assert isinstance(run(bytes(data)), RESULT_TYPES)


def test_deep_chain_of_2000_tiny_payloads_returns_a_record():
    notify = struct.pack("!BBHBBH", 41, 0, 8, 0, 0, 16388)
    last = struct.pack("!BBHBBH", 0, 0, 8, 0, 0, 16388)
    body = notify * 1999 + last
    record = run(raw_message(41, body, flags=0x08))
    assert isinstance(record, (IkeMessage, Malformed))
    if isinstance(record, IkeMessage):
        assert record.anomalies  # such a chain is hostile and must be reported
