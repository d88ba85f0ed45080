"""Rules to verdicts: each rule of a `Policy` judges one audited negotiation.

A pure function of plain records: an audited negotiation's `Negotiation`, its
`Classification` and a date; it never sees a packet. The rule kinds and their keys are
documented in ikeaudit/policy/loading.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Iterable

from ikeaudit import iana
from ikeaudit.classify import (
    CLASSICAL, CLASSICAL_PQ_OFFERED, FAILED, HYBRID_PQ, IKEV1, INCOMPLETE, NOT_OBSERVABLE, PASSABLE_CONFIDENCE,
    PQ_ONLY, SEVERITIES, UNKNOWN, Classification, KeCatalog,
)
from ikeaudit.certs import PQ_SIGNATURES, AuthInventory, inventory
from ikeaudit.iana import KeMethod
from ikeaudit.policy.loading import (
    CLASSICAL_ONLY_CLASSES, DEFAULT_OUTCOMES, FAIL, NOT_APPLICABLE, PASS, PQ_CLASSES, WARN, Policy, Rule,
    SunsetStep,
)
from ikeaudit.records import Negotiation, Proposal

if TYPE_CHECKING:  # only for annotations: the engine duck-types AuditedNegotiation
    from ikeaudit.pipeline import AuditedNegotiation

_OUTCOME_RANK = {NOT_APPLICABLE: 0, PASS: 1, WARN: 2, FAIL: 3}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's judgement of one negotiation."""

    policy: str
    rule: str
    outcome: str  # pass / fail / warn / not-applicable
    severity: str | None  # info..critical for a fail or warn (the --fail-on scale); None otherwise
    detail: str  # one sentence: what the rule found
    evidence: tuple[str, ...]  # the chosen methods, their strengths, the message that carried them
    date_context: str  # the evaluation date and where it stands against the policy's dates
    as_of: date
    capture: str
    spi_i: str
    spi_r: str
    classification: str  # so that pq-only passes can be reported apart from hybrid ones
    frame: int | None = None  # first frame of the message that chose the proposal
    reference: str = ""  # the rule's section of its primary document, and when it was checked

    @property
    def is_finding(self) -> bool:
        return self.outcome in (FAIL, WARN)

    def as_dict(self) -> dict:
        return {
            "policy": self.policy, "rule": self.rule, "outcome": self.outcome,
            "severity": self.severity, "detail": self.detail, "evidence": list(self.evidence),
            "date_context": self.date_context, "as_of": self.as_of.isoformat(),
            "capture": self.capture, "spi_i": self.spi_i, "spi_r": self.spi_r,
            "classification": self.classification, "frame": self.frame, "reference": self.reference,
        }


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one negotiation offers to a rule, named once."""

    n: Negotiation
    c: Classification
    auth: AuthInventory
    methods: tuple[tuple[str, KeMethod], ...]  # (slot, method): KE first, then ADDKE1..7
    origin: str  # where the chosen proposal was read
    frame: int | None
    proposal: Proposal | None  # the chosen IKE proposal: IKE_SA_INIT's, or the decrypted rekey's

    @property
    def pq(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.is_pq]

    @property
    def classical(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.is_classical]

    @property
    def unverifiable(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.kind not in ("pq", "classical")]


def _facts(n: Negotiation, c: Classification, catalog: KeCatalog, auth: AuthInventory) -> _Facts:
    methods: list[tuple[str, KeMethod]] = []
    if c.ke_method is not None:
        methods.append(("KE", catalog.method(c.ke_method)))
    methods.extend((iana.addke_slot(t), catalog.method(m)) for t, m in c.addke)
    frame = None
    responses = [m for m in n.messages if m.exchange == iana.IKE_SA_INIT and m.response]
    proposal = c.chosen_proposal or n.chosen
    if c.basis == "IKE_SA_INIT" and responses:
        frame = responses[-1].first_frame
        origin = (f"chosen in the IKE_SA_INIT response (frame {frame})" if methods else
                  f"the IKE_SA_INIT response (frame {frame}) chose no proposal"
                  + (f": {c.error}" if c.error else ""))
    elif proposal is not None:
        origin = f"chosen in the decrypted CREATE_CHILD_SA that created this IKE SA ({c.basis})"
    elif c.basis.startswith("inherited") and n.rekeyed_from:
        origin = (f"inherited from parent IKE SA {n.rekeyed_from[0]}/{n.rekeyed_from[1]} "
                  "(the rekey's own proposal is encrypted)")
    else:
        origin = "no chosen proposal captured"
    return _Facts(n, c, auth, tuple(methods), origin, frame, proposal)


def describe_method(slot: str, m: KeMethod) -> str:
    """'ADDKE1 = ML-KEM-768 (36): post-quantum, NIST category 3' and the like."""
    if m.is_pq:
        what = "post-quantum" + (f", NIST category {m.nist_category}" if m.nist_category else
                                 " (declared by the user; parameter set unknown)")
    elif m.is_classical:
        size = f"{m.key_bits}-bit " if m.key_bits else ""
        strength = f", {m.strength_bits}-bit security strength" if m.strength_bits is not None else ""
        what = f"classical {size}{m.family}{strength}"
    else:
        what = f"{m.kind}: not known to be post-quantum or classical"
    return f"{slot} = {m.name} ({m.id}): {what}"


def evaluate(policy: Policy, audited: "AuditedNegotiation", as_of: date | None = None,
             catalog: KeCatalog | None = None) -> list[Verdict]:
    """One verdict per rule of the policy for one audited negotiation (anything with
    ``negotiation`` and ``classification`` attributes). as_of defaults to today (UTC).
    The cipher rules read the classification's chosen proposal: the IKE_SA_INIT
    response's, or for a rekeyed IKE SA seen decrypted, its CREATE_CHILD_SA's."""
    as_of = as_of or datetime.now(timezone.utc).date()
    auth = getattr(audited, "authentication", None) or inventory(audited.negotiation)
    facts = _facts(audited.negotiation, audited.classification, catalog or KeCatalog(), auth)
    return [_evaluate_rule(policy, rule, facts, as_of) for rule in policy.rules]


def evaluate_all(policy: Policy, audits: Iterable, as_of: date | None = None,
                 catalog: KeCatalog | None = None) -> list[Verdict]:
    """Verdicts for every negotiation of CaptureAudits or AuditedNegotiations, in order."""
    as_of = as_of or datetime.now(timezone.utc).date()
    return [v for item in audited_negotiations(audits) for v in evaluate(policy, item, as_of, catalog)]


def _fail_closed(rule: Rule, f: _Facts, outcome: str, detail: str) -> tuple[str, str]:
    """No pass on what the capture does not prove: a confidence other than verified or
    negotiated never passes, and an unassessed negotiation (observation not-observable)
    passes no rule and is never better than the classification rule's
    unassessed_outcome."""
    c = f.c
    if outcome == PASS and c.confidence not in PASSABLE_CONFIDENCE:
        confidence = c.confidence or "none"
        outcome = rule.confidence_outcomes.get(confidence, WARN) if rule.kind == "classification" else WARN
        detail += f"; not passed: {_CONFIDENCE_SENTENCE.get(confidence, confidence)}"
    if c.observation == NOT_OBSERVABLE:
        least = rule.unassessed_outcome if rule.kind == "classification" else WARN if outcome == PASS else outcome
        if _OUTCOME_RANK[outcome] < _OUTCOME_RANK[least]:
            outcome = least
            detail += "; unassessed: the exchange that decided the key exchange was not captured and nothing " \
                      "else shows it"
    return outcome, detail


_CONFIDENCE_SENTENCE = {
    "unconfirmed": "confidence unconfirmed, the exchange that carries the chosen key exchange was never "
                   "captured",
    "contradicted": "confidence contradicted, the messages on the wire contradict the chosen key exchange",
    "inferred": "confidence inferred, no chosen proposal was captured and the class rests on inferences",
    "none": "no confidence, no chosen proposal was captured",
}


def _evaluate_rule(policy: Policy, rule: Rule, f: _Facts, as_of: date) -> Verdict:
    judge = _JUDGES[rule.kind]
    outcome, detail, evidence, severity, context = judge(rule, f, as_of)
    if rule.kind != "authentication":  # it judges IKE_AUTH, not the key exchange, and fails closed itself
        outcome, detail = _fail_closed(rule, f, outcome, detail)
    if f.c.inferences:
        evidence = [*evidence, *(f"inferred: {i}" for i in f.c.inferences)]
    if outcome == FAIL:
        severity = severity or _milestone_severity(rule, as_of) or rule.severity
    elif outcome == WARN:
        severity = severity or rule.warn_severity
    else:
        severity = None
    return Verdict(policy=policy.name, rule=rule.id, outcome=outcome, severity=severity, detail=detail,
                   evidence=tuple(evidence), date_context=context or _milestone_context(rule, as_of),
                   as_of=as_of, capture=f.n.capture, spi_i=f.n.spi_i, spi_r=f.n.spi_r,
                   classification=f.c.name, frame=f.frame, reference=_reference(rule))


def _reference(rule: Rule) -> str:
    if not rule.reference:
        return ""
    return rule.reference + (f" (checked {rule.checked.isoformat()})" if rule.checked else "")


def _milestone_severity(rule: Rule, as_of: date) -> str | None:
    passed = [m for m in rule.milestones if as_of > m.after and m.severity]
    return passed[-1].severity if passed else None


def _milestone_context(rule: Rule, as_of: date) -> str:
    if not rule.milestones:
        return f"as of {as_of.isoformat()}; the rule has no dates: it applies now"
    parts = []
    for m in rule.milestones:
        state = "passed" if as_of > m.after else "ahead"
        parts.append(f"{m.label} (after {m.after.isoformat()}: {state})")
    return f"as of {as_of.isoformat()}: " + "; ".join(parts)


def _method_evidence(f: _Facts, methods: Iterable[tuple[str, KeMethod]] | None = None) -> list[str]:
    chosen = list(f.methods if methods is None else methods)
    return [describe_method(s, m) for s, m in chosen] + [f.origin]


def _nothing_to_assess(f: _Facts) -> str:
    return (f"no chosen key exchange to assess (classification {f.c.name}): the classification rule "
            "judges this negotiation")


# Each judge returns (outcome, detail, evidence, severity or None, date context or None).

def _judge_classification(rule: Rule, f: _Facts, as_of: date):
    c = f.c
    outcome = rule.outcomes.get(c.name, DEFAULT_OUTCOMES[c.name])
    detail = _class_sentence(f)
    if c.name in CLASSICAL_ONLY_CLASSES and c.ppk == "negotiated" and rule.ppk_outcome:
        outcome = rule.ppk_outcome
        detail += ("; an RFC 8784 post-quantum preshared key was used (PPK_IDENTITY accepted, seen "
                   "decrypted): its strength cannot be verified from the capture")
    if outcome == NOT_APPLICABLE and c.name in CLASSICAL_ONLY_CLASSES + PQ_CLASSES:
        detail += " (left to the policy's other rules)"
    evidence = _method_evidence(f) + [e for e in c.evidence if e.startswith(("initiator offered", "INVALID_KE"))]
    return outcome, detail, evidence, rule.severities.get(c.name) if outcome in (FAIL, WARN) else None, None


def _class_sentence(f: _Facts) -> str:
    c = f.c
    names = ", ".join(f"{s}={m.name}" for s, m in f.methods)
    if c.name == HYBRID_PQ:
        return f"hybrid key exchange: {names}"
    if c.name == PQ_ONLY:
        return (f"post-quantum only: {names} is the sole key exchange, with no classical component "
                "(reported apart from hybrid negotiations)")
    if c.name == CLASSICAL:
        return f"classical key exchange only ({names}); post-quantum was not offered"
    if c.name == CLASSICAL_PQ_OFFERED:
        return f"downgrade: the initiator offered ML-KEM, the responder chose classical key exchange only ({names})"
    if c.name == FAILED:
        return (f"the negotiation failed ({c.error or 'no proposal chosen'}): no IKE SA was established, "
                "so nothing was protected by it")
    if c.name == INCOMPLETE:
        return "cannot verify: the IKE_SA_INIT request was never answered in the capture"
    if c.name == IKEV1:
        return "IKEv1: it has no post-quantum key exchange (RFC 9395 deprecates IKEv1)"
    # unknown
    if f.unverifiable:
        slot, m = f.unverifiable[0]
        return (f"cannot verify: the chosen {slot} {m.name} ({m.id}) is {m.kind}, not known to be "
                "post-quantum or classical")
    if c.observation == NOT_OBSERVABLE or c.basis == "none":
        return "cannot verify: the handshake of this IKE SA (its IKE_SA_INIT) was not captured"
    return "cannot verify: " + (c.findings[0].detail if c.findings else "the key exchange could not be established")


def _judge_pq(rule: Rule, f: _Facts, as_of: date):
    if not f.methods:
        return NOT_APPLICABLE, _nothing_to_assess(f), [f.origin], None, None
    wanted = _pq_requirement(rule)
    good = [(s, m) for s, m in f.pq if _pq_ok(rule, m)]
    if good:
        slot, m = good[0]
        return PASS, f"{slot} {m.name} meets {wanted}", _method_evidence(f), None, None
    declared = [(s, m) for s, m in f.pq if m.nist_category is None]
    if declared or f.unverifiable:
        slot, m = (declared or f.unverifiable)[0]
        return WARN, (f"cannot verify {wanted}: the chosen {slot} {m.name} ({m.id}) has no known "
                      "parameter set"), _method_evidence(f), None, None
    if f.pq:
        names = ", ".join(f"{s} {m.name}" for s, m in f.pq)
        return FAIL, f"{names} chosen, but the policy requires {wanted}", _method_evidence(f), None, None
    return FAIL, f"no post-quantum key exchange chosen; the policy requires {wanted}", _method_evidence(f), None, None


def _pq_requirement(rule: Rule) -> str:
    parts = []
    if rule.parameter_sets:
        parts.append(" or ".join(rule.parameter_sets))
    if rule.min_nist_category:
        parts.append(f"NIST category {rule.min_nist_category} or higher")
    return " with ".join(parts) if parts else "a post-quantum key exchange"


def _pq_ok(rule: Rule, m: KeMethod) -> bool:
    if rule.parameter_sets and m.name not in rule.parameter_sets:
        return False
    if rule.min_nist_category and (m.nist_category or 0) < rule.min_nist_category:
        return False
    if (rule.parameter_sets or rule.min_nist_category) and m.nist_category is None:
        return False
    return True


def _judge_classical(rule: Rule, f: _Facts, as_of: date):
    if not f.methods:
        return NOT_APPLICABLE, _nothing_to_assess(f), [f.origin], None, None
    classical = f.classical
    if not classical:
        if f.unverifiable and not f.pq:
            return WARN, "cannot verify: the chosen key exchange is neither known classical nor post-quantum", \
                _method_evidence(f), None, None
        return rule.when_absent, "no classical key exchange chosen (post-quantum only)", \
            _method_evidence(f), None, None
    weak = []
    for slot, m in classical:
        problem = _classical_problem(rule, m)
        if problem:
            weak.append(f"{slot} {m.name}: {problem}")
    if weak:
        return FAIL, "classical component too weak: " + "; ".join(weak), _method_evidence(f, classical), None, None
    names = ", ".join(f"{s} {m.name}" for s, m in classical)
    return PASS, f"classical component strong enough: {names} ({_classical_requirement(rule)})", \
        _method_evidence(f, classical), None, None


def _classical_problem(rule: Rule, m: KeMethod) -> str | None:
    if rule.methods:
        if m.name not in rule.methods:
            return f"not one of the methods the policy allows ({', '.join(rule.methods)})"
        return None
    if rule.min_bits is not None:
        least = rule.min_bits.get(m.family)
        if least is None:
            return f"family {m.family} is not allowed by the policy"
        if m.key_bits is None or m.key_bits < least:
            return f"{m.key_bits}-bit {m.family}, the policy asks at least {least} bits"
    if rule.min_strength_bits is not None and (m.strength_bits or 0) < rule.min_strength_bits:
        return f"{m.strength_bits}-bit security strength, the policy asks at least {rule.min_strength_bits}"
    return None


def _classical_requirement(rule: Rule) -> str:
    parts = []
    if rule.min_bits:
        parts.append(", ".join(f"{fam} >= {bits} bits" for fam, bits in rule.min_bits.items()))
    if rule.min_strength_bits:
        parts.append(f"strength >= {rule.min_strength_bits} bits")
    if rule.methods:
        parts = [" / ".join(rule.methods)]
    return "; ".join(parts)


def _transforms(f: _Facts, transform_type: int):
    """The chosen transforms of one type, or None when the proposal is not visible (or
    there is no chosen key exchange, which the classification rule judges)."""
    if f.proposal is None or not f.methods:
        return None
    return [t for t in f.proposal.transforms if t.type == transform_type]


def _symmetric_unseen(f: _Facts):
    if f.c.name in (FAILED, INCOMPLETE, IKEV1) or not f.methods:
        return NOT_APPLICABLE, _nothing_to_assess(f), [f.origin], None, None
    return WARN, "cannot verify: the chosen proposal is not visible (" + f.origin + ")", [f.origin], None, None


def _judge_encryption(rule: Rule, f: _Facts, as_of: date):
    chosen = _transforms(f, iana.TRANSFORM_ENCR)
    if not chosen:
        return _symmetric_unseen(f)
    evidence = [f"ENCR = {iana.transform_name(1, t.id)} ({t.id})"
                + (f", {t.key_length}-bit key" if t.key_length else "") for t in chosen] + [f.origin]
    bad = []
    for t in chosen:
        name = iana.transform_name(iana.TRANSFORM_ENCR, t.id)
        if name not in rule.algorithms:
            bad.append(f"{name} is not allowed")
        elif rule.min_key_bits and (t.key_length or 0) < rule.min_key_bits:
            bad.append(f"{name} with a {t.key_length}-bit key, the policy asks {rule.min_key_bits}")
    want = " / ".join(rule.algorithms) + (f" with a key of at least {rule.min_key_bits} bits"
                                           if rule.min_key_bits else "")
    if bad:
        return FAIL, "; ".join(bad) + f" (allowed: {want})", evidence, None, None
    return PASS, f"encryption meets {want}", evidence, None, None


def _judge_named(transform_type: int, label: str):
    def judge(rule: Rule, f: _Facts, as_of: date):
        chosen = _transforms(f, transform_type)
        if chosen is None:
            return _symmetric_unseen(f)
        chosen = [t for t in chosen if not (transform_type == iana.TRANSFORM_INTEG and t.id == 0)]
        if not chosen:
            encr = _transforms(f, iana.TRANSFORM_ENCR) or []
            if transform_type == iana.TRANSFORM_INTEG and any(t.id in iana.AEAD_ENCRYPTION for t in encr):
                names = ", ".join(iana.transform_name(1, t.id) for t in encr)
                return NOT_APPLICABLE, f"no INTEG transform: the AEAD cipher {names} carries its own integrity", \
                    [f"ENCR = {names}", f.origin], None, None
            return FAIL, f"no {label} transform in the chosen proposal", [f.origin], None, None
        evidence = [f"{label} = {iana.transform_name(transform_type, t.id)} ({t.id})" for t in chosen] + [f.origin]
        bad = [iana.transform_name(transform_type, t.id) for t in chosen
               if iana.transform_name(transform_type, t.id) not in rule.algorithms]
        allowed = " / ".join(rule.algorithms)
        if bad:
            return FAIL, f"{label} {', '.join(bad)} is not allowed (allowed: {allowed})", evidence, None, None
        return PASS, f"{label} meets {allowed}", evidence, None, None
    return judge


def _judge_sunset(rule: Rule, f: _Facts, as_of: date):
    today = as_of.isoformat()
    if not f.methods:
        return NOT_APPLICABLE, _nothing_to_assess(f), [f.origin], None, None
    approved = [(s, m) for s, m in f.pq if m.nist_category is not None]
    if approved:
        slot, m = approved[0]
        context = f"as of {today}: ML-KEM (FIPS 203) has no sunset date"
        classical = f.classical
        if classical:
            step = _sunset_step(rule, f.c.classical_strength_bits)
            if step is not None:
                context += "; the classical component alone: " + _sunset_dates(step)
        return PASS, f"key establishment includes {slot} {m.name}: not quantum-vulnerable", \
            _method_evidence(f), None, context
    if f.unverifiable or f.pq:
        return WARN, "cannot verify: the chosen key exchange has no known security strength", \
            _method_evidence(f), None, f"as of {today}"
    strength = f.c.classical_strength_bits
    step = _sunset_step(rule, strength)
    evidence = _method_evidence(f)
    if step is None:
        return NOT_APPLICABLE, f"no schedule entry covers {strength}-bit classical key establishment", \
            evidence, None, f"as of {today}"
    dates = _sunset_dates(step)
    what = f"classical-only key establishment at {strength}-bit security strength"
    if step.disallowed_after and as_of > step.disallowed_after:
        return FAIL, f"{what} is disallowed since {_next_day(step.disallowed_after)}", evidence, None, \
            f"as of {today}: {dates}"
    if step.deprecated_after and as_of > step.deprecated_after:
        return WARN, f"{what} is deprecated since {_next_day(step.deprecated_after)}", evidence, None, \
            f"as of {today}: {dates}"
    return PASS, f"{what} is still allowed", evidence, None, f"as of {today}: {dates}"


def _sunset_step(rule: Rule, strength: int | None) -> SunsetStep | None:
    for step in rule.schedule:
        if step.max_strength_bits is None or (strength is not None and strength <= step.max_strength_bits):
            return step
    return None


def _sunset_dates(step: SunsetStep) -> str:
    parts = []
    first_bad = step.deprecated_after or step.disallowed_after
    if first_bad:
        parts.append(f"allowed until {first_bad.isoformat()}")
    if step.deprecated_after:
        parts.append(f"deprecated after {step.deprecated_after.isoformat()}")
    if step.disallowed_after:
        parts.append(f"disallowed after {step.disallowed_after.isoformat()}")
    text = ", ".join(parts) or "no dates"
    return f"{text} ({step.label})" if step.label else text


def _next_day(d: date) -> str:
    return date.fromordinal(d.toordinal() + 1).isoformat()


def _judge_authentication(rule: Rule, f: _Facts, as_of: date):
    auth, wanted = f.auth, " or ".join(rule.signature_algorithms) or "a post-quantum signature"
    if f.c.name in (FAILED, INCOMPLETE, IKEV1) or not auth.ike_auth_seen or (f.c.name == UNKNOWN
                                                                             and not auth.visible):
        return NOT_APPLICABLE, f"no IKE_AUTH to judge (classification {f.c.name})", [f.origin], None, None
    evidence = [_auth_sentence(a) for a in auth.authentications] + [_cert_sentence(c) for c in auth.certificates]
    evidence += [f"IKE_AUTH {'response' if m.response else 'request'} (frame {m.first_frame}): "
                 + (m.decryption.status if m.decryption else "encrypted, no key table given")
                 for m in f.n.messages if m.exchange == iana.IKE_AUTH and m.inner is None]
    results: list[tuple[str, str]] = []
    for side, from_initiator in (("initiator", True), ("responder", False)):
        payloads = auth.side(from_initiator)
        if not payloads:
            results.append((rule.not_visible_outcome, f"{side}: not visible (its IKE_AUTH message was not "
                                                       "decrypted: no key, or not captured)"))
            continue
        for a in payloads:
            if a.shared_key:
                results.append((rule.shared_key_outcome, f"{side}: shared key, not a signature (not "
                                                         "quantum-vulnerable in itself; the key exchange decides "
                                                         "harvest-now-decrypt-later)"))
            elif a.algorithm is not None and _signature_ok(rule, a.algorithm):
                results.append((PASS, f"{side}: {a.algorithm.name} signature"))
            else:
                name = a.algorithm.name if a.algorithm else a.method_name
                results.append((FAIL, f"{side}: {name}, the policy requires {wanted}"))
        for c in (c for c in auth.certificates if c.from_initiator == from_initiator):
            if c.error or c.signature is None:
                results.append((rule.not_visible_outcome, f"{side}: a certificate could not be read ({c.error})"))
            elif not (_signature_ok(rule, c.signature) and c.key_algorithm in _wanted_names(rule)):
                results.append((FAIL, f"{side}: certificate {c.subject} has a {c.key_algorithm} key signed "
                                      f"{c.signature.name}, the policy requires {wanted}"))
    outcome = max((o for o, _ in results), key=lambda o: _OUTCOME_RANK[o])
    detail = "; ".join(text for o, text in results if o == outcome)
    return outcome, detail, evidence, None, None


def _wanted_names(rule: Rule) -> set[str]:
    return set(rule.signature_algorithms) or {name for name, _ in PQ_SIGNATURES.values()}


def _signature_ok(rule: Rule, algorithm) -> bool:
    if rule.signature_algorithms:
        return algorithm.name in rule.signature_algorithms
    return algorithm.post_quantum


def _auth_sentence(a) -> str:
    who = "initiator" if a.from_initiator else "responder"
    return f"{who} AUTH: {a.method_name}" + (f" with {a.algorithm.name} ({a.algorithm.oid})" if a.algorithm else "")


def _cert_sentence(c) -> str:
    who = "initiator" if c.from_initiator else "responder"
    if c.error:
        return f"{who} certificate: {c.error}"
    key = c.key_algorithm + (f" {c.curve}" if c.curve else f" {c.key_bits}-bit" if c.key_bits else "")
    return f"{who} certificate {c.subject} (issuer {c.issuer}): {key} key, signed {c.signature.name}"


_JUDGES = {
    "classification": _judge_classification,
    "pq-key-exchange": _judge_pq,
    "classical-key-exchange": _judge_classical,
    "encryption": _judge_encryption,
    "prf": _judge_named(iana.TRANSFORM_PRF, "PRF"),
    "integrity": _judge_named(iana.TRANSFORM_INTEG, "INTEG"),
    "classical-sunset": _judge_sunset,
    "authentication": _judge_authentication,
}


# ---------------------------------------------------------------------------- summaries


def _rank(v: Verdict) -> tuple[int, int]:
    return _OUTCOME_RANK[v.outcome], SEVERITIES.index(v.severity) if v.severity else -1


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The verdict that matters most: fail before warn before pass before
    not-applicable, then the higher severity; the first of equals. None when empty."""
    best = None
    for v in verdicts:
        if best is None or _rank(v) > _rank(best):
            best = v
    return best


def worst_severity(verdicts: Iterable[Verdict]) -> str | None:
    """The highest severity among fails and warns, or None when there are none."""
    levels = [SEVERITIES.index(v.severity) for v in verdicts if v.is_finding and v.severity]
    return SEVERITIES[max(levels)] if levels else None


def fails_on(verdicts: Iterable[Verdict], fail_on: str) -> bool:
    """What the CLI's --fail-on LEVEL says: a fail or warn at LEVEL or above ("none": never)."""
    if fail_on == "none":
        return False
    threshold = SEVERITIES.index(fail_on)
    return any(v.is_finding and v.severity and SEVERITIES.index(v.severity) >= threshold for v in verdicts)


def audited_negotiations(audits: Iterable) -> list:
    """AuditedNegotiations from CaptureAudits, AuditedNegotiations, or a mix."""
    out = []
    for item in audits:
        if hasattr(item, "negotiations") and not hasattr(item, "negotiation"):
            out.extend(item.negotiations)
        else:
            out.append(item)
    return out
