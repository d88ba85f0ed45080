"""A CycloneDX 1.7 CBOM (cryptography bill of materials) of the audited negotiations.

Input: the plain dicts of `ikeaudit.report.views.negotiation_view` (or the whole scan
document); this renderer computes nothing about the negotiations, it only names what
they say in CycloneDX's vocabulary (IANA transform ids to algorithm families, curves,
parameter sets). Output: a JSON document valid against the official
``bom-1.7.schema.json``.

What goes where:

* every IKE configuration seen (chosen KE, ADDKE1..7, ENCR, PRF, INTEG) is one
  ``protocol`` crypto asset (``protocolProperties.type = "ike"``, ``version`` "2",
  ``ikev2TransformTypes``); each additional key exchange is one more ``ke`` entry,
  and a ``properties`` entry ``ikeaudit:ikev2:ADDKEn`` names its slot (CycloneDX has
  no slot field); an IKEv1 exchange is a ``protocol`` asset of version "1";
* every key exchange method and symmetric transform is an ``algorithm`` asset:
  ML-KEM as ``kem`` with ``parameterSetIdentifier`` "512"/"768"/"1024" and
  ``nistQuantumSecurityLevel`` 1/3/5, classical groups as ``key-agree`` with level 0;
* every (initiator, responder) pair is a ``service`` whose endpoints are the
  responder's IKE ports (UDP 500, and 4500 after NAT-T or MOBIKE moved there), with
  its negotiations by class and by observation (``observed``, ``inferred``,
  ``unassessed``) as properties, and the status of the tunnel it belongs to
  (``ikeaudit:tunnel:status`` exposed/unassessed/protected, ``ikeaudit:tunnel:observation``);
  a tunnel seen only as ESP (no IKE negotiation captured) is a service of its own, so an
  unassessed tunnel is listed, never left out;
* every X.509 certificate a decrypted IKE_AUTH carried is a ``certificate`` asset
  (subject, issuer, serial, validity, SHA-256 fingerprint of its DER) related to its
  signature algorithm and its key's algorithm; every signature algorithm seen (the
  certificates', RFC 7427 AUTH AlgorithmIdentifiers, the ECDSA/RSA AUTH methods) is a
  ``signature`` ``algorithm`` asset (ML-DSA and SLH-DSA with their NIST level, classical
  ones with level 0, a composite named so in a property), related to the IKEv2 protocol
  asset of the negotiation, and the certificates too; shared-key authentication is a
  property of the service (``ikeaudit:auth:<side>``), as is each side's implementation
  identified from its Vendor IDs (``ikeaudit:implementation:<side>``);
* ``dependencies``: service -> protocol assets it negotiated -> algorithm and certificate assets.

Output is deterministic: bom-refs are derived from content, lists are sorted, and the
serial number and timestamp are passed in (a serial derived from the content when not).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections import Counter
from typing import Iterable, Iterator

from ikeaudit import __version__, iana

SPEC_VERSION = "1.7"
SCHEMA_URL = "http://cyclonedx.org/schema/bom-1.7.schema.json"
PROPERTY_PREFIX = "ikeaudit"

# FIPS 203 parameter sets: NIST security category and the NIST CSOR algorithm OIDs.
MLKEM_OIDS = {35: "2.16.840.1.101.3.4.4.1", 36: "2.16.840.1.101.3.4.4.2", 37: "2.16.840.1.101.3.4.4.3"}

# Curves by IKEv2 KE method id, as the cryptography-defs ellipticCurvesEnum names them.
CURVES = {
    19: "nist/P-256", 20: "nist/P-384", 21: "nist/P-521", 25: "secg/secp192r1", 26: "secg/secp224r1",
    27: "brainpool/brainpoolP224r1", 28: "brainpool/brainpoolP256r1", 29: "brainpool/brainpoolP384r1",
    30: "brainpool/brainpoolP512r1", 31: "other/Curve25519", 32: "other/Curve448",
}

# ENCR id -> (algorithmFamily, primitive, mode)
ENCRYPTION = {
    3: ("3DES", "block-cipher", "cbc"),
    12: ("AES", "block-cipher", "cbc"),
    13: ("AES", "block-cipher", "ctr"),
    14: ("AES", "ae", "ccm"), 15: ("AES", "ae", "ccm"), 16: ("AES", "ae", "ccm"),
    18: ("AES", "ae", "gcm"), 19: ("AES", "ae", "gcm"), 20: ("AES", "ae", "gcm"),
    23: ("CAMELLIA", "block-cipher", "cbc"), 24: ("CAMELLIA", "block-cipher", "ctr"),
    25: ("CAMELLIA", "ae", "ccm"), 26: ("CAMELLIA", "ae", "ccm"), 27: ("CAMELLIA", "ae", "ccm"),
    28: ("ChaCha20", "ae", None),
}
# NIST PQ security categories are defined by the cost of AES key search.
AES_CATEGORY = {128: 1, 192: 3, 256: 5}
# PRF / INTEG id -> (algorithmFamily, digest or key bits as parameter set)
PRF = {1: ("HMAC", "MD5"), 2: ("HMAC", "SHA-1"), 4: ("AES", "128"), 5: ("HMAC", "SHA-256"),
       6: ("HMAC", "SHA-384"), 7: ("HMAC", "SHA-512"), 8: ("CMAC", "128")}
INTEGRITY = {1: ("HMAC", "MD5"), 2: ("HMAC", "SHA-1"), 5: ("AES", "128"), 6: ("HMAC", "MD5"),
             7: ("HMAC", "SHA-1"), 8: ("CMAC", "128"), 9: ("AES", "128"), 10: ("AES", "192"),
             11: ("AES", "256"), 12: ("HMAC", "SHA-256"), 13: ("HMAC", "SHA-384"), 14: ("HMAC", "SHA-512")}

KE_FAMILY = {"MODP": "FFDH", "ECP": "ECDH", "ECX": "ECDH", "brainpool": "ECDH", "GOST": "GOST"}


def render(document: dict, *, serial_number: str | None = None, timestamp: str | None = None) -> str:
    """The scan document as CBOM JSON text."""
    return "".join(iter_render(document, serial_number=serial_number, timestamp=timestamp))


def iter_render(document: dict, *, serial_number: str | None = None, timestamp: str | None = None) -> Iterator[str]:
    """render's text in pieces, to be written as they come."""
    bom = build_cbom(document["negotiations"], serial_number=serial_number, timestamp=timestamp,
                     captures=[c["path"] for c in document.get("captures", [])],
                     tool_version=document.get("tool", {}).get("version", __version__),
                     tunnels=document.get("tunnels", ()))
    yield from json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(bom)
    yield "\n"


