"""A negotiation to a classification, with the evidence that supports it.

Pure functions over `Negotiation` records: no packets, no I/O. The verdict comes from
the responder's chosen proposal (transform types 4 and 6..12; id 0 NONE in an ADDKE
slot means that exchange did not happen), then is checked against what the wire shows:
an ML-KEM key must travel somewhere, and a message too small to carry it contradicts
the proposal.

With a key table the encrypted exchanges speak for themselves: a classification is
`verified` when the decrypted KE payloads carry every chosen method at its size and a
message under the final keys decrypted too, `negotiated` when only the clear proposals
and sizes support it; decrypted KE payloads that contradict the proposal are a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from ikeaudit import iana
from ikeaudit.iana import KeMethod
from ikeaudit.records import (
    AUTH_REQUESTED,
    ESTABLISHED,
    INTERMEDIATE,
    SA_INIT_REQUESTED,
    SA_INIT_RETRY,
    ChildExchange,
    Finding,
    KeyExchange,
    Negotiation,
    Proposal,
    TrackedMessage,
)

HYBRID_PQ = "hybrid-pq"
PQ_ONLY = "pq-only"
CLASSICAL = "classical"
CLASSICAL_PQ_OFFERED = "classical-pq-offered"
FAILED = "failed"
INCOMPLETE = "incomplete"
UNKNOWN = "unknown"
IKEV1 = "ikev1"
CLASSES = (HYBRID_PQ, PQ_ONLY, CLASSICAL, CLASSICAL_PQ_OFFERED, FAILED, INCOMPLETE, UNKNOWN, IKEV1)

# Generic payload header (4) + KE method (2) + reserved (2), RFC 7296 section 3.4.
KE_PAYLOAD_HEADER = 8

SEVERITIES = ("info", "low", "medium", "high", "critical")

# Classification.confidence
VERIFIED = "verified"  # decrypted KE payloads confirm every chosen method
NEGOTIATED = "negotiated"  # only the clear proposal and message sizes support it
UNCONFIRMED = "unconfirmed"  # a KE/ADDKE was chosen but the exchange carrying it was never captured
CONTRADICTED = "contradicted"  # messages too small for the chosen KE, or decrypted KE differs
INFERRED = "inferred"  # no chosen proposal seen: the class rests on inferences
# Only these may ever pass a policy rule.
PASSABLE_CONFIDENCE = frozenset({VERIFIED, NEGOTIATED})

# Classification.observation
OBSERVED = "observed"
INFERRED_OBSERVATION = "inferred"
NOT_OBSERVABLE = "not-observable"
# Classes that rest on a chosen proposal, and so can be verified or merely negotiated.
JUDGED_BY_PROPOSAL = frozenset({"hybrid-pq", "pq-only", "classical", "classical-pq-offered"})


@dataclass(frozen=True, slots=True)
class PrivateKe:
    """A user's name (and, if they know it, kind) for a private-use KE method id."""

    name: str
    kind: str | None = None  # "pq" or "classical" when the user vouches for it


