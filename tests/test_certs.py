"""Authentication inventory (issue 17): certificates read as X.509, AUTH payloads, CERTREQ.

Ground truth: packetgen's ikev2.pcapng with its published keys, whose initiator
certificate tshark shows as subject CN=ike_c1,DC=netkit-conf,DC=org, issuer
CN=ike_ca,..., an ECDSA P-256 key (id-ecPublicKey, secp256r1) signed ecdsa-with-SHA256;
and a lab capture whose IKE_AUTH request is rebuilt to carry an ML-DSA-87 certificate
and an RFC 7427 ML-DSA-87 AUTH. That certificate is about 7.5 KB, so the request is
sent as RFC 7383 IKE fragments, each sealed with the capture's own keys.
"""

from __future__ import annotations

import datetime
import hmac
import os
import shutil
import struct
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from scapy.all import UDP, Raw

import captures
from conftest import PCAPS, THIRDPARTY, needs_thirdparty, needs_tshark
from ikeaudit import certs
from ikeaudit.decrypt import parse_key_table
from ikeaudit.dissect import plaintext
from ikeaudit.extract import Extractor
from ikeaudit.pipeline import audit_capture
from ikeaudit.records import Authentication, Certificate, Frame

PACKETGEN = THIRDPARTY / "more" / "packetgen__ikev2"
LAB = PCAPS / "c01_classical_ecp256"
MLDSA87_OID = "2.16.840.1.101.3.4.3.19"  # NIST CSOR id-ml-dsa-87 (FIPS 204; RFC 9881)
IDI, CERT, AUTH, SKF = 35, 37, 39, 53
FRAGMENT_PLAINTEXT = 1200  # bytes of inner payloads per IKE fragment, as a 1280-byte path would need


def _packetgen():
    keys = parse_key_table(PACKETGEN.with_suffix(".keys").read_text(), "packetgen__ikev2.keys")
    [item] = audit_capture(str(PACKETGEN.with_suffix(".pcapng")), keys=keys).negotiations
    return item


@needs_thirdparty
def test_packetgen_initiator_certificate_is_read_as_tshark_shows_it():
    item = _packetgen()
    [cert] = item.authentication.certificates
    assert cert.from_initiator
    assert cert.subject == "CN=ike_c1,DC=netkit-conf,DC=org"
    assert cert.issuer == "CN=ike_ca,DC=netkit-conf,DC=org"
    assert (cert.key_algorithm, cert.curve, cert.key_bits) == ("EC", "P-256", 256)
    assert cert.signature.name == "ecdsa-with-SHA256" and cert.signature.oid == "1.2.840.10045.4.3.2"
    assert (cert.not_before, cert.not_after) == ("2017-03-22T15:10:25Z", "2018-03-22T15:10:25Z")
    assert not cert.post_quantum


@needs_thirdparty
def test_packetgen_auth_and_certreq_are_inventoried():
    inventory = _packetgen().authentication
    assert inventory.visible
    [auth] = inventory.authentications
    assert (auth.from_initiator, auth.method_name) == (True, "ECDSA with SHA-256 on the P-256 curve")
    # tshark: the IKE_SA_INIT response asks for 2 CAs, the IKE_AUTH request for 1
    assert sorted(inventory.cert_requests) == [(False, 4, 2), (True, 4, 1)]


@needs_thirdparty
@needs_tshark
def test_packetgen_certificate_algorithms_agree_with_tshark(tmp_path):
    line = PACKETGEN.with_suffix(".keys").read_text().strip()
    done = subprocess.run(["tshark", "-r", str(PACKETGEN.with_suffix(".pcapng")), "-o",
                           f"uat:ikev2_decryption_table:{line}", "-Y", "x509af.algorithm.id",
                           "-T", "fields", "-e", "x509af.algorithm.id", "-e", "pkcs1.namedCurve"],
                          capture_output=True, text=True, timeout=120, check=True)
    [row] = [r for r in done.stdout.splitlines() if r.strip()]
    algorithm_ids, curve = row.split("\t")
    [cert] = _packetgen().authentication.certificates
    assert cert.signature.oid in algorithm_ids.split(",") and cert.key_oid in algorithm_ids.split(",")
    assert curve == "1.2.840.10045.3.1.7"  # secp256r1, which we name P-256


def test_without_decryption_authentication_is_not_visible():
    [item] = audit_capture(str(LAB.with_suffix(".pcap"))).negotiations
    inventory = item.authentication
    assert inventory.ike_auth_seen and not inventory.visible
    assert inventory.authentications == () and inventory.certificates == ()