def build_cbom(negotiations: Iterable[dict], *, serial_number: str | None = None,
               timestamp: str | None = None, captures: Iterable[str] = (),
               tool_version: str = __version__, tunnels: Iterable[dict] = ()) -> dict:
    """The CBOM as a JSON-ready dict. serial_number: "urn:uuid:..." (default: derived from
    the content, so equal input gives an equal BOM); timestamp: ISO 8601 (default: none);
    tunnels: the report document's tunnels, whose status each service carries.
    negotiations are read once, one at a time (a streamed report's come from a spool)."""
    components: dict[str, dict] = {}
    depends: dict[str, set[str]] = {}
    services: dict[str, dict] = {}
    captures = dict.fromkeys(captures)
    for n in negotiations:
        captures.setdefault(n["capture"])
        protocol = _protocol(n, components, depends)
        service_ref = _service(n, services)
        if protocol is not None:
            depends.setdefault(service_ref, set()).add(protocol)
        _authentication(n, components, depends, protocol or service_ref, services[service_ref])
    _tunnel_status(services, tunnels)
    for ref in services:
        depends.setdefault(ref, set())
    captures = list(captures)
    bom: dict = {
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "ikeaudit", "version": tool_version}]},
            "properties": [_prop("capture", c) for c in captures],
        },
        "components": [components[ref] for ref in sorted(components)],
        # Each working dict freed as it is finished: a gateway has a service per client.
        "services": [_finish_service(services.pop(ref)) for ref in sorted(services)],
        "dependencies": [{"ref": ref, "dependsOn": sorted(depends.pop(ref))} for ref in sorted(depends)],
    }
    if timestamp:
        bom["metadata"]["timestamp"] = timestamp
    bom = {"$schema": bom.pop("$schema"), "bomFormat": bom.pop("bomFormat"),
           "specVersion": bom.pop("specVersion"),
           "serialNumber": serial_number or _derived_serial(bom), **bom}
    return bom


