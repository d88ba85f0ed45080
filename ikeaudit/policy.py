"""Compliance policies: presets and user files to verdicts; exposure per peer pair.

The policy engine is a pure function of plain records: an audited negotiation's
`Negotiation`, its `Classification` and a date. It never sees a packet.

    policy = load_policy("cnsa2")                      # a preset, or a path to a TOML file
    verdicts = evaluate(policy, audited, as_of=date(2027, 3, 1))
    worst(verdicts)                                     # the verdict that matters most
    fails_on(verdicts, "high")                          # what --fail-on high would say

Presets (``PRESETS``): ``hybrid-required`` (the default), ``cnsa2``, ``nist-ir-8547``,
``bsi-tr-02102``. Each is a TOML file in ``ikeaudit/policies/`` written in the format
below, so a user policy can do anything a preset does.

Policy file format (TOML, read with ``tomllib``)
-------------------------------------------------

Top level::

    name = "my-policy"            # required: shown in every verdict
    description = "..."           # optional: what it demands and on whose authority
    source = "..."                # optional: the document it follows

    [[milestones]]                # optional, repeatable: dates that apply to every rule
    after = 2026-12-31            # a TOML date; the milestone is passed from the next day on
    label = "what the date means"
    severity = "high"             # optional: severity of a failed rule once it has passed

    [[rules]]                     # one table per rule, evaluated in order
    id = "rule-id"                # required, unique within the policy
    kind = "classification"       # required: one of the kinds below
    description = "..."           # optional
    severity = "high"             # severity of a fail (default "high")
    warn_severity = "medium"      # severity of a warn (default "medium")
    [[rules.milestones]]          # optional: replaces the policy's milestones for this rule

Severities are ``info``, ``low``, ``medium``, ``high``, ``critical`` (the CLI's
``--fail-on`` levels); a passed milestone's severity replaces the rule's fail severity.
Outcomes are ``pass``, ``fail``, ``warn``, ``not-applicable``.

Rule kinds and their own keys:

``classification``
    ``[rules.outcomes]`` maps a class (``hybrid-pq``, ``pq-only``, ``classical``,
    ``classical-pq-offered``, ``failed``, ``incomplete``, ``unknown``, ``ikev1``) to an
    outcome; classes left out keep ``DEFAULT_OUTCOMES`` (hybrid-pq and pq-only pass,
    classical ones and ikev1 fail, failed not-applicable, incomplete and unknown warn:
    what cannot be verified never passes). ``[rules.severities]`` maps a class to the
    severity of its fail or warn. ``ppk_outcome`` (default ``"warn"``): the outcome of a
    classical negotiation that negotiated an RFC 8784 post-quantum preshared key, whose
    strength the capture cannot show; ``""`` leaves such negotiations to ``outcomes``.
``pq-key-exchange``
    The chosen key exchanges (KE and ADDKE1..7) include a post-quantum method.
    ``parameter_sets`` (list of names, e.g. ``["ML-KEM-1024"]``) and
    ``min_nist_category`` (int) narrow which ones count. A chosen private-use method
    that the user declared post-quantum (``--private-ke``) has no known parameter set:
    it gives a warn, never a pass, when the rule names parameter sets or a category.
``classical-key-exchange``
    Every chosen classical method is strong enough. ``min_bits`` maps a family
    (``MODP``, ``ECP``, ``ECX``, ``brainpool``, ``GOST``) to its least modulus or curve
    size in bits; a family left out fails. ``min_strength_bits`` asks a least security
    strength (NIST SP 800-57). ``when_absent`` (default ``"not-applicable"``): the
    outcome when no classical method was chosen (pure ML-KEM).
``encryption``
    ``algorithms``: ENCR names from ``ikeaudit.iana.ENCRYPTION_ALGORITHMS`` (e.g.
    ``"AES-GCM-16"``); ``min_key_bits``: least key length.
``prf``
    ``algorithms``: PRF names from ``ikeaudit.iana.PRF_ALGORITHMS``.
``integrity``
    ``algorithms``: INTEG names from ``ikeaudit.iana.INTEGRITY_ALGORITHMS``. An AEAD
    cipher carries its own integrity, so its proposal has none: not-applicable.
``classical-sunset``
    Dates on which classical-only key establishment becomes deprecated and then
    disallowed, by security strength. ``[[rules.schedule]]`` entries, first match wins:
    ``max_strength_bits`` (int; omit for "any strength"), ``deprecated_after`` and
    ``disallowed_after`` (TOML dates, both optional), ``label`` (optional). Before
    ``deprecated_after`` the rule passes, then warns, and after ``disallowed_after``
    fails. A negotiation whose key exchange includes ML-KEM passes.

A rule that has nothing to look at (no chosen proposal: a failed, incomplete or
unknown negotiation, or IKEv1) says not-applicable and leaves the verdict on those to
the ``classification`` rule. A symmetric rule over a rekeyed IKE SA, whose proposal
travels encrypted, warns: it cannot verify.

Every problem in a policy file (TOML syntax, an unknown key, a wrong type, an unknown
name) raises `PolicyError` with one line naming the file and the problem.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ikeaudit import iana
from ikeaudit.classify import (
    CLASSES, CLASSICAL, CLASSICAL_PQ_OFFERED, FAILED, HYBRID_PQ, IKEV1, INCOMPLETE, PQ_ONLY,
    SEVERITIES, UNKNOWN, Classification, KeCatalog,
)
from ikeaudit.iana import KeMethod
from ikeaudit.records import EspFlow, Negotiation

if TYPE_CHECKING:  # only for annotations: the engine duck-types AuditedNegotiation
    from ikeaudit.pipeline import AuditedNegotiation

PASS, FAIL, WARN, NOT_APPLICABLE = "pass", "fail", "warn", "not-applicable"
OUTCOMES = (PASS, FAIL, WARN, NOT_APPLICABLE)
_OUTCOME_RANK = {NOT_APPLICABLE: 0, PASS: 1, WARN: 2, FAIL: 3}

PRESETS = ("hybrid-required", "cnsa2", "nist-ir-8547", "bsi-tr-02102")
DEFAULT_POLICY = "hybrid-required"

DEFAULT_OUTCOMES: Mapping[str, str] = {
    HYBRID_PQ: PASS,
    PQ_ONLY: PASS,
    CLASSICAL: FAIL,
    CLASSICAL_PQ_OFFERED: FAIL,
    FAILED: NOT_APPLICABLE,
    INCOMPLETE: WARN,
    UNKNOWN: WARN,
    IKEV1: FAIL,
}
CLASSICAL_ONLY_CLASSES = (CLASSICAL, CLASSICAL_PQ_OFFERED, IKEV1)
PQ_CLASSES = (HYBRID_PQ, PQ_ONLY)
CLASSICAL_FAMILIES = ("MODP", "ECP", "ECX", "brainpool", "GOST")

RULE_KINDS = ("classification", "pq-key-exchange", "classical-key-exchange", "encryption", "prf",
              "integrity", "classical-sunset")


class PolicyError(Exception):
    """A policy that cannot be used: unknown preset, unreadable file, bad TOML, unknown
    key, wrong type. Its message is one line naming the file and the problem."""


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Milestone:
    after: date  # passed from the next day on
    label: str
    severity: str | None = None  # severity of a fail once passed


@dataclass(frozen=True, slots=True)
class SunsetStep:
    max_strength_bits: int | None  # None: any strength
    deprecated_after: date | None
    disallowed_after: date | None
    label: str = ""


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str  # one of RULE_KINDS
    description: str = ""
    severity: str = "high"  # of a fail
    warn_severity: str = "medium"  # of a warn
    milestones: tuple[Milestone, ...] = ()
    # classification
    outcomes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OUTCOMES))
    severities: Mapping[str, str] = field(default_factory=dict)
    ppk_outcome: str | None = WARN
    # pq-key-exchange
    parameter_sets: tuple[str, ...] = ()
    min_nist_category: int | None = None
    # classical-key-exchange
    min_bits: Mapping[str, int] | None = None
    min_strength_bits: int | None = None
    when_absent: str = NOT_APPLICABLE
    # encryption / prf / integrity
    algorithms: tuple[str, ...] = ()
    min_key_bits: int | None = None
    # classical-sunset
    schedule: tuple[SunsetStep, ...] = ()


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    source: str
    rules: tuple[Rule, ...]
    origin: str  # "preset NAME" or the file's path


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
    frame: int | None = None  # first frame of the IKE_SA_INIT response that chose the proposal

    @property
    def is_finding(self) -> bool:
        return self.outcome in (FAIL, WARN)

    def as_dict(self) -> dict:
        return {
            "policy": self.policy, "rule": self.rule, "outcome": self.outcome,
            "severity": self.severity, "detail": self.detail, "evidence": list(self.evidence),
            "date_context": self.date_context, "as_of": self.as_of.isoformat(),
            "capture": self.capture, "spi_i": self.spi_i, "spi_r": self.spi_r,
            "classification": self.classification, "frame": self.frame,
        }


# ---------------------------------------------------------------------------- loading


def load_policy(name_or_path: str | Path) -> Policy:
    """A preset by name (``PRESETS``) or a TOML policy file by path."""
    text_name = str(name_or_path)
    if text_name in PRESETS and not Path(text_name).exists():
        resource = resources.files("ikeaudit").joinpath("policies", f"{text_name}.toml")
        return parse_policy(resource.read_text(encoding="utf-8"), f"preset {text_name}")
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file, and not a preset "
                          f"(presets: {', '.join(PRESETS)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, origin: str = "<policy>") -> Policy:
    """A policy from TOML text; origin names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{origin}: TOML syntax error: {exc}") from None
    return _Parser(origin).policy(data)


