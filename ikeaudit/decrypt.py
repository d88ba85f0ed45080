"""Wireshark-format IKEv2 key tables, and opening SK and SKF payloads with them.

Sans-IO and Scapy-free: the key table arrives as text and becomes plain `KeySet`
records; `open_encrypted` takes the bytes of one IKE message and the key sets of its
SPI pair and says which key set opened it and what the plaintext is, or why none did.
Bad input is an `Opened` with a reason, never an exception.

Why several key sets per SPI pair: with RFC 9370 additional key exchanges the keys of
an IKE SA change after IKE_SA_INIT and again after every IKE_INTERMEDIATE, so
strongSwan's save-keys plugin writes one line per derivation. Wireshark keeps only one
set per SPI pair; we try each and keep the one whose integrity check (or AEAD tag)
passes, message by message.
"""

from __future__ import annotations

import csv
import hmac
from dataclasses import dataclass, field
from typing import Iterable, Mapping


from ikeaudit import iana

# Outcomes of opening one SK or SKF payload (Opened.status, Decryption.status).
DECRYPTED = "decrypted"  # integrity check or AEAD tag verified
UNCHECKED = "decrypted-unchecked"  # the key line checks no integrity: a well-formed plaintext chose it
NO_KEY = "no-key"  # the key table has no line for the SPI pair
FAILED = "failed"  # no key set of the SPI pair opens it, or the payload is too short

SPI_HEX_DIGITS = 16