def _derived_serial(content: dict) -> str:
    # json.dumps(content, sort_keys=True) hashed a piece at a time: a gateway's CBOM has
    # a service per peer pair, tens of thousands.
    digest = hashlib.sha256()
    for piece in json.JSONEncoder(sort_keys=True).iterencode(content):
        digest.update(piece.encode())
    digest = digest.hexdigest()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ikeaudit:cbom:{digest}").urn


def _prop(name: str, value) -> dict:
    return {"name": f"{PROPERTY_PREFIX}:{name}", "value": str(value)}


def _ref(*parts) -> str:
    return "crypto/" + "/".join(str(p) for p in parts)


# ---------------------------------------------------------------------------- protocols


def _protocol(n: dict, components: dict, depends: dict) -> str | None:
    """The protocol asset of a negotiation's chosen configuration, or None without one."""
    if n.get("ike_version") == 1:
        ref = _ref("protocol", "ikev1")
        components.setdefault(ref, {
            "type": "cryptographic-asset", "bom-ref": ref, "name": "IKEv1",
            "cryptoProperties": {"assetType": "protocol", "protocolProperties": {"type": "ike", "version": "1"}},
            "properties": [_prop("note", "IKEv1 (ISAKMP) exchange: recognised, not parsed; it has no "
                                         "post-quantum key exchange")],
        })
        depends.setdefault(ref, set())
        return ref
    if n.get("ke") is None:
        return None
    transforms = [t for t in (n.get("chosen_transforms") or [])
                  if t["type_id"] not in iana.KE_TRANSFORM_TYPES]
    key = {"ke": n["ke"]["id"], "addke": [(a["slot"], a["id"]) for a in n["addke"]],
           "transforms": sorted((t["type_id"], t["id"], t.get("key_length")) for t in transforms),
           "basis": n.get("classification_basis")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    ref = _ref("protocol", "ikev2", digest)
    algorithms: list[str] = []
    ke_entries = []
    properties = [_prop("ikev2:KE", f"{n['ke']['name']} ({n['ke']['id']})")]
    for slot, ke in [("KE", n["ke"]), *((a["slot"], a) for a in n["addke"])]:
        alg = _ke_algorithm(ke, components)
        algorithms.append(alg)
        ke_entries.append({"group": ke["id"], "algorithm": alg})
        if slot != "KE":
            properties.append(_prop(f"ikev2:{slot}", f"{ke['name']} ({ke['id']})"))
    transform_types: dict = {}
    for t in transforms:
        kind = t["type_id"]
        if kind == iana.TRANSFORM_ENCR:
            alg = _encryption_algorithm(t, components)
            entry = {"name": t["name"], "algorithm": alg}
            if t.get("key_length"):
                entry["keyLength"] = t["key_length"]
            transform_types.setdefault("encr", []).append(entry)
        elif kind == iana.TRANSFORM_PRF:
            alg = _mac_algorithm(t, components, "prf", PRF, ["keyderive"])
            transform_types.setdefault("prf", []).append({"name": t["name"], "algorithm": alg})
        elif kind == iana.TRANSFORM_INTEG:
            if t["id"] == 0:
                continue
            alg = _mac_algorithm(t, components, "integ", INTEGRITY, ["tag"])
            transform_types.setdefault("integ", []).append({"name": t["name"], "algorithm": alg})
        elif kind == iana.TRANSFORM_ESN:
            transform_types["esn"] = transform_types.get("esn", False) or t["id"] == 1
            continue
        else:
            continue
        algorithms.append(alg)
    transform_types["ke"] = ke_entries
    if n.get("classification_basis", "").startswith("inherited"):
        properties.append(_prop("ikev2:basis", "inherited from the parent IKE SA: the rekey's own "
                                               "proposal travels encrypted"))
    if n.get("chosen_transforms") is None:
        properties.append(_prop("ikev2:transforms", "ENCR, PRF and INTEG not available to the CBOM"))
    unique = sorted(set(algorithms))
    components.setdefault(ref, {
        "type": "cryptographic-asset",
        "bom-ref": ref,
        "name": "IKEv2 " + " + ".join([*(f"{s}={v}" for s, v in _names(n)),
                                        *(t["name"] + (f"/{t['key_length']}" if t.get("key_length") else "")
                                          for t in transforms if t["type_id"] != iana.TRANSFORM_ESN)]),
        "cryptoProperties": {
            "assetType": "protocol",
            "protocolProperties": {
                "type": "ike",
                "version": "2",
                "ikev2TransformTypes": {k: transform_types[k] for k in ("encr", "prf", "integ", "ke", "esn")
                                        if k in transform_types},
                "relatedCryptographicAssets": [{"type": "algorithm", "ref": a} for a in unique],
            },
        },
        "properties": properties,
    })
    depends.setdefault(ref, set()).update(unique)
    return ref


def _names(n: dict):
    yield "KE", n["ke"]["name"]
    for a in n["addke"]:
        yield a["slot"], a["name"]


# ---------------------------------------------------------------------------- algorithms


def _ke_algorithm(ke: dict, components: dict) -> str:
    method_id = ke["id"]
    ref = _ref("algorithm", "ike-ke", method_id)
    if ref in components:
        return ref
    known = iana.KE_METHODS.get(method_id)
    props: dict = {}
    if known is not None and known.family == "ML-KEM":
        props = {"primitive": "kem", "algorithmFamily": "ML-KEM", "parameterSetIdentifier": str(known.key_bits),
                 "classicalSecurityLevel": known.strength_bits, "nistQuantumSecurityLevel": known.nist_category,
                 "cryptoFunctions": ["keygen", "encapsulate", "decapsulate"]}
    elif known is not None and known.kind == "classical":
        props = {"primitive": "key-agree", "algorithmFamily": KE_FAMILY[known.family]}
        if method_id in CURVES:
            props["ellipticCurve"] = CURVES[method_id]
        else:
            props["parameterSetIdentifier"] = str(known.key_bits)
        props.update({"classicalSecurityLevel": known.strength_bits, "nistQuantumSecurityLevel": 0,
                      "cryptoFunctions": ["keygen", "keyderive"]})
    elif ke.get("kind") == "pq":  # a private-use id the user declared post-quantum
        props = {"primitive": "kem", "cryptoFunctions": ["keygen", "encapsulate", "decapsulate"]}
    elif ke.get("kind") == "classical":
        props = {"primitive": "key-agree", "nistQuantumSecurityLevel": 0}
    else:
        props = {"primitive": "unknown"}
    crypto: dict = {"assetType": "algorithm", "algorithmProperties": props}
    if method_id in MLKEM_OIDS:
        crypto["oid"] = MLKEM_OIDS[method_id]
    components[ref] = {
        "type": "cryptographic-asset", "bom-ref": ref, "name": ke["name"], "cryptoProperties": crypto,
        "properties": [_prop("ikev2:transform", f"KE method {method_id}"),
                       _prop("ikev2:kind", ke.get("kind", known.kind if known else "unknown"))],
    }
    return ref


def _encryption_algorithm(t: dict, components: dict) -> str:
    key_length = t.get("key_length")
    ref = _ref("algorithm", "ike-encr", t["id"], key_length or "default")
    if ref in components:
        return ref
    family, primitive, mode = ENCRYPTION.get(t["id"], (None, "unknown", None))
    props: dict = {"primitive": primitive}
    if family:
        props["algorithmFamily"] = family
    if key_length:
        props["parameterSetIdentifier"] = str(key_length)
    if mode:
        props["mode"] = mode
    props["cryptoFunctions"] = ["encrypt", "decrypt"] + (["tag"] if primitive == "ae" else [])
    if family == "AES" and key_length in AES_CATEGORY:
        props["classicalSecurityLevel"] = key_length
        props["nistQuantumSecurityLevel"] = AES_CATEGORY[key_length]
    components[ref] = {
        "type": "cryptographic-asset", "bom-ref": ref,
        "name": t["name"] + (f"-{key_length}" if key_length else ""),
        "cryptoProperties": {"assetType": "algorithm", "algorithmProperties": props},
        "properties": [_prop("ikev2:transform", f"ENCR {t['id']}")],
    }
    return ref


def _mac_algorithm(t: dict, components: dict, kind: str, table: dict, functions: list[str]) -> str:
    ref = _ref("algorithm", f"ike-{kind}", t["id"])
    if ref in components:
        return ref
    family, parameter = table.get(t["id"], (None, None))
    props: dict = {"primitive": "mac" if family else "unknown"}
    if family:
        props["algorithmFamily"] = family
    if parameter:
        props["parameterSetIdentifier"] = parameter
    props["cryptoFunctions"] = functions
    components[ref] = {
        "type": "cryptographic-asset", "bom-ref": ref, "name": t["name"],
        "cryptoProperties": {"assetType": "algorithm", "algorithmProperties": props},
        "properties": [_prop("ikev2:transform", f"{kind.upper()} {t['id']}")],
    }
    return ref


# ---------------------------------------------------------------------------- services


def _service(n: dict, services: dict) -> str:
    ref = f"service/ike/{n['initiator']}/{n['responder']}"
    service = services.get(ref)
    if service is None:
        service = services[ref] = {"ref": ref, "initiator": n["initiator"], "responder": n["responder"],
                                   "endpoints": set(), "classes": Counter(), "captures": [],
                                   "observations": Counter(), "tunnel": [],
                                   "first_seen": n["first_seen"], "last_seen": n["last_seen"]}
    scheme = "tcp" if n.get("transport") == "tcp" else "udp"
    host = _uri_host(n["responder"])
    service["endpoints"].add(f"{scheme}://{host}:{n['responder_port']}")
    if n.get("moved_to_4500"):
        service["endpoints"].add(f"{scheme}://{host}:{iana.NAT_T_PORT}")
    service["classes"][n["classification"]] += 1
    observation = n.get("observation") or "observed"
    service["observations"]["unassessed" if observation == "not-observable" else observation] += 1
    if n["capture"] not in service["captures"]:
        service["captures"].append(n["capture"])
    service["first_seen"] = min(service["first_seen"], n["first_seen"])
    service["last_seen"] = max(service["last_seen"], n["last_seen"])
    return ref


def _tunnel_status(services: dict, tunnels: Iterable[dict]) -> None:
    """Give each service its tunnel's status; a tunnel without any IKE negotiation (ESP
    alone) becomes a service of its own."""
    by_peers: dict[tuple[str, ...], list[dict]] = {}
    for service in services.values():
        by_peers.setdefault(tuple(sorted((service["initiator"], service["responder"]))), []).append(service)
    for t in tunnels:
        status = [_prop("tunnel:status", t["status"]), _prop("tunnel:observation", t["observation"])]
        status += [_prop("tunnel:reason", r) for r in t.get("reasons", [])]
        if t.get("esp_packets_total") is not None:
            status += [_prop("tunnel:esp_packets", t["esp_packets_total"]),
                       _prop("tunnel:esp_packets_unassessed", t["esp_packets_unassessed"])]
        matched = by_peers.get(tuple(t["peers"]))
        if not matched:
            a, b = t["peers"]
            ref = f"service/esp/{a}/{b}"
            matched = [services.setdefault(ref, {
                "ref": ref, "initiator": a, "responder": b, "endpoints": set(), "classes": Counter(),
                "captures": list(t.get("captures", [])), "observations": Counter(), "tunnel": [],
                "first_seen": t["first_seen"], "last_seen": t["last_seen"],
                "name": f"ESP between {a} and {b}",
                "description": f"ESP between {a} and {b} with no IKE negotiation captured: unassessed"})]
        for service in matched:
            service["tunnel"] = status


def _uri_host(address: str) -> str:
    """An address as a URI host. IPv6 is written in full: a compressed literal
    ("2001:db8::2") is valid RFC 3986, but the rfc3987-syntax grammar behind jsonschema's
    iri-reference check rejects "::", and a CBOM should pass strict validators."""
    if ":" not in address:
        return address
    try:
        return f"[{ipaddress.IPv6Address(address).exploded}]"
    except ValueError:
        return f"[{address}]"


# ---------------------------------------------------------------------------- authentication

# RFC 7427 AUTH methods 9-11 and 1 name their signature algorithm themselves.
AUTH_METHOD_SIGNATURES = {1: ("RSASSA-PKCS1", None), 9: ("ECDSA", "nist/P-256"), 10: ("ECDSA", "nist/P-384"),
                          11: ("ECDSA", "nist/P-521")}
SIGNATURE_FAMILIES = (("ML-DSA", "ML-DSA"), ("HashML-DSA", "ML-DSA"), ("SLH-DSA", "SLH-DSA"),
                      ("ecdsa-with", "ECDSA"), ("RSASSA-PSS", "RSASSA-PSS"), ("WithRSA", "RSASSA-PKCS1"),
                      ("ed25519", "EdDSA"), ("ed448", "EdDSA"), ("dsa-with", "DSA"))


def _authentication(n: dict, components: dict, depends: dict, owner: str, service: dict) -> None:
    """Certificates and signature algorithms of a negotiation's IKE_AUTH, related to its
    protocol asset (or its service when it has none), and each side's implementation and
    shared-key authentication as service properties."""
    auth = n.get("authentication") or {}
    related: set[tuple[str, str]] = set()
    for c in auth.get("certificates", []):
        if c.get("error") or not c.get("subject"):
            continue
        related.add(("certificate", _certificate(c, components, depends)))
    for m in auth.get("methods", []):
        side = "initiator" if m["from_initiator"] else "responder"
        if m.get("shared_key"):
            service.setdefault("peer", set()).add((f"auth:{side}", m["method"]))
        signature = m.get("signature_algorithm")
        if signature:
            related.add(("algorithm", _signature_algorithm(signature, components)))
        elif m["id"] in AUTH_METHOD_SIGNATURES:
            family, curve = AUTH_METHOD_SIGNATURES[m["id"]]
            related.add(("algorithm", _signature_algorithm({"name": m["method"], "family": family, "curve": curve},
                                                           components)))
    for side, implementation in (n.get("implementation") or {}).items():
        if implementation.get("name"):
            version = f" {implementation['version']}" if implementation.get("version") else ""
            service.setdefault("peer", set()).add(
                (f"implementation:{side}", f"{implementation['name']}{version} "
                                            f"(confidence {implementation['confidence']})"))
    if not related:
        return
    depends.setdefault(owner, set()).update(ref for _, ref in related)
    component = components.get(owner)
    if component is not None:
        listed = component["cryptoProperties"]["protocolProperties"].setdefault("relatedCryptographicAssets", [])
        known = {(a["type"], a["ref"]) for a in listed}
        listed[:] = sorted([*listed, *({"type": t, "ref": r} for t, r in related - known)],
                           key=lambda a: (a["type"], a["ref"]))


def _certificate(c: dict, components: dict, depends: dict) -> str:
    ref = _ref("certificate", c["sha256"][:16])
    if ref in components:
        return ref
    related = [{"type": "algorithm", "ref": _signature_algorithm(c["signature_algorithm"], components)}]
    key = _key_algorithm(c, components)
    if key is not None:
        related.append({"type": "algorithm", "ref": key})
    props = {"subjectName": c["subject"], "issuerName": c["issuer"], "serialNumber": c["serial"],
             "notValidBefore": c["not_before"], "notValidAfter": c["not_after"], "certificateFormat": "X.509",
             "fingerprint": {"alg": "SHA-256", "content": c["sha256"]},
             "relatedCryptographicAssets": sorted(related, key=lambda a: a["ref"])}
    components[ref] = {
        "type": "cryptographic-asset", "bom-ref": ref, "name": c["subject"],
        "cryptoProperties": {"assetType": "certificate", "certificateProperties": props},
        "properties": [_prop("certificate:sent_by", "initiator" if c["from_initiator"] else "responder"),
                       _prop("certificate:post_quantum", str(c["post_quantum"]).lower())],
    }
    depends.setdefault(ref, set()).update(a["ref"] for a in related)
    return ref


def _signature_algorithm(sig: dict, components: dict) -> str:
    """An algorithm asset for a signature algorithm view (certs.SignatureAlgorithm), or for
    an AUTH method that names its own (family and curve given)."""
    name = sig["name"]
    ref = _ref("algorithm", "signature", sig.get("oid") or name)
    if ref in components:
        return ref
    family = sig.get("family") or next((f for marker, f in SIGNATURE_FAMILIES if marker.lower() in name.lower()), None)
    props: dict = {"primitive": "signature", "cryptoFunctions": ["sign", "verify"]}
    if family and not sig.get("composite"):
        props["algorithmFamily"] = family
    if family in ("ML-DSA", "SLH-DSA") and not sig.get("composite"):
        props["parameterSetIdentifier"] = name.split("-", 2)[-1].split(" ")[0]
    if sig.get("curve"):
        props["ellipticCurve"] = sig["curve"]
    if sig.get("post_quantum"):
        if sig.get("nist_category"):
            props["nistQuantumSecurityLevel"] = sig["nist_category"]
    else:
        props["nistQuantumSecurityLevel"] = 0
    crypto: dict = {"assetType": "algorithm", "algorithmProperties": props}
    if sig.get("oid"):
        crypto["oid"] = sig["oid"]
    properties = [_prop("signature:post_quantum", str(bool(sig.get("post_quantum"))).lower())]
    if sig.get("composite"):
        properties.append(_prop("signature:composite", "composite ML-DSA with a classical signature "
                                                        "(draft-ietf-lamps-pq-composite-sigs)"))
    components[ref] = {"type": "cryptographic-asset", "bom-ref": ref, "name": name, "cryptoProperties": crypto,
                       "properties": properties}
    return ref


def _key_algorithm(c: dict, components: dict) -> str | None:
    """The certified key's algorithm as an asset: its name, size and curve."""
    name = c.get("key_algorithm")
    if not name:
        return None
    curve = f"nist/{c['curve']}" if c.get("curve", "") and c["curve"].startswith("P-") else None
    label = name + (f" {c['curve']}" if c.get("curve") else f" {c['key_bits']}" if c.get("key_bits") else "")
    ref = _ref("algorithm", "public-key", label)
    if ref in components:
        return ref
    family = {"EC": "ECDSA", "RSA": "RSASSA-PKCS1", "Ed25519": "EdDSA", "Ed448": "EdDSA", "DSA": "DSA"}.get(name)
    if family is None and name.startswith(("ML-DSA", "SLH-DSA")):
        family = name.split("-")[0] + "-DSA"
    props: dict = {"primitive": "signature", "cryptoFunctions": ["verify"]}
    if family:
        props["algorithmFamily"] = family
    if curve:
        props["ellipticCurve"] = curve
    elif c.get("key_bits"):
        props["parameterSetIdentifier"] = str(c["key_bits"])
    if not c.get("post_quantum_key"):
        props["nistQuantumSecurityLevel"] = 0
    crypto: dict = {"assetType": "algorithm", "algorithmProperties": props}
    if c.get("key_oid"):
        crypto["oid"] = c["key_oid"]
    components[ref] = {"type": "cryptographic-asset", "bom-ref": ref, "name": f"{label} public key",
                       "cryptoProperties": crypto, "properties": [_prop("certificate:key", label)]}
    return ref


def _finish_service(s: dict) -> dict:
    properties = [_prop("initiator", s["initiator"]), _prop("responder", s["responder"]),
                  _prop("first_seen", s["first_seen"]), _prop("last_seen", s["last_seen"]),
                  _prop("negotiations", sum(s["classes"].values()))]
    properties += [_prop(f"classification:{name}", count) for name, count in sorted(s["classes"].items())]
    properties += [_prop(f"observation:{name}", count) for name, count in sorted(s["observations"].items())]
    properties += s["tunnel"]
    properties += [_prop(name, value) for name, value in sorted(s.get("peer", ()))]
    properties += [_prop("capture", c) for c in s["captures"]]
    service = {
        "bom-ref": s["ref"],
        "name": s.get("name", f"IKE responder {s['responder']}"),
        "description": s.get("description", f"IKE negotiations from {s['initiator']} to {s['responder']}"),
        "properties": properties,
    }
    if s["endpoints"]:
        service["endpoints"] = sorted(s["endpoints"])
    return service
