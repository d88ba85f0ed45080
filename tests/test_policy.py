"""Policies: the preset matrix against lab captures, dates, user policy files, exposure.

Expected outcomes are written out by hand from each policy's rules and the captures'
ground truth in pcaps/manifest.json (chosen_ke, chosen_additional_kes,
ike_proposals_responder); `test_matrix_premises` checks that those facts still hold.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from datetime import date, datetime, timezone

import pytest

from conftest import RECORDS, ROOT, audit, lab_path
from ikeaudit.classify import KeCatalog, PrivateKe
from ikeaudit.policy import (
    DEFAULT_POLICY, PRESETS, PolicyError, Verdict, evaluate, evaluate_all, exposure, fails_on,
    load_policy, parse_policy, worst, worst_severity,
)
from ikeaudit.records import EspFlow, SaInitRetry

EXAMPLE = ROOT / "ikeaudit" / "policies" / "example.toml"
BEFORE_2026 = date(2026, 6, 1)
AFTER_2026 = date(2027, 3, 1)


def item(record_id: str, index: int = 0):
    return audit(lab_path(record_id)).negotiations[index]


def outcomes(policy: str, record_id: str, as_of: date, index: int = 0) -> dict[str, str]:
    return {v.rule: v.outcome for v in evaluate(load_policy(policy), item(record_id, index), as_of)}


# ---------------------------------------------------------------- the ground truth the matrix rests on

def test_matrix_premises():
    r = RECORDS
    assert (r["c01"]["chosen_ke"]["id"], r["c01"]["chosen_additional_kes"]) == (19, [])  # ECP-256, 128-bit
    assert (r["c02"]["chosen_ke"]["id"], r["c02"]["chosen_additional_kes"]) == (14, [])  # MODP-2048, 112-bit
    assert r["h01"]["chosen_ke"]["id"] == 31 and \
        [(a["slot"], a["name"]) for a in r["h01"]["chosen_additional_kes"]] == [("ADDKE1", "ML-KEM-768")]
    assert r["h02"]["chosen_ke"]["id"] == 20 and \
        [(a["slot"], a["name"]) for a in r["h02"]["chosen_additional_kes"]] == [("ADDKE1", "ML-KEM-1024")]
    assert (r["p02"]["chosen_ke"]["name"], r["p02"]["chosen_additional_kes"]) == ("ML-KEM-1024", [])
    # strongSwan proposal strings: aes256 = AES-CBC/256; sha256/sha384 = PRF and INTEG of that hash
    assert r["c01"]["ike_proposals_responder"] == "aes256-sha256-ecp256"
    assert r["c02"]["ike_proposals_responder"] == "aes256-sha256-modp2048"
    assert r["h01"]["ike_proposals_responder"] == "aes256-sha256-x25519-ke1_mlkem768"
    assert r["h02"]["ike_proposals_responder"] == "aes256-sha384-ecp384-ke1_mlkem1024"
    assert r["p02"]["ike_proposals_responder"] == "aes256-sha256-mlkem1024"
    assert r["h04"]["ike_proposals_responder"] == "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


P, F, W, NA = "pass", "fail", "warn", "not-applicable"

MATRIX = {
    # hybrid-required: classical-only fails; hybrid passes; pure ML-KEM passes (reported apart)
    ("hybrid-required", "c01"): {"hybrid-key-exchange": F},
    ("hybrid-required", "c02"): {"hybrid-key-exchange": F},
    ("hybrid-required", "h01"): {"hybrid-key-exchange": P},
    ("hybrid-required", "h02"): {"hybrid-key-exchange": P},
    ("hybrid-required", "p02"): {"hybrid-key-exchange": P},
    # cnsa2: ML-KEM-1024; a classical part only ECDH P-384 (group 20) or MODP >= 3072 (RFC 9206),
    # none needed beside ML-KEM-1024; AES-256, SHA-384 or stronger for PRF and INTEG; ML-DSA-87
    # authentication, "not visible" (warn) here because these audits have no keys
    ("cnsa2", "c01"): {"negotiation": F, "ml-kem-1024": F, "classical-part": F, "aes-256": P, "prf-sha384": F,
                       "integ-sha384": F, "ml-dsa-87": W},
    ("cnsa2", "c02"): {"negotiation": F, "ml-kem-1024": F, "classical-part": F, "aes-256": P, "prf-sha384": F,
                       "integ-sha384": F, "ml-dsa-87": W},
    ("cnsa2", "h01"): {"negotiation": P, "ml-kem-1024": F, "classical-part": F, "aes-256": P, "prf-sha384": F,
                       "integ-sha384": F, "ml-dsa-87": W},
    ("cnsa2", "h02"): {"negotiation": P, "ml-kem-1024": P, "classical-part": P, "aes-256": P, "prf-sha384": P,
                       "integ-sha384": P, "ml-dsa-87": W},
    ("cnsa2", "p02"): {"negotiation": P, "ml-kem-1024": P, "classical-part": P, "aes-256": P, "prf-sha384": F,
                       "integ-sha384": F, "ml-dsa-87": W},
    # nist-ir-8547 in 2026: every classical group here is still allowed
    ("nist-ir-8547", "c01"): {"negotiation": NA, "classical-sunset": P},
    ("nist-ir-8547", "c02"): {"negotiation": NA, "classical-sunset": P},
    ("nist-ir-8547", "h01"): {"negotiation": P, "classical-sunset": P},
    ("nist-ir-8547", "h02"): {"negotiation": P, "classical-sunset": P},
    ("nist-ir-8547", "p02"): {"negotiation": P, "classical-sunset": P},
    # bsi-tr-02102: hybrid only; ML-KEM-768/1024; DH >= 3000 bits, EC >= 250 bits
    ("bsi-tr-02102", "c01"): {"hybrid": F, "pq-parameter-set": F, "classical-strength": P},
    ("bsi-tr-02102", "c02"): {"hybrid": F, "pq-parameter-set": F, "classical-strength": F},
    ("bsi-tr-02102", "h01"): {"hybrid": P, "pq-parameter-set": P, "classical-strength": P},
    ("bsi-tr-02102", "h02"): {"hybrid": P, "pq-parameter-set": P, "classical-strength": P},
    ("bsi-tr-02102", "p02"): {"hybrid": F, "pq-parameter-set": P, "classical-strength": NA},
}


@pytest.mark.parametrize("policy,record_id", sorted(MATRIX), ids=lambda x: x)
def test_policy_matrix(policy, record_id):
    assert outcomes(policy, record_id, BEFORE_2026) == MATRIX[policy, record_id]


def test_every_preset_covers_the_matrix():
    assert {p for p, _ in MATRIX} == set(PRESETS)
    assert DEFAULT_POLICY == "hybrid-required"


@pytest.mark.parametrize("policy", PRESETS)
@pytest.mark.parametrize("record_id", sorted(RECORDS))
def test_every_preset_judges_every_capture_with_complete_verdicts(policy, record_id):
    loaded = load_policy(policy)
    for audited in audit(lab_path(record_id)).negotiations:
        verdicts = evaluate(loaded, audited, BEFORE_2026)
        assert [v.rule for v in verdicts] == [r.id for r in loaded.rules]
        for v in verdicts:
            assert v.policy == policy and v.outcome in (P, F, W, NA)
            assert (v.severity is not None) == (v.outcome in (F, W))
            assert v.detail and v.evidence and v.date_context.startswith("as of 2026-06-01")
            assert (v.capture, v.spi_i, v.spi_r) == (audited.negotiation.capture, audited.negotiation.spi_i,
                                                     audited.negotiation.spi_r)
            assert v.classification == audited.classification.name
            json.dumps(v.as_dict())


def test_cnsa2_h01_fails_on_ml_kem_768_and_sha256_with_evidence():
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), item("h01"), AFTER_2026)}
    mlkem = verdicts["ml-kem-1024"]
    assert mlkem.detail == "ADDKE1 ML-KEM-768 chosen, but the policy requires ML-KEM-1024"
    assert "ADDKE1 = ML-KEM-768 (36): post-quantum, NIST category 3" in mlkem.evidence
    assert any(e.startswith("chosen in the IKE_SA_INIT response (frame ") for e in mlkem.evidence)
    assert mlkem.frame is not None
    assert "PRF_HMAC_SHA2_256" in verdicts["prf-sha384"].detail
    assert "AUTH_HMAC_SHA2_256_128" in verdicts["integ-sha384"].detail
    assert "ENCR = AES-CBC (12), 256-bit key" in verdicts["aes-256"].evidence


def test_cnsa2_aead_needs_no_integ():
    got = outcomes("cnsa2", "h04", BEFORE_2026)  # AES-GCM-16/256 + PRF SHA-384 + ML-KEM-768
    assert got == {"negotiation": P, "ml-kem-1024": F, "classical-part": F, "aes-256": P, "prf-sha384": P,
                   "integ-sha384": NA, "ml-dsa-87": W}


@pytest.mark.parametrize("as_of,severity", [
    (date(2026, 12, 31), "medium"),  # before "support and prefer by 2026" has passed
    (date(2027, 1, 1), "high"),
    (date(2030, 12, 31), "high"),
    (date(2031, 1, 1), "critical"),  # "exclusively by 2030" has passed
])
def test_cnsa2_fail_severity_follows_the_timeline(as_of, severity):
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), item("h01"), as_of)}
    assert (verdicts["ml-kem-1024"].outcome, verdicts["ml-kem-1024"].severity) == (F, severity)
    assert "exclusively by 2030" in verdicts["ml-kem-1024"].date_context


@pytest.mark.parametrize("record_id,as_of,outcome,severity,phrase", [
    # c02: 2048-bit MODP, 112-bit strength
    ("c02", date(2030, 12, 31), P, None, "still allowed"),
    ("c02", date(2031, 1, 1), W, "medium", "deprecated since 2031-01-01"),
    ("c02", date(2035, 12, 31), W, "medium", "deprecated since 2031-01-01"),
    ("c02", date(2036, 1, 1), F, "high", "disallowed since 2036-01-01"),
    # c01: ECP-256, 128-bit strength: never deprecated, disallowed after 2035
    ("c01", date(2031, 6, 1), P, None, "still allowed"),
    ("c01", date(2036, 1, 1), F, "high", "disallowed since 2036-01-01"),
    # h01 and p02 include ML-KEM: no sunset
    ("h01", date(2040, 1, 1), P, None, "ML-KEM-768"),
    ("p02", date(2040, 1, 1), P, None, "ML-KEM-1024"),
])
def test_nist_ir_8547_dates(record_id, as_of, outcome, severity, phrase):
    [_, sunset] = evaluate(load_policy("nist-ir-8547"), item(record_id), as_of)
    assert (sunset.outcome, sunset.severity) == (outcome, severity)
    assert phrase in sunset.detail
    assert sunset.date_context.startswith(f"as of {as_of.isoformat()}")


def test_nist_ir_8547_date_context_names_both_years():
    [_, sunset] = evaluate(load_policy("nist-ir-8547"), item("c02"), BEFORE_2026)
    assert "allowed until 2030-12-31, deprecated after 2030-12-31, disallowed after 2035-12-31" in sunset.date_context
    [_, sunset] = evaluate(load_policy("nist-ir-8547"), item("c01"), BEFORE_2026)
    assert "allowed until 2035-12-31, disallowed after 2035-12-31" in sunset.date_context
    [_, sunset] = evaluate(load_policy("nist-ir-8547"), item("h01"), BEFORE_2026)
    assert "the classical component alone: allowed until 2035-12-31" in sunset.date_context


@pytest.mark.parametrize("as_of,severity", [(date(2031, 12, 31), "medium"), (date(2032, 1, 1), "high")])
def test_bsi_severity_rises_after_2031(as_of, severity):
    verdicts = {v.rule: v for v in evaluate(load_policy("bsi-tr-02102"), item("c02"), as_of)}
    assert {v.severity for v in verdicts.values() if v.outcome == F} == {severity}
    assert "2048-bit MODP" in verdicts["classical-strength"].detail and "3000" in verdicts["classical-strength"].detail


def test_pq_only_passes_but_is_reported_apart():
    [v] = evaluate(load_policy("hybrid-required"), item("p02"), BEFORE_2026)
    assert (v.outcome, v.classification) == (P, "pq-only")
    assert "post-quantum only" in v.detail and "reported apart" in v.detail
    [h] = evaluate(load_policy("hybrid-required"), item("h01"), BEFORE_2026)
    assert (h.outcome, h.classification) == (P, "hybrid-pq")


def test_downgrade_fails_hybrid_required():
    [v] = evaluate(load_policy("hybrid-required"), item("d01"), BEFORE_2026)
    assert (v.outcome, v.severity, v.classification) == (F, "high", "classical-pq-offered")
    assert v.detail.startswith("downgrade")


def test_failed_negotiation_is_not_applicable_and_says_why():
    verdicts = evaluate(load_policy("cnsa2"), item("x01"), AFTER_2026)
    assert {v.outcome for v in verdicts} == {NA}
    assert "NO_PROPOSAL_CHOSEN" in verdicts[0].detail and "no IKE SA was established" in verdicts[0].detail
    assert any("chose no proposal" in e for e in verdicts[0].evidence)


def _with(record_id: str, **changes):
    base = item(record_id)
    return dataclasses.replace(base, classification=dataclasses.replace(base.classification, **changes))


def test_unknown_warns_never_passes():
    unknown = _with("h01", name="unknown", basis="none", ke_method=None, addke=())
    for policy in PRESETS:
        first, *rest = evaluate(load_policy(policy), unknown, BEFORE_2026)
        assert (first.outcome, first.severity) == (W, "medium")
        assert first.detail.startswith("cannot verify")
        assert all(v.outcome == NA for v in rest)


def test_incomplete_warns_low():
    incomplete = _with("h01", name="incomplete", ke_method=None, addke=())
    [v] = evaluate(load_policy("hybrid-required"), incomplete, BEFORE_2026)
    assert (v.outcome, v.severity) == (W, "low")


def test_private_ke_cannot_be_verified():
    private = _with("h01", name="unknown", ke_method=31, addke=((6, 1081),))
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), private, BEFORE_2026)}
    assert verdicts["negotiation"].outcome == W and "1081" in verdicts["negotiation"].detail
    assert verdicts["ml-kem-1024"].outcome == W
    # declared post-quantum by the user: still no parameter set to check ML-KEM-1024 against
    declared = KeCatalog({1081: PrivateKe("kyber768", "pq")})
    pq = _with("h01", name="hybrid-pq", ke_method=31, addke=((6, 1081),))
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), pq, BEFORE_2026, declared)}
    assert verdicts["ml-kem-1024"].outcome == W and "kyber768" in verdicts["ml-kem-1024"].detail
    [v] = evaluate(load_policy("hybrid-required"), pq, BEFORE_2026, declared)
    assert v.outcome == P


def test_negotiated_ppk_turns_a_classical_fail_into_a_warning():
    ppk = _with("c01", ppk="negotiated")
    [v] = evaluate(load_policy("hybrid-required"), ppk, BEFORE_2026)
    assert v.outcome == W and "RFC 8784" in v.detail


def test_rekeyed_sa_inherits_key_exchange_but_not_symmetric_evidence():
    rekey = item("r01", 1)
    assert rekey.classification.basis.startswith("inherited")
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), rekey, BEFORE_2026)}
    assert verdicts["ml-kem-1024"].outcome == F
    assert any(e.startswith("inherited from parent IKE SA") for e in verdicts["ml-kem-1024"].evidence)
    assert {verdicts[r].outcome for r in ("aes-256", "prf-sha384", "integ-sha384")} == {W}
    assert verdicts["ml-kem-1024"].frame is None


def test_as_of_defaults_to_today():
    [v] = evaluate(load_policy("hybrid-required"), item("h01"))
    assert v.as_of == datetime.now(timezone.utc).date()


def test_evaluate_all_walks_capture_audits():
    verdicts = evaluate_all(load_policy("hybrid-required"), [audit(lab_path("r01")), audit(lab_path("c01"))],
                            BEFORE_2026)
    # r01's rekeyed SA, without keys, is hybrid only by inference: it warns, never passes
    assert [(v.classification, v.outcome) for v in verdicts] == [("hybrid-pq", P), ("hybrid-pq", W),
                                                                 ("classical", F)]


# ---------------------------------------------------------------- worst and --fail-on

def _v(outcome, severity=None, rule="r"):
    return Verdict("p", rule, outcome, severity, "d", ("e",), "as of", BEFORE_2026, "c", "i", "r", "hybrid-pq")


def test_worst_orders_outcome_then_severity():
    verdicts = [_v(P), _v(W, "high", "w"), _v(F, "low", "f1"), _v(F, "medium", "f2"), _v(NA)]
    assert worst(verdicts).rule == "f2"
    assert worst([_v(NA), _v(P, rule="p")]).rule == "p"
    assert worst([]) is None
    assert worst_severity(verdicts) == "high"
    assert worst_severity([_v(P), _v(NA)]) is None


@pytest.mark.parametrize("fail_on,expected", [
    ("none", False), ("info", True), ("low", True), ("medium", True), ("high", True), ("critical", False),
])
def test_fails_on_uses_the_cli_levels(fail_on, expected):
    verdicts = [_v(P), _v(W, "medium"), _v(F, "high")]
    assert fails_on(verdicts, fail_on) is expected
    assert fails_on([_v(P), _v(NA)], "info") is False


# ---------------------------------------------------------------- policy files

def test_presets_load_and_name_their_sources():
    for name in PRESETS:
        policy = load_policy(name)
        assert policy.name == name and policy.description and policy.source
        assert policy.origin == f"preset {name}"
    for name in ("cnsa2", "nist-ir-8547", "bsi-tr-02102"):
        assert "verify" in load_policy(name).description
    assert "NSA" in load_policy("cnsa2").source
    assert "NIST IR 8547" in load_policy("nist-ir-8547").source
    assert "TR-02102-1" in load_policy("bsi-tr-02102").source


def test_preset_files_ship_as_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ikeaudit"]
    assert "policies/*.toml" in patterns
    for name in PRESETS:
        assert (ROOT / "ikeaudit" / "policies" / f"{name}.toml").is_file()


def test_example_policy_file():
    policy = load_policy(EXAMPLE)
    assert policy.name == "example-corp" and policy.origin == str(EXAMPLE)
    assert outcomes(EXAMPLE, "h01", BEFORE_2026) == {
        "hybrid": P, "ml-kem-strength": P, "classical-strength": P, "aead": F, "prf": P, "deprecated-dh": P}
    assert outcomes(EXAMPLE, "h04", BEFORE_2026)["aead"] == P
    p02 = {v.rule: v for v in evaluate(policy, item("p02"), BEFORE_2026)}
    assert (p02["hybrid"].outcome, p02["hybrid"].severity) == (W, "low")
    assert p02["classical-strength"].outcome == P  # when_absent = "pass"
    c02 = {v.rule: v for v in evaluate(policy, item("c02"), date(2027, 6, 1))}
    assert (c02["deprecated-dh"].outcome, c02["deprecated-dh"].severity) == (W, "low")
    assert (c02["classical-strength"].outcome, c02["classical-strength"].severity) == (F, "high")
    c02 = {v.rule: v for v in evaluate(policy, item("c02"), date(2029, 1, 1))}
    assert (c02["deprecated-dh"].outcome, c02["deprecated-dh"].severity) == (F, "critical")
    c01 = {v.rule: v for v in evaluate(policy, item("c01"), date(2040, 1, 1))}
    assert c01["deprecated-dh"].outcome == P  # "stronger groups: no date yet"
    assert "no dates (stronger groups: no date yet)" in c01["deprecated-dh"].date_context
    ppk = {v.rule: v for v in evaluate(policy, _with("c01", ppk="negotiated"), BEFORE_2026)}
    assert ppk["hybrid"].outcome == P  # ppk_outcome = "pass"


def test_user_policy_file_from_disk(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('''
name = "mine"
[[rules]]
id = "strong-pq"
kind = "pq-key-exchange"
min_nist_category = 5
severity = "critical"
[[rules]]
id = "no-weak-dh"
kind = "classical-key-exchange"
min_strength_bits = 192
''')
    policy = load_policy(str(path))
    verdicts = {v.rule: v for v in evaluate(policy, item("h01"), BEFORE_2026)}
    assert (verdicts["strong-pq"].outcome, verdicts["strong-pq"].severity) == (F, "critical")
    assert verdicts["no-weak-dh"].outcome == F and "128-bit security strength" in verdicts["no-weak-dh"].detail
    verdicts = {v.rule: v for v in evaluate(policy, item("h02"), BEFORE_2026)}
    assert (verdicts["strong-pq"].outcome, verdicts["no-weak-dh"].outcome) == (P, P)
    assert verdicts["strong-pq"].date_context == "as of 2026-06-01; the rule has no dates: it applies now"


GOOD_RULE = '[[rules]]\nid = "r"\nkind = "prf"\nalgorithms = ["PRF_HMAC_SHA2_384"]\n'

BAD_POLICIES = [
    ('name = "x"\n[[rules\n', "TOML syntax error"),
    ('nme = "x"\n' + GOOD_RULE, "unknown key 'nme'"),
    ('name = "x"\n' + GOOD_RULE + 'colour = "red"\n', "rule 'r': unknown key 'colour'"),
    (GOOD_RULE, "missing required key 'name'"),
    ('name = 3\n' + GOOD_RULE, "'name' must be a string, not an integer"),
    ('name = "x"\n', "missing required key 'rules'"),
    ('name = "x"\nrules = []\n', "at least one [[rules]]"),
    ('name = "x"\nrules = ["r"]\n', "must be a table"),
    ('name = "x"\n' + GOOD_RULE + GOOD_RULE, "duplicate rule id"),
    ('name = "x"\n[[rules]]\nkind = "prf"\nalgorithms = ["PRF_HMAC_SHA2_384"]\n', "missing required key 'id'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "magic"\n', "'kind' is 'magic'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "prf"\nalgorithms = ["SHA3"]\n', "unknown prf algorithm 'SHA3'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "prf"\nalgorithms = "PRF_HMAC_SHA2_384"\n',
     "'algorithms' must be an array"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "encryption"\nalgorithms = ["AES-CBC"]\nmin_key_bits = "256"\n',
     "'min_key_bits' must be an integer, not a string"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "encryption"\nalgorithms = ["AES-CBC"]\nmin_key_bits = true\n',
     "'min_key_bits' must be an integer, not a boolean"),
    ('name = "x"\n' + GOOD_RULE + 'severity = "severe"\n', "'severity' is 'severe'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classification"\n[rules.outcomes]\nhybrid = "pass"\n',
     "'class' is 'hybrid'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classification"\n[rules.outcomes]\nclassical = "ok"\n',
     "'classical' is 'ok'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "pq-key-exchange"\nparameter_sets = ["Kyber768"]\n',
     "'parameter set' is 'Kyber768'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "pq-key-exchange"\nmin_nist_category = 7\n', "between 1 and 5"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classical-key-exchange"\n', "needs 'min_bits', 'min_strength_bits' or 'methods'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classical-key-exchange"\nmin_bits = { DSA = 2048 }\n',
     "'family' is 'DSA'"),
    ('name = "x"\n[[milestones]]\nafter = "2030-12-31"\nlabel = "l"\n' + GOOD_RULE,
     "'after' must be a date (e.g. 2030-12-31), not a string"),
    ('name = "x"\n[[milestones]]\nafter = 2030-12-31T00:00:00\nlabel = "l"\n' + GOOD_RULE,
     "'after' must be a date (e.g. 2030-12-31), not a date-time"),
    ('name = "x"\n[[milestones]]\nafter = 2030-12-31\n' + GOOD_RULE, "missing required key 'label'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classical-sunset"\n[[rules.schedule]]\n'
     'deprecated_after = 2035-12-31\ndisallowed_after = 2030-12-31\n', "later than 'disallowed_after'"),
    ('name = "x"\n[[rules]]\nid = "r"\nkind = "classical-sunset"\n[[rules.schedule]]\nwhen = 2030-12-31\n',
     "unknown key 'when'"),
]


@pytest.mark.parametrize("text,problem", BAD_POLICIES, ids=[p for _, p in BAD_POLICIES])
def test_bad_policy_file_raises_one_line_naming_file_and_problem(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_missing_and_unreadable_policy_files(tmp_path):
    with pytest.raises(PolicyError, match="no such policy file, and not a preset"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path)
    with pytest.raises(PolicyError, match="^hybrid-requird: no such policy file"):
        load_policy("hybrid-requird")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(PolicyError, match="binary.toml"):
        load_policy(binary)


def test_parse_policy_from_text():
    policy = parse_policy('name = "inline"\n' + GOOD_RULE, "inline")
    assert (policy.name, [r.kind for r in policy.rules]) == ("inline", ["prf"])


# ---------------------------------------------------------------- exposure per peer pair

def test_exposure_groups_by_unordered_pair_over_every_lab_capture():
    audits = [audit(lab_path(r)) for r in sorted(RECORDS)]
    tunnels = exposure(audits)
    total = sum(len(a.negotiations) for a in audits)
    assert sum(t.negotiations for t in tunnels) == total
    assert {t.peers for t in tunnels} == {("192.0.2.1", "192.0.2.2"), ("2001:db8:1::1", "2001:db8:1::2")}
    v4 = next(t for t in tunnels if t.peers == ("192.0.2.1", "192.0.2.2"))
    assert v4.by_class["failed"] == 1 and v4.by_class["classical-pq-offered"] == 1
    assert v4.esp_packets is None and v4.esp_bytes is None  # ESP not measured
    assert tunnels[0] is v4  # classical tunnels outrank the all-hybrid IPv6 one
    v6 = tunnels[1]
    assert (v6.by_class, v6.classical_only, v6.score) == ({"hybrid-pq": 1}, 0, 0.0)
    view = json.loads(json.dumps(v6.as_dict()))
    assert view["peers"] == ["2001:db8:1::1", "2001:db8:1::2"] and view["esp_packets"] is None
    assert view["first_seen"].startswith("2026-11-23T") and view["first_seen"].endswith("Z")


def test_exposure_counts_downgrades_and_regressions_in_time_order():
    # c01 (classical) came before h01 (hybrid): no regression; h01 before d01 (downgrade): one
    [t] = exposure([audit(lab_path("h01")), audit(lab_path("c01"))])
    assert (t.classical_only, t.pq_protected, t.downgrades, t.regressions, t.latest_class) == \
        (1, 1, 0, 0, "hybrid-pq")
    [t] = exposure([audit(lab_path("d01")), audit(lab_path("h01"))])
    assert (t.classical_only, t.downgrades, t.regressions, t.latest_class) == (1, 1, 1, "classical-pq-offered")
    assert t.first_seen == item("h01").negotiation.first_seen and t.last_seen == item("d01").negotiation.last_seen
    assert t.captures == (lab_path("h01"), lab_path("d01"))
    assert t.classical_seconds > 0


def test_invalid_ke_retry_from_ml_kem_to_classical_is_a_downgrade():
    # k01 (ECP-256 -> X25519) and k03 (X25519 -> ML-KEM-768) are not downgrades
    [t] = exposure([audit(lab_path("k01")), audit(lab_path("k03"))])
    assert t.downgrades == 0
    k03 = item("k03")
    retry = dataclasses.replace(k03.negotiation.retries[0], offered_ke=36, requested_ke=31)
    downgraded = dataclasses.replace(k03, negotiation=dataclasses.replace(k03.negotiation, retries=(retry,)))
    [t] = exposure([downgraded])
    assert t.downgrades == 1
    assert isinstance(retry, SaInitRetry)


def test_exposure_attributes_esp_to_the_ike_sa_in_force():
    h01, d01 = item("h01").negotiation, item("d01").negotiation  # hybrid, then a classical downgrade
    flows = [
        EspFlow("192.0.2.1", "192.0.2.2", "00000001", False, 1, h01.first_seen - 60, h01.first_seen - 59, 10, 1000),  # before any SA
        EspFlow("192.0.2.1", "192.0.2.2", "00000002", False, 1, h01.last_seen + 1, h01.last_seen + 2, 5, 500),  # under hybrid h01
        EspFlow("192.0.2.2", "192.0.2.1", "00000003", False, 1, d01.last_seen + 1, d01.last_seen + 5, 7, 700),  # under classical d01
        EspFlow("192.0.2.1", "192.0.2.2", "00000004", False, 1, d01.last_seen + 6, d01.last_seen + 9, 3, 300),
        EspFlow("198.51.100.1", "192.0.2.2", "00000005", False, 1, d01.last_seen + 1, d01.last_seen + 2, 99, 9900),  # other pair
    ]
    tunnels = {t.peers: t for t in exposure([item("h01"), item("d01")], esp=flows)}
    t = tunnels["192.0.2.1", "192.0.2.2"]
    assert (t.status, t.esp_packets, t.esp_bytes) == ("exposed", 10, 1000)  # flows 3 and 4, under d01
    assert (t.esp_packets_unassessed, t.esp_bytes_unassessed) == (10, 1000)  # flow 1, under no captured SA
    assert (t.esp_packets_total, t.esp_bytes_total) == (25, 2500)
    # ESP alone makes a tunnel; with no IKE SA captured for it, it is unassessed, never safe
    other = tunnels["192.0.2.2", "198.51.100.1"]
    assert (other.status, other.observation, other.negotiations) == ("unassessed", "unassessed", 0)
    assert (other.esp_packets, other.esp_packets_unassessed) == (0, 99)
    assert other.reasons == ("ESP ran under no IKE SA the capture holds",)
    [t] = exposure([item("h01")], esp=[])
    assert (t.esp_packets, t.esp_bytes, t.status) == (0, 0, "protected")


def test_exposure_ranks_the_most_exposed_first():
    tunnels = exposure([item("v01"), item("c01")])
    assert [t.latest_class for t in tunnels] == ["classical", "hybrid-pq"]
    assert tunnels[0].score > tunnels[1].score
    ppk = _with("c01", ppk="negotiated")
    [t] = exposure([ppk])
    assert (t.classical_only, t.ppk, t.score) == (0, 1, 0.0)


# ---------------------------------------------------------------- fail closed

NOT_PASSABLE = ("unconfirmed", "contradicted", "inferred", None)


@pytest.mark.parametrize("confidence", NOT_PASSABLE)
@pytest.mark.parametrize("policy", PRESETS)
def test_no_preset_passes_what_the_capture_does_not_prove(policy, confidence):
    """h02 (ECP-384 + ML-KEM-1024, AES-256, SHA-384: manifest) passes every rule of every
    preset when negotiated (authentication aside: without keys its IKE_AUTH is not
    visible); the same negotiation with a confidence that cannot pass passes no rule of
    any preset."""
    loaded = load_policy(policy)
    authentication = {r.id for r in loaded.rules if r.kind == "authentication"}
    assert all(v.outcome in (P, NA) for v in evaluate(loaded, item("h02"), BEFORE_2026)
               if v.rule not in authentication)
    unproven = _with("h02", confidence=confidence)
    verdicts = evaluate(loaded, unproven, BEFORE_2026)
    assert not [v for v in verdicts if v.outcome == P]
    assert worst(verdicts).outcome in (W, F)
    assert any("not passed" in v.detail for v in verdicts)


def test_contradicted_fails_the_classification_rule_and_unconfirmed_warns():
    [v] = evaluate(load_policy("hybrid-required"), _with("h02", confidence="contradicted"), BEFORE_2026)
    assert (v.outcome, v.severity) == (F, "high")
    [v] = evaluate(load_policy("hybrid-required"), _with("h02", confidence="unconfirmed"), BEFORE_2026)
    assert (v.outcome, v.severity) == (W, "medium")
    assert "never captured" in v.detail


@pytest.mark.parametrize("policy", PRESETS)
def test_not_observable_is_never_better_than_warn(policy):
    unassessed = _with("h02", observation="not-observable", confidence=None, name="unknown", ke_method=None,
                       addke=(), basis="none")
    verdicts = evaluate(load_policy(policy), unassessed, BEFORE_2026)
    assert worst(verdicts).outcome in (W, F)
    assert not [v for v in verdicts if v.outcome == P]


@pytest.mark.parametrize("confidence,outcome", [("negotiated", W), ("contradicted", F)])
@pytest.mark.parametrize("policy", PRESETS)
def test_not_observable_passes_no_rule_whatever_the_confidence_says(policy, confidence, outcome):
    """h02's methods pass every rule of every preset; marked not observable they pass
    none, and a contradiction still fails the classification rule."""
    unassessed = _with("h02", observation="not-observable", confidence=confidence)
    verdicts = evaluate(load_policy(policy), unassessed, BEFORE_2026)
    assert not [v for v in verdicts if v.outcome == P]
    assert verdicts[0].outcome == outcome


def test_a_policy_file_cannot_make_an_unproven_confidence_pass(tmp_path):
    text = 'name = "x"\n[[rules]]\nid = "r"\nkind = "classification"\n[rules.confidence_outcomes]\nunconfirmed = "pass"\n'
    with pytest.raises(PolicyError, match="'unconfirmed' is 'pass', expected one of: warn, fail"):
        parse_policy(text, "x.toml")
    text = 'name = "x"\n[[rules]]\nid = "r"\nkind = "classification"\n[rules.outcomes]\nunknown = "pass"\n'
    [v] = evaluate(parse_policy(text), _with("h01", name="unknown", confidence=None, ke_method=None, addke=()),
                   BEFORE_2026)
    assert v.outcome == W  # even a policy that lets unknown pass cannot pass what nothing proves


def test_cnsa2_fails_a_hybrid_whose_classical_part_is_curve25519():
    """h01: Curve25519 + ML-KEM-768 (manifest); RFC 9206 allows ECDH P-384 or MODP >= 3072."""
    assert RECORDS["h01"]["chosen_ke"]["id"] == 31
    verdicts = {v.rule: v for v in evaluate(load_policy("cnsa2"), item("h01"), BEFORE_2026)}
    assert verdicts["classical-part"].outcome == F
    assert "Curve25519" in verdicts["classical-part"].detail
    assert "RFC 9206" in verdicts["classical-part"].reference and "2026-11-27" in verdicts["classical-part"].reference
    # the same ML-KEM-1024 over Curve25519 still fails the classical part
    x25519_1024 = _with("h02", ke_method=31)
    assert {v.rule: v.outcome for v in evaluate(load_policy("cnsa2"), x25519_1024, BEFORE_2026)}[
        "classical-part"] == F


def test_every_preset_rule_cites_its_source_and_the_day_it_was_checked():
    for name in PRESETS:
        for rule in load_policy(name).rules:
            assert rule.reference and rule.checked == date(2026, 11, 27), (name, rule.id)


def test_rekeyed_ike_sa_is_judged_by_its_decrypted_rekey_proposal():
    """r01 with keys: the rekey's own CREATE_CHILD_SA chose PRF_HMAC_SHA2_256
    (aes256-sha256-x25519-ke1_mlkem768, manifest), which cnsa2 fails rather than calling
    it not visible."""
    from ikeaudit.classify import KeCatalog
    from ikeaudit.decrypt import parse_key_table
    from ikeaudit.pipeline import audit_capture

    record = RECORDS["r01"]
    assert "sha256" in record["ike_proposals_responder"]
    keys_file = ROOT / "pcaps" / record["keys_file"]
    keys = parse_key_table(keys_file.read_text(), str(keys_file))
    audits = [audit_capture(lab_path("r01"), KeCatalog(), keys=keys)]
    verdicts = evaluate_all(load_policy("cnsa2"), audits, BEFORE_2026)
    rekeyed = [v for v in verdicts if v.rule == "prf-sha384" and v.spi_i != audits[0].negotiations[0].negotiation.spi_i]
    assert rekeyed and all(v.outcome == F and "PRF_HMAC_SHA2_256" in v.detail for v in rekeyed)
    assert all("CREATE_CHILD_SA" in " ".join(v.evidence) for v in rekeyed)


def test_only_a_confirmed_ppk_takes_a_tunnel_out_of_exposure():
    for ppk, status in (("requested", "exposed"), ("not-used", "exposed"), ("negotiated", "protected")):
        [t] = exposure([_with("c01", ppk=ppk)])
        assert t.status == status, ppk


@pytest.mark.parametrize("confidence", ["unconfirmed", "contradicted", "inferred"])
def test_a_hybrid_the_capture_does_not_prove_is_unassessed_never_protected(confidence):
    [t] = exposure([_with("h01", confidence=confidence)])
    assert (t.status, t.observation, t.unassessed, t.pq_protected) == ("unassessed", "unassessed", 1, 0)


def test_an_inferred_classical_sa_still_counts_as_exposed():
    [t] = exposure([_with("c01", observation="inferred", confidence="inferred",
                          inferences=("CREATE_CHILD_SA sizes exclude ML-KEM",))])
    assert (t.status, t.observation) == ("exposed", "inferred")
    assert "CREATE_CHILD_SA sizes exclude ML-KEM" in t.inferences


def test_esp_after_an_sa_infers_its_establishment_and_says_so():
    c01 = item("c01")
    quiet = dataclasses.replace(c01, negotiation=dataclasses.replace(c01.negotiation, established=False,
                                                                     established_basis="none"))
    assert exposure([quiet]) == []  # established by nothing: no tunnel
    flow = EspFlow("192.0.2.1", "192.0.2.2", "00000001", False, 1, c01.negotiation.last_seen + 1,
                   c01.negotiation.last_seen + 2, 4, 400)
    [t] = exposure([quiet], esp=[flow])
    assert (t.status, t.established_by_esp, t.esp_packets, t.observation) == ("exposed", 1, 4, "inferred")
    assert any("inferred from ESP" in i for i in t.inferences)


# ---------------------------------------------------------------- authentication (issue 17)


def _with_keys(record_id: str):
    from ikeaudit.decrypt import parse_key_table
    from ikeaudit.pipeline import audit_capture

    path = lab_path(record_id)
    keys = path.replace(".pcap", ".keys")
    return audit_capture(path, keys=parse_key_table(open(keys).read(), keys)).negotiations[0]


def _auth_verdict(audited):
    [verdict] = [v for v in evaluate(load_policy("cnsa2"), audited, BEFORE_2026) if v.rule == "ml-dsa-87"]
    return verdict


def test_authentication_not_decrypted_is_not_visible_never_a_pass():
    verdict = _auth_verdict(item("c01"))
    assert verdict.outcome == W and "not visible" in verdict.detail


def test_shared_key_authentication_warns_as_shared_key():
    verdict = _auth_verdict(_with_keys("c01"))
    assert verdict.outcome == W and "shared key" in verdict.detail and "not visible" not in verdict.detail
    assert verdict.evidence == ("initiator AUTH: Shared Key Message Integrity Code",
                                "responder AUTH: Shared Key Message Integrity Code")


def test_mldsa87_on_both_sides_passes_and_a_classical_certificate_fails():
    from dataclasses import replace

    from ikeaudit.certs import AuthenticationInfo, AuthInventory, CertificateInfo, signature_algorithm

    mldsa87, ecdsa = signature_algorithm("2.16.840.1.101.3.4.3.19"), signature_algorithm("1.2.840.10045.4.3.2")
    auths = tuple(AuthenticationInfo(who, 14, "Digital Signature", mldsa87) for who in (True, False))
    good = AuthInventory(True, True, authentications=auths)

    class Audited:
        negotiation, classification = item("h02").negotiation, item("h02").classification
        authentication = good

    assert _auth_verdict(Audited()).outcome == P
    classical = CertificateInfo(False, 4, "00", 500, subject="CN=gw", issuer="CN=ca", key_algorithm="EC",
                                curve="P-384", key_bits=384, signature=ecdsa)
    Audited.authentication = replace(good, certificates=(classical,))
    verdict = _auth_verdict(Audited())
    assert verdict.outcome == F and "certificate CN=gw" in verdict.detail


def test_an_unknown_signature_algorithm_name_is_a_policy_error():
    with pytest.raises(PolicyError, match="signature algorithm"):
        parse_policy('name = "x"\n[[rules]]\nid = "a"\nkind = "authentication"\n'
                     'signature_algorithms = ["ML-DSA-88"]\n')
