"""Every IKEv2 protocol number ikeaudit knows, and what it means, in one place.

Source: the IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registry,
RFC 7296, RFC 7383, RFC 9242, RFC 9370, RFC 8784, FIPS 203 and
draft-ietf-ipsecme-ikev2-mlkem. Scapy's tables are extended from here
(`ikeaudit.layers`), and every later stage names things through this module, so a
number has exactly one meaning in the whole tool.
"""

from __future__ import annotations

from dataclasses import dataclass

EXCHANGE_TYPES: dict[int, str] = {
    34: "IKE_SA_INIT",
    35: "IKE_AUTH",
    36: "CREATE_CHILD_SA",
    37: "INFORMATIONAL",
    38: "IKE_SESSION_RESUME",
    39: "GSA_AUTH",
    40: "GSA_REGISTRATION",
    41: "GSA_REKEY",
    42: "GSA_INBAND_REKEY",
    43: "IKE_INTERMEDIATE",
    44: "IKE_FOLLOWUP_KE",
}
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
IKE_INTERMEDIATE, IKE_FOLLOWUP_KE = 43, 44

PAYLOAD_TYPES: dict[int, str] = {
    0: "NONE",
    33: "SA",
    34: "KE",
    35: "IDi",
    36: "IDr",
    37: "CERT",
    38: "CERTREQ",
    39: "AUTH",
    40: "Nonce",
    41: "N",
    42: "D",
    43: "V",
    44: "TSi",
    45: "TSr",
    46: "SK",
    47: "CP",
    48: "EAP",
    49: "GSPM",
    50: "IDg",
    51: "GSA",
    52: "KD",
    53: "SKF",
    54: "PS",
}
PAYLOAD_SA, PAYLOAD_KE, PAYLOAD_NOTIFY, PAYLOAD_VENDOR_ID = 33, 34, 41, 43
PAYLOAD_IDI, PAYLOAD_IDR, PAYLOAD_AUTH = 35, 36, 39
PAYLOAD_SK, PAYLOAD_SKF = 46, 53
PAYLOAD_EAP = 48
PAYLOAD_CERT, PAYLOAD_CERTREQ, PAYLOAD_DELETE, PAYLOAD_TSI, PAYLOAD_TSR, PAYLOAD_CP = 37, 38, 42, 44, 45, 47
# Next Payload values inside an SA payload (RFC 7296 section 3.3): "more proposals" and
# "more transforms" follow. Scapy binds them as payload types too.
MORE_PROPOSALS, MORE_TRANSFORMS = 2, 3

# Header sizes (RFC 7296 sections 3.1-3.2, RFC 7383 section 2.5).
IKE_HEADER_LENGTH = 28
GENERIC_PAYLOAD_HEADER = 4  # Next Payload, Critical, Payload Length
SK_HEADER = GENERIC_PAYLOAD_HEADER  # the Encrypted payload adds nothing before its IV
SKF_HEADER = 8  # the generic header, Fragment Number and Total Fragments
# The fixed part of each payload, before its variable-length data: what decides how a
# payload is laid out, given its length (RFC 7296 section 3). Payloads not named have the
# generic header only. The SA payload has no fixed part beyond it: its proposals are its body.
PAYLOAD_FIXED_LENGTHS: dict[int, int] = {
    PAYLOAD_KE: 8, PAYLOAD_IDI: 8, PAYLOAD_IDR: 8, PAYLOAD_CERT: 5, PAYLOAD_CERTREQ: 5, PAYLOAD_AUTH: 8,
    PAYLOAD_NOTIFY: 8, PAYLOAD_DELETE: 8, PAYLOAD_TSI: 8, PAYLOAD_TSR: 8, PAYLOAD_CP: 8, PAYLOAD_SKF: SKF_HEADER,
    MORE_PROPOSALS: 8, MORE_TRANSFORMS: 8,
}  # fmt: skip

PROTOCOL_IDS: dict[int, str] = {1: "IKE", 2: "AH", 3: "ESP"}

# Transform types 6..12 are RFC 9370's additional key exchanges.
TRANSFORM_TYPES: dict[int, str] = {
    1: "ENCR",
    2: "PRF",
    3: "INTEG",
    4: "KE",
    5: "ESN",
    6: "ADDKE1",
    7: "ADDKE2",
    8: "ADDKE3",
    9: "ADDKE4",
    10: "ADDKE5",
    11: "ADDKE6",
    12: "ADDKE7",
}
TRANSFORM_ENCR, TRANSFORM_PRF, TRANSFORM_INTEG, TRANSFORM_KE, TRANSFORM_ESN = 1, 2, 3, 4, 5
ADDKE_TYPES: tuple[int, ...] = tuple(range(6, 13))
KE_TRANSFORM_TYPES: tuple[int, ...] = (TRANSFORM_KE, *ADDKE_TYPES)


def addke_slot(transform_type: int) -> str:
    return TRANSFORM_TYPES.get(transform_type, f"transform-type-{transform_type}")