@dataclass(frozen=True, slots=True)
class Classification:
    name: str  # one of CLASSES
    basis: str  # "IKE_SA_INIT", "inherited from parent IKE SA", "none"
    ke_method: int | None
    addke: tuple[tuple[int, int], ...]  # (transform type, method id) of chosen ADDKEs, NONE left out
    pq_offered_by_initiator: bool | None  # None: the initiator's IKE_SA_INIT request was not seen
    mlkem_parameter_set: str | None  # strongest ML-KEM in the chosen proposal, e.g. "ML-KEM-768"
    nist_category: int | None
    classical_strength_bits: int | None
    offered_ke_methods: tuple[int, ...]  # every KE method id the initiator offered, in order
    # RFC 8784 PPK: "none"; "requested" (USE_PPK / USE_PPK_INT seen, use not confirmed);
    # "negotiated" (decrypted PPK_IDENTITY accepted in IKE_AUTH, or PPK_IDENTITY_KEY in
    # IKE_INTERMEDIATE); "not-used" (NO_PPK_AUTH fallback taken, or the responder did not
    # confirm it once decrypted). Only "negotiated" takes a tunnel out of exposure.
    ppk: str
    error: str | None  # the error notify of a failed negotiation
    evidence: tuple[str, ...]
    findings: tuple[Finding, ...]
    # VERIFIED, NEGOTIATED, UNCONFIRMED, CONTRADICTED or INFERRED (see the constants);
    # None when there is no chosen proposal and nothing was inferred. Only VERIFIED and
    # NEGOTIATED may ever pass a policy.
    confidence: str | None = None
    # How the class was reached: OBSERVED (the exchange that decided the key exchange was
    # captured), INFERRED_OBSERVATION (from the SA's own traffic: each step in
    # `inferences`), NOT_OBSERVABLE (nothing to go on: class unknown, unassessed).
    observation: str = "observed"
    inferences: tuple[str, ...] = ()  # each a sentence naming what was inferred from what
    # IKE_SA_INIT_FULL_TRANSCRIPT_AUTH (draft-ietf-ipsecme-ikev2-downgrade-prevention) in
    # IKE_SA_INIT: "both", "initiator-only", "responder-only", "neither"; None when the
    # IKE_SA_INIT exchange was not seen.
    downgrade_prevention: str | None = None
    # The proposal that decided this SA's key exchange and ciphers: the IKE_SA_INIT
    # response's, or for an IKE SA rekey seen decrypted the rekey's own CREATE_CHILD_SA
    # response. Policy reads the cipher transforms from here, not from Negotiation.chosen.
    chosen_proposal: Proposal | None = None

    @property
    def addke_methods(self) -> tuple[int, ...]:
        return tuple(m for _, m in self.addke)


class KeCatalog:
    """KE method lookup with the user's names for private-use ids."""

    def __init__(self, private: Mapping[int, PrivateKe] | None = None) -> None:
        self.private = dict(private or {})

    def method(self, method_id: int) -> KeMethod:
        base = iana.ke_method(method_id, {k: v.name for k, v in self.private.items()})
        declared = self.private.get(method_id)
        if base.kind == "private" and declared is not None and declared.kind in ("pq", "classical"):
            return KeMethod(base.id, base.name, declared.kind, "private (declared by user)",
                            None, None, None, None, None)
        return base

    def describe(self, method_id: int) -> str:
        return f"{self.method(method_id).name} ({method_id})"


def classify_all(negotiations: Iterable[Negotiation],
                 catalog: KeCatalog | None = None) -> list[Classification]:
    """Classify in order; a rekeyed IKE SA inherits from its parent, so parents go first."""
    catalog = catalog or KeCatalog()
    negotiations = list(negotiations)
    by_pair = {(n.spi_i, n.spi_r): i for i, n in enumerate(negotiations)}
    results: list[Classification | None] = [None] * len(negotiations)

    def resolve(i: int, depth: int = 0) -> Classification:
        if results[i] is None:
            n = negotiations[i]
            parent_index = by_pair.get(n.rekeyed_from) if n.rekeyed_from else None
            parent = resolve(parent_index, depth + 1) if parent_index is not None and depth < 64 else None
            results[i] = classify(n, catalog, parent=parent,
                                  parent_negotiation=negotiations[parent_index] if parent else None)
        return results[i]

    return [resolve(i) for i in range(len(negotiations))]


def classify(n: Negotiation, catalog: KeCatalog | None = None, *,
             parent: Classification | None = None,
             parent_negotiation: Negotiation | None = None) -> Classification:
    catalog = catalog or KeCatalog()
    result = _from_proposals(n, catalog, parent, parent_negotiation)
    return _with_decrypted_evidence(n, result, catalog, parent_negotiation)