class _Parser:
    TOP_KEYS = {"name", "description", "source", "milestones", "rules"}
    COMMON_RULE_KEYS = {"id", "kind", "description", "severity", "warn_severity", "milestones"}
    KIND_KEYS = {
        "classification": {"outcomes", "severities", "ppk_outcome"},
        "pq-key-exchange": {"parameter_sets", "min_nist_category"},
        "classical-key-exchange": {"min_bits", "min_strength_bits", "when_absent"},
        "encryption": {"algorithms", "min_key_bits"},
        "prf": {"algorithms"},
        "integrity": {"algorithms"},
        "classical-sunset": {"schedule"},
    }
    NAMES = {
        "encryption": set(iana.ENCRYPTION_ALGORITHMS.values()),
        "prf": set(iana.PRF_ALGORITHMS.values()),
        "integrity": set(iana.INTEGRITY_ALGORITHMS.values()) - {"NONE"},
    }

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.origin}: {where}: {problem}" if where else f"{self.origin}: {problem}")

    def keys(self, table: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r} (expected one of: {', '.join(sorted(allowed))})")

    def get(self, table: dict, key: str, kind: type | tuple, where: str, *, required: bool = False,
            default: Any = None) -> Any:
        if key not in table:
            if required:
                raise self.fail(where, f"missing required key {key!r}")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are not integers here, and a datetime is not a date.
        if (isinstance(value, bool) and bool not in kinds) or \
                (isinstance(value, datetime) and datetime not in kinds) or not isinstance(value, kinds):
            raise self.fail(where, f"{key!r} must be {self.type_name(kinds)}, not {self.type_name((type(value),))}")
        return value

    @staticmethod
    def type_name(kinds: tuple) -> str:
        names = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
                 dict: "a table", date: "a date (e.g. 2030-12-31)", float: "a number",
                 datetime: "a date-time"}
        return " or ".join(names.get(k, k.__name__) for k in kinds)

    def choice(self, value: str, choices: Iterable[str], key: str, where: str) -> str:
        choices = tuple(choices)
        if value not in choices:
            raise self.fail(where, f"{key!r} is {value!r}, expected one of: {', '.join(choices)}")
        return value

    def policy(self, data: dict) -> Policy:
        self.keys(data, self.TOP_KEYS, "")
        name = self.get(data, "name", str, "", required=True)
        if not name.strip():
            raise self.fail("", "'name' must not be empty")
        milestones = self.milestones(data, "")
        rules_data = self.get(data, "rules", list, "", required=True)
        if not rules_data:
            raise self.fail("", "a policy needs at least one [[rules]] table")
        rules: list[Rule] = []
        for index, rule_data in enumerate(rules_data, 1):
            where = f"rule #{index}"
            if not isinstance(rule_data, dict):
                raise self.fail(where, "each entry of 'rules' must be a table ([[rules]])")
            rule = self.rule(rule_data, where, milestones)
            if any(r.id == rule.id for r in rules):
                raise self.fail(f"rule {rule.id!r}", "duplicate rule id")
            rules.append(rule)
        return Policy(name=name, description=self.get(data, "description", str, "", default=""),
                      source=self.get(data, "source", str, "", default=""), rules=tuple(rules),
                      origin=self.origin)

    def milestones(self, table: dict, where: str) -> tuple[Milestone, ...]:
        entries = self.get(table, "milestones", list, where, default=[])
        out = []
        for index, entry in enumerate(entries, 1):
            here = f"{where + ' ' if where else ''}milestone #{index}"
            if not isinstance(entry, dict):
                raise self.fail(here, "each milestone must be a table ([[milestones]])")
            self.keys(entry, {"after", "label", "severity"}, here)
            severity = self.get(entry, "severity", str, here)
            if severity is not None:
                self.choice(severity, SEVERITIES, "severity", here)
            out.append(Milestone(self.get(entry, "after", date, here, required=True),
                                 self.get(entry, "label", str, here, required=True), severity))
        return tuple(sorted(out, key=lambda m: m.after))

    def rule(self, data: dict, where: str, policy_milestones: tuple[Milestone, ...]) -> Rule:
        rule_id = self.get(data, "id", str, where, required=True)
        if not rule_id.strip():
            raise self.fail(where, "'id' must not be empty")
        where = f"rule {rule_id!r}"
        kind = self.choice(self.get(data, "kind", str, where, required=True), RULE_KINDS, "kind", where)
        self.keys(data, self.COMMON_RULE_KEYS | self.KIND_KEYS[kind], where)
        common = dict(
            id=rule_id, kind=kind,
            description=self.get(data, "description", str, where, default=""),
            severity=self.choice(self.get(data, "severity", str, where, default="high"),
                                 SEVERITIES, "severity", where),
            warn_severity=self.choice(self.get(data, "warn_severity", str, where, default="medium"),
                                      SEVERITIES, "warn_severity", where),
            milestones=self.milestones(data, where) if "milestones" in data else policy_milestones,
        )
        return Rule(**common, **getattr(self, "kind_" + kind.replace("-", "_"))(data, where))

    def kind_classification(self, data: dict, where: str) -> dict:
        outcomes = dict(DEFAULT_OUTCOMES)
        for cls, outcome in self.get(data, "outcomes", dict, where, default={}).items():
            self.choice(cls, CLASSES, "class", f"{where} outcomes")
            if not isinstance(outcome, str):
                raise self.fail(f"{where} outcomes", f"{cls!r} must be a string")
            outcomes[cls] = self.choice(outcome, OUTCOMES, cls, f"{where} outcomes")
        severities = {}
        for cls, severity in self.get(data, "severities", dict, where, default={}).items():
            self.choice(cls, CLASSES, "class", f"{where} severities")
            if not isinstance(severity, str):
                raise self.fail(f"{where} severities", f"{cls!r} must be a string")
            severities[cls] = self.choice(severity, SEVERITIES, cls, f"{where} severities")
        ppk = self.get(data, "ppk_outcome", str, where, default=WARN)
        if ppk:
            self.choice(ppk, OUTCOMES, "ppk_outcome", where)
        return dict(outcomes=outcomes, severities=severities, ppk_outcome=ppk or None)

    def kind_pq_key_exchange(self, data: dict, where: str) -> dict:
        sets = self.string_list(data, "parameter_sets", where)
        known = {m.name for m in iana.KE_METHODS.values() if m.is_pq}
        for name in sets:
            self.choice(name, sorted(known), "parameter set", where)
        category = self.get(data, "min_nist_category", int, where)
        if category is not None and not 1 <= category <= 5:
            raise self.fail(where, "'min_nist_category' must be between 1 and 5")
        return dict(parameter_sets=sets, min_nist_category=category)

    def kind_classical_key_exchange(self, data: dict, where: str) -> dict:
        min_bits = self.get(data, "min_bits", dict, where)
        if min_bits is not None:
            for family, bits in min_bits.items():
                self.choice(family, CLASSICAL_FAMILIES, "family", f"{where} min_bits")
                if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
                    raise self.fail(f"{where} min_bits", f"{family!r} must be a positive integer")
        strength = self.get(data, "min_strength_bits", int, where)
        if min_bits is None and strength is None:
            raise self.fail(where, "a classical-key-exchange rule needs 'min_bits' or 'min_strength_bits'")
        when_absent = self.choice(self.get(data, "when_absent", str, where, default=NOT_APPLICABLE),
                                  OUTCOMES, "when_absent", where)
        return dict(min_bits=min_bits, min_strength_bits=strength, when_absent=when_absent)

    def kind_encryption(self, data: dict, where: str) -> dict:
        key_bits = self.get(data, "min_key_bits", int, where)
        return dict(algorithms=self.algorithm_names(data, "encryption", where), min_key_bits=key_bits)

    def kind_prf(self, data: dict, where: str) -> dict:
        return dict(algorithms=self.algorithm_names(data, "prf", where))

    def kind_integrity(self, data: dict, where: str) -> dict:
        return dict(algorithms=self.algorithm_names(data, "integrity", where))

    def kind_classical_sunset(self, data: dict, where: str) -> dict:
        entries = self.get(data, "schedule", list, where, required=True)
        steps = []
        for index, entry in enumerate(entries, 1):
            here = f"{where} schedule #{index}"
            if not isinstance(entry, dict):
                raise self.fail(here, "each schedule entry must be a table ([[rules.schedule]])")
            self.keys(entry, {"max_strength_bits", "deprecated_after", "disallowed_after", "label"}, here)
            step = SunsetStep(self.get(entry, "max_strength_bits", int, here),
                              self.get(entry, "deprecated_after", date, here),
                              self.get(entry, "disallowed_after", date, here),
                              self.get(entry, "label", str, here, default=""))
            if step.deprecated_after and step.disallowed_after and step.deprecated_after > step.disallowed_after:
                raise self.fail(here, "'deprecated_after' is later than 'disallowed_after'")
            steps.append(step)
        if not steps:
            raise self.fail(where, "'schedule' needs at least one entry")
        return dict(schedule=tuple(steps))

    def string_list(self, data: dict, key: str, where: str) -> tuple[str, ...]:
        values = self.get(data, key, list, where, default=[])
        if not all(isinstance(v, str) for v in values):
            raise self.fail(where, f"{key!r} must be an array of strings")
        return tuple(values)

    def algorithm_names(self, data: dict, kind: str, where: str) -> tuple[str, ...]:
        names = self.string_list(data, "algorithms", where)
        if not names:
            raise self.fail(where, "'algorithms' must list at least one algorithm")
        for name in names:
            if name not in self.NAMES[kind]:
                raise self.fail(where, f"unknown {kind} algorithm {name!r} (names as in ikeaudit.iana)")
        return names


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one negotiation offers to a rule, named once."""

    n: Negotiation
    c: Classification
    methods: tuple[tuple[str, KeMethod], ...]  # (slot, method): KE first, then ADDKE1..7
    origin: str  # where the chosen proposal was read
    frame: int | None

    @property
    def pq(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.is_pq]

    @property
    def classical(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.is_classical]

    @property
    def unverifiable(self) -> list[tuple[str, KeMethod]]:
        return [(s, m) for s, m in self.methods if m.kind not in ("pq", "classical")]


def _facts(n: Negotiation, c: Classification, catalog: KeCatalog) -> _Facts:
    methods: list[tuple[str, KeMethod]] = []
    if c.ke_method is not None:
        methods.append(("KE", catalog.method(c.ke_method)))
    methods.extend((iana.addke_slot(t), catalog.method(m)) for t, m in c.addke)
    frame = None
    responses = [m for m in n.messages if m.exchange == iana.IKE_SA_INIT and m.response]
    if c.basis == "IKE_SA_INIT" and responses:
        frame = responses[-1].first_frame
        origin = (f"chosen in the IKE_SA_INIT response (frame {frame})" if methods else
                  f"the IKE_SA_INIT response (frame {frame}) chose no proposal"
                  + (f": {c.error}" if c.error else ""))
    elif c.basis.startswith("inherited") and n.rekeyed_from:
        origin = (f"inherited from parent IKE SA {n.rekeyed_from[0]}/{n.rekeyed_from[1]} "
                  "(the rekey's own proposal is encrypted)")
    else:
        origin = "no chosen proposal captured"
    return _Facts(n, c, tuple(methods), origin, frame)


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
    ``negotiation`` and ``classification`` attributes). as_of defaults to today (UTC)."""
    as_of = as_of or datetime.now(timezone.utc).date()
    facts = _facts(audited.negotiation, audited.classification, catalog or KeCatalog())
    return [_evaluate_rule(policy, rule, facts, as_of) for rule in policy.rules]