ENCRYPTION_ALGORITHMS: dict[int, str] = {
    1: "DES-IV64",
    2: "DES",
    3: "3DES",
    4: "RC5",
    5: "IDEA",
    6: "CAST",
    7: "BLOWFISH",
    8: "3IDEA",
    9: "DES-IV32",
    11: "NULL",
    12: "AES-CBC",
    13: "AES-CTR",
    14: "AES-CCM-8",
    15: "AES-CCM-12",
    16: "AES-CCM-16",
    18: "AES-GCM-8",
    19: "AES-GCM-12",
    20: "AES-GCM-16",
    21: "NULL-AUTH-AES-GMAC",
    23: "CAMELLIA-CBC",
    24: "CAMELLIA-CTR",
    25: "CAMELLIA-CCM-8",
    26: "CAMELLIA-CCM-12",
    27: "CAMELLIA-CCM-16",
    28: "CHACHA20-POLY1305",
    29: "AES-CCM-8-IIV",
    30: "AES-GCM-16-IIV",
    31: "CHACHA20-POLY1305-IIV",
    32: "KUZNYECHIK-MGM-KTREE",
    33: "MAGMA-MGM-KTREE",
    34: "KUZNYECHIK-MGM-MAC-KTREE",
    35: "MAGMA-MGM-MAC-KTREE",
}
# AEAD ciphers carry their own integrity: a proposal with one needs no INTEG transform.
AEAD_ENCRYPTION: frozenset[int] = frozenset({14, 15, 16, 18, 19, 20, 25, 26, 27, 28, 29, 30, 31, 32, 33})



@dataclass(frozen=True, slots=True)
class CipherSizes:
    """What an SK payload adds around its plaintext (RFC 7296 section 3.14)."""

    iv: int
    block: int  # padding granularity of the plaintext; 1 for stream and counter modes
    icv: int | None  # AEAD: the tag it appends; None when an INTEG transform supplies it


ENCRYPTION_SIZES: dict[int, CipherSizes] = {
    3: CipherSizes(8, 8, None),  # 3DES-CBC
    11: CipherSizes(0, 1, None),  # NULL, RFC 2410: the "ciphertext" is the plaintext
    12: CipherSizes(16, 16, None),  # AES-CBC
    13: CipherSizes(8, 1, None),  # AES-CTR, RFC 5930
    14: CipherSizes(8, 1, 8), 15: CipherSizes(8, 1, 12), 16: CipherSizes(8, 1, 16),  # AES-CCM, RFC 5282
    18: CipherSizes(8, 1, 8), 19: CipherSizes(8, 1, 12), 20: CipherSizes(8, 1, 16),  # AES-GCM, RFC 5282
    23: CipherSizes(16, 16, None),  # Camellia-CBC
    24: CipherSizes(8, 1, None),  # Camellia-CTR
    25: CipherSizes(8, 1, 8), 26: CipherSizes(8, 1, 12), 27: CipherSizes(8, 1, 16),  # Camellia-CCM
    28: CipherSizes(8, 1, 16),  # ChaCha20-Poly1305, RFC 7634
}

# Truncated output of each integrity algorithm, appended to an SK payload.
INTEGRITY_ICV_BYTES: dict[int, int] = {
    1: 12, 2: 12, 5: 12, 6: 16, 7: 20, 8: 12, 12: 16, 13: 24, 14: 32,
}