def _from_proposals(n: Negotiation, catalog: KeCatalog, parent: Classification | None,
                    parent_negotiation: Negotiation | None) -> Classification:
    evidence: list[str] = []
    findings: list[Finding] = []
    pq_offered = _pq_offered(n, catalog)
    ppk = _ppk(n)
    if n.ike_version == 1:
        evidence.append(f"IKEv1 (ISAKMP) exchanges {sorted(set(n.ikev1_exchanges))}")
        findings.append(Finding("high", "ikev1", "IKEv1 has no post-quantum key exchange "
                                "(RFC 9395 deprecates it)"))
        return _result(IKEV1, "none", None, (), pq_offered, None, ppk, None, evidence, findings, _offered_methods(n))
    if not n.sa_init_seen:
        return _without_sa_init(n, catalog, parent, parent_negotiation, ppk)
    _note_retries(n, catalog, evidence)
    _note_offer(n, catalog, evidence, findings)
    if n.chosen is None:
        return _unanswered(n, catalog, pq_offered, ppk, evidence, findings)

    chosen = n.chosen
    ke_ids = chosen.ids(iana.TRANSFORM_KE)
    ke = ke_ids[0] if ke_ids else None
    addke = _chosen_addke(chosen)
    if len(ke_ids) != 1:
        findings.append(Finding("medium", "malformed-proposal",
                                f"chosen proposal has {len(ke_ids)} KE transforms"))
    evidence.append("responder chose " + describe_proposal(chosen, catalog))
    methods = [catalog.method(m) for m in ([ke] if ke is not None else []) + [m for _, m in addke]]
    name = _class_from_methods(ke, addke, pq_offered, catalog)
    _check_ke_payloads(n, ke, catalog, evidence, findings)
    _check_addke_evidence(n, addke, catalog, evidence, findings)
    _flag_methods(methods, findings)
    if name == CLASSICAL_PQ_OFFERED:
        findings.append(Finding("high", "downgrade",
                                "the initiator offered ML-KEM but the responder chose classical "
                                f"key exchange only ({catalog.describe(ke)})"))
    if name in (CLASSICAL, CLASSICAL_PQ_OFFERED):
        findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                "exchange alone: exposed to harvest-now-decrypt-later"))
    if ppk == "negotiated":
        evidence.append("USE_PPK in both IKE_SA_INIT messages: an RFC 8784 post-quantum preshared "
                        "key is mixed in (not visible as a key exchange)")
    return _result(name, "IKE_SA_INIT", ke, addke, pq_offered, methods, ppk, None,
                   evidence, findings, _offered_methods(n))


def describe_proposal(p: Proposal, catalog: KeCatalog) -> str:
    parts = []
    for t in p.transforms:
        slot = iana.TRANSFORM_TYPES.get(t.type, str(t.type))
        if t.type in iana.KE_TRANSFORM_TYPES:
            value = catalog.describe(t.id)
        else:
            value = iana.transform_name(t.type, t.id)
            if t.key_length:
                value += f"/{t.key_length}"
        parts.append(f"{slot}={value}")
    return f"#{p.number} " + ", ".join(parts)


def _chosen_addke(p: Proposal) -> tuple[tuple[int, int], ...]:
    return tuple((t.type, t.id) for t in p.transforms
                 if t.type in iana.ADDKE_TYPES and t.id != 0)


def _class_from_methods(ke: int | None, addke: tuple[tuple[int, int], ...], pq_offered: bool,
                        catalog: KeCatalog) -> str:
    if ke is None:
        return UNKNOWN
    primary = catalog.method(ke)
    extra = [catalog.method(m) for _, m in addke]
    if primary.is_pq:
        return PQ_ONLY
    if not primary.is_classical:
        return UNKNOWN  # a private or unassigned id: we cannot tell what protects the SA
    if any(m.is_pq for m in extra):
        return HYBRID_PQ
    if any(not m.is_classical for m in extra):
        return UNKNOWN
    return CLASSICAL_PQ_OFFERED if pq_offered else CLASSICAL


def _offered_methods(n: Negotiation) -> tuple[int, ...]:
    ids = [t.id for p in n.offered for t in p.transforms if t.type in iana.KE_TRANSFORM_TYPES]
    return tuple(dict.fromkeys(m for m in [*ids, *n.offered_ke] if m != 0))


def _pq_offered(n: Negotiation, catalog: KeCatalog) -> bool:
    return any(catalog.method(m).is_pq for m in _offered_methods(n))