def test_shared_key_authentication_is_reported_as_such():
    keys = parse_key_table(LAB.with_suffix(".keys").read_text(), "c01.keys")
    [item] = audit_capture(str(LAB.with_suffix(".pcap")), keys=keys).negotiations
    methods = item.authentication.authentications
    assert [(a.from_initiator, a.shared_key) for a in methods] == [(True, True), (False, True)]
    assert not any(a.post_quantum for a in methods)


# ---------------------------------------------------------------------------- ML-DSA


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        while p > 0x7F:
            p >>= 7
            chunk.insert(0, 0x80 | (p & 0x7F))
        body += bytes(chunk)
    return _der(0x06, body)


def mldsa87_certificate(key: mldsa.MLDSA87PrivateKey, common_name: str) -> bytes:
    """A self-signed ML-DSA-87 certificate (RFC 9881: id-ml-dsa-87, parameters absent),
    DER-encoded by hand: cryptography 48 reads such certificates but cannot issue them."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]).public_bytes()
    algorithm = _der(0x30, _oid(MLDSA87_OID))
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    validity = _der(0x30, _der(0x17, start.strftime("%y%m%d%H%M%SZ").encode())
                    + _der(0x17, (start + datetime.timedelta(days=365)).strftime("%y%m%d%H%M%SZ").encode()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tbs = _der(0x30, _der(0xA0, _der(0x02, b"\x02")) + _der(0x02, b"\x17") + algorithm + name + validity
               + name + spki)
    return _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + key.sign(tbs)))


def _chain(first: int, data: bytes) -> list[tuple[int, bytes]]:
    out, kind, at = [], first, 0
    while kind:
        length = struct.unpack("!H", data[at + 2:at + 4])[0]
        out.append((kind, data[at + 4:at + length]))
        kind, at = data[at], at + length
    return out


def _join(payloads: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for i, (_, body) in enumerate(payloads):
        following = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        out += struct.pack("!BBH", following, 0, 4 + len(body)) + body
    return out


def _seal_fragment(key_set, ike_header: bytes, number: int, total: int, first: int, share: bytes) -> bytes:
    """One SKF fragment (RFC 7383 section 2.5) under AES-CBC and HMAC-SHA2-256-128, as the
    lab capture's key table says its IKE SA used."""
    assert key_set.encryption == "AES-CBC-256 [RFC3602]" and key_set.integrity == "HMAC_SHA2_256_128 [RFC4868]"
    pad = (-(len(share) + 1)) % 16
    padded = share + bytes(pad) + bytes([pad])
    iv = os.urandom(16)
    body = 8 + 16 + len(padded) + 16
    length = 28 + body
    head = ike_header[:16] + bytes([SKF]) + ike_header[17:24] + struct.pack("!I", length)
    head += struct.pack("!BBHHH", first if number == 1 else 0, 0, body, number, total)
    encrypted = Cipher(algorithms.AES(key_set.sk_ei), modes.CBC(iv)).encryptor().update(padded)
    unsigned = head + iv + encrypted
    return unsigned + hmac.new(key_set.sk_ai, unsigned, "sha256").digest()[:16]


def _ike_auth_with_mldsa(tmp_path):
    """c01 with its IKE_AUTH request carrying an ML-DSA-87 certificate and AUTH, fragmented."""
    keys = parse_key_table(LAB.with_suffix(".keys").read_text(), "c01.keys")
    packets = captures.read(str(LAB.with_suffix(".pcap")))
    index = next(i for i, h in enumerate(captures.ike_headers(packets)) if h == (35, 0x08))
    original = packets[index]
    extractor = Extractor()
    [datagram] = [d for d in extractor.feed(Frame(1, float(original.time), 1, bytes(original), len(original)))]
    first, inner = plaintext(datagram, keys)
    payloads = _chain(first, inner)
    assert payloads[0][0] == IDI and AUTH in [k for k, _ in payloads]
    key = mldsa.MLDSA87PrivateKey.generate()
    der = mldsa87_certificate(key, "gw-pq.example")
    algorithm = _der(0x30, _oid(MLDSA87_OID))
    auth = struct.pack("!B3x", 14) + bytes([len(algorithm)]) + algorithm + key.sign(b"signed octets stand-in")
    rebuilt = [payloads[0], (CERT, bytes([4]) + der)]
    rebuilt += [(k, auth if k == AUTH else body) for k, body in payloads[1:]]
    joined = _join(rebuilt)
    shares = [joined[i:i + FRAGMENT_PLAINTEXT] for i in range(0, len(joined), FRAGMENT_PLAINTEXT)]
    [key_set] = keys.for_pair(datagram.payload[:8].hex(), datagram.payload[8:16].hex())
    fragments = []
    for number, share in enumerate(shares, 1):
        ike = _seal_fragment(key_set, datagram.payload[:28], number, len(shares), IDI, share)
        q = original.copy()
        q[UDP].remove_payload()
        q[UDP].add_payload(Raw(b"\0\0\0\0" + ike))
        del q[UDP].len, q[UDP].chksum
        del q["IP"].len, q["IP"].chksum
        q.time = original.time + number * 1e-4
        fragments.append(q)
    path = captures.write(packets[:index] + fragments + packets[index + 1:], tmp_path / "c01_mldsa87.pcap")
    [item] = audit_capture(path, keys=keys).negotiations
    return item, der, len(shares)


