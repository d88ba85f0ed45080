"""Known VENDOR_ID payloads (IKEv1 and IKEv2) and what they say about the peer.

A pure lookup: `name_vendor_id(raw)` gives a `VendorId` or None; no I/O, no stage.
Every entry names its public source. Nothing here is guessed: a Vendor ID no source
lists stays unnamed (the reports show its hex).

How a Vendor ID matches. Most are an MD5 hash of a text and are sent whole; some carry
a fixed prefix followed by version bytes (Cisco Unity, Microsoft's "MS NT5
ISAKMPOAKLEY", Check Point, FortiGate, Cisco VPN 3000) or by extra flags (Cisco's
FRAGMENTATION with 80000000 or c0000000). Wireshark matches every entry as a prefix
(`bytesprefix_to_str`), libreswan only those it marks VID_SUBSTRING. Here an entry
matches when its bytes begin the Vendor ID; the longest such entry wins, and the result
says whether the match was "exact" (the whole payload) or "prefix" (entry plus trailing
bytes) so an auditor can weigh it: a two-byte "OE" prefix (Openswan) is a weak hint.

Sources (each entry cites one; checked 2026-11-27):
  WIRESHARK  Wireshark epan/dissectors/packet-isakmp.c, table vendor_id[] and
             dissect_vid() (versions of Cisco Unity, Check Point, FortiGate; cp_version[])
  LIBRESWAN  libreswan lib/libswan/vendorid.c, table vid_tab[] (commit 14d90b50e464)
  STRONGSWAN strongSwan src/libcharon/sa/ikev2/tasks/ike_vendor.c, table vids[]: every
             entry is also in Wireshark's table (tests/test_vendors.py checks that each is named)
  IKE_SCAN   ike-scan ike-vendor-ids (royhills/ike-scan, commit 03cce1efc3bf)
Names are the source's own words; where Wireshark names an entry, its name is kept
verbatim so that tshark and ikeaudit agree (tests/test_vendors.py checks this against
tshark). `vendor` says whose implementation sent it, when the ID is a product's; a
protocol capability (DPD, NAT-T drafts, XAUTH) has vendor None.

Searched and NOT found in any of these sources (so not in the table): Vendor IDs of
Palo Alto Networks, Sophos, MikroTik, Huawei and Apple; Juniper appears only through
its NetScreen IDs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

WIRESHARK = "Wireshark epan/dissectors/packet-isakmp.c vendor_id[]"
LIBRESWAN = "libreswan lib/libswan/vendorid.c vid_tab[]"
STRONGSWAN = "strongSwan src/libcharon/sa/ikev2/tasks/ike_vendor.c vids[]"
IKE_SCAN = "ike-scan ike-vendor-ids"


@dataclass(frozen=True, slots=True)
class VendorId:
    """What a Vendor ID payload says about its sender."""

    name: str  # the source's name for it
    vendor: str | None  # implementation or company it identifies; None for a protocol capability
    source: str  # where the entry comes from (one of the source names above)
    match: str  # "exact" (the whole payload is the entry) or "prefix" (entry + trailing bytes)
    version: str | None = None  # decoded from the trailing bytes, when the source says how

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True, slots=True)
class _Entry:
    pattern: bytes
    name: str
    vendor: str | None
    source: str
    version: Callable[[bytes], str | None] | None = None  # reads the bytes after the pattern


def _md5(text: str) -> bytes:
    # A lookup key named by its sources as "MD5 of <text>", not a security use.
    return hashlib.md5(text.encode(), usedforsecurity=False).digest()


# -- version readers (each from the source named on its entry) -----------------------
def _unity_version(rest: bytes) -> str | None:
    # Wireshark dissect_vid: CISCO-UNITY is followed by a major and a minor byte.
    return f"{rest[0]}.{rest[1]}" if len(rest) >= 2 else None


# libreswan vid_tab[]: "MS NT5 ISAKMPOAKLEY" followed by a 4-byte version number.
_WINDOWS = {2: "Windows 2000", 3: "Windows XP", 4: "Windows Server 2003", 5: "Windows Vista",
            6: "Windows Server 2008", 7: "Windows 7", 8: "Windows Server 2008 R2",
            9: "Windows 8, 8.1, 10, Server 2012 R2, Server 2016"}


def _windows_version(rest: bytes) -> str | None:
    if len(rest) < 4:
        return None
    number = int.from_bytes(rest[:4], "big")
    return _WINDOWS.get(number, f"version {number}")


# Wireshark cp_product[] and cp_version[] for the 20 bytes after the Check Point prefix.
_CP_PRODUCT = {1: "Firewall-1", 2: "SecuRemote/SecureClient"}
_CP_VERSION = {2: "4.1", 3: "4.1 SP-1", 4002: "4.1 (SP-2 or above)", 5000: "NG",
               5001: "NG Feature Pack 1", 5002: "NG Feature Pack 2", 5003: "NG Feature Pack 3",
               5004: "NG with Application Intelligence", 5005: "NG with Application Intelligence R55",
               5006: "NG with Application Intelligence R56"}


def _checkpoint_version(rest: bytes) -> str | None:
    if len(rest) < 8:
        return None
    product, version = int.from_bytes(rest[:4], "big"), int.from_bytes(rest[4:8], "big")
    return (f"{_CP_PRODUCT.get(product, f'product {product}')} "
            f"{_CP_VERSION.get(version, f'version {version}')}")


def _fortigate_version(rest: bytes) -> str | None:
    # Wireshark dissect_vid: a 2-byte release and a 2-byte build follow the prefix.
    if len(rest) < 4:
        return None
    return f"release 0x{rest[0:2].hex()} build 0x{rest[2:4].hex()}"


def _cisco3k_version(rest: bytes) -> str | None:
    # libreswan: "Last two bytes are version number, eg 0306 = 3.0.6".
    if len(rest) < 2:
        return None
    return f"{rest[0]}.{rest[1] >> 4}.{rest[1] & 0x0F}"


def _ascii_tail(rest: bytes) -> str | None:
    text = rest.decode("ascii", "replace")
    return text if text and text.isprintable() else None


def _index_version(names: dict[int, str]) -> Callable[[bytes], str | None]:
    def read(rest: bytes) -> str | None:
        if len(rest) < 4:
            return None
        return names.get(int.from_bytes(rest[:4], "big"))
    return read


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


_ENTRIES: list[_Entry] = []


def _add(pattern: bytes, name: str, vendor: str | None, source: str,
         version: Callable[[bytes], str | None] | None = None) -> None:
    _ENTRIES.append(_Entry(pattern, name, vendor, source, version))


# -- Wireshark vendor_id[] (names verbatim) -------------------------------------------
_SSH = "SSH Communications Security"
for _hexid, _name in [
    ("fbf47614984031fa8e3bb6198089b223", "Ssh Communications Security IPSEC Express version 1.1.0"),
    ("1952dc91ac20f646fb01cf42a33aee30", "Ssh Communications Security IPSEC Express version 1.1.1"),
    ("e8bffa643e5c8f2cd10fda7370b6ebe5", "Ssh Communications Security IPSEC Express version 1.1.2"),
    ("c1111b2dee8cbc3d620573ec57aab9cb", "Ssh Communications Security IPSEC Express version 1.2.1"),
    ("09ec27bfbc09c75823cfecbffe565a2e", "Ssh Communications Security IPSEC Express version 1.2.2"),
    ("7f21a596e4e318f0b2f4944c2384cb84", "SSH Communications Security IPSEC Express version 2.0.0"),
    ("2836d1fd2807bc9e5ae30786320451ec", "SSH Communications Security IPSEC Express version 2.1.0"),
    ("a68de756a9c5229bae66498040951ad5", "SSH Communications Security IPSEC Express version 2.1.1"),
    ("3f2372867e237c1cd8250a75559cae20", "SSH Communications Security IPSEC Express version 2.1.2"),
    ("0e58d5774df602007d0b02443660f7eb", "SSH Communications Security IPSEC Express version 3.0.0"),
    ("f5ce31ebc210f44350cf71265b57380f", "SSH Communications Security IPSEC Express version 3.0.1"),
    ("f64260af2e2742daddd56987068a99a0", "SSH Communications Security IPSEC Express version 4.0.0"),
    ("7a54d3bdb3b1e6d923892064be2d981c", "SSH Communications Security IPSEC Express version 4.0.1"),
    ("9aa1f3b43472a45d5f506aeb260cf214", "SSH Communications Security IPSEC Express version 4.1.0"),
    ("89f7b760d86b012acf263382394d962f", "SSH Communications Security IPSEC Express version 4.1.1"),
    ("6880c7d026099114e486c55430e7abee", "SSH Communications Security IPSEC Express version 4.2.0"),
    ("b037a21aceccb5570f602546f97bde8c", "SSH Communications Security IPSEC Express version 5.0"),
    ("2b2dad97c4d140930053287f996850b0", "SSH Communications Security IPSEC Express version 5.0.0"),
    ("45e17f3abe93944cb202910c59ef806b", "SSH Communications Security IPSEC Express version 5.1.0"),
    ("5925859f7377ed7816d2fb81c01fa551", "SSH Communications Security IPSEC Express version 5.1.1"),
    ("054182a07c7ae206f9d2cf9d2432c482", "SSH Sentinel"),
    ("b91623e693ca18a54c6a2778552305e8", "SSH Sentinel 1.1"),
    ("5430888de01a31a6fa8f60224e449958", "SSH Sentinel 1.2"),
    ("7ee5cb85f71ce259c94a5c731ee4e752", "SSH Sentinel 1.3"),
    ("63d9a1a7009491b5a0a6fdeb2a8284f0", "SSH Sentinel 1.4"),
    ("eb4b0d96276b4e220ad16221a7b2a5e6", "SSH Sentinel 1.4.1"),
    ("37eba0c4136184e7daf8562a77060b4a", "SSH Communications Security QuickSec 0.9.0"),
    ("5d72925e55948a9661a7fc48fdec7ff9", "SSH Communications Security QuickSec 1.1.0"),
    ("777fbf4c5af6d1cdd4b895a05bf82594", "SSH Communications Security QuickSec 1.1.1"),
    ("2cdf08e712ede8a5978761267cd19b91", "SSH Communications Security QuickSec 1.1.2"),
    ("59e454a8c2cf02a34959121f1890bc87", "SSH Communications Security QuickSec 1.1.3"),
]:
    _add(_hex(_hexid), _name, _SSH, WIRESHARK)

for _hexid, _name in [  # protocol capabilities and drafts: no vendor
    ("6a7434c19d7e36348090a02334c9c805", "draft-huttunen-ipsec-esp-in-udp-00.txt"),
    ("50760f624c63e5c53eea386c685ca083", "draft-huttunen-ipsec-esp-in-udp-01.txt (ESPThruNAT)"),
    ("27bab5dc01ea0760ea4e3190ac27c0d0", "draft-stenberg-ipsec-nat-traversal-01"),
    ("6105c422e76847e43f9684801292aecd", "draft-stenberg-ipsec-nat-traversal-02"),
    ("4df37928e9fc4fd1b3262170d515c662", "draft-ietf-ipsec-nat-t-ike"),
    ("4485152d18b6bbcd0be8a8469579ddcc", "draft-ietf-ipsec-nat-t-ike-00"),
    ("16f6ca16e4a4066d83821a0f0aeaa862", "draft-ietf-ipsec-nat-t-ike-01"),
    ("cd60464335df21f87cfdb2fc68b6a448", "draft-ietf-ipsec-nat-t-ike-02"),
    ("90cb80913ebb696e086381b5ec427b1f", "draft-ietf-ipsec-nat-t-ike-02\\n"),
    ("7d9419a65310ca6f2c179d9215529d56", "draft-ietf-ipsec-nat-t-ike-03"),
    ("9909b64eed937c6573de52ace952fa6b", "draft-ietf-ipsec-nat-t-ike-04"),
    ("80d0bb3def54565ee84645d4c85ce3ee", "draft-ietf-ipsec-nat-t-ike-05"),
    ("4d1e0e136deafa34c4f3ea9f02ec7285", "draft-ietf-ipsec-nat-t-ike-06"),
    ("439b59f8ba676c4c7737ae22eab8f582", "draft-ietf-ipsec-nat-t-ike-07"),
    ("8f8d83826d246b6fc7a8a6a428c11de8", "draft-ietf-ipsec-nat-t-ike-08"),
    ("42ea5b6f898d9773a575df26e7dd19e1", "draft-ietf-ipsec-nat-t-ike-09"),
    ("c40fee00d5d39ddb1fc762e09b7cfea7", "Testing NAT-T RFC"),
    ("4a131c81070358455c5728f20e95452f", "RFC 3947 Negotiation of NAT-Traversal in the IKE"),
    ("09002689dfd6b71280a224dec33b81e5", "draft-beaulieu-ike-xauth-02.txt"),
    ("09002689dfd6b712", "XAUTH"),
    ("afcad71368a1f1c96b8696fc77570100", "RFC 3706 DPD (Dead Peer Detection)"),
    ("325df29a2319f2dd", "draft-ietf-ipsec-antireplay-00.txt"),
    ("8db7a41811221660", "draft-ietf-ipsec-heartbeats-00.txt"),
    ("ba290499c24e84e53a1d83a05e5f00c9", "IKE Challenge/Response for Authenticated Cryptographic Keys"),
    ("0d33611a5d521b5e3c9c03d2fc107e12", "IKE Challenge/Response for Authenticated Cryptographic Keys"),
    ("ad3251042cdc4652c9e0734ce5de4c7d",
     "IKE Challenge/Response for Authenticated Cryptographic Keys (Revised)"),
    ("013f11823f966fa91900f024ba66a86b",
     "IKE Challenge/Response for Authenticated Cryptographic Keys (Revised)"),
    ("b46d8914f3aaa3f2fedeb7c7db2943ca", "A GSS-API Authentication Method for IKE"),
    ("ad2c0dd0b9c32083ccba25b8861ec455", "A GSS-API Authentication Method for IKE"),
    ("621b04bb09882ac1e15935fefa24aeee", "GSSAPI"),
    ("4865617274426561745f4e6f74696679", "Heartbeat Notify"),
    ("2d7922c6b301d9b0e1342739e9cfbbd5", "DWR: Delete with reason"),
]:
    _add(_hex(_hexid), _name, None, WIRESHARK)

# Cisco's FRAGMENTATION (md5 "FRAGMENTATION"), whole or with 4 bytes of flags; strongSwan
# and others send it too, so it names a capability, not a Cisco device.
_add(_hex("4048b7d56ebce88525e7de7f00d6c2d3"), "Cisco Fragmentation", None, WIRESHARK)
_add(_hex("4048b7d56ebce88525e7de7f00d6c2d380000000"), "Cisco Fragmentation", None, WIRESHARK)
for _text, _name in [
    ("FLEXVPN-SUPPORTED", "Cisco FlexVPN Supported"),
    ("CISCO-DELETE-REASON", "Cisco Delete Reason Supported"),
    ("CISCO-DYNAMIC-ROUTE", "Cisco Dynamic Route Supported"),
    ("CISCOVPN-REV-02", "Cisco VPN Revision 2"),
    ("CISCO(COPYRIGHT)&Copyright (c) 2009 Cisco Systems, Inc.", "Cisco Copyright"),
    ("CISCO-GRE-MODE", "Cisco GRE Mode Supported"),
]:
    _add(_text.encode(), _name, "Cisco", WIRESHARK)
_add(_hex("12f5f28c457168a9702d9fe274cc"), "CISCO-UNITY", "Cisco", WIRESHARK, _unity_version)
_add(_hex("1f07f70eaa6514d3b0fa96542a500100"), "CISCO-CONCENTRATOR", "Cisco", WIRESHARK)

_add(_hex("26244d38eddb61b3172a36e3d0cfb819"), "Microsoft Vid-Initial-Contact", "Microsoft", WIRESHARK)
_add(_hex("1e2b516905991c7d7c96fcbfb587e461"), "MS NT5 ISAKMPOAKLEY", "Microsoft", WIRESHARK,
     _windows_version)
_add(_hex("e3a5966a76379fe707228231e5ce8652"), "IKE CGA Version 1", "Microsoft", WIRESHARK)
_add(_hex("fb1de3cdf341b7ea16b7e5be0855f120"), "MS-Negotiation Discovery Capable", "Microsoft", WIRESHARK)

_add(_hex("f4ed19e0c114eb516faaac0ee37daf2807b4381f"), "CryptoPro/GOST 0.1 / Check Point R65",
     "Check Point", WIRESHARK, _checkpoint_version)
_add(_hex("031017e07f7a82e3aa6950c999990100"), "CryptoPro/GOST 1.0 / Check Point R71", "Check Point",
     WIRESHARK)
_add(_hex("031017e07f7a82e3aa6950c999990101"), "CryptoPro/GOST 1.1", "CryptoPro", WIRESHARK)
_add(_hex("9aa1f3b43472a45d5f506aeb26c0f214"), "CyberGuard", "CyberGuard", WIRESHARK)
_add(_hex("f14b94b7bff1fef02773b8c49feded26"), "Shrew Soft", "Shrew Soft", WIRESHARK)
_add(_hex("882fe56d6fd20dbc2251613b2ebe5beb"), "strongSwan", "strongSwan", WIRESHARK)
_add(_hex("7003cbc1097dbe9c2600ba6983bc8b35"), "KAME/racoon", "KAME/racoon", WIRESHARK)
_add(_hex("20a3622c1cea7ce37bee3ca484425276"), "IPSec-Tools", "IPsec-Tools", WIRESHARK)
for _number, _hexid in enumerate([
    "299ee8289f40a8973bc78687e2e7226b532c3b76", "3a15e1f3cf2a63582e3ac82d1c64cbe3b6d779e7",
    "47d2b126bfcd83489760e2cf8c5d4d5a03497c15", "4a4340b543e02b84c88a8b96a8af9ebe77d9accc",
    "64405f46f03b7660a23be116a1975058e69e8387", "699369228741c6d4ca094c93e242c9de19e7b7c6",
    "8c0dc6cf62a0ef1b5c6eabd1b67ba69866adf16a", "92d27a9ecb31d99246986d3453d0c3d57a222a61",
    "9b096d9ac3275a7d6fe8b91c583111b09efed1a0", "bf03746108d746c904f1f3547de24f78479fed12",
    "c2e80500f4cc5fbf5daaeed3bb59abaeee56c652", "c8660a62b03b1b6130bf781608d32a6a8d0fb89f",
    "f885da40b1e7a9abd17655ec5bbec0f21f0ed52e", "2a2bcac19b8e91b426107807e02e7249569d6fd3",
    "166f932d55eb64d8e4df4fd37e2313f0d0fd8451", "a35bfd05ca1ac0b3d2f24e9e82bfcbff9c9e52b5",
], start=1):
    _add(_hex(_hexid), f"Netscreen-{_number}", "Juniper NetScreen", WIRESHARK)
_add(_hex("625027749d5ab97f5616c1602765cf480a3b7d0b"), "ZYWALL", "Zyxel", WIRESHARK)
_add(_hex("8404adf9cda05760b2ca292e4bff537b"), "SIDEWINDER", "Secure Computing Sidewinder", WIRESHARK)
_add(_hex("404bf439522ca3f6"), "SonicWALL", "SonicWall", WIRESHARK)
_add(_hex("ca3e2b854ba8030017dc1023a4fde2041f9f7463"), "Remote AP (Aruba Networks)", "Aruba Networks",
     WIRESHARK)
_add(_hex("3c8e70bdf9c7d74add53e4100915dc2e4bb51274"), "Controller (Aruba Networks)", "Aruba Networks",
     WIRESHARK)
_add(_hex("88f0e3149b3fa48b05aa7f685f0b766be186ccb8"), "VIA Client (Aruba Networks)", "Aruba Networks",
     WIRESHARK)
_add(b"VIA Auth Profile : ", "VIA Auth Profile (Aruba Networks)", "Aruba Networks", WIRESHARK, _ascii_tail)
_add(_hex("8299031757a36082c6a621de"), "Fortigate (Fortinet)", "Fortinet FortiGate", WIRESHARK,
     _fortigate_version)
_add(_hex("4c53427b6d465d1b337bb755a37a7fef"), "Forticlient connect license (Fortinet)",
     "Fortinet FortiClient", WIRESHARK)
_add(_hex("b4f01ca951e9da8d0bafbbd34ad3044e"), "Endpoint Control (Fortinet)", "Fortinet", WIRESHARK)

# -- libreswan vid_tab[] entries Wireshark does not list -------------------------------
_add(_hex("01528bbbc0069612" "1849ab9a1c5b2a51"), "Windows KEY_MODS", "Microsoft", LIBRESWAN,
     _index_version({0: "IKE", 1: "AUTHIP", 2: "IKEv2"}))
_add(_hex("7bb93867d76c8d80df0f40fae8fc3b19"), "AUTHIP INIT KE", "Microsoft", LIBRESWAN,
     _index_version({0: "DH NONE", 1: "DH1", 2: "DH2", 3: "DH14", 4: "DH19(ECP 256)",
                     5: "DH20(ECP 384)", 6: "DH21(ECP 521)", 7: "DH MAX"}))
_add(_hex("72872b95fcda2eb708efe322119b4971"), "NLB/MSCS fast failover supported", "Microsoft", LIBRESWAN)
_add(_hex("214ca4faffa7f32d6748e5303395ae83"), "AuthIP supported", "Microsoft", LIBRESWAN)
_add(_hex("8aa394cf8a5577dc3110c113b027a4f2"), "Microsoft Xbox One 2013", "Microsoft", LIBRESWAN)
_add(_hex("660822b3a73a244149578d62e0eb46a0"), "Xbox IKEv2 Negotiation", "Microsoft", LIBRESWAN)
_add(_hex("686a8cbdfe634b405146fb2baf33e9e8"), "MSFT IPsec Security Realm Id", "Microsoft", LIBRESWAN)
_add(_hex("1f07f70eaa6514d3b0fa96542a50"), "Cisco VPN 3000 Series", "Cisco", LIBRESWAN, _cisco3k_version)
_add(_hex("3e984048"), "Cisco IOS Device", "Cisco", LIBRESWAN)
_add(_hex("800100018002000180030002"), "Cisco-Unity FW type", "Cisco", LIBRESWAN)
_add(b"TIMESTEP", "TIMESTEP", "Timestep", LIBRESWAN, _ascii_tail)
_add(b"OpenPGP10171", "OpenPGP", None, LIBRESWAN)
_add(b"Opportunistic IPsec", "Opportunistic IPsec", None, LIBRESWAN)
_add(_hex("da8e937880010000"), "Sonicwall 2 (3.1.0.12-86s?)", "SonicWall (or WatchGuard)", LIBRESWAN)
_add(_hex("3b9031dce4fcf88b489a923963dd0c49"), "DPDv1_NG", "Shrew Soft", LIBRESWAN)
_add(b"IKEv2", "CAN-IKEv2(obsolete)", "Libreswan/Openswan", LIBRESWAN)
_add(_hex("101fb0b35c5a4f4c08b919f1cb9777b0"), "NCP client", "NCP", LIBRESWAN)
_add(b"LVG9.2.245:BRICK:9.2.245", "Lucent VPN Gateway 9 (LVG9.1.255:BRICK:9.1.255)", "Lucent", LIBRESWAN)
_add(b"LVC7.1.2:XP", "Lucent VPN Client 7 (LVC7.1.2:XP)", "Lucent", LIBRESWAN)
_add(b"OE-Libreswan-", "Libreswan (3.6+)", "Libreswan", LIBRESWAN, _ascii_tail)
_add(b"OEN", "Libreswan 3.0 - 3.5", "Libreswan", LIBRESWAN)
_add(b"OSW", "Openswan(xeleranized)", "Openswan", LIBRESWAN)
_add(b"OE", "Openswan(project)", "Openswan", LIBRESWAN)
_add(_hex("08db45e6cb01f80bb576e9a78c0f54e1300b8881"), "ELVIS-PLUS Zastava", "ELVIS-PLUS", LIBRESWAN)
_add(b"OpenIKED", "OpenIKED", "OpenIKED", LIBRESWAN, _ascii_tail)
# libreswan lists these strongSwan releases as MD5("strongSwan x.y.z").
for _release in ["4.0.%d" % i for i in range(8)] + ["4.1.%d" % i for i in range(12)] + \
        ["4.2.%d" % i for i in range(4)] + ["2.8.%d" % i for i in range(9)] + \
        ["2.7.%d" % i for i in range(4)] + ["2.6.%d" % i for i in range(5)] + \
        ["2.5.%d" % i for i in range(8)] + ["2.4.%d" % i for i in range(5)] + \
        ["2.3.%d" % i for i in range(3)] + ["2.2.%d" % i for i in range(3)]:
    _add(_md5(f"strongSwan {_release}"), f"strongSwan {_release}", "strongSwan", LIBRESWAN)

# -- ike-scan ike-vendor-ids entries neither of the above lists -------------------------
_add(_hex("47bbe7c993f1fc13b4e6d0db565c68e5"), "SafeNet SoftRemote", "SafeNet", IKE_SCAN)
_add(b"BNES", "Nortel Contivity", "Nortel", IKE_SCAN)
_add(_hex("da8e9378"), "Safenet or Watchguard", "SafeNet or WatchGuard", IKE_SCAN)

del _hexid, _name, _text, _number, _release

# Longest pattern first, so the most specific entry wins; stable for equal lengths.
_BY_LENGTH: tuple[_Entry, ...] = tuple(sorted(_ENTRIES, key=lambda e: -len(e.pattern)))
TABLE_SIZE = len(_ENTRIES)
SOURCES = (WIRESHARK, LIBRESWAN, IKE_SCAN)


def entries() -> tuple[tuple[bytes, str, str | None, str], ...]:
    """Every entry as (pattern, name, vendor, source): for tests and documentation."""
    return tuple((e.pattern, e.name, e.vendor, e.source) for e in _ENTRIES)


def name_vendor_id(raw: bytes) -> VendorId | None:
    """The known Vendor ID that `raw` is or begins with (the longest such entry)."""
    for entry in _BY_LENGTH:
        if raw.startswith(entry.pattern):
            rest = raw[len(entry.pattern):]
            version = entry.version(rest) if entry.version and rest else None
            return VendorId(entry.name, entry.vendor, entry.source,
                            "exact" if not rest else "prefix", version)
    return None


def implementations(vendor_ids: tuple[bytes, ...] | list[bytes]) -> tuple[str, ...]:
    """The implementations a set of Vendor IDs names, in order, without repeats."""
    named = (name_vendor_id(v) for v in vendor_ids)
    return tuple(dict.fromkeys(n.vendor for n in named if n is not None and n.vendor))
