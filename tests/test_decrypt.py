"""Tests for ikeaudit.decrypt and decrypted dissection, sans-IO.

Vectors are built here with the `cryptography` package itself (encrypt, then open
through our function), following RFC 7296 section 3.14 (SK payload = IV | ciphertext |
ICV; integrity over the message up to the ICV), RFC 5282 (AEAD nonce salt | IV, AAD the
IKE header through the SK/SKF payload header), RFC 5930 (CTR counter block nonce | IV |
1) and RFC 7383 (each SKF fragment sealed on its own). ML-KEM sizes are FIPS 203's.
"""

from __future__ import annotations

import hmac
import struct

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from ikeaudit.decrypt import DECRYPTED, FAILED, NO_KEY, UNCHECKED, KeyTable, KeyTableError, \
    open_encrypted, parse_key_table
from ikeaudit.dissect import InnerReassembly, dissect
from ikeaudit.records import IkeDatagram, KeyExchange

SPI_I, SPI_R = "0102030405060708", "a1a2a3a4a5a6a7a8"
MLKEM768_EK, MLKEM768_CT = 1184, 1088  # FIPS 203, table 3
SK, SKF, KE = 46, 53, 34
IKE_INTERMEDIATE = 43

# (cipher name, cipher key bytes, salt bytes, IV bytes, block, AEAD tag bytes or None)
CIPHERS = {
    "AES-CBC-128 [RFC3602]": (16, 0, 16, 16, None),
    "AES-CBC-192 [RFC3602]": (24, 0, 16, 16, None),
    "AES-CBC-256 [RFC3602]": (32, 0, 16, 16, None),
    "3DES [RFC2451]": (24, 0, 8, 8, None),
    "AES-CTR-128 [RFC5930]": (16, 4, 8, 1, None),
    "AES-CTR-192 [RFC5930]": (24, 4, 8, 1, None),
    "AES-CTR-256 [RFC5930]": (32, 4, 8, 1, None),
    **{f"AES-GCM-{b} with {t} octet ICV [RFC5282]": (b // 8, 4, 8, 1, t) for b in (128, 256) for t in (8, 12, 16)},
    **{f"AES-CCM-{b} with {t} octet ICV [RFC5282]": (b // 8, 3, 8, 1, t) for b in (128, 256) for t in (8, 12, 16)},
}
# (integrity name, hash, key bytes, ICV bytes)
INTEGRITY = {
    "HMAC_SHA1_96 [RFC2404]": ("sha1", 20, 12),
    "HMAC_SHA1_160 [RFC4595]": ("sha1", 20, 20),
    "HMAC_SHA2_256_128 [RFC4868]": ("sha256", 32, 16),
    "HMAC_SHA2_384_192 [RFC4868]": ("sha384", 48, 24),
    "HMAC_SHA2_512_256 [RFC4868]": ("sha512", 64, 32),
}
COMBINATIONS = [(c, "NONE [RFC4306]") for c, spec in CIPHERS.items() if spec[4]] + \
    [(c, i) for c, spec in CIPHERS.items() if not spec[4] for i in INTEGRITY]


def key_line(cipher: str, integrity: str, seed: int = 1) -> str:
    key_bytes, salt, *_ = CIPHERS[cipher]
    a_bytes = INTEGRITY[integrity][1] if integrity in INTEGRITY else 0
    e = lambda tag: bytes((seed * 7 + tag + i) & 0xFF for i in range(key_bytes + salt)).hex()  # noqa: E731
    a = lambda tag: bytes((seed * 11 + tag + i) & 0xFF for i in range(a_bytes)).hex()  # noqa: E731
    return f'{SPI_I},{SPI_R},{e(1)},{e(2)},"{cipher}",{a(3)},{a(4)},"{integrity}"'


def header(first: int, length: int, *, exchange: int = IKE_INTERMEDIATE, flags: int = 0x08,
           message_id: int = 1) -> bytes:
    return (bytes.fromhex(SPI_I) + bytes.fromhex(SPI_R)
            + struct.pack("!BBBBII", first, 0x20, exchange, flags, message_id, length))


def ke_payload(method: int, size: int, next_payload: int = 0) -> bytes:
    return struct.pack("!BBHHH", next_payload, 0, 8 + size, method, 0) + bytes(range(256)) * (size // 256) \
        + bytes(size % 256)


def seal(cipher: str, integrity: str, line: str, inner: bytes, first: int, *, from_initiator: bool = True,
         fragment: tuple[int, int] | None = None, exchange: int = IKE_INTERMEDIATE) -> bytes:
    """An IKE message whose only payload is an SK (or SKF) payload holding inner."""
    table = parse_key_table(line)
    [k] = table.key_sets
    key_bytes, salt_bytes, iv_bytes, block, tag = CIPHERS[cipher]
    icv = tag if tag else INTEGRITY[integrity][2]
    pad = (-(len(inner) + 1)) % block
    padded = inner + bytes(pad) + bytes([pad])
    iv = bytes(range(40, 40 + iv_bytes))
    head_bytes = 8 if fragment else 4
    body = iv_bytes + len(padded) + icv
    total = 28 + head_bytes + body
    outer = SKF if fragment else SK
    generic = struct.pack("!BBH", first, 0, head_bytes + body) + (struct.pack("!HH", *fragment) if fragment else b"")
    head = header(outer, total, exchange=exchange, flags=0x08 if from_initiator else 0x20) + generic
    sk_e = k.sk_ei if from_initiator else k.sk_er
    key, salt = sk_e[:key_bytes], sk_e[key_bytes:]
    if "GCM" in cipher:
        enc = Cipher(algorithms.AES(key), modes.GCM(salt + iv)).encryptor()
        enc.authenticate_additional_data(head)
        ct = enc.update(padded) + enc.finalize()
        return head + iv + ct + enc.tag[:tag]
    if "CCM" in cipher:
        return head + iv + AESCCM(key, tag_length=tag).encrypt(salt + iv, padded, head)
    if "CTR" in cipher:
        mode, algorithm = modes.CTR(salt + iv + b"\0\0\0\1"), algorithms.AES(key)
    else:
        mode, algorithm = modes.CBC(iv), (TripleDES(key) if "3DES" in cipher else algorithms.AES(key))
    unsigned = head + iv + Cipher(algorithm, mode).encryptor().update(padded)
    hash_name, _, icv_bytes = INTEGRITY[integrity]
    sk_a = k.sk_ai if from_initiator else k.sk_ar
    return unsigned + hmac.new(sk_a, unsigned, hash_name).digest()[:icv_bytes]


def open_message(message: bytes, table: KeyTable, *, from_initiator: bool = True, fragment: bool = False):
    return open_encrypted(message, 28, len(message), 8 if fragment else 4, message[28],
                          from_initiator, table.for_pair(SPI_I, SPI_R), whole=not fragment)


def datagram(payload: bytes, frame: int = 1) -> IkeDatagram:
    return IkeDatagram(frame=frame, frames=(frame,), timestamp=10.0 + frame, first_timestamp=10.0 + frame,
                       ip_version=4, src="192.0.2.1", dst="192.0.2.2", sport=4500, dport=4500,
                       transport="udp", non_esp_marker=True, ip_length=28 + len(payload),
                       ip_fragment_lengths=(), udp_payload_length=len(payload) + 4, payload=payload,
                       ike_version=2)


# ---------------------------------------------------------------------------- key table


def test_key_table_reads_lines_and_skips_comments():
    text = "# comment\n\n" + key_line("AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]") + "\n" \
        + key_line("AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]", seed=2) + "\n"
    table = parse_key_table(text, "lab.keys")
    assert len(table.for_pair(SPI_I, SPI_R)) == 2  # one SPI pair, two key derivations
    assert [k.origin for k in table.key_sets] == ["lab.keys:3", "lab.keys:4"]
    assert table.for_pair(SPI_R, SPI_I) == ()


@pytest.mark.parametrize("line, message", [
    ('0102030405060708,a1a2a3a4a5a6a7a8,00,00,"ROT13 [none]",,,"NONE [RFC4306]"', "unknown cipher"),
    (key_line("AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]").replace('"HMAC_SHA1_96 [RFC2404]"', '"CRC32"'),
     "unknown integrity"),
    (key_line("AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]").replace(SPI_I, "zz02030405060708"), "not hex"),
    (key_line("AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]").replace(SPI_I, "0102"), "8"),
    ("0102030405060708,a1a2a3a4a5a6a7a8,00", "3 fields"),
    ('0102030405060708,a1a2a3a4a5a6a7a8,00,00,"AES-CBC-256 [RFC3602]",,,"NONE [RFC4306]"', "needs 32"),
    (key_line("AES-GCM-128 with 16 octet ICV [RFC5282]", "NONE [RFC4306]").replace(
        '"NONE [RFC4306]"', '"HMAC_SHA1_96 [RFC2404]"'), "must be NONE"),
])
def test_a_bad_key_line_is_an_error_naming_its_line(line, message):
    with pytest.raises(KeyTableError, match=message) as error:
        parse_key_table("# first line is a comment\n" + line, "bad.keys")
    assert str(error.value).startswith("bad.keys:2:")


# ---------------------------------------------------------------------------- opening


@pytest.mark.parametrize("cipher, integrity", COMBINATIONS)
@pytest.mark.parametrize("from_initiator", [True, False])
def test_each_cipher_and_integrity_opens_what_it_sealed(cipher, integrity, from_initiator):
    line = key_line(cipher, integrity)
    inner = ke_payload(36, MLKEM768_EK if from_initiator else MLKEM768_CT)
    message = seal(cipher, integrity, line, inner, KE, from_initiator=from_initiator)
    opened = open_message(message, parse_key_table(line), from_initiator=from_initiator)
    assert opened.status == DECRYPTED, opened.detail
    assert opened.plaintext == inner


def test_the_key_set_whose_integrity_verifies_is_kept():
    cipher, integrity = "AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    first, second = key_line(cipher, integrity, seed=1), key_line(cipher, integrity, seed=2)
    message = seal(cipher, integrity, second, ke_payload(36, MLKEM768_EK), KE)
    opened = open_message(message, parse_key_table(first + "\n" + second, "t"))
    assert opened.status == DECRYPTED and opened.key_set.origin == "t:2"


@pytest.mark.parametrize("cipher, integrity", [("AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"),
                                               ("AES-GCM-256 with 16 octet ICV [RFC5282]", "NONE [RFC4306]")])
def test_a_wrong_key_is_reported_not_raised(cipher, integrity):
    message = seal(cipher, integrity, key_line(cipher, integrity, seed=1), ke_payload(31, 32), KE)
    opened = open_message(message, parse_key_table(key_line(cipher, integrity, seed=9)))
    assert opened.status == FAILED
    assert "does not verify" in opened.detail or "integrity check fails" in opened.detail


def test_direction_picks_the_responder_keys():
    cipher, integrity = "AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]"
    line = key_line(cipher, integrity)
    message = seal(cipher, integrity, line, ke_payload(31, 32), KE, from_initiator=False)
    assert open_message(message, parse_key_table(line), from_initiator=True).status == FAILED
    assert open_message(message, parse_key_table(line), from_initiator=False).status == DECRYPTED


def test_a_truncated_sk_body_fails_with_a_reason():
    cipher, integrity = "AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    message = seal(cipher, integrity, key_line(cipher, integrity), ke_payload(31, 32), KE)[:28 + 4 + 20]
    opened = open_message(message, parse_key_table(key_line(cipher, integrity)))
    assert opened.status == FAILED and "shorter" in opened.detail


def test_without_a_key_line_for_the_pair_it_says_so():
    cipher, integrity = "AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    message = seal(cipher, integrity, key_line(cipher, integrity), ke_payload(31, 32), KE)
    assert open_message(message, KeyTable()).status == NO_KEY


def test_unchecked_integrity_accepts_only_a_well_formed_chain():
    cipher, unchecked = "AES-CTR-128 [RFC5930]", "ANY 96-bits of Authentication [No Checking]"
    good = key_line(cipher, "HMAC_SHA1_96 [RFC2404]")
    message = seal(cipher, "HMAC_SHA1_96 [RFC2404]", good, ke_payload(31, 32), KE)
    as_unchecked = good.replace('"HMAC_SHA1_96 [RFC2404]"', f'"{unchecked}"')
    assert open_message(message, parse_key_table(as_unchecked)).status == UNCHECKED
    wrong = key_line(cipher, "HMAC_SHA1_96 [RFC2404]", seed=5).replace('"HMAC_SHA1_96 [RFC2404]"', f'"{unchecked}"')
    assert open_message(message, parse_key_table(wrong)).status == FAILED


# ---------------------------------------------------------------------------- through dissect


def test_dissect_reads_the_decrypted_ke_payload():
    cipher, integrity = "AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    line = key_line(cipher, integrity)
    message = seal(cipher, integrity, line, ke_payload(36, MLKEM768_EK), KE)
    record = dissect(datagram(message), parse_key_table(line))
    assert record.decryption.status == DECRYPTED
    assert record.inner.payload_types == (KE,)
    assert record.inner.key_exchange == KeyExchange(36, MLKEM768_EK)
    assert dissect(datagram(message)).inner is None  # without keys nothing is opened


@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_skf_fragments_are_joined_after_decryption(order):
    cipher, integrity = "AES-GCM-256 with 16 octet ICV [RFC5282]", "NONE [RFC4306]"
    line = key_line(cipher, integrity)
    inner = ke_payload(36, MLKEM768_EK)
    shares = {1: inner[:700], 2: inner[700:]}
    messages = {n: seal(cipher, integrity, line, shares[n], KE if n == 1 else 0, fragment=(n, 2)) for n in (1, 2)}
    table, joiner = parse_key_table(line), InnerReassembly()
    out = [joiner.feed(dissect(datagram(messages[n], frame=n), table)) for n in order]
    assert out[0].inner is None and not out[0].fragment_plaintext
    assert out[1].inner.key_exchange == KeyExchange(36, MLKEM768_EK)
    assert all(r.decryption.status == DECRYPTED for r in out)


def test_a_missing_fragment_leaves_the_message_unjoined():
    cipher, integrity = "AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]"
    line = key_line(cipher, integrity)
    message = seal(cipher, integrity, line, ke_payload(36, 600), KE, fragment=(1, 2))
    record = InnerReassembly().feed(dissect(datagram(message), parse_key_table(line)))
    assert record.decryption.status == DECRYPTED and record.inner is None


def test_garbage_after_decryption_is_an_anomaly_not_an_exception():
    cipher, integrity = "AES-CBC-128 [RFC3602]", "HMAC_SHA1_96 [RFC2404]"
    line = key_line(cipher, integrity)
    bad_chain = struct.pack("!BBH", 0, 0, 200) + bytes(20)  # claims 200 bytes, has 24
    message = seal(cipher, integrity, line, bad_chain, KE)
    record = dissect(datagram(message), parse_key_table(line))
    assert record.decryption.status == DECRYPTED
    assert any("inside the encrypted payload" in a.detail for a in record.inner.anomalies)