def evaluate_all(policy: Policy, audits: Iterable, as_of: date | None = None,
                 catalog: KeCatalog | None = None) -> list[Verdict]:
    """Verdicts for every negotiation of CaptureAudits or AuditedNegotiations, in order."""
    as_of = as_of or datetime.now(timezone.utc).date()
    return [v for item in _audited(audits) for v in evaluate(policy, item, as_of, catalog)]


def _evaluate_rule(policy: Policy, rule: Rule, f: _Facts, as_of: date) -> Verdict:
    judge = _JUDGES[rule.kind]
    outcome, detail, evidence, severity, context = judge(rule, f, as_of)
    if outcome == FAIL:
        severity = severity or _milestone_severity(rule, as_of) or rule.severity
    elif outcome == WARN:
        severity = severity or rule.warn_severity
    else:
        severity = None
    return Verdict(policy=policy.name, rule=rule.id, outcome=outcome, severity=severity, detail=detail,
                   evidence=tuple(evidence), date_context=context or _milestone_context(rule, as_of),
                   as_of=as_of, capture=f.n.capture, spi_i=f.n.spi_i, spi_r=f.n.spi_r,
                   classification=f.c.name, frame=f.frame)


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
        detail += ("; an RFC 8784 post-quantum preshared key was negotiated (USE_PPK): its strength "
                   "cannot be verified from the capture")
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
    if c.basis == "none":
        return "cannot verify: no IKE_SA_INIT was captured for this IKE SA"
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
    return "; ".join(parts)