def test_mldsa_certificate_in_a_fragmented_ike_auth_is_post_quantum(tmp_path):
    item, der, fragments = _ike_auth_with_mldsa(tmp_path)
    assert len(der) > 7000 and fragments >= 6
    [request] = [m for m in item.negotiation.messages if m.exchange == 35 and not m.response]
    assert request.ike_fragments == fragments and request.complete and request.inner is not None
    inventory = item.authentication
    [cert] = inventory.certificates
    assert cert.from_initiator and cert.subject == "CN=gw-pq.example" and cert.error is None
    assert cert.key_algorithm == "ML-DSA-87" and cert.signature.name == "ML-DSA-87"
    assert cert.post_quantum and cert.signature.nist_category == 5
    initiator_auth = inventory.side(True)
    assert [(a.method_name, a.algorithm.name, a.post_quantum) for a in initiator_auth] == \
        [("Digital Signature", "ML-DSA-87", True)]
    assert [a.shared_key for a in inventory.side(False)] == [True]


def test_a_certificate_that_is_not_der_is_reported_not_raised():
    info = certs.read_certificate(True, Certificate(4, b"\x30\x82\xff\xff garbage"))
    assert info.error and info.subject is None and not info.post_quantum


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x09\x30\x07\x06\x05\x2b\x0e\x03\x02", b"\x03\x30\x01\x06"])
def test_malformed_rfc7427_algorithm_identifiers_name_nothing(data):
    assert certs.read_authentication(False, Authentication(14, data)).algorithm is None


def test_rfc7427_algorithm_identifier_is_named():
    algorithm = _der(0x30, _oid("1.2.840.10045.4.3.3") )
    info = certs.read_authentication(True, Authentication(14, bytes([len(algorithm)]) + algorithm + b"sig"))
    assert info.algorithm.name == "ecdsa-with-SHA384" and not info.post_quantum


def test_composite_signature_oids_are_named_composite():
    algorithm = certs.signature_algorithm("1.3.6.1.5.5.7.6.45")
    assert algorithm.composite and algorithm.post_quantum and "composite" in algorithm.name
    assert not certs.signature_algorithm("1.3.6.1.5.5.7.6.3").composite


