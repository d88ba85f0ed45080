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


The package is three modules, each readable alone:

- ``loading``: the TOML format (documented there), the presets, `Policy` and `Rule`;
- ``rules``: a policy's rules to `Verdict`s for one audited negotiation;
- ``exposure``: negotiations and ESP flows grouped into tunnels, and what each exposed.
"""

from ikeaudit.policy.exposure import SCORE_WEIGHTS, TunnelExposure, exposure
from ikeaudit.policy.loading import (
    CLASSICAL_FAMILIES, CLASSICAL_ONLY_CLASSES, DEFAULT_OUTCOMES, DEFAULT_POLICY, FAIL, NOT_APPLICABLE,
    OUTCOMES, PASS, PQ_CLASSES, PRESETS, RULE_KINDS, WARN, Milestone, Policy, PolicyError, Rule, SunsetStep,
    load_policy, parse_policy,
)
from ikeaudit.policy.rules import (
    Verdict, describe_method, evaluate, evaluate_all, fails_on, worst, worst_severity,
)

__all__ = [
    "CLASSICAL_FAMILIES", "CLASSICAL_ONLY_CLASSES", "DEFAULT_OUTCOMES", "DEFAULT_POLICY", "FAIL",
    "NOT_APPLICABLE", "OUTCOMES", "PASS", "PQ_CLASSES", "PRESETS", "RULE_KINDS", "SCORE_WEIGHTS", "WARN",
    "Milestone", "Policy", "PolicyError", "Rule", "SunsetStep", "TunnelExposure", "Verdict",
    "describe_method", "evaluate", "evaluate_all", "exposure", "fails_on", "load_policy", "parse_policy",
    "worst", "worst_severity",
]