class KeyTableError(ValueError):
    """A key table line that cannot be used: the message names the source and line."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """One line of a key table: the keys of one IKE SA at one point of its life."""

    spi_i: str  # hex, 16 digits, lower case
    spi_r: str
    encryption: str  # the table's name for the cipher, e.g. "AES-CBC-256 [RFC3602]"
    integrity: str
    sk_ei: bytes  # AEAD and CTR: the key followed by the salt
    sk_er: bytes
    sk_ai: bytes
    sk_ar: bytes
    origin: str  # "file:line", to tell the auditor which line opened a message

    @property
    def cipher(self) -> iana.KeyTableCipher:
        return iana.WIRESHARK_CIPHERS[self.encryption]

    @property
    def integrity_algorithm(self) -> iana.KeyTableIntegrity:
        return iana.WIRESHARK_INTEGRITY[self.integrity]


@dataclass(frozen=True, slots=True)
class KeyTable:
    key_sets: tuple[KeySet, ...] = ()
    by_pair: Mapping[tuple[str, str], tuple[KeySet, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, key_sets: Iterable[KeySet]) -> KeyTable:
        key_sets = tuple(key_sets)
        by_pair: dict[tuple[str, str], tuple[KeySet, ...]] = {}
        for k in key_sets:
            by_pair[(k.spi_i, k.spi_r)] = by_pair.get((k.spi_i, k.spi_r), ()) + (k,)
        return cls(key_sets, by_pair)

    def for_pair(self, spi_i: str, spi_r: str) -> tuple[KeySet, ...]:
        return self.by_pair.get((spi_i, spi_r), ())

    def merged(self, other: KeyTable) -> KeyTable:
        return KeyTable.of((*self.key_sets, *other.key_sets))


def parse_key_table(text: str, source: str = "key table") -> KeyTable:
    """Read Wireshark's ikev2_decryption_table format: one key set a line,
    SPIi,SPIr,SK_ei,SK_er,"ENCR name",SK_ai,SK_ar,"INTEG name" in hex; # starts a comment.
    Raises KeyTableError naming the first bad line."""
    key_sets = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            cells = next(csv.reader([stripped], skipinitialspace=True))
        except csv.Error as exc:
            raise KeyTableError(f"{where}: {exc}") from None
        key_sets.append(_key_set(cells, where))
    return KeyTable.of(key_sets)


def _key_set(cells: list[str], where: str) -> KeySet:
    if len(cells) != 8:
        raise KeyTableError(f"{where}: {len(cells)} fields, expected 8 "
                            '(SPIi,SPIr,SK_ei,SK_er,"cipher",SK_ai,SK_ar,"integrity")')
    spi_i, spi_r, sk_ei, sk_er, encryption, sk_ai, sk_ar, integrity = (c.strip() for c in cells)
    cipher = iana.WIRESHARK_CIPHERS.get(encryption)
    if cipher is None:
        raise KeyTableError(f"{where}: unknown cipher {encryption!r}")
    algorithm = iana.WIRESHARK_INTEGRITY.get(integrity)
    if algorithm is None:
        raise KeyTableError(f"{where}: unknown integrity algorithm {integrity!r}")
    if _is_aead(cipher) and algorithm.transform_id != 0:
        raise KeyTableError(f"{where}: {encryption} carries its own integrity: the integrity "
                            "algorithm must be NONE [RFC4306]")
    spis = [_hex(v, name, where) for v, name in ((spi_i, "SPIi"), (spi_r, "SPIr"))]
    for spi, name in zip(spis, ("SPIi", "SPIr")):
        if len(spi) != SPI_HEX_DIGITS // 2:
            raise KeyTableError(f"{where}: {name} has {len(spi)} bytes, an IKE SPI has 8")
    keys = {name: _hex(v, name, where) for v, name in
            ((sk_ei, "SK_ei"), (sk_er, "SK_er"), (sk_ai, "SK_ai"), (sk_ar, "SK_ar"))}
    wanted_e = cipher.key_bytes + cipher.salt_bytes
    for name in ("SK_ei", "SK_er"):
        if len(keys[name]) != wanted_e:
            raise KeyTableError(f"{where}: {name} has {len(keys[name])} bytes, {encryption} needs {wanted_e}")
    if algorithm.hash is not None:
        wanted_a = iana.HASH_BYTES[algorithm.hash]
        for name in ("SK_ai", "SK_ar"):
            if len(keys[name]) != wanted_a:
                raise KeyTableError(f"{where}: {name} has {len(keys[name])} bytes, {integrity} needs {wanted_a}")
    return KeySet(spis[0].hex(), spis[1].hex(), encryption, integrity, keys["SK_ei"], keys["SK_er"],
                  keys["SK_ai"], keys["SK_ar"], where)


def _hex(value: str, name: str, where: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise KeyTableError(f"{where}: {name} is not hex: {value[:40]!r}") from None


def _is_aead(cipher: iana.KeyTableCipher) -> bool:
    return cipher.transform_id in iana.AEAD_ENCRYPTION


# ---------------------------------------------------------------------------- opening


@dataclass(frozen=True, slots=True)
class Opened:
    """What became of one SK or SKF payload."""

    status: str  # DECRYPTED, UNCHECKED, NO_KEY or FAILED
    detail: str
    key_set: KeySet | None = None
    plaintext: bytes = b""  # the inner payloads (of this fragment), padding and Pad Length removed


def open_encrypted(message: bytes, payload_offset: int, payload_end: int, header_bytes: int,
                   first_payload: int, from_initiator: bool, key_sets: Iterable[KeySet],
                   *, whole: bool = True) -> Opened:
    """Open the SK (header_bytes 4) or SKF (8) payload found at message[payload_offset:
    payload_end], trying each key set of the message's SPI pair.

    from_initiator: the original initiator sent it (I flag), so SK_ei/SK_ai apply.
    first_payload: the SK/SKF Next Payload, to judge a plaintext when the key line
    checks no integrity; whole: the plaintext is a complete payload chain (not one
    fragment of several), so that judgement can walk it to its end."""
    key_sets = tuple(key_sets)
    if not key_sets:
        return Opened(NO_KEY, "no key line for this SPI pair")
    if not 0 <= payload_offset < payload_offset + header_bytes <= payload_end <= len(message):
        return Opened(FAILED, "the encrypted payload lies outside the message")
    reasons = []
    for key_set in key_sets:
        opened = _open_with(message, payload_offset, payload_end, header_bytes, first_payload,
                            from_initiator, key_set, whole)
        if opened.status in (DECRYPTED, UNCHECKED):
            return opened
        reasons.append(f"{key_set.origin}: {opened.detail}")
    return Opened(FAILED, "no key set opens it (" + "; ".join(reasons) + ")")


def _open_with(message: bytes, start: int, end: int, header_bytes: int, first_payload: int,
               from_initiator: bool, key_set: KeySet, whole: bool) -> Opened:
    cipher = key_set.cipher
    sizes = iana.ENCRYPTION_SIZES[cipher.transform_id]
    algorithm = key_set.integrity_algorithm
    icv_bytes = sizes.icv if sizes.icv is not None else algorithm.icv_bytes
    body_start = start + header_bytes
    body = message[body_start:end]
    if len(body) < sizes.iv + icv_bytes + 1:
        return Opened(FAILED, f"{len(body)}-byte encrypted body is shorter than IV ({sizes.iv}), "
                              f"ICV ({icv_bytes}) and the Pad Length byte")
    iv, ciphertext, icv = body[:sizes.iv], body[sizes.iv:len(body) - icv_bytes], body[len(body) - icv_bytes:]
    sk_e = key_set.sk_ei if from_initiator else key_set.sk_er
    key, salt = sk_e[:cipher.key_bytes], sk_e[cipher.key_bytes:]
    checked = True
    if _is_aead(cipher):
        from cryptography.exceptions import InvalidTag  # here: a scan without keys never loads cryptography

        aad = message[:body_start]
        try:
            padded = _open_aead(cipher.transform_id, key, salt + iv, aad, ciphertext, icv)
        except InvalidTag:
            return Opened(FAILED, "AEAD tag does not verify")
    else:
        if algorithm.hash is not None:
            sk_a = key_set.sk_ai if from_initiator else key_set.sk_ar
            expected = hmac.new(sk_a, message[:end - icv_bytes], algorithm.hash).digest()[:icv_bytes]
            if not hmac.compare_digest(expected, icv):
                return Opened(FAILED, "integrity check fails")
        else:
            checked = False
        if sizes.block > 1 and len(ciphertext) % sizes.block:
            return Opened(FAILED, f"ciphertext of {len(ciphertext)} bytes is not a whole number of "
                                  f"{sizes.block}-byte blocks")
        padded = _decrypt(cipher.transform_id, key, salt, iv, ciphertext)
    pad_length = padded[-1] if padded else 0
    if not padded or pad_length + 1 > len(padded):
        return Opened(FAILED, f"Pad Length {pad_length} exceeds the {len(padded)}-byte plaintext")
    plaintext = padded[:len(padded) - pad_length - 1]
    if not checked and not _well_formed(plaintext, first_payload, whole):
        return Opened(FAILED, "plaintext is not a payload chain (integrity unchecked, so the key "
                              "set cannot be confirmed otherwise)")
    return Opened(DECRYPTED if checked else UNCHECKED,
                  f"opened with {key_set.origin} ({key_set.encryption}, {key_set.integrity})",
                  key_set, plaintext)


def _open_aead(transform_id: int, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes,
               tag: bytes) -> bytes:
    """RFC 5282: nonce = salt | IV; AAD = IKE header through the SK/SKF payload header."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    if transform_id in iana.ENCR_AES_CCM:
        return AESCCM(key, tag_length=len(tag)).decrypt(nonce, ciphertext + tag, aad)
    # The low-level GCM mode, because AESGCM accepts only 16-byte tags.
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce, tag, min_tag_length=len(tag))).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(ciphertext) + decryptor.finalize()