def test_openssl_reads_the_handmade_mldsa_certificate_when_it_can(tmp_path):
    """Our hand-made DER is a certificate, not something only our reader accepts: whatever
    openssl the machine has parses its structure (3.0 without ML-DSA still reads the
    subject; 3.5+ also names the algorithm)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    der = mldsa87_certificate(mldsa.MLDSA87PrivateKey.generate(), "gw-pq.example")
    (tmp_path / "c.der").write_bytes(der)
    done = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "c.der")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "gw-pq.example" in done.stdout


def test_the_fragmented_mldsa_ike_auth_dissects_the_same_on_both_paths(tmp_path):
    """The new CERT, CERTREQ and AUTH fields come out equal from the struct hot path and
    from Scapy alone (tests/test_differential.py), on a 7 KB certificate in fragments."""
    from test_differential import assert_same, datagrams

    from ikeaudit.sources import iter_capture

    _ike_auth_with_mldsa(tmp_path)
    keys = parse_key_table(LAB.with_suffix(".keys").read_text(), "c01.keys")
    items = datagrams(iter_capture(str(tmp_path / "c01_mldsa87.pcap")))
    assert assert_same(items, keys) == len([d for d in items if d.ike_version == 2])


# ---------------------------------------------------------------------------- CBOM


def _cbom(item) -> dict:
    from test_cbom import assert_valid

    from ikeaudit.classify import KeCatalog
    from ikeaudit.report import cbom, views

    bom = cbom.build_cbom([views.negotiation_view(item, KeCatalog())], serial_number="urn:uuid:3e671687-395b-41f5"
                          "-a30f-a58921a69b79", timestamp="2026-11-27T12:00:00Z")
    assert_valid(bom)
    return bom


def _assets(bom: dict, asset_type: str) -> list[dict]:
    return [c for c in bom["components"] if c["cryptoProperties"]["assetType"] == asset_type]


@needs_thirdparty
def test_cbom_lists_the_packetgen_certificate_and_its_algorithms():
    bom = _cbom(_packetgen())
    [cert] = _assets(bom, "certificate")
    props = cert["cryptoProperties"]["certificateProperties"]
    assert (props["subjectName"], props["issuerName"]) == ("CN=ike_c1,DC=netkit-conf,DC=org",
                                                          "CN=ike_ca,DC=netkit-conf,DC=org")
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    related = [by_ref[a["ref"]]["cryptoProperties"] for a in props["relatedCryptographicAssets"]]
    assert {"oid": "1.2.840.10045.4.3.2", "family": "ECDSA"} in [
        {"oid": r.get("oid"), "family": r["algorithmProperties"].get("algorithmFamily")} for r in related]
    assert any(r["algorithmProperties"].get("ellipticCurve") == "nist/P-256" for r in related)
    [protocol] = _assets(bom, "protocol")
    linked = {a["ref"] for a in protocol["cryptoProperties"]["protocolProperties"]["relatedCryptographicAssets"]}
    assert cert["bom-ref"] in linked  # the certificate and the AUTH's ECDSA hang off the IKEv2 protocol
    assert any(by_ref[r]["cryptoProperties"].get("algorithmProperties", {}).get("algorithmFamily") == "ECDSA"
               and by_ref[r]["cryptoProperties"]["algorithmProperties"].get("primitive") == "signature"
               for r in linked)


def test_cbom_marks_the_mldsa87_certificate_post_quantum(tmp_path):
    item, _, _ = _ike_auth_with_mldsa(tmp_path)
    bom = _cbom(item)
    signatures = [c for c in _assets(bom, "algorithm")
                  if c["cryptoProperties"].get("oid") == MLDSA87_OID and c["name"] == "ML-DSA-87"]
    assert signatures and all(s["cryptoProperties"]["algorithmProperties"]["nistQuantumSecurityLevel"] == 5
                              for s in signatures)
    [service] = bom["services"]
    props = {p["name"]: p["value"] for p in service["properties"]}
    assert props["ikeaudit:auth:responder"] == "Shared Key Message Integrity Code"


# ---------------------------------------------------------------------------- RFC 7427


def test_signature_hash_algorithms_of_each_side_are_read_from_the_clear_ike_sa_init():
    # tshark: frames 8 and 9 of c01 carry notify 16431 with data 0002000300040005 (strongSwan 6.0.6)
    [item] = audit_capture(str(LAB.with_suffix(".pcap"))).negotiations
    assert item.authentication.signature_hashes == (
        (True, ("SHA2-256", "SHA2-384", "SHA2-512", "Identity")),
        (False, ("SHA2-256", "SHA2-384", "SHA2-512", "Identity")))


@needs_tshark
def test_signature_hash_algorithms_agree_with_tshark():
    done = subprocess.run(["tshark", "-r", str(LAB.with_suffix(".pcap")), "-Y", "isakmp.notify.msgtype == 16431",
                           "-T", "fields", "-e", "isakmp.flags", "-e", "isakmp.notify.msgtype",
                           "-e", "isakmp.notify.data"], capture_output=True, text=True, timeout=120, check=True)
    tshark = set()
    for line in done.stdout.splitlines():
        flags, types, data = line.split("\t")
        hashes = dict(zip(types.split(","), data.split(",")))["16431"]
        tshark.add((bool(int(flags, 16) & 0x08), tuple(int(hashes[i:i + 4], 16) for i in range(0, len(hashes), 4))))
    [item] = audit_capture(str(LAB.with_suffix(".pcap"))).negotiations
    assert set(item.negotiation.signature_hash_algorithms) == tshark
