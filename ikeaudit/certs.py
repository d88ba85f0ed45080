"""What a negotiation shows of its authentication: certificates read as X.509, AUTH
payloads, CERTREQ and RFC 7427 SIGNATURE_HASH_ALGORITHMS (issue 17).

Post-quantum transition is half key exchange, half authentication: CNSA 2.0 and the
national roadmaps also require ML-DSA (FIPS 204) or SLH-DSA (FIPS 205) signatures. The
IKE_AUTH exchange that carries them is encrypted, so all of this is visible only when a
key table opened it; `AuthInventory.visible` says whether it was.

A pure function of a `Negotiation`'s bytes, no packet: this module and `decrypt` are the
only ones that import `cryptography` (tests/test_architecture.py), here for its X.509
parser. A certificate that does not parse is reported with its error, never dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING


from ikeaudit import iana
from ikeaudit.records import Authentication, Certificate, Negotiation

if TYPE_CHECKING:
    from cryptography import x509

# NIST CSOR "sigAlgs" arc (2.16.840.1.101.3.4.3): FIPS 204 ML-DSA and FIPS 205 SLH-DSA,
# pure and pre-hash, as RFC 9881 (ML-DSA in X.509) and RFC 9909 (SLH-DSA) use them.
PQ_SIGNATURES: dict[str, tuple[str, int]] = {  # OID -> (name, NIST security category)
    "2.16.840.1.101.3.4.3.17": ("ML-DSA-44", 2),
    "2.16.840.1.101.3.4.3.18": ("ML-DSA-65", 3),
    "2.16.840.1.101.3.4.3.19": ("ML-DSA-87", 5),
    "2.16.840.1.101.3.4.3.20": ("SLH-DSA-SHA2-128s", 1),
    "2.16.840.1.101.3.4.3.21": ("SLH-DSA-SHA2-128f", 1),
    "2.16.840.1.101.3.4.3.22": ("SLH-DSA-SHA2-192s", 3),
    "2.16.840.1.101.3.4.3.23": ("SLH-DSA-SHA2-192f", 3),
    "2.16.840.1.101.3.4.3.24": ("SLH-DSA-SHA2-256s", 5),
    "2.16.840.1.101.3.4.3.25": ("SLH-DSA-SHA2-256f", 5),
    "2.16.840.1.101.3.4.3.26": ("SLH-DSA-SHAKE-128s", 1),
    "2.16.840.1.101.3.4.3.27": ("SLH-DSA-SHAKE-128f", 1),
    "2.16.840.1.101.3.4.3.28": ("SLH-DSA-SHAKE-192s", 3),
    "2.16.840.1.101.3.4.3.29": ("SLH-DSA-SHAKE-192f", 3),
    "2.16.840.1.101.3.4.3.30": ("SLH-DSA-SHAKE-256s", 5),
    "2.16.840.1.101.3.4.3.31": ("SLH-DSA-SHAKE-256f", 5),
    "2.16.840.1.101.3.4.3.32": ("HashML-DSA-44 with SHA-512", 2),
    "2.16.840.1.101.3.4.3.33": ("HashML-DSA-65 with SHA-512", 3),
    "2.16.840.1.101.3.4.3.34": ("HashML-DSA-87 with SHA-512", 5),
}
# Composite ML-DSA (draft-ietf-lamps-pq-composite-sigs): its OIDs are still being
# assigned, so only the arcs are recognised and the signature is named "composite" with
# its OID: PKIX id-alg 1.3.6.1.5.5.7.6.37 to .54 (draft -04 on), and the Entrust arc the
# early drafts and prototypes used.
COMPOSITE_ARCS = ("2.16.840.1.114027.80.8.1.",)
COMPOSITE_PKIX = ("1.3.6.1.5.5.7.6.", range(37, 55))
CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    """A signature algorithm named from its OID."""

    oid: str
    name: str
    post_quantum: bool = False
    composite: bool = False  # a composite of ML-DSA and a classical signature
    nist_category: int | None = None


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    from_initiator: bool
    encoding: int
    fingerprint_sha256: str  # of the payload's data (the DER for an X.509 certificate)
    size: int
    subject: str | None = None  # RFC 4514 string
    issuer: str | None = None
    serial: str | None = None  # hex
    not_before: str | None = None  # ISO 8601 UTC
    not_after: str | None = None
    key_algorithm: str | None = None  # "RSA", "EC", "Ed25519", "ML-DSA-87", ...
    key_oid: str | None = None
    key_bits: int | None = None
    curve: str | None = None
    signature: SignatureAlgorithm | None = None
    error: str | None = None  # why it could not be read as X.509

    @property
    def post_quantum_key(self) -> bool:
        return self.key_oid in PQ_SIGNATURES or _is_composite(self.key_oid or "")

    @property
    def post_quantum(self) -> bool:
        """Both the certified key and the issuer's signature are post-quantum (or composite)."""
        return self.post_quantum_key and self.signature is not None and self.signature.post_quantum


@dataclass(frozen=True, slots=True)
class AuthenticationInfo:
    from_initiator: bool
    method: int
    method_name: str
    algorithm: SignatureAlgorithm | None  # RFC 7427 Digital Signature: from its AlgorithmIdentifier

    @property
    def shared_key(self) -> bool:
        return self.method == iana.AUTH_SHARED_KEY

    @property
    def post_quantum(self) -> bool:
        return self.algorithm is not None and self.algorithm.post_quantum