def _decrypt(transform_id: int, key: bytes, salt: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if transform_id == iana.ENCR_NULL:
        return ciphertext
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if transform_id == iana.ENCR_AES_CTR:
        # RFC 5930 (as RFC 3686): counter block = nonce | IV | 32-bit block counter from 1.
        mode = modes.CTR(salt + iv + (1).to_bytes(4, "big"))
        decryptor = Cipher(algorithms.AES(key), mode).decryptor()
    elif transform_id == iana.ENCR_3DES:
        decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
    else:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _well_formed(plaintext: bytes, first_payload: int, whole: bool) -> bool:
    """Does the plaintext read as a chain of generic payload headers (RFC 7296 section
    3.2)? A wrong key yields noise whose length fields almost never add up."""
    offset, payload_type = 0, first_payload
    if payload_type == 0:  # an empty message (an INFORMATIONAL liveness check, say)
        return plaintext == b"" or not whole
    if payload_type not in iana.PAYLOAD_TYPES:
        return False
    while payload_type != 0:
        if offset + 4 > len(plaintext):
            return not whole and offset > 0
        length = int.from_bytes(plaintext[offset + 2:offset + 4], "big")
        if length < 4 or plaintext[offset + 1] & 0x7F:  # reserved bits must be zero
            return False
        payload_type = plaintext[offset]
        offset += length
        if offset > len(plaintext):
            return not whole
        if payload_type not in iana.PAYLOAD_TYPES:
            return False
    return offset == len(plaintext)
