"""The CycloneDX CBOM: valid against the official 1.7 schema (offline) for every lab
capture, with the assets the manifest's ground truth says each negotiation chose."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from jsonschema.validators import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from conftest import RECORDS, audit, lab_path
from ikeaudit import iana
from ikeaudit.classify import KeCatalog
from ikeaudit.report import cbom, views

SCHEMAS = Path(__file__).resolve().parent / "data" / "cyclonedx"
SERIAL = "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79"
TIMESTAMP = "2026-11-23T12:00:00Z"
MLKEM_LEVEL = {"ML-KEM-512": 1, "ML-KEM-768": 3, "ML-KEM-1024": 5}


@lru_cache(maxsize=None)
def validator() -> Draft7Validator:
    registry = Registry().with_resources(
        (f"http://cyclonedx.org/schema/{p.name}", DRAFT7.create_resource(json.loads(p.read_text())))
        for p in SCHEMAS.glob("*.schema.json") if not p.name.startswith("bom-"))
    schema = json.loads((SCHEMAS / "bom-1.7.SNAPSHOT.schema.json").read_text())
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def assert_valid(bom: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(bom)]
    assert not errors, errors[:5]


def transform_view(t, catalog: KeCatalog) -> dict:
    """The `chosen_transforms` entry views.negotiation_view is asked to carry."""
    return {"type": iana.TRANSFORM_TYPES.get(t.type, str(t.type)), "type_id": t.type, "id": t.id,
            "name": (catalog.method(t.id).name if t.type in iana.KE_TRANSFORM_TYPES
                     else iana.transform_name(t.type, t.id)),
            "key_length": t.key_length}


def negotiation_views(*record_ids: str, transforms: bool = True) -> list[dict]:
    """negotiation_view dicts of lab captures, with chosen_transforms added until
    views.py carries it."""
    catalog = KeCatalog()
    out = []
    for record_id in record_ids:
        captured = audit(lab_path(record_id))
        for item in captured.negotiations:
            view = views.negotiation_view(item, catalog)
            if transforms and "chosen_transforms" not in view:
                chosen = item.negotiation.chosen
                view["chosen_transforms"] = [transform_view(t, catalog) for t in chosen.transforms] if chosen else None
            if not transforms:
                view.pop("chosen_transforms", None)
            out.append(view)
    return out


def bom_of(*record_ids: str, **kwargs) -> dict:
    return cbom.build_cbom(negotiation_views(*record_ids), serial_number=SERIAL, timestamp=TIMESTAMP, **kwargs)


def by_ref(bom: dict) -> dict[str, dict]:
    return {c["bom-ref"]: c for c in bom["components"]}


def protocols(bom: dict) -> list[dict]:
    return [c for c in bom["components"] if c["cryptoProperties"]["assetType"] == "protocol"]


def algorithm_named(bom: dict, name: str) -> dict:
    [found] = [c for c in bom["components"] if c["name"] == name]
    return found["cryptoProperties"]["algorithmProperties"]


def props(component: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


# ---------------------------------------------------------------- schema validity

@pytest.mark.parametrize("record_id", sorted(RECORDS))
def test_cbom_of_every_lab_capture_is_valid_cyclonedx_1_7(record_id):
    bom = bom_of(record_id)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.7")
    assert_valid(bom)


def test_cbom_of_all_captures_passes_the_cyclonedx_library_validator():
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom = bom_of(*sorted(RECORDS))
    assert_valid(bom)
    assert JsonStrictValidator(SchemaVersion.V1_7).validate_str(json.dumps(bom)) is None


def test_cbom_is_valid_without_chosen_transforms():
    """Until views.py carries chosen_transforms the CBOM has KE entries only."""
    bom = cbom.build_cbom(negotiation_views("h01", "x01", transforms=False), serial_number=SERIAL)
    assert_valid(bom)
    [protocol] = protocols(bom)
    assert set(protocol["cryptoProperties"]["protocolProperties"]["ikev2TransformTypes"]) == {"ke"}
    assert "ikeaudit:ikev2:transforms" in props(protocol)


# ---------------------------------------------------------------- content pinned to the manifest

@pytest.mark.parametrize("record_id", sorted(RECORDS))
def test_chosen_key_exchanges_are_assets_with_their_quantum_level(record_id):
    record = RECORDS[record_id]
    bom = bom_of(record_id)
    if record["chosen_ke"] is None:
        assert protocols(bom) == []
        return
    chosen = [record["chosen_ke"], *record["chosen_additional_kes"]]
    groups = [[e["group"] for e in p["cryptoProperties"]["protocolProperties"]["ikev2TransformTypes"]["ke"]]
              for p in protocols(bom)]
    assert [k["id"] for k in chosen] in groups
    refs = by_ref(bom)
    for ke in chosen:
        asset = refs[f"crypto/algorithm/ike-ke/{ke['id']}"]["cryptoProperties"]["algorithmProperties"]
        if ke["name"] in MLKEM_LEVEL:
            assert asset["primitive"] == "kem" and asset["algorithmFamily"] == "ML-KEM"
            assert asset["parameterSetIdentifier"] == ke["name"].rsplit("-", 1)[1]
            assert asset["nistQuantumSecurityLevel"] == MLKEM_LEVEL[ke["name"]]
            assert asset["cryptoFunctions"] == ["keygen", "encapsulate", "decapsulate"]
        else:
            assert asset["primitive"] == "key-agree" and asset["nistQuantumSecurityLevel"] == 0
    for ke in record["chosen_additional_kes"]:
        assert any(props(p).get(f"ikeaudit:ikev2:{ke['slot']}") == f"{ke['name']} ({ke['id']})"
                   for p in protocols(bom))


def test_h01_hybrid_x25519_mlkem768():
    bom = bom_of("h01")
    mlkem = algorithm_named(bom, "ML-KEM-768")
    assert mlkem == {"primitive": "kem", "algorithmFamily": "ML-KEM", "parameterSetIdentifier": "768",
                     "classicalSecurityLevel": 192, "nistQuantumSecurityLevel": 3,
                     "cryptoFunctions": ["keygen", "encapsulate", "decapsulate"]}
    assert by_ref(bom)["crypto/algorithm/ike-ke/36"]["cryptoProperties"]["oid"] == "2.16.840.1.101.3.4.4.2"
    x25519 = algorithm_named(bom, "Curve25519")
    assert (x25519["primitive"], x25519["algorithmFamily"], x25519["ellipticCurve"],
            x25519["nistQuantumSecurityLevel"]) == ("key-agree", "ECDH", "other/Curve25519", 0)
    [protocol] = protocols(bom)
    pp = protocol["cryptoProperties"]["protocolProperties"]
    assert (pp["type"], pp["version"]) == ("ike", "2")
    transforms = pp["ikev2TransformTypes"]
    assert transforms["ke"] == [{"group": 31, "algorithm": "crypto/algorithm/ike-ke/31"},
                                {"group": 36, "algorithm": "crypto/algorithm/ike-ke/36"}]
    assert transforms["encr"] == [{"name": "AES-CBC", "algorithm": "crypto/algorithm/ike-encr/12/256",
                                   "keyLength": 256}]
    assert [p["name"] for p in transforms["prf"]] == ["PRF_HMAC_SHA2_256"]
    assert [p["name"] for p in transforms["integ"]] == ["AUTH_HMAC_SHA2_256_128"]
    assert "esn" not in transforms  # ESN is an ESP/AH transform: IKE proposals carry none
    assert props(protocol)["ikeaudit:ikev2:ADDKE1"] == "ML-KEM-768 (36)"
    assert props(protocol)["ikeaudit:ikev2:KE"] == "Curve25519 (31)"
    related = {r["ref"] for r in pp["relatedCryptographicAssets"]}
    assert related == {"crypto/algorithm/ike-ke/31", "crypto/algorithm/ike-ke/36",
                       "crypto/algorithm/ike-encr/12/256", "crypto/algorithm/ike-prf/5",
                       "crypto/algorithm/ike-integ/12"}
    aes = algorithm_named(bom, "AES-CBC-256")
    assert (aes["algorithmFamily"], aes["mode"], aes["nistQuantumSecurityLevel"]) == ("AES", "cbc", 5)
    [service] = bom["services"]
    assert service["endpoints"] == ["udp://192.0.2.2:4500", "udp://192.0.2.2:500"]  # moved to 4500 (MOBIKE)
    assert props(service)["ikeaudit:classification:hybrid-pq"] == "1"
    deps = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert deps[service["bom-ref"]] == [protocol["bom-ref"]]
    assert deps[protocol["bom-ref"]] == sorted(related)


def test_h02_ecp384_mlkem1024_sha384():
    bom = bom_of("h02")
    assert algorithm_named(bom, "ML-KEM-1024")["nistQuantumSecurityLevel"] == 5
    assert algorithm_named(bom, "384-bit random ECP")["ellipticCurve"] == "nist/P-384"
    [protocol] = protocols(bom)
    transforms = protocol["cryptoProperties"]["protocolProperties"]["ikev2TransformTypes"]
    assert [p["name"] for p in transforms["prf"]] == ["PRF_HMAC_SHA2_384"]
    assert [p["name"] for p in transforms["integ"]] == ["AUTH_HMAC_SHA2_384_192"]
    assert props(protocol)["ikeaudit:ikev2:ADDKE1"] == "ML-KEM-1024 (37)"


def test_c02_modp2048_is_ffdh_with_level_0():
    bom = bom_of("c02")
    modp = algorithm_named(bom, "2048-bit MODP")
    assert (modp["primitive"], modp["algorithmFamily"], modp["parameterSetIdentifier"],
            modp["classicalSecurityLevel"], modp["nistQuantumSecurityLevel"]) == ("key-agree", "FFDH", "2048", 112, 0)
    [protocol] = protocols(bom)
    assert not any(k.startswith("ikeaudit:ikev2:ADDKE") for k in props(protocol))


def test_p02_pure_mlkem_has_one_ke_entry():
    [protocol] = protocols(bom_of("p02"))
    ke = protocol["cryptoProperties"]["protocolProperties"]["ikev2TransformTypes"]["ke"]
    assert ke == [{"group": 37, "algorithm": "crypto/algorithm/ike-ke/37"}]


def test_h04_aead_has_no_integ():
    [protocol] = protocols(bom_of("h04"))
    transforms = protocol["cryptoProperties"]["protocolProperties"]["ikev2TransformTypes"]
    assert "integ" not in transforms
    assert transforms["encr"][0]["name"] == "AES-GCM-16" and transforms["encr"][0]["keyLength"] == 256
    assert algorithm_named(bom_of("h04"), "AES-GCM-16-256")["primitive"] == "ae"


def test_failed_negotiation_is_a_service_without_protocol():
    bom = bom_of("x01")
    assert protocols(bom) == [] and bom["components"] == []
    [service] = bom["services"]
    assert props(service)["ikeaudit:classification:failed"] == "1"
    assert service["endpoints"] == ["udp://192.0.2.2:500"]


def test_rekey_inherits_its_parents_key_exchange():
    bom = bom_of("r01")
    found = protocols(bom)
    assert len(found) == 2  # the parent's full proposal, and the rekey's inherited KE only
    inherited = [p for p in found if "ikeaudit:ikev2:basis" in props(p)]
    assert len(inherited) == 1
    assert props(inherited[0])["ikeaudit:ikev2:ADDKE1"] == "ML-KEM-768 (36)"
    [service] = bom["services"]
    assert props(service)["ikeaudit:negotiations"] == "2"


def test_ipv6_endpoints_are_written_in_full():
    [service] = bom_of("v01")["services"]
    assert service["endpoints"] == ["udp://[2001:0db8:0001:0000:0000:0000:0000:0002]:4500",
                                    "udp://[2001:0db8:0001:0000:0000:0000:0000:0002]:500"]


def test_ikev1_and_private_methods_have_assets():
    [h01] = negotiation_views("h01")
    private = {**h01, "ke": {"id": 1081, "name": "kyber768", "kind": "private"}, "addke": [],
               "chosen_transforms": None, "classification": "unknown"}
    declared = {**h01, "spi_i": "1" * 16, "addke": [{"slot": "ADDKE2", "id": 1082, "name": "kyber1024",
                                                     "kind": "pq"}], "chosen_transforms": None}
    ikev1 = {**h01, "ike_version": 1, "ke": None, "addke": [], "chosen_transforms": None,
             "classification": "ikev1", "initiator": "192.0.2.9"}
    bom = cbom.build_cbom([private, declared, ikev1], serial_number=SERIAL)
    assert_valid(bom)
    refs = by_ref(bom)
    assert refs["crypto/algorithm/ike-ke/1081"]["cryptoProperties"]["algorithmProperties"] == {"primitive": "unknown"}
    assert refs["crypto/algorithm/ike-ke/1082"]["cryptoProperties"]["algorithmProperties"]["primitive"] == "kem"
    assert "nistQuantumSecurityLevel" not in refs["crypto/algorithm/ike-ke/1082"]["cryptoProperties"]["algorithmProperties"]
    assert refs["crypto/protocol/ikev1"]["cryptoProperties"]["protocolProperties"] == {"type": "ike", "version": "1"}
    assert any(props(p).get("ikeaudit:ikev2:ADDKE2") == "kyber1024 (1082)" for p in protocols(bom))


# ---------------------------------------------------------------- determinism

def test_output_is_deterministic():
    first = cbom.build_cbom(negotiation_views(*sorted(RECORDS)), serial_number=SERIAL, timestamp=TIMESTAMP)
    second = cbom.build_cbom(negotiation_views(*sorted(RECORDS)), serial_number=SERIAL, timestamp=TIMESTAMP)
    assert json.dumps(first) == json.dumps(second)
    assert first["serialNumber"] == SERIAL and first["metadata"]["timestamp"] == TIMESTAMP
    refs = [c["bom-ref"] for c in first["components"]]
    assert refs == sorted(refs) and len(refs) == len(set(refs))
    assert first["metadata"]["tools"]["components"][0]["name"] == "ikeaudit"


def test_serial_defaults_to_one_derived_from_content():
    a = cbom.build_cbom(negotiation_views("h01"))
    b = cbom.build_cbom(negotiation_views("h01"))
    c = cbom.build_cbom(negotiation_views("h02"))
    assert a["serialNumber"] == b["serialNumber"] != c["serialNumber"]
    assert a["serialNumber"].startswith("urn:uuid:") and "timestamp" not in a["metadata"]
    assert_valid(a)


def test_render_takes_the_scan_document():
    document = views.scan_document([audit(lab_path("h01"))], KeCatalog())
    text = cbom.render(document, serial_number=SERIAL, timestamp=TIMESTAMP)
    assert text.endswith("}\n")
    bom = json.loads(text)
    assert_valid(bom)
    assert {p["value"] for p in bom["metadata"]["properties"]} == {lab_path("h01")}