def _transforms(f: _Facts, transform_type: int):
    """The chosen transforms of one type, or None when the proposal is not visible (or
    there is no chosen key exchange, which the classification rule judges)."""
    if f.n.chosen is None or not f.methods:
        return None
    return [t for t in f.n.chosen.transforms if t.type == transform_type]


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


_JUDGES = {
    "classification": _judge_classification,
    "pq-key-exchange": _judge_pq,
    "classical-key-exchange": _judge_classical,
    "encryption": _judge_encryption,
    "prf": _judge_named(iana.TRANSFORM_PRF, "PRF"),
    "integrity": _judge_named(iana.TRANSFORM_INTEG, "INTEG"),
    "classical-sunset": _judge_sunset,
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


# ---------------------------------------------------------------------------- exposure


# Ranking weights of TunnelExposure.score (highest first = look here first).
SCORE_WEIGHTS: Mapping[str, float] = {
    "latest_classical_only": 40.0,  # the tunnel's most recent IKE SA is classical-only now
    "classical_only": 10.0,  # per classical-only negotiation
    "downgrades": 8.0,  # per downgrade event
    "regressions": 8.0,  # per classical-only negotiation after a post-quantum one
    "unverifiable": 3.0,  # per unknown or incomplete negotiation
    "esp_bytes_log10": 2.0,  # times log10(1 + ESP bytes sent while classical-only)
}


@dataclass(frozen=True)
class TunnelExposure:
    """Everything seen between two peers, whoever initiated, and how exposed it is to
    harvest-now-decrypt-later."""

    peers: tuple[str, str]  # the two addresses, sorted
    captures: tuple[str, ...]
    first_seen: float  # epoch seconds
    last_seen: float
    negotiations: int
    by_class: dict[str, int]
    established: int
    pq_protected: int  # hybrid-pq and pq-only
    classical_only: int  # classical, classical-pq-offered and ikev1, without a negotiated PPK
    ppk: int  # classical negotiations that negotiated an RFC 8784 PPK
    unverifiable: int  # unknown and incomplete
    downgrades: int  # classical-pq-offered, plus INVALID_KE_PAYLOAD retries from ML-KEM to classical
    regressions: int  # classical-only negotiations that came after a post-quantum one
    latest_class: str  # class of the most recent negotiation
    classical_seconds: float  # first to last message of the classical-only negotiations, summed
    esp_packets: int | None  # ESP while the current IKE SA was classical-only; None: not measured
    esp_bytes: int | None
    score: float

    def as_dict(self) -> dict:
        def iso(epoch: float) -> str:
            return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="microseconds") \
                .replace("+00:00", "Z")

        return {
            "peers": list(self.peers), "captures": list(self.captures),
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "negotiations": self.negotiations, "by_class": dict(self.by_class),
            "established": self.established, "pq_protected": self.pq_protected,
            "classical_only": self.classical_only, "ppk": self.ppk, "unverifiable": self.unverifiable,
            "downgrades": self.downgrades, "regressions": self.regressions,
            "latest_class": self.latest_class, "classical_seconds": self.classical_seconds,
            "esp_packets": self.esp_packets, "esp_bytes": self.esp_bytes, "score": self.score,
        }