@dataclass(frozen=True, slots=True)
class AuthInventory:
    """Everything a negotiation shows of its authentication."""

    visible: bool  # an IKE_AUTH message was decrypted
    ike_auth_seen: bool  # an IKE_AUTH message was on the wire at all
    certificates: tuple[CertificateInfo, ...] = ()
    authentications: tuple[AuthenticationInfo, ...] = ()
    cert_requests: tuple[tuple[bool, int, int], ...] = ()  # (from initiator, encoding, CA hashes)
    signature_hashes: tuple[tuple[bool, tuple[str, ...]], ...] = ()  # RFC 7427, per side

    def side(self, from_initiator: bool) -> tuple[AuthenticationInfo, ...]:
        return tuple(a for a in self.authentications if a.from_initiator == from_initiator)


def inventory(n: Negotiation) -> AuthInventory:
    auth = [m for m in n.messages if m.exchange == iana.IKE_AUTH]
    return AuthInventory(
        visible=any(m.inner is not None for m in auth), ike_auth_seen=bool(auth),
        certificates=tuple(read_certificate(who, c) for who, c in n.certificates),
        authentications=tuple(read_authentication(who, a) for who, a in n.authentications),
        cert_requests=tuple((who, r.encoding, len(r.authorities) // 20) for who, r in n.cert_requests),
        signature_hashes=tuple((who, tuple(iana.hash_algorithm_name(h) for h in ids))
                               for who, ids in n.signature_hash_algorithms),
    )


def signature_algorithm(oid: str) -> SignatureAlgorithm:
    if oid in PQ_SIGNATURES:
        name, category = PQ_SIGNATURES[oid]
        return SignatureAlgorithm(oid, name, post_quantum=True, nist_category=category)
    if _is_composite(oid):
        return SignatureAlgorithm(oid, f"composite ML-DSA ({oid})", post_quantum=True, composite=True)
    from cryptography import x509  # here: a scan that reads no certificate never loads cryptography

    name = x509.ObjectIdentifier(oid)._name  # cryptography's names: "ecdsa-with-SHA256", ...
    return SignatureAlgorithm(oid, oid if name == "Unknown OID" else name)


def _is_composite(oid: str) -> bool:
    if oid.startswith(COMPOSITE_ARCS):
        return True
    prefix, numbers = COMPOSITE_PKIX
    rest = oid[len(prefix):]
    return oid.startswith(prefix) and rest.isdigit() and int(rest) in numbers


def read_certificate(from_initiator: bool, cert: Certificate) -> CertificateInfo:
    base = dict(from_initiator=from_initiator, encoding=cert.encoding,
                fingerprint_sha256=hashlib.sha256(cert.data).hexdigest(), size=len(cert.data))
    if cert.encoding != iana.CERT_X509_SIGNATURE:
        return CertificateInfo(**base, error=f"{iana.cert_encoding_name(cert.encoding)}: not read")
    from cryptography import x509

    try:
        c = x509.load_der_x509_certificate(cert.data)
        key_oid = c.public_key_algorithm_oid.dotted_string
        info = dict(subject=c.subject.rfc4514_string(), issuer=c.issuer.rfc4514_string(),
                    serial=format(c.serial_number, "x"),
                    not_before=c.not_valid_before_utc.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                    not_after=c.not_valid_after_utc.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                    key_oid=key_oid, signature=signature_algorithm(c.signature_algorithm_oid.dotted_string))
    except Exception as exc:  # noqa: BLE001 - hostile or truncated DER is reported, not raised
        return CertificateInfo(**base, error=f"not a readable X.509 certificate: {exc.__class__.__name__}: {exc}")
    return CertificateInfo(**base, **info, **_key(c, key_oid))


def _key(c: x509.Certificate, oid: str) -> dict:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if oid in PQ_SIGNATURES or _is_composite(oid):
        return {"key_algorithm": signature_algorithm(oid).name}
    try:
        key = c.public_key()
    except Exception:  # noqa: BLE001 - a key type cryptography does not load
        return {"key_algorithm": signature_algorithm(oid).name}
    if isinstance(key, rsa.RSAPublicKey):
        return {"key_algorithm": "RSA", "key_bits": key.key_size}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"key_algorithm": "EC", "key_bits": key.curve.key_size,
                "curve": CURVE_NAMES.get(key.curve.name, key.curve.name)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"key_algorithm": "Ed25519", "key_bits": 256}
    if isinstance(key, ed448.Ed448PublicKey):
        return {"key_algorithm": "Ed448", "key_bits": 456}
    if isinstance(key, dsa.DSAPublicKey):
        return {"key_algorithm": "DSA", "key_bits": key.key_size}
    return {"key_algorithm": signature_algorithm(oid).name}


def read_authentication(from_initiator: bool, auth: Authentication) -> AuthenticationInfo:
    algorithm = None
    if auth.method == iana.AUTH_DIGITAL_SIGNATURE:
        oid = algorithm_identifier_oid(auth.data)
        algorithm = signature_algorithm(oid) if oid else None
    return AuthenticationInfo(from_initiator, auth.method, iana.auth_method_name(auth.method), algorithm)


def algorithm_identifier_oid(data: bytes) -> str | None:
    """The OID of the AlgorithmIdentifier that opens RFC 7427 Digital Signature AUTH data
    (a 1-byte length, then the DER SEQUENCE); None when it is not well formed."""
    if len(data) < 1 or data[0] < 4 or len(data) < 1 + data[0]:
        return None
    der = data[1:1 + data[0]]
    if der[0] != 0x30 or der[1] & 0x80 or der[1] + 2 > len(der) or der[2] != 0x06:
        return None
    length = der[3]
    if length & 0x80 or length == 0 or 4 + length > len(der):
        return None
    return _oid_text(der[4:4 + length])


def _oid_text(body: bytes) -> str | None:
    numbers, value = [], 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(value)
            value = 0
    if not numbers or body[-1] & 0x80:
        return None
    first = min(numbers[0] // 40, 2)
    return ".".join(str(n) for n in [first, numbers[0] - 40 * first, *numbers[1:]])