# The hash under each HMAC integrity algorithm (hashlib names); its key is one hash
# output long (RFC 2104 as profiled by RFC 2404, RFC 4595 and RFC 4868).
INTEGRITY_HMAC_HASH: dict[int, str] = {
    1: "md5", 2: "sha1", 6: "md5", 7: "sha1", 12: "sha256", 13: "sha384", 14: "sha512",
}
HASH_BYTES: dict[str, int] = {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

ENCR_NULL, ENCR_3DES, ENCR_AES_CBC, ENCR_AES_CTR = 11, 3, 12, 13
ENCR_AES_CCM = frozenset({14, 15, 16})
ENCR_AES_GCM = frozenset({18, 19, 20})


@dataclass(frozen=True, slots=True)
class KeyTableCipher:
    """An encryption algorithm as a Wireshark IKEv2 decryption table names it."""

    transform_id: int  # ENCR transform id (its IV, block and AEAD tag in ENCRYPTION_SIZES)
    key_bytes: int  # the cipher key
    salt_bytes: int  # SK_e's tail beyond the key: nonce salt of GCM (4), CCM (3), CTR (4)


@dataclass(frozen=True, slots=True)
class KeyTableIntegrity:
    """An integrity algorithm as a Wireshark IKEv2 decryption table names it."""

    transform_id: int | None  # INTEG transform id; None where IANA has none
    hash: str | None  # HMAC hash (hashlib name); None: the ICV is taken unchecked
    icv_bytes: int


def _wireshark_ciphers() -> dict[str, KeyTableCipher]:
    names = {"NULL [RFC2410]": KeyTableCipher(ENCR_NULL, 0, 0),
             "3DES [RFC2451]": KeyTableCipher(ENCR_3DES, 24, 0)}
    for bits in (128, 192, 256):
        names[f"AES-CBC-{bits} [RFC3602]"] = KeyTableCipher(ENCR_AES_CBC, bits // 8, 0)
        names[f"AES-CTR-{bits} [RFC5930]"] = KeyTableCipher(ENCR_AES_CTR, bits // 8, 4)
        for transform_id, icv in ((18, 8), (19, 12), (20, 16)):
            names[f"AES-GCM-{bits} with {icv} octet ICV [RFC5282]"] = KeyTableCipher(transform_id, bits // 8, 4)
        for transform_id, icv in ((14, 8), (15, 12), (16, 16)):
            names[f"AES-CCM-{bits} with {icv} octet ICV [RFC5282]"] = KeyTableCipher(transform_id, bits // 8, 3)
    return names


# Wireshark's ikev2_decryption_table names (packet-isakmp.c, vs_ikev2_encr_algs and
# vs_ikev2_auth_algs), which strongSwan's save-keys plugin writes too.
WIRESHARK_CIPHERS: dict[str, KeyTableCipher] = _wireshark_ciphers()
WIRESHARK_INTEGRITY: dict[str, KeyTableIntegrity] = {
    "NONE [RFC4306]": KeyTableIntegrity(0, None, 0),
    "HMAC_MD5_96 [RFC2403]": KeyTableIntegrity(1, "md5", 12),
    "HMAC_SHA1_96 [RFC2404]": KeyTableIntegrity(2, "sha1", 12),
    "HMAC_MD5_128 [RFC4595]": KeyTableIntegrity(6, "md5", 16),
    "HMAC_SHA1_160 [RFC4595]": KeyTableIntegrity(7, "sha1", 20),
    "HMAC_SHA2_256_96 [draft-ietf-ipsec-ciph-sha-256-00]": KeyTableIntegrity(None, "sha256", 12),
    "HMAC_SHA2_256_128 [RFC4868]": KeyTableIntegrity(12, "sha256", 16),
    "HMAC_SHA2_384_192 [RFC4868]": KeyTableIntegrity(13, "sha384", 24),
    "HMAC_SHA2_512_256 [RFC4868]": KeyTableIntegrity(14, "sha512", 32),
    **{f"ANY {bits}-bits of Authentication [No Checking]": KeyTableIntegrity(None, None, bits // 8)
       for bits in (64, 96, 128, 160, 192, 256)},
}

PRF_ALGORITHMS: dict[int, str] = {
    1: "PRF_HMAC_MD5",
    2: "PRF_HMAC_SHA1",
    3: "PRF_HMAC_TIGER",
    4: "PRF_AES128_XCBC",
    5: "PRF_HMAC_SHA2_256",
    6: "PRF_HMAC_SHA2_384",
    7: "PRF_HMAC_SHA2_512",
    8: "PRF_AES128_CMAC",
    9: "PRF_HMAC_STREEBOG_512",
}

INTEGRITY_ALGORITHMS: dict[int, str] = {
    0: "NONE",
    1: "AUTH_HMAC_MD5_96",
    2: "AUTH_HMAC_SHA1_96",
    3: "AUTH_DES_MAC",
    4: "AUTH_KPDK_MD5",
    5: "AUTH_AES_XCBC_96",
    6: "AUTH_HMAC_MD5_128",
    7: "AUTH_HMAC_SHA1_160",
    8: "AUTH_AES_CMAC_96",
    9: "AUTH_AES_128_GMAC",
    10: "AUTH_AES_192_GMAC",
    11: "AUTH_AES_256_GMAC",
    12: "AUTH_HMAC_SHA2_256_128",
    13: "AUTH_HMAC_SHA2_384_192",
    14: "AUTH_HMAC_SHA2_512_256",
}

ESN_VALUES: dict[int, str] = {0: "No ESN", 1: "ESN"}


@dataclass(frozen=True, slots=True)
class KeMethod:
    """A Key Exchange Method (transform type 4 and ADDKE1..7)."""

    id: int
    name: str
    kind: str  # "classical", "pq", "none", "private", "unassigned"
    family: str  # "MODP", "ECP", "ECX", "brainpool", "GOST", "ML-KEM", ...
    key_bits: int | None  # modulus or curve size; ML-KEM parameter set
    strength_bits: int | None  # classical security strength (NIST SP 800-57) or PQ equivalent
    nist_category: int | None  # ML-KEM: NIST PQ security category; None for classical
    initiator_bytes: int | None  # KE data sent by the initiator (encapsulation key for ML-KEM)
    responder_bytes: int | None  # KE data sent by the responder (ciphertext for ML-KEM)

    @property
    def is_pq(self) -> bool:
        return self.kind == "pq"

    @property
    def is_classical(self) -> bool:
        return self.kind == "classical"


def _m(id_, name, kind, family, key_bits, strength, cat, i_bytes, r_bytes=None) -> KeMethod:
    return KeMethod(id_, name, kind, family, key_bits, strength, cat, i_bytes,
                    i_bytes if r_bytes is None else r_bytes)


# Strengths: NIST SP 800-57 Part 1 Table 2 for FFC and ECC; 768-bit MODP is broken outright.
KE_METHODS: dict[int, KeMethod] = {m.id: m for m in (
    _m(0, "NONE", "none", "NONE", None, None, None, 0),
    _m(1, "768-bit MODP", "classical", "MODP", 768, 0, None, 96),
    _m(2, "1024-bit MODP", "classical", "MODP", 1024, 80, None, 128),
    _m(5, "1536-bit MODP", "classical", "MODP", 1536, 96, None, 192),
    _m(14, "2048-bit MODP", "classical", "MODP", 2048, 112, None, 256),
    _m(15, "3072-bit MODP", "classical", "MODP", 3072, 128, None, 384),
    _m(16, "4096-bit MODP", "classical", "MODP", 4096, 152, None, 512),
    _m(17, "6144-bit MODP", "classical", "MODP", 6144, 176, None, 768),
    _m(18, "8192-bit MODP", "classical", "MODP", 8192, 200, None, 1024),
    _m(19, "256-bit random ECP", "classical", "ECP", 256, 128, None, 64),
    _m(20, "384-bit random ECP", "classical", "ECP", 384, 192, None, 96),
    _m(21, "521-bit random ECP", "classical", "ECP", 521, 256, None, 132),
    _m(22, "1024-bit MODP with 160-bit Prime Order Subgroup", "classical", "MODP", 1024, 80, None, 128),
    _m(23, "2048-bit MODP with 224-bit Prime Order Subgroup", "classical", "MODP", 2048, 112, None, 256),
    _m(24, "2048-bit MODP with 256-bit Prime Order Subgroup", "classical", "MODP", 2048, 112, None, 256),
    _m(25, "192-bit random ECP", "classical", "ECP", 192, 96, None, 48),
    _m(26, "224-bit random ECP", "classical", "ECP", 224, 112, None, 56),
    _m(27, "brainpoolP224r1", "classical", "brainpool", 224, 112, None, 56),
    _m(28, "brainpoolP256r1", "classical", "brainpool", 256, 128, None, 64),
    _m(29, "brainpoolP384r1", "classical", "brainpool", 384, 192, None, 96),
    _m(30, "brainpoolP512r1", "classical", "brainpool", 512, 256, None, 128),
    _m(31, "Curve25519", "classical", "ECX", 255, 128, None, 32),
    _m(32, "Curve448", "classical", "ECX", 448, 224, None, 56),
    _m(33, "GOST3410_2012_256", "classical", "GOST", 256, 128, None, 64),
    _m(34, "GOST3410_2012_512", "classical", "GOST", 512, 256, None, 128),
    _m(35, "ML-KEM-512", "pq", "ML-KEM", 512, 128, 1, 800, 768),
    _m(36, "ML-KEM-768", "pq", "ML-KEM", 768, 192, 3, 1184, 1088),
    _m(37, "ML-KEM-1024", "pq", "ML-KEM", 1024, 256, 5, 1568, 1568),
)}

# Groups an auditor must flag on their own, whatever the PQ status: RFC 8247 section 2.4
# says MUST NOT for 1, 2, 22 and SHOULD NOT for 5, 23 and 24 (the RFC 5114 MODP groups
# with small subgroups, whose generation cannot be verified).
WEAK_CLASSICAL_KE: frozenset[int] = frozenset({1, 2, 5, 22, 23, 24})
# The largest KE data any IANA classical method sends (8192-bit MODP): a KE payload
# larger than this can only be post-quantum (or private-use).
LARGEST_CLASSICAL_KE_BYTES = max(m.initiator_bytes for m in KE_METHODS.values() if m.kind == "classical")
PRIVATE_USE_KE = range(1024, 65536)


def ke_method(method_id: int, private_names: dict[int, str] | None = None) -> KeMethod:
    """The KeMethod for an id; private-use and unassigned ids get a record saying so.

    A private-use id is never guessed to be PQ or classical: vendors have used them for
    pre-standard Kyber, NTRU, FrodoKEM and more. A user may give them a name (which we
    show) but their kind stays "private".
    """
    known = KE_METHODS.get(method_id)
    if known is not None:
        return known
    if method_id in PRIVATE_USE_KE:
        name = (private_names or {}).get(method_id) or f"private-use KE method {method_id}"
        return KeMethod(method_id, name, "private", "private", None, None, None, None, None)
    return KeMethod(method_id, f"unassigned KE method {method_id}", "unassigned", "unassigned",
                    None, None, None, None, None)


NOTIFY_TYPES: dict[int, str] = {
    1: "UNSUPPORTED_CRITICAL_PAYLOAD",
    4: "INVALID_IKE_SPI",
    5: "INVALID_MAJOR_VERSION",
    7: "INVALID_SYNTAX",
    9: "INVALID_MESSAGE_ID",
    11: "INVALID_SPI",
    14: "NO_PROPOSAL_CHOSEN",
    17: "INVALID_KE_PAYLOAD",
    24: "AUTHENTICATION_FAILED",
    34: "SINGLE_PAIR_REQUIRED",
    35: "NO_ADDITIONAL_SAS",
    36: "INTERNAL_ADDRESS_FAILURE",
    37: "FAILED_CP_REQUIRED",
    38: "TS_UNACCEPTABLE",
    39: "INVALID_SELECTORS",
    40: "UNACCEPTABLE_ADDRESSES",
    41: "UNEXPECTED_NAT_DETECTED",
    42: "USE_ASSIGNED_HoA",
    43: "TEMPORARY_FAILURE",
    44: "CHILD_SA_NOT_FOUND",
    45: "INVALID_GROUP_ID",
    46: "AUTHORIZATION_FAILED",
    47: "STATE_NOT_FOUND",
    16384: "INITIAL_CONTACT",
    16385: "SET_WINDOW_SIZE",
    16386: "ADDITIONAL_TS_POSSIBLE",
    16387: "IPCOMP_SUPPORTED",
    16388: "NAT_DETECTION_SOURCE_IP",
    16389: "NAT_DETECTION_DESTINATION_IP",
    16390: "COOKIE",
    16391: "USE_TRANSPORT_MODE",
    16392: "HTTP_CERT_LOOKUP_SUPPORTED",
    16393: "REKEY_SA",
    16394: "ESP_TFC_PADDING_NOT_SUPPORTED",
    16395: "NON_FIRST_FRAGMENTS_ALSO",
    16396: "MOBIKE_SUPPORTED",
    16397: "ADDITIONAL_IP4_ADDRESS",
    16398: "ADDITIONAL_IP6_ADDRESS",
    16399: "NO_ADDITIONAL_ADDRESSES",
    16400: "UPDATE_SA_ADDRESSES",
    16401: "COOKIE2",
    16402: "NO_NATS_ALLOWED",
    16403: "AUTH_LIFETIME",
    16404: "MULTIPLE_AUTH_SUPPORTED",
    16405: "ANOTHER_AUTH_FOLLOWS",
    16406: "REDIRECT_SUPPORTED",
    16407: "REDIRECT",
    16408: "REDIRECTED_FROM",
    16409: "TICKET_LT_OPAQUE",
    16410: "TICKET_REQUEST",
    16411: "TICKET_ACK",
    16412: "TICKET_NACK",
    16413: "TICKET_OPAQUE",
    16414: "LINK_ID",
    16415: "USE_WESP_MODE",
    16416: "ROHC_SUPPORTED",
    16417: "EAP_ONLY_AUTHENTICATION",
    16418: "CHILDLESS_IKEV2_SUPPORTED",
    16419: "QUICK_CRASH_DETECTION",
    16420: "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
    16421: "IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED",
    16422: "IKEV2_MESSAGE_ID_SYNC",
    16423: "IPSEC_REPLAY_COUNTER_SYNC",
    16424: "SECURE_PASSWORD_METHODS",
    16425: "PSK_PERSIST",
    16426: "PSK_CONFIRM",
    16427: "ERX_SUPPORTED",
    16428: "IFOM_CAPABILITY",
    16429: "SENDER_REQUEST_ID",
    16430: "IKEV2_FRAGMENTATION_SUPPORTED",
    16431: "SIGNATURE_HASH_ALGORITHMS",
    16432: "CLONE_IKE_SA_SUPPORTED",
    16433: "CLONE_IKE_SA",
    16434: "PUZZLE",
    16435: "USE_PPK",
    16436: "PPK_IDENTITY",
    16437: "NO_PPK_AUTH",
    16438: "INTERMEDIATE_EXCHANGE_SUPPORTED",
    16439: "IP4_ALLOWED",
    16440: "IP6_ALLOWED",
    16441: "ADDITIONAL_KEY_EXCHANGE",
    16442: "USE_AGGFRAG",
    16443: "SUPPORTED_AUTH_METHODS",
    16444: "SA_RESOURCE_INFO",
    16445: "USE_PPK_INT",
    16446: "PPK_IDENTITY_KEY",
    16447: "IKE_SA_INIT_FULL_TRANSCRIPT_AUTH",
}
NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, AUTHENTICATION_FAILED = 14, 17, 24
COOKIE, IKEV2_FRAGMENTATION_SUPPORTED = 16390, 16430
NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP = 16388, 16389
REDIRECT = 16407  # RFC 5685: the responder sends the initiator to another gateway
USE_PPK, PPK_IDENTITY, NO_PPK_AUTH = 16435, 16436, 16437
INTERMEDIATE_EXCHANGE_SUPPORTED = 16438
USE_PPK_INT, PPK_IDENTITY_KEY = 16445, 16446
# draft-ietf-ipsecme-ikev2-downgrade-prevention (IKE_SA_INIT_FULL_TRANSCRIPT_AUTH in both
# IKE_SA_INIT messages: each peer's AUTH then covers the whole IKE_SA_INIT transcript, so
# the peers themselves detect a stripped ML-KEM offer). PROVISIONAL: 16447 follows
# PPK_IDENTITY_KEY (16446) in libreswan's dense notify name table; the draft (-08, July
# 2026) was approved with its IANA actions still pending, so the registry may differ.
IKE_SA_INIT_FULL_TRANSCRIPT_AUTH = 16447
ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370: links IKE_FOLLOWUP_KE exchanges to their CREATE_CHILD_SA
PPK_NOTIFIES: frozenset[int] = frozenset({USE_PPK, PPK_IDENTITY, NO_PPK_AUTH, USE_PPK_INT, PPK_IDENTITY_KEY})
# Notify types below 16384 are errors (RFC 7296 section 3.10.1).
ERROR_NOTIFY_LIMIT = 16384

IKE_PORTS: frozenset[int] = frozenset({500, 4500})
NAT_T_PORT = 4500
# RFC 3948 section 2.2: on port 4500 an IKE message follows four zero bytes (where ESP has its SPI).
NON_ESP_MARKER = b"\x00\x00\x00\x00"


def exchange_name(value: int) -> str:
    return EXCHANGE_TYPES.get(value, f"EXCHANGE_{value}")


def payload_name(value: int) -> str:
    return PAYLOAD_TYPES.get(value, f"PAYLOAD_{value}")


def notify_name(value: int) -> str:
    if value in NOTIFY_TYPES:
        return NOTIFY_TYPES[value]
    if 8192 <= value < 16384 or value >= 40960:
        return f"PRIVATE_{value}"
    return f"NOTIFY_{value}"


def transform_name(transform_type: int, transform_id: int,
                   private_names: dict[int, str] | None = None) -> str:
    if transform_type in KE_TRANSFORM_TYPES:
        return ke_method(transform_id, private_names).name
    table = {TRANSFORM_ENCR: ENCRYPTION_ALGORITHMS, TRANSFORM_PRF: PRF_ALGORITHMS,
             TRANSFORM_INTEG: INTEGRITY_ALGORITHMS, TRANSFORM_ESN: ESN_VALUES}.get(transform_type, {})
    return table.get(transform_id, str(transform_id))


# RFC 7296 section 3.5 and the IANA registry: what an IDi/IDr payload names.
ID_TYPES: dict[int, str] = {
    1: "ID_IPV4_ADDR", 2: "ID_FQDN", 3: "ID_RFC822_ADDR", 5: "ID_IPV6_ADDR",
    9: "ID_DER_ASN1_DN", 10: "ID_DER_ASN1_GN", 11: "ID_KEY_ID", 12: "ID_FC_NAME", 13: "ID_NULL",
}
# RFC 7296 section 3.8, RFC 7427, RFC 8019 and the IANA registry: how a peer proves its identity.
AUTH_METHODS: dict[int, str] = {
    1: "RSA Digital Signature", 2: "Shared Key Message Integrity Code", 3: "DSS Digital Signature",
    9: "ECDSA with SHA-256 on the P-256 curve", 10: "ECDSA with SHA-384 on the P-384 curve",
    11: "ECDSA with SHA-512 on the P-521 curve", 12: "Generic Secure Password Authentication Method",
    13: "NULL Authentication", 14: "Digital Signature",
}


def id_type_name(value: int) -> str:
    return ID_TYPES.get(value, f"ID_TYPE_{value}")


def auth_method_name(value: int) -> str:
    return AUTH_METHODS.get(value, f"AUTH_METHOD_{value}")


AUTH_SHARED_KEY, AUTH_DIGITAL_SIGNATURE = 2, 14
SIGNATURE_HASH_ALGORITHMS = 16431  # notify type, RFC 7427 section 4
# RFC 7427 section 7 and the IANA "IKEv2 Hash Algorithms" registry; Identity (5) is what
# EdDSA (RFC 8420) and ML-DSA/SLH-DSA in IKEv2 (draft-ietf-ipsecme-ikev2-mldsa) announce.
HASH_ALGORITHMS: dict[int, str] = {
    0: "RESERVED", 1: "SHA1", 2: "SHA2-256", 3: "SHA2-384", 4: "SHA2-512", 5: "Identity",
    6: "STREEBOG-256", 7: "STREEBOG-512",
}
# RFC 7296 section 3.6 and the IANA "IKEv2 Certificate Encodings" registry.
CERT_ENCODINGS: dict[int, str] = {
    1: "PKCS #7 wrapped X.509 certificate", 2: "PGP Certificate", 3: "DNS Signed Key",
    4: "X.509 Certificate - Signature", 6: "Kerberos Token", 7: "Certificate Revocation List (CRL)",
    8: "Authority Revocation List (ARL)", 9: "SPKI Certificate", 10: "X.509 Certificate - Attribute",
    11: "Raw RSA Key", 12: "Hash and URL of X.509 certificate", 13: "Hash and URL of X.509 bundle",
    14: "OCSP Content", 15: "Raw Public Key",
}
CERT_X509_SIGNATURE = 4


def hash_algorithm_name(value: int) -> str:
    return HASH_ALGORITHMS.get(value, f"HASH_{value}")


def cert_encoding_name(value: int) -> str:
    return CERT_ENCODINGS.get(value, f"CERT_ENCODING_{value}")


# ---------------------------------------------------------------------------------------
# IKEv1 (ISAKMP, RFC 2408; IKE, RFC 2409; IPsec DOI, RFC 2407) and the IANA "Internet Key
# Exchange (IKE) Attributes" and "ISAKMP" registries. IKEv1 has no post-quantum key
# exchange: these names let a report say what an IKEv1 SA used, never make it pass.
# Group Description numbers share the IKEv2 KE method numbering for 1..30 (the IANA
# registries hold the same groups), so `ke_method()` names them.

IKEV1_EXCHANGE_TYPES: dict[int, str] = {
    0: "NONE", 1: "Base", 2: "Identity Protection (Main Mode)", 3: "Authentication Only",
    4: "Aggressive", 5: "Informational", 6: "Transaction (Config Mode)", 32: "Quick Mode",
    33: "New Group Mode",
}
IKEV1_MAIN_MODE, IKEV1_AGGRESSIVE, IKEV1_INFORMATIONAL, IKEV1_QUICK_MODE = 2, 4, 5, 32
IKEV1_TRANSACTION = 6  # draft-dukes-ike-mode-cfg / XAUTH, under the phase 1 SA

IKEV1_PAYLOAD_TYPES: dict[int, str] = {
    1: "SA", 2: "P", 3: "T", 4: "KE", 5: "ID", 6: "CERT", 7: "CR", 8: "HASH", 9: "SIG",
    10: "NONCE", 11: "N", 12: "D", 13: "VID", 14: "ATTR", 15: "SAK", 16: "SAT", 17: "KD",
    18: "SEQ", 19: "POP", 20: "NAT-D", 21: "NAT-OA", 130: "NAT-D (draft)", 131: "NAT-OA (draft)",
    132: "Cisco fragment",
}
IKEV1_PAYLOAD_SA, IKEV1_PAYLOAD_PROPOSAL, IKEV1_PAYLOAD_TRANSFORM = 1, 2, 3
IKEV1_PAYLOAD_KE, IKEV1_PAYLOAD_NOTIFY, IKEV1_PAYLOAD_VID = 4, 11, 13
IKEV1_DOI_IPSEC = 1  # RFC 2407: its SA payload carries a 4-byte Situation

IKEV1_PROTOCOLS: dict[int, str] = {1: "PROTO_ISAKMP", 2: "PROTO_IPSEC_AH", 3: "PROTO_IPSEC_ESP",
                                   4: "PROTO_IPCOMP"}
IKEV1_PROTO_ISAKMP = 1

# RFC 2409 appendix A, "Attribute Classes" (phase 1, PROTO_ISAKMP transforms).
IKEV1_ATTR_ENCRYPTION, IKEV1_ATTR_HASH, IKEV1_ATTR_AUTH_METHOD, IKEV1_ATTR_GROUP = 1, 2, 3, 4
IKEV1_ATTR_LIFE_TYPE, IKEV1_ATTR_LIFE_DURATION, IKEV1_ATTR_KEY_LENGTH = 11, 12, 14
IKEV1_ATTRIBUTES: dict[int, str] = {
    1: "Encryption Algorithm", 2: "Hash Algorithm", 3: "Authentication Method",
    4: "Group Description", 5: "Group Type", 6: "Group Prime/Irreducible Polynomial",
    7: "Group Generator One", 8: "Group Generator Two", 9: "Group Curve A", 10: "Group Curve B",
    11: "Life Type", 12: "Life Duration", 13: "PRF", 14: "Key Length", 15: "Field Size",
    16: "Group Order",
}
# RFC 2407 section 4.5 (phase 2, IPsec transforms).
IPSEC_ATTR_LIFE_TYPE, IPSEC_ATTR_LIFE_DURATION, IPSEC_ATTR_GROUP = 1, 2, 3
IPSEC_ATTR_AUTH_ALGORITHM, IPSEC_ATTR_KEY_LENGTH = 5, 6
IKEV1_LIFE_SECONDS, IKEV1_LIFE_KILOBYTES = 1, 2

IKEV1_ENCRYPTION_ALGORITHMS: dict[int, str] = {  # RFC 2409 appendix A, RFC 3602, RFC 4312
    1: "DES-CBC", 2: "IDEA-CBC", 3: "Blowfish-CBC", 4: "RC5-R16-B64-CBC", 5: "3DES-CBC",
    6: "CAST-CBC", 7: "AES-CBC", 8: "CAMELLIA-CBC",
}
IKEV1_HASH_ALGORITHMS: dict[int, str] = {  # RFC 2409 appendix A, RFC 4868
    1: "MD5", 2: "SHA", 3: "Tiger", 4: "SHA2-256", 5: "SHA2-384", 6: "SHA2-512",
}
IKEV1_AUTH_METHODS: dict[int, str] = {  # RFC 2409 appendix A, RFC 4754; XAUTH from draft-beaulieu
    1: "Pre-shared key", 2: "DSS signatures", 3: "RSA signatures", 4: "Encryption with RSA",
    5: "Revised encryption with RSA", 9: "ECDSA with SHA-256 on the P-256 curve",
    10: "ECDSA with SHA-384 on the P-384 curve", 11: "ECDSA with SHA-512 on the P-521 curve",
    64221: "HybridInitRSA", 64222: "HybridRespRSA", 64223: "HybridInitDSS", 64224: "HybridRespDSS",
    65001: "XAUTHInitPreShared", 65002: "XAUTHRespPreShared", 65003: "XAUTHInitDSS",
    65004: "XAUTHRespDSS", 65005: "XAUTHInitRSA", 65006: "XAUTHRespRSA",
    65007: "XAUTHInitRSAEncryption", 65008: "XAUTHRespRSAEncryption",
    65009: "XAUTHInitRSARevisedEncryption", 65010: "XAUTHRespRSARevisedEncryption",
}
IPSEC_ESP_TRANSFORMS: dict[int, str] = {  # RFC 2407 section 4.4.4 and the IANA registry
    1: "ESP_DES_IV64", 2: "ESP_DES", 3: "ESP_3DES", 4: "ESP_RC5", 5: "ESP_IDEA", 6: "ESP_CAST",
    7: "ESP_BLOWFISH", 8: "ESP_3IDEA", 9: "ESP_DES_IV32", 10: "ESP_RC4", 11: "ESP_NULL",
    12: "ESP_AES-CBC", 13: "ESP_AES-CTR", 14: "ESP_AES-CCM_8", 15: "ESP_AES-CCM_12",
    16: "ESP_AES-CCM_16", 18: "AES-GCM with 8 octet ICV", 19: "AES-GCM with 12 octet ICV",
    20: "AES-GCM with 16 octet ICV", 21: "SEED_CBC", 22: "CAMELLIA", 23: "NULL_AUTH_AES_GMAC",
}
IPSEC_AUTH_ALGORITHMS: dict[int, str] = {  # RFC 2407 section 4.5 and the IANA registry
    1: "HMAC-MD5", 2: "HMAC-SHA", 3: "DES-MAC", 4: "KPDK", 5: "HMAC-SHA2-256", 6: "HMAC-SHA2-384",
    7: "HMAC-SHA2-512", 8: "HMAC-RIPEMD", 9: "AES-XCBC-MAC", 10: "SIG-RSA", 11: "AES-128-GMAC",
    12: "AES-192-GMAC", 13: "AES-256-GMAC",
}


def ikev1_exchange_name(value: int) -> str:
    return IKEV1_EXCHANGE_TYPES.get(value, f"EXCHANGE_{value}")


def ikev1_encryption_name(value: int | None, protocol: int = IKEV1_PROTO_ISAKMP) -> str | None:
    if value is None:
        return None
    table = IKEV1_ENCRYPTION_ALGORITHMS if protocol == IKEV1_PROTO_ISAKMP else IPSEC_ESP_TRANSFORMS
    return table.get(value, f"ENCRYPTION_{value}")


def ikev1_hash_name(value: int | None, protocol: int = IKEV1_PROTO_ISAKMP) -> str | None:
    if value is None:
        return None
    table = IKEV1_HASH_ALGORITHMS if protocol == IKEV1_PROTO_ISAKMP else IPSEC_AUTH_ALGORITHMS
    return table.get(value, f"HASH_{value}")


def ikev1_auth_method_name(value: int | None) -> str | None:
    return None if value is None else IKEV1_AUTH_METHODS.get(value, f"AUTH_METHOD_{value}")


# ---------------------------------------------------------------------------------------------
# Field-capture encapsulations (extraction's decapsulation and the scan prefilter; issue 13).
# Ethertypes (IEEE registry), GRE protocol types (which are ethertypes, RFC 2784), ports (IANA
# service names), IP protocol numbers. Kept together at the end of this module on purpose.
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve)
ETHERTYPE_ERSPAN_II = 0x88BE  # GRE protocol type of ERSPAN type I (no sequence number) and II
ETHERTYPE_ERSPAN_III = 0x22EB
ETHERTYPE_MPLS = (0x8847, 0x8848)  # unicast, multicast (RFC 5332)
ETHERTYPE_PPPOE_SESSION = 0x8864  # RFC 2516
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, legacy QinQ
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057  # PPP DLL protocol numbers (RFC 1332, RFC 5072)
VXLAN_PORT = 4789  # RFC 7348
GENEVE_PORT = 6081  # RFC 8926
IPPROTO_IPV4_IN_IP, IPPROTO_GRE, IPPROTO_IPV6_IN_IP = 4, 47, 41
# IPv6 extension headers that carry a next header and a length in 8-octet units (RFC 8200
# section 4, RFC 6275 Mobility, RFC 7401 HIP, RFC 5533 Shim6, RFC 3692 experiments).
IPV6_EXTENSION_HEADERS = (0, 43, 60, 135, 139, 140, 253, 254)
IPV6_FRAGMENT_HEADER = 44