def _note_offer(n: Negotiation, catalog: KeCatalog, evidence: list[str],
                findings: list[Finding]) -> None:
    offered = [catalog.method(m) for m in _offered_methods(n)]
    if not offered:
        return
    kinds = {m.kind for m in offered}
    scope = "post-quantum and classical" if {"pq", "classical"} <= kinds else \
        "post-quantum only" if kinds == {"pq"} else "classical only" if kinds == {"classical"} else "mixed"
    evidence.append(f"initiator offered {scope} key exchange: "
                    + ", ".join(f"{m.name} ({m.id})" for m in offered))
    weak = [m for m in offered if m.id in iana.WEAK_CLASSICAL_KE]
    if weak:
        only_weak = all(m.id in iana.WEAK_CLASSICAL_KE for m in offered if m.kind != "none")
        findings.append(Finding("high" if only_weak else "low", "weak-group-offered",
                                "initiator offered weak classical group(s) "
                                + ", ".join(f"{m.name} ({m.id})" for m in weak)
                                + (": every offer is weak" if only_weak else "")))


def _ppk(n: Negotiation) -> str:
    i = iana.USE_PPK in n.initiator_notifies
    r = iana.USE_PPK in n.responder_notifies
    return "negotiated" if i and r else "offered" if i else "none"


def _note_retries(n: Negotiation, catalog: KeCatalog, evidence: list[str]) -> None:
    for r in n.retries:
        if r.reason == "INVALID_KE_PAYLOAD":
            offered = catalog.describe(r.offered_ke) if r.offered_ke is not None else "?"
            wanted = catalog.describe(r.requested_ke) if r.requested_ke is not None else "?"
            text = f"INVALID_KE_PAYLOAD (frame {r.frame}): KE {offered} refused, responder asked for {wanted}"
        else:
            text = f"COOKIE demanded (frame {r.frame})"
        if r.new_spi_i:
            text += f"; the initiator retried with a new SPIi {r.new_spi_i}"
        evidence.append(text)


def _unanswered(n: Negotiation, catalog: KeCatalog, pq_offered: bool, ppk: str,
                evidence: list[str], findings: list[Finding]) -> Classification:
    errors = [(x, e) for x, e in n.error_notifies if x == iana.IKE_SA_INIT]
    if n.state == SA_INIT_REQUESTED:
        # The last IKE_SA_INIT request went unanswered (perhaps after a retry demand).
        last = _last(n.messages, iana.IKE_SA_INIT, False)
        sent = 1 + last.retransmissions if last else 0
        evidence.append(f"last IKE_SA_INIT request sent {sent} time(s), no response captured")
        if last is not None and last.ip_fragmented:
            findings.append(Finding("high", "fragmented-sa-init-unanswered",
                                    "the unanswered IKE_SA_INIT was IP-fragmented: fragments may be "
                                    "dropped on the path"))
        return _result(INCOMPLETE, "IKE_SA_INIT", None, (), pq_offered, None, ppk, None,
                       evidence, findings, _offered_methods(n))
    last_error = errors[-1][1] if errors else None
    error = iana.notify_name(last_error) if last_error is not None else None
    if n.state == SA_INIT_RETRY:
        evidence.append("the responder asked for a retry and the initiator never sent one")
    evidence.append(f"IKE_SA_INIT answered with {error or 'no SA payload'}")
    if last_error == iana.NO_PROPOSAL_CHOSEN and pq_offered:
        findings.append(Finding("medium", "pq-refused", "the initiator offered ML-KEM and the "
                                "responder accepted no proposal"))
    findings.append(Finding("low", "failed", f"negotiation failed: {error or 'no SA chosen'}"))
    return _result(FAILED, "IKE_SA_INIT", None, (), pq_offered, None, ppk, error,
                   evidence, findings, _offered_methods(n))