def exposure(audits: Iterable, esp: Iterable[EspFlow] | None = None,
             catalog: KeCatalog | None = None) -> list[TunnelExposure]:
    """Group every negotiation (of CaptureAudits or AuditedNegotiations) by unordered
    address pair; rank the pairs, most exposed first.

    ESP flows, when given, are attributed by address pair and time: a flow belongs to
    the most recent IKE SA between the same peers established before the flow's first
    packet (Child SA SPIs travel encrypted, so no SPI can tie them tighter); it counts
    when that SA is classical-only. Without flows esp_packets/esp_bytes are None.
    """
    catalog = catalog or KeCatalog()
    groups: dict[tuple[str, str], list] = {}
    for item in _audited(audits):
        n = item.negotiation
        groups.setdefault(tuple(sorted((n.initiator, n.responder))), []).append(item)
    flows_by_pair: dict[tuple[str, str], list[EspFlow]] = {}
    if esp is not None:
        for flow in esp:
            flows_by_pair.setdefault(tuple(sorted((flow.src, flow.dst))), []).append(flow)
    out = [_pair_exposure(pair, items, flows_by_pair.get(pair, []) if esp is not None else None, catalog)
           for pair, items in groups.items()]
    return sorted(out, key=lambda e: (-e.score, -e.last_seen, e.peers))


