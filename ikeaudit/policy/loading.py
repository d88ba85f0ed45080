"""Policies from TOML: the preset files and user files to `Policy` records.

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
    reference = "RFC 9206 sec. 4" # optional: the section of the primary document the rule implements
    checked = 2026-11-27          # optional: the day that reference was last checked
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
    severity of its fail or warn. ``[rules.confidence_outcomes]`` maps a confidence that
    cannot pass (``unconfirmed``, ``contradicted``, ``inferred``, ``none``) to ``warn``
    or ``fail`` (defaults in ``DEFAULT_CONFIDENCE_OUTCOMES``: contradicted fails, the
    others warn); ``unassessed_outcome`` (``warn`` or ``fail``, default ``warn``) is the
    least outcome of a negotiation whose handshake was not observable. ``ppk_outcome`` (default ``"warn"``): the outcome of a
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
    outcome when no classical method was chosen (pure ML-KEM). ``methods`` (list of KE
    method names as in ``ikeaudit.iana``, e.g. ``"384-bit random ECP"``) narrows the
    allowed methods to exactly those, whatever their family's ``min_bits``.
``encryption``
    ``algorithms``: ENCR names from ``ikeaudit.iana.ENCRYPTION_ALGORITHMS`` (e.g.
    ``"AES-GCM-16"``); ``min_key_bits``: least key length.
``prf``
    ``algorithms``: PRF names from ``ikeaudit.iana.PRF_ALGORITHMS``.
``integrity``
    ``algorithms``: INTEG names from ``ikeaudit.iana.INTEGRITY_ALGORITHMS``. An AEAD
    cipher carries its own integrity, so its proposal has none: not-applicable.
``authentication``
    What the decrypted IKE_AUTH shows of each side's authentication (issue 17).
    ``signature_algorithms`` (names as in ``ikeaudit.certs.PQ_SIGNATURES``, e.g.
    ``["ML-DSA-87"]``): every AUTH payload must sign with one of them (RFC 7427 Digital
    Signature) and every certificate sent must carry such a key and be signed with one;
    a classical signature fails. ``shared_key_outcome`` (default ``"warn"``): the outcome
    of shared-key authentication, which is no signature (not quantum-vulnerable in itself;
    the key exchange still decides harvest-now-decrypt-later). ``not_visible_outcome``
    (``warn`` or ``fail``, default ``warn``): when an IKE_AUTH was on the wire but a side's
    AUTH was not decrypted ("not visible"), never a pass. A negotiation that did not reach
    IKE_AUTH, failed or is IKEv1 is not-applicable.
``classical-sunset``
    Dates on which classical-only key establishment becomes deprecated and then
    disallowed, by security strength. ``[[rules.schedule]]`` entries, first match wins:
    ``max_strength_bits`` (int; omit for "any strength"), ``deprecated_after`` and
    ``disallowed_after`` (TOML dates, both optional), ``label`` (optional). Before
    ``deprecated_after`` the rule passes, then warns, and after ``disallowed_after``
    fails. A negotiation whose key exchange includes ML-KEM passes.

Fail closed: whatever its kind, no rule passes a negotiation whose classification
confidence is not ``verified`` or ``negotiated`` (``unconfirmed``, ``contradicted``,
``inferred`` or none): such a pass becomes a warn (the classification rule: the
outcome its ``confidence_outcomes`` give). A negotiation whose handshake was not
observable (observation ``not-observable``) is unassessed and never better than the
classification rule's ``unassessed_outcome``.

A rule that has nothing to look at (no chosen proposal: a failed, incomplete or
unknown negotiation, or IKEv1) says not-applicable and leaves the verdict on those to
the ``classification`` rule. A rekeyed IKE SA is judged by its decrypted CREATE_CHILD_SA
proposal; without keys that proposal is not visible and a symmetric rule warns.

Every problem in a policy file (TOML syntax, an unknown key, a wrong type, an unknown
name) raises `PolicyError` with one line naming the file and the problem.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from ikeaudit import iana
from ikeaudit.certs import PQ_SIGNATURES
from ikeaudit.classify import (
    CLASSES, CLASSICAL, CLASSICAL_PQ_OFFERED, FAILED, HYBRID_PQ, IKEV1, INCOMPLETE, PQ_ONLY,
    SEVERITIES, UNKNOWN,
)

PASS, FAIL, WARN, NOT_APPLICABLE = "pass", "fail", "warn", "not-applicable"
OUTCOMES = (PASS, FAIL, WARN, NOT_APPLICABLE)

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
# Classification.confidence values that can never pass ("none": no confidence at all),
# and what the classification rule makes of a pass that rests on them.
DEFAULT_CONFIDENCE_OUTCOMES: Mapping[str, str] = {
    "unconfirmed": WARN,  # chosen, but the exchange that carries it was never captured
    "contradicted": FAIL,  # the wire contradicts the chosen key exchange
    "inferred": WARN,  # no chosen proposal seen: the class rests on named inferences
    "none": WARN,
}

RULE_KINDS = ("classification", "pq-key-exchange", "classical-key-exchange", "encryption", "prf",
              "integrity", "classical-sunset", "authentication")


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
    reference: str = ""  # section of the primary document the rule implements
    checked: date | None = None  # when that reference was last checked
    # classification
    outcomes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OUTCOMES))
    severities: Mapping[str, str] = field(default_factory=dict)
    ppk_outcome: str | None = WARN
    confidence_outcomes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CONFIDENCE_OUTCOMES))
    unassessed_outcome: str = WARN
    # pq-key-exchange
    parameter_sets: tuple[str, ...] = ()
    min_nist_category: int | None = None
    # classical-key-exchange
    min_bits: Mapping[str, int] | None = None
    min_strength_bits: int | None = None
    when_absent: str = NOT_APPLICABLE
    methods: tuple[str, ...] = ()
    # encryption / prf / integrity
    algorithms: tuple[str, ...] = ()
    min_key_bits: int | None = None
    # classical-sunset
    schedule: tuple[SunsetStep, ...] = ()
    # authentication
    signature_algorithms: tuple[str, ...] = ()
    shared_key_outcome: str = WARN
    not_visible_outcome: str = WARN


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    source: str
    rules: tuple[Rule, ...]
    origin: str  # "preset NAME" or the file's path


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
    COMMON_RULE_KEYS = {"id", "kind", "description", "severity", "warn_severity", "milestones", "reference",
                        "checked"}
    KIND_KEYS = {
        "classification": {"outcomes", "severities", "ppk_outcome", "confidence_outcomes",
                           "unassessed_outcome"},
        "pq-key-exchange": {"parameter_sets", "min_nist_category"},
        "classical-key-exchange": {"min_bits", "min_strength_bits", "when_absent", "methods"},
        "encryption": {"algorithms", "min_key_bits"},
        "prf": {"algorithms"},
        "integrity": {"algorithms"},
        "classical-sunset": {"schedule"},
        "authentication": {"signature_algorithms", "shared_key_outcome", "not_visible_outcome"},
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
            reference=self.get(data, "reference", str, where, default=""),
            checked=self.get(data, "checked", date, where),
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
        confidence = dict(DEFAULT_CONFIDENCE_OUTCOMES)
        for value, outcome in self.get(data, "confidence_outcomes", dict, where, default={}).items():
            self.choice(value, DEFAULT_CONFIDENCE_OUTCOMES, "confidence", f"{where} confidence_outcomes")
            if not isinstance(outcome, str):
                raise self.fail(f"{where} confidence_outcomes", f"{value!r} must be a string")
            # Fail closed: a confidence that cannot pass cannot be made to pass either.
            confidence[value] = self.choice(outcome, (WARN, FAIL), value, f"{where} confidence_outcomes")
        unassessed = self.choice(self.get(data, "unassessed_outcome", str, where, default=WARN), (WARN, FAIL),
                                 "unassessed_outcome", where)
        return dict(outcomes=outcomes, severities=severities, ppk_outcome=ppk or None,
                    confidence_outcomes=confidence, unassessed_outcome=unassessed)

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
        methods = self.string_list(data, "methods", where)
        known = sorted(m.name for m in iana.KE_METHODS.values() if m.is_classical)
        for name in methods:
            self.choice(name, known, "method", where)
        if min_bits is None and strength is None and not methods:
            raise self.fail(where, "a classical-key-exchange rule needs 'min_bits', 'min_strength_bits' or "
                                   "'methods'")
        when_absent = self.choice(self.get(data, "when_absent", str, where, default=NOT_APPLICABLE),
                                  OUTCOMES, "when_absent", where)
        return dict(min_bits=min_bits, min_strength_bits=strength, when_absent=when_absent, methods=methods)

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

    def kind_authentication(self, data: dict, where: str) -> dict:
        names = self.string_list(data, "signature_algorithms", where)
        known = sorted(name for name, _ in PQ_SIGNATURES.values())
        for name in names:
            self.choice(name, known, "signature algorithm", where)
        shared = self.choice(self.get(data, "shared_key_outcome", str, where, default=WARN), OUTCOMES,
                             "shared_key_outcome", where)
        hidden = self.choice(self.get(data, "not_visible_outcome", str, where, default=WARN), (WARN, FAIL),
                             "not_visible_outcome", where)
        return dict(signature_algorithms=names, shared_key_outcome=shared, not_visible_outcome=hidden)

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