def _without_sa_init(n: Negotiation, catalog: KeCatalog, parent: Classification | None,
                     parent_negotiation: Negotiation | None, ppk: str) -> Classification:
    evidence = [f"no IKE_SA_INIT captured for this IKE SA; exchanges seen: "
                f"{', '.join(sorted({iana.exchange_name(m.exchange) for m in n.messages}))}"]
    findings: list[Finding] = []
    if parent is None or parent_negotiation is None or n.rekey_evidence is None:
        return _result(UNKNOWN, "none", None, (), False, None, ppk, None, evidence, findings, _offered_methods(n))
    evidence.append("rekeyed IKE SA: " + n.rekey_evidence)
    rekey = _rekey_exchange(n, parent_negotiation)
    if rekey is not None and rekey.chosen is not None:
        # Decrypted, the rekey's own proposal says what protects the new SA.
        ke_ids = rekey.chosen.ids(iana.TRANSFORM_KE)
        ke = ke_ids[0] if ke_ids else None
        addke = _chosen_addke(rekey.chosen)
        evidence.append("the rekey's responder chose " + describe_proposal(rekey.chosen, catalog))
        methods = [catalog.method(m) for m in ([ke] if ke is not None else []) + [m for _, m in addke]]
        _flag_methods(methods, findings)
        name = _class_from_methods(ke, addke, parent.pq_offered_by_initiator, catalog)
        if name in (CLASSICAL, CLASSICAL_PQ_OFFERED):
            findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                    "exchange alone: exposed to harvest-now-decrypt-later"))
        return _result(name, REKEY_BASIS, ke, addke, parent.pq_offered_by_initiator, methods, ppk, None,
                       evidence, findings, _offered_methods(n))
    name = parent.name
    followups = [m for m in parent_negotiation.messages
                 if m.exchange == iana.IKE_FOLLOWUP_KE and not m.response]
    if parent.name == HYBRID_PQ:
        if followups:
            evidence.append(f"the parent ran {len(followups)} IKE_FOLLOWUP_KE exchange(s): additional "
                            "key exchanges repeated in its rekeys (RFC 9370 section 2.2.2)")
        else:
            name = UNKNOWN
            findings.append(Finding("medium", "rekey-without-followup-ke",
                                    "the parent was hybrid but no IKE_FOLLOWUP_KE was seen: the "
                                    "rekeyed SA may be classical only"))
    evidence.append(f"classification inherited from parent IKE SA {n.rekeyed_from[0]}/{n.rekeyed_from[1]}"
                    " (the rekey's proposal is encrypted)")
    methods = [catalog.method(m) for m in ([parent.ke_method] if parent.ke_method is not None else [])
               + list(parent.addke_methods)]
    findings.extend(f for f in parent.findings if f.code in ("weak-group", "classical-only", "private-ke"))
    return _result(name, "inherited from parent IKE SA", parent.ke_method, parent.addke,
                   parent.pq_offered_by_initiator, methods, ppk, None, evidence, findings, _offered_methods(n))


REKEY_BASIS = "decrypted CREATE_CHILD_SA of the parent IKE SA"


def _rekey_exchange(n: Negotiation, parent: Negotiation | None) -> ChildExchange | None:
    """The parent's decrypted CREATE_CHILD_SA that created this IKE SA, by its SPIs."""
    if parent is None or n.rekey_linked_by != "spis":
        return None
    return next((x for x in parent.child_exchanges if x.new_spis == (n.spi_i, n.spi_r)), None)