def _is_classical_only(c: Classification) -> bool:
    return c.name in CLASSICAL_ONLY_CLASSES and c.ppk != "negotiated"


def _pair_exposure(pair, items, flows, catalog: KeCatalog) -> TunnelExposure:
    items = sorted(items, key=lambda i: (i.negotiation.first_seen, i.negotiation.first_frame))
    classes = Counter(i.classification.name for i in items)
    downgrades = regressions = 0
    seen_pq = False
    classical_seconds = 0.0
    for item in items:
        n, c = item.negotiation, item.classification
        if c.name == CLASSICAL_PQ_OFFERED:
            downgrades += 1
        downgrades += sum(1 for r in n.retries if r.reason == "INVALID_KE_PAYLOAD"
                          and r.offered_ke is not None and r.requested_ke is not None
                          and catalog.method(r.offered_ke).is_pq and catalog.method(r.requested_ke).is_classical)
        if c.name in PQ_CLASSES:
            seen_pq = True
        elif _is_classical_only(c):
            classical_seconds += max(n.last_seen - n.first_seen, 0.0)
            if seen_pq:
                regressions += 1
    esp_packets = esp_bytes = None
    if flows is not None:
        esp_packets = esp_bytes = 0
        established = [i for i in items if i.negotiation.established]
        for flow in flows:
            owner = None
            for item in established:
                if item.negotiation.first_seen <= flow.first_timestamp:
                    owner = item
            if owner is not None and _is_classical_only(owner.classification):
                esp_packets += flow.packets
                esp_bytes += flow.bytes
    classical_only = sum(1 for i in items if _is_classical_only(i.classification))
    unverifiable = classes[UNKNOWN] + classes[INCOMPLETE]
    latest = items[-1].classification
    w = SCORE_WEIGHTS
    score = (w["latest_classical_only"] * _is_classical_only(latest)
             + w["classical_only"] * classical_only + w["downgrades"] * downgrades
             + w["regressions"] * regressions + w["unverifiable"] * unverifiable
             + w["esp_bytes_log10"] * math.log10(1 + (esp_bytes or 0)))
    return TunnelExposure(
        peers=pair,
        captures=tuple(dict.fromkeys(i.negotiation.capture for i in items)),
        first_seen=min(i.negotiation.first_seen for i in items),
        last_seen=max(i.negotiation.last_seen for i in items),
        negotiations=len(items),
        by_class=dict(sorted(classes.items())),
        established=sum(1 for i in items if i.negotiation.established),
        pq_protected=classes[HYBRID_PQ] + classes[PQ_ONLY],
        classical_only=classical_only,
        ppk=sum(1 for i in items if i.classification.name in CLASSICAL_ONLY_CLASSES
                and i.classification.ppk == "negotiated"),
        unverifiable=unverifiable,
        downgrades=downgrades,
        regressions=regressions,
        latest_class=latest.name,
        classical_seconds=round(classical_seconds, 6),
        esp_packets=esp_packets,
        esp_bytes=esp_bytes,
        score=round(score, 3),
    )


def _audited(audits: Iterable) -> list:
    """AuditedNegotiations from CaptureAudits, AuditedNegotiations, or a mix."""
    out = []
    for item in audits:
        if hasattr(item, "negotiations") and not hasattr(item, "negotiation"):
            out.extend(item.negotiations)
        else:
            out.append(item)
    return out