def _with_decrypted_evidence(n: Negotiation, c: Classification, catalog: KeCatalog,
                             parent_negotiation: Negotiation | None) -> Classification:
    """Add what decryption showed, and say how firmly the class stands."""
    evidence, findings = list(c.evidence), list(c.findings)
    encrypted = [m for m in n.messages if m.decryption is not None]
    if encrypted:
        unread = [m for m in encrypted if m.inner is None]
        evidence.append(f"key table: {len(encrypted) - len(unread)} of {len(encrypted)} encrypted "
                        "message(s) decrypted")
        if unread:
            reasons = sorted({m.decryption.detail if m.decryption.status == "no-key"
                              else m.decryption.status for m in unread})
            findings.append(Finding("low", "undecryptable", f"{len(unread)} encrypted message(s) could "
                                    f"not be decrypted with the key table ({'; '.join(reasons)}): "
                                    "their content is unverified"))
    confirmed = False
    if c.basis == "IKE_SA_INIT" and c.name in JUDGED_BY_PROPOSAL:
        confirmed = _check_decrypted_addke(n, c.addke, catalog, evidence, findings)
    elif c.basis == REKEY_BASIS:
        rekey = _rekey_exchange(n, parent_negotiation)
        confirmed = rekey is not None and _check_child_exchange(rekey, catalog, evidence, findings)
    for exchange in n.child_exchanges:
        _check_child_exchange(exchange, catalog, evidence, findings)
    if n.ppk_notifies:
        evidence.append("decrypted PPK notifies: " + ", ".join(
            f"{iana.notify_name(t)} in {iana.exchange_name(x)}" for x, t in n.ppk_notifies))
    # The key table's last keys derive from every key exchange of the SA: a message
    # after the last IKE_INTERMEDIATE that opens with them proves the SA used them all.
    final_keys = any(m.inner is not None and m.exchange != iana.IKE_INTERMEDIATE for m in n.messages)
    contradicted = any(f.code in ("evidence-mismatch", "decrypted-ke-mismatch") for f in findings)
    confidence = None
    if c.name in JUDGED_BY_PROPOSAL:
        confidence = VERIFIED if confirmed and final_keys and not contradicted else NEGOTIATED
    return replace(c, evidence=tuple(evidence), findings=tuple(findings), confidence=confidence)


def _check_decrypted_addke(n: Negotiation, addke: tuple[tuple[int, int], ...], catalog: KeCatalog,
                           evidence: list[str], findings: list[Finding]) -> bool:
    """Each chosen ADDKE's IKE_INTERMEDIATE, decrypted, must carry its KE payloads; an
    IKE_INTERMEDIATE beyond the chosen ones must carry none."""
    exchanges = _intermediate_exchanges(n)
    confirmed = True
    for index, (request, response) in enumerate(exchanges):
        if index >= len(addke):
            for m in (request, response):
                if m is not None and m.inner is not None and m.inner.key_exchange is not None:
                    findings.append(Finding("high", "decrypted-ke-mismatch", f"decrypted {_where(m)} "
                                            f"carries a KE payload ({catalog.describe(m.inner.key_exchange.method)}) "
                                            "but the chosen proposal has no additional key exchange for it"))
            continue
        slot, method_id = addke[index]
        label = f"{iana.addke_slot(slot)} {catalog.method(method_id).name}"
        for m, role in ((request, "request"), (response, "response")):
            if m is None or m.inner is None:
                confirmed = False
                continue
            confirmed &= _confirm_ke(label, method_id, m.inner.key_exchange, role, _where(m),
                                     catalog, evidence, findings)
    return confirmed and len(exchanges) >= len(addke)


def _check_child_exchange(x: ChildExchange, catalog: KeCatalog, evidence: list[str],
                          findings: list[Finding]) -> bool:
    """A decrypted CREATE_CHILD_SA: its KE payloads carry the chosen KE, and each chosen
    ADDKE runs in its IKE_FOLLOWUP_KE, in slot order (RFC 9370 section 2.2.2)."""
    what = {1: "IKE SA rekey", 2: "AH Child SA", 3: "ESP Child SA"}.get(x.protocol, "Child SA")
    where = f"CREATE_CHILD_SA message id {x.message_id} (frame {x.frame}, {what})"
    if x.chosen is None:
        evidence.append(f"decrypted {where}: no chosen proposal seen")
        return False
    evidence.append(f"decrypted {where}: chose {describe_proposal(x.chosen, catalog)}")
    confirmed = True
    for ke_id in x.chosen.ids(iana.TRANSFORM_KE)[:1]:
        if ke_id == 0:
            continue
        label = f"{what} KE {catalog.method(ke_id).name}"
        for kex, role in ((x.request_ke, "request"), (x.response_ke, "response")):
            confirmed &= _confirm_ke(label, ke_id, kex, role, f"{where} {role}", catalog, evidence, findings)
    addke = _chosen_addke(x.chosen)
    for index, (slot, method_id) in enumerate(addke):
        label = f"{what} {iana.addke_slot(slot)} {catalog.method(method_id).name}"
        if index >= len(x.followups):
            evidence.append(f"{label}: its IKE_FOLLOWUP_KE exchange was not seen decrypted")
            confirmed = False
            continue
        f = x.followups[index]
        for kex, role in ((f.request_ke, "request"), (f.response_ke, "response")):
            confirmed &= _confirm_ke(label, method_id, kex, role,
                                     f"IKE_FOLLOWUP_KE message id {f.message_id} (request frame {f.frame}) {role}",
                                     catalog, evidence, findings)
    return confirmed


def _confirm_ke(label: str, method_id: int, kex: KeyExchange | None, role: str, where: str,
                catalog: KeCatalog, evidence: list[str], findings: list[Finding]) -> bool:
    method = catalog.method(method_id)
    expected = method.initiator_bytes if role == "request" else method.responder_bytes
    if kex is None:
        findings.append(Finding("high", "decrypted-ke-mismatch", f"{label} chosen but the decrypted "
                                f"{where} carries no KE payload"))
        return False
    if kex.method != method_id:
        findings.append(Finding("high", "decrypted-ke-mismatch", f"{label} chosen but the decrypted "
                                f"{where} carries {catalog.describe(kex.method)}"))
        return False
    if expected is not None and kex.data_length != expected:
        findings.append(Finding("high", "decrypted-ke-mismatch", f"{label}: the decrypted {where} "
                                f"carries {kex.data_length} bytes of key data, {expected} expected"))
        return False
    evidence.append(f"{label}: decrypted {where} carries {method.name} ({method_id}), "
                    f"{kex.data_length} bytes")
    return True


def _where(m: TrackedMessage) -> str:
    return (f"{iana.exchange_name(m.exchange)} {'response' if m.response else 'request'} "
            f"(message id {m.message_id}, frame {m.first_frame})")


def _flag_methods(methods: list[KeMethod], findings: list[Finding]) -> None:
    for m in methods:
        if m.id in iana.WEAK_CLASSICAL_KE:
            findings.append(Finding("high", "weak-group", f"weak classical group {m.name} ({m.id})"))
        if m.kind == "private" or m.family.startswith("private"):
            findings.append(Finding("medium", "private-ke", f"private-use KE method {m.id} "
                                    f"({m.name}): not known to be post-quantum or classical"
                                    if m.kind == "private" else
                                    f"private-use KE method {m.id} ({m.name}) taken as {m.kind} "
                                    "on the user's word"))
        if m.kind == "unassigned":
            findings.append(Finding("medium", "unassigned-ke", f"KE method {m.id} is not assigned by IANA"))


def _check_ke_payloads(n: Negotiation, ke: int | None, catalog: KeCatalog,
                       evidence: list[str], findings: list[Finding]) -> None:
    """The KE payloads of the final IKE_SA_INIT must carry the chosen method at its size."""
    if ke is None:
        return
    method = catalog.method(ke)
    for response in (False, True):
        m = _last(n.messages, iana.IKE_SA_INIT, response)
        who = "responder" if response else "initiator"
        if m is None or m.key_exchange is None:
            findings.append(Finding("medium", "evidence-missing", f"no KE payload from the {who} in "
                                    "IKE_SA_INIT"))
            continue
        kex = m.key_exchange
        expected = method.responder_bytes if response else method.initiator_bytes
        if kex.method != ke:
            findings.append(Finding("high", "evidence-mismatch",
                                    f"{who}'s KE payload carries {catalog.describe(kex.method)} but "
                                    f"the chosen KE is {catalog.describe(ke)}"))
        elif expected is not None and kex.data_length != expected:
            findings.append(Finding("high", "evidence-mismatch",
                                    f"{who}'s KE payload for {method.name} has {kex.data_length} "
                                    f"bytes of key data, {expected} expected"))
        elif expected is not None:
            evidence.append(f"{who}'s IKE_SA_INIT KE payload: {method.name}, {kex.data_length} bytes")


def _check_addke_evidence(n: Negotiation, addke: tuple[tuple[int, int], ...], catalog: KeCatalog,
                          evidence: list[str], findings: list[Finding]) -> None:
    """Each chosen ADDKE runs in its own IKE_INTERMEDIATE (RFC 9370 section 2.2.1), in slot order."""
    exchanges = _intermediate_exchanges(n)
    if not addke:
        if exchanges:
            evidence.append(f"{len(exchanges)} IKE_INTERMEDIATE exchange(s) without a chosen "
                            "additional key exchange: not evidence of post-quantum protection")
        return
    for index, (slot, method_id) in enumerate(addke):
        method = catalog.method(method_id)
        label = f"{iana.addke_slot(slot)} {method.name}"
        if index >= len(exchanges):
            if n.state in (INTERMEDIATE, AUTH_REQUESTED, ESTABLISHED):
                findings.append(Finding("high", "evidence-mismatch",
                                        f"{label} chosen but no IKE_INTERMEDIATE exchange "
                                        f"#{index + 1} was seen before IKE_AUTH"))
            else:
                evidence.append(f"{label}: its IKE_INTERMEDIATE exchange was not captured")
            continue
        request, response = exchanges[index]
        _check_carrier(label, method, request, method.initiator_bytes, "request", evidence, findings)
        _check_carrier(label, method, response, method.responder_bytes, "response", evidence, findings)


def _check_carrier(label: str, method: KeMethod, message: TrackedMessage | None,
                   key_bytes: int | None, role: str, evidence: list[str],
                   findings: list[Finding]) -> None:
    if message is None:
        evidence.append(f"{label}: IKE_INTERMEDIATE {role} not captured")
        return
    where = f"IKE_INTERMEDIATE {role} (message id {message.message_id}, frame {message.first_frame})"
    if key_bytes is None:
        evidence.append(f"{label}: {where} carries {message.encrypted_bytes} encrypted bytes")
        return
    needed = key_bytes + KE_PAYLOAD_HEADER
    if not message.complete:
        evidence.append(f"{label}: {where} only partly captured")
    elif message.encrypted_bytes < needed:
        findings.append(Finding("high", "evidence-mismatch",
                                f"{label} chosen but its {where} carries only "
                                f"{message.encrypted_bytes} encrypted bytes, less than the "
                                f"{needed}-byte KE payload it needs"))
    else:
        evidence.append(f"{label}: {where} carries {message.encrypted_bytes} encrypted bytes, "
                        f"room for the {key_bytes}-byte {'key' if role == 'request' else 'ciphertext'}")


def _intermediate_exchanges(n: Negotiation) -> list[tuple[TrackedMessage | None, TrackedMessage | None]]:
    requests = {m.message_id: m for m in n.messages
                if m.exchange == iana.IKE_INTERMEDIATE and not m.response and m.from_initiator}
    responses = {m.message_id: m for m in n.messages
                 if m.exchange == iana.IKE_INTERMEDIATE and m.response and not m.from_initiator}
    return [(requests.get(i), responses.get(i)) for i in sorted(requests.keys() | responses.keys())]


def _last(messages: Iterable[TrackedMessage], exchange: int, response: bool) -> TrackedMessage | None:
    found = None
    for m in messages:
        if m.exchange == exchange and m.response == response:
            found = m
    return found


def _result(name: str, basis: str, ke: int | None, addke: tuple[tuple[int, int], ...],
            pq_offered: bool, methods: list[KeMethod] | None, ppk: str, error: str | None,
            evidence: list[str], findings: list[Finding], offered: tuple[int, ...]) -> Classification:
    methods = methods or []
    pq = [m for m in methods if m.is_pq and m.nist_category is not None]
    strongest = max(pq, key=lambda m: m.nist_category, default=None)
    classical = [m.strength_bits for m in methods if m.is_classical and m.strength_bits is not None]
    return Classification(
        name=name, basis=basis, ke_method=ke, addke=addke, pq_offered_by_initiator=pq_offered,
        mlkem_parameter_set=strongest.name if strongest else None,
        nist_category=strongest.nist_category if strongest else None,
        classical_strength_bits=min(classical) if classical else None,
        offered_ke_methods=offered, ppk=ppk, error=error, evidence=tuple(evidence), findings=tuple(findings),
    )
