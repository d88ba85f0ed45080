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

Fail closed: every classification says how it was reached (`observation`). Without the
exchange that decided the key exchange, the SA's own traffic may still show it (message
sizes bound each KE payload, IKE_FOLLOWUP_KE shows an additional key exchange, a rekey
linked by addresses, time and size): the class is then `inferred`, with each step named.
Otherwise it is `unknown` and not observable. A chosen ADDKE whose exchange was never
captured is `unconfirmed`; messages too small for it are `contradicted`. Only `verified`
and `negotiated` can ever satisfy a policy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ikeaudit import iana, vendors
from ikeaudit.iana import KeMethod
from ikeaudit.mtu import NO_OVERHEAD as NO_CIPHER
from ikeaudit.mtu import plaintext_upper_bound, sk_overhead
from ikeaudit.records import quick_init, replace
from ikeaudit.records import (
    AUTH_REQUESTED,
    ESTABLISHED,
    INTERMEDIATE,
    NEW,
    SA_INIT_FAILED,
    SA_INIT_REQUESTED,
    SA_INIT_RETRY,
    ChildExchange,
    Finding,
    Ikev1Transform,
    KeyExchange,
    Negotiation,
    Proposal,
    TrackedMessage,
    Transform,
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

# Entries of the memos of KE methods and proposal descriptions (functools.lru_cache).
MEMO_ENTRIES = 4096

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


quick_init(Classification)


class KeCatalog:
    """KE method lookup with the user's names for private-use ids."""

    def __init__(self, private: Mapping[int, PrivateKe] | None = None) -> None:
        self.private = dict(private or {})

    # Remembered by value, as `describe_proposal` is: a gateway's clients offer the same
    # few proposals thousands of times (`private` is not changed after construction).
    @functools.lru_cache(maxsize=MEMO_ENTRIES)
    def method(self, method_id: int) -> KeMethod:
        base = iana.ke_method(method_id, {k: v.name for k, v in self.private.items()})
        declared = self.private.get(method_id)
        if base.kind == "private" and declared is not None and declared.kind in ("pq", "classical"):
            return KeMethod(base.id, base.name, declared.kind, "private (declared by user)",
                            None, None, None, None, None)
        return base

    def describe(self, method_id: int) -> str:
        return f"{self.method(method_id).name} ({method_id})"


# A classical negotiation this soon after a failed or refused post-quantum attempt
# between the same peers is taken for a fallback (a downgrade an attacker can force by
# dropping the large ML-KEM messages).
DOWNGRADE_WINDOW_S = 120.0


def classify_all(negotiations: Iterable[Negotiation],
                 catalog: KeCatalog | None = None) -> list[Classification]:
    """Classify in order; a rekeyed IKE SA is judged with its parent, so parents go first.
    Then consecutive attempts between the same peers are read together for a downgrade
    across attempts."""
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

    classified = [resolve(i) for i in range(len(negotiations))]
    return _cross_attempt_downgrades(negotiations, classified)


def _cross_attempt_downgrades(negotiations: list[Negotiation],
                              classified: list[Classification]) -> list[Classification]:
    """A classical negotiation that follows, within DOWNGRADE_WINDOW_S, an attempt of the
    same initiator to the same responder that offered ML-KEM and failed or was refused."""
    by_peers: dict[tuple[str, str], list[int]] = {}
    for i, n in enumerate(negotiations):
        if n.ike_version == 2:
            by_peers.setdefault((n.initiator, n.responder), []).append(i)
    out = list(classified)
    for indices in by_peers.values():
        indices.sort(key=lambda i: (negotiations[i].first_seen, i))
        for before, after in zip(indices, indices[1:]):
            out[after] = _after_attempt(negotiations[before], classified[before], negotiations[after],
                                        classified[after])
    return out


def _may_lead_to_downgrade(a: Negotiation, ca: Classification) -> bool:
    """Whether an attempt, followed by a classical one, makes that one a downgrade."""
    return ca.pq_offered_by_initiator and (ca.name in (FAILED, INCOMPLETE) or (
        ca.name in (HYBRID_PQ, PQ_ONLY) and not a.established and a.state != ESTABLISHED))


def _after_attempt(a, ca: Classification, b: Negotiation, cb: Classification) -> Classification:
    """b's classification, with a downgrade finding when a (the attempt before it between
    the same peers: a Negotiation, or the `_Attempt` kept of one) makes it one."""
    if cb.name != CLASSICAL or not _may_lead_to_downgrade(a, ca):
        return cb
    gap = b.first_seen - a.last_seen
    if not 0 <= gap <= DOWNGRADE_WINDOW_S:
        return cb
    what = {FAILED: f"failed ({ca.error or 'no proposal chosen'})", INCOMPLETE: "went unanswered"}.get(
        ca.name, f"chose {ca.name} but never completed IKE_AUTH")
    finding = Finding("high", "downgrade", f"classical retry {gap:.1f} s after a post-quantum attempt "
                      f"between the same peers: IKE SA {a.spi_i}/{a.spi_r} (first frame {a.first_frame}) "
                      f"offered ML-KEM and {what}; this one offered no ML-KEM")
    return replace(cb, findings=cb.findings + (finding,),
                   evidence=cb.evidence + (f"follows the post-quantum attempt {a.spi_i}/{a.spi_r} "
                                           f"by {gap:.1f} s",))


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What `_after_attempt` reads of an earlier attempt."""

    spi_i: str
    spi_r: str
    first_frame: int
    last_seen: float
    established: bool
    state: str


class StreamClassifier:
    """`classify_all` one negotiation at a time, for negotiations that come with each
    rekey after its parent and each IKEv2 attempt after the one opened before it between
    the same peers (`Tracker.hand_out` gives them so). Kept between calls: the
    classification of each SA that may be a rekey's parent (it ran CREATE_CHILD_SA), with
    the messages of its rekeys, and per initiator and responder the last attempt when it
    offered ML-KEM and failed (None when it did not), both dropped by `prune`."""

    def __init__(self, catalog: KeCatalog | None = None) -> None:
        self.catalog = catalog or KeCatalog()
        # SPI pair -> (time of its last CREATE_CHILD_SA, classification, slim negotiation, pinned)
        self._parents: dict[tuple[str, str], tuple[float, Classification, Negotiation, bool]] = {}
        self._last: dict[tuple[str, str], tuple[_Attempt, Classification] | None] = {}
        self._last_seen: dict[tuple[str, str], float] = {}
        # At the end of the input (`finish`): the parents and the peers still awaited.
        self._awaited: frozenset[tuple[str, str]] | None = None
        self._held: Callable[[str, str], bool] | None = None

    def finish(self, awaited_parents: frozenset[tuple[str, str]], held: Callable[[str, str], bool]) -> None:
        """What the negotiations still to come can need is known (the end of the input:
        Tracker.finish_stream): the SPI pairs their rekeys were linked to, and whether
        an SA between two peers is still to come. Nothing else is kept from now on (at
        the end of a gateway's capture every SA is handed out at once, and what each
        left here grew as large as the SAs in flight had been)."""
        self._awaited, self._held = awaited_parents, held
        for pair in [p for p in self._parents if p not in awaited_parents]:
            del self._parents[pair]
        for peers in [p for p in self._last_seen if not held(*p)]:
            del self._last[peers], self._last_seen[peers]

    def __call__(self, n: Negotiation) -> Classification:
        kept = self._parents.get(n.rekeyed_from) if n.rekeyed_from else None
        parent, parent_negotiation = (kept[1], kept[2]) if kept else (None, None)
        c = classify(n, self.catalog, parent=parent, parent_negotiation=parent_negotiation)
        rekeys = [m for m in n.messages if m.exchange in (iana.CREATE_CHILD_SA, iana.IKE_FOLLOWUP_KE)]
        if any(m.exchange == iana.CREATE_CHILD_SA for m in rekeys) and (
                self._awaited is None or (n.spi_i, n.spi_r) in self._awaited):
            pinned = any(x.new_spis for x in n.child_exchanges)
            self._parents[(n.spi_i, n.spi_r)] = (max(m.first_timestamp for m in rekeys), c,
                                                 replace(n, messages=tuple(rekeys)), pinned)
        if n.ike_version != 2:
            return c
        peers = (n.initiator, n.responder)
        before = self._last.get(peers)
        out = _after_attempt(*before, n, c) if before is not None else c
        self._last[peers] = ((_Attempt(n.spi_i, n.spi_r, n.first_frame, n.last_seen, n.established, n.state), c)
                             if _may_lead_to_downgrade(n, c) else None)
        self._last_seen[peers] = max(self._last_seen.get(peers, n.last_seen), n.last_seen)
        if self._held is not None and not self._held(*peers):
            del self._last[peers], self._last_seen[peers]
        return out

    def prune(self, horizon: float, now: float, held) -> None:
        """Forget parents whose rekeys are older than `horizon` (Tracker.horizon: no rekey
        still to come reaches them; those whose decrypted rekeys named new SPIs stay), and
        attempts more than DOWNGRADE_WINDOW_S before `now` between peers of which no SA is
        held (`held(initiator, responder)`): a later attempt comes too late to follow them."""
        for pair in [p for p, (at, _, _, pinned) in self._parents.items() if at < horizon and not pinned]:
            del self._parents[pair]
        for peers in [p for p, last in self._last_seen.items()
                      if now - last > DOWNGRADE_WINDOW_S and not held(*p)]:
            del self._last[peers], self._last_seen[peers]


def classify(n: Negotiation, catalog: KeCatalog | None = None, *,
             parent: Classification | None = None,
             parent_negotiation: Negotiation | None = None) -> Classification:
    catalog = catalog or KeCatalog()
    result = _from_proposals(n, catalog, parent, parent_negotiation)
    result = _with_decrypted_evidence(n, result, catalog, parent_negotiation)
    return _with_observation(n, result)


def _from_proposals(n: Negotiation, catalog: KeCatalog, parent: Classification | None,
                    parent_negotiation: Negotiation | None) -> Classification:
    evidence: list[str] = []
    findings: list[Finding] = []
    pq_offered = _pq_offered(n, catalog) if n.sa_init_seen else None
    ppk = _ppk(n)
    if n.ike_version == 1:
        return _ikev1(n, catalog)
    responded = any(m.exchange == iana.IKE_SA_INIT and m.response for m in n.messages)
    if not n.sa_init_seen and not responded:
        return _without_sa_init(n, catalog, parent, parent_negotiation, ppk)
    _note_retries(n, catalog, evidence)
    if n.sa_init_seen:
        _note_offer(n, catalog, evidence, findings)
    else:
        evidence.append("the initiator's IKE_SA_INIT request was not captured: what it offered is unknown")
    if n.chosen is None:
        if not responded and n.state not in (NEW, SA_INIT_REQUESTED, SA_INIT_RETRY, SA_INIT_FAILED):
            return _choice_not_seen(n, catalog, pq_offered, ppk, evidence, findings)
        return _unanswered(n, catalog, pq_offered, ppk, evidence, findings)

    chosen = n.chosen
    ke_ids = chosen.ids(iana.TRANSFORM_KE)
    ke = ke_ids[0] if ke_ids else None
    addke = _chosen_addke(chosen)
    if len(ke_ids) != 1:
        findings.append(Finding("medium", "malformed-proposal",
                                f"chosen proposal has {len(ke_ids)} KE transforms"))
    evidence.append("responder chose " + describe_proposal(chosen, catalog))
    if n.sa_init_seen:
        _check_chosen_was_offered(n, chosen, catalog, findings)
    methods = [catalog.method(m) for m in ([ke] if ke is not None else []) + [m for _, m in addke]]
    name = _class_from_methods(ke, addke, bool(pq_offered), catalog)
    captured = _check_ke_payloads(n, ke, catalog, evidence, findings)
    captured &= _check_addke_evidence(n, addke, catalog, evidence, findings)
    _flag_methods(methods, findings)
    if name == CLASSICAL_PQ_OFFERED:
        findings.append(Finding("high", "downgrade",
                                "the initiator offered ML-KEM but the responder chose classical "
                                f"key exchange only ({catalog.describe(ke)})"))
    if name in (CLASSICAL, CLASSICAL_PQ_OFFERED):
        findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                "exchange alone: exposed to harvest-now-decrypt-later"))
    result = _result(name, "IKE_SA_INIT", ke, addke, pq_offered, methods, ppk, None,
                     evidence, findings, _offered_methods(n))
    return replace(result, chosen_proposal=chosen, confidence=None if captured else UNCONFIRMED)


def _check_chosen_was_offered(n: Negotiation, chosen: Proposal, catalog: KeCatalog,
                              findings: list[Finding]) -> None:
    """RFC 7296 section 3.3.6: the responder picks one offered proposal and one offered
    transform of each type from it. An ADDKE slot the initiator left out may come back
    as NONE (RFC 9370 section 2.2.1)."""
    if not n.offered:
        return

    def key(t: Transform) -> tuple:
        return (t.type, t.id, t.key_length)

    def fits(offer: Proposal) -> bool:
        offered = {key(t) for t in offer.transforms}
        slots = {t.type for t in offer.transforms}
        return all(key(t) in offered or (t.type in iana.ADDKE_TYPES and t.id == 0 and t.type not in slots)
                   for t in chosen.transforms)

    if any(fits(p) for p in n.offered):
        return
    anywhere = {key(t) for p in n.offered for t in p.transforms}
    never = [t for t in chosen.transforms if key(t) not in anywhere and not (t.type in iana.ADDKE_TYPES and t.id == 0)]
    names = ", ".join(f"{iana.TRANSFORM_TYPES.get(t.type, t.type)} "
                      f"{catalog.describe(t.id) if t.type in iana.KE_TRANSFORM_TYPES else iana.transform_name(t.type, t.id)}"
                      + (f"/{t.key_length}" if t.key_length else "") for t in never)
    detail = (f"the responder chose {names}, which the initiator never offered" if never else
              "the responder's chosen transforms do not all come from one offered proposal")
    findings.append(Finding("high", "chosen-not-offered", detail + " (RFC 7296 section 3.3.6): a broken or "
                            "tampered responder, or an offer this capture does not hold"))


def _choice_not_seen(n: Negotiation, catalog: KeCatalog, pq_offered: bool | None, ppk: str,
                     evidence: list[str], findings: list[Finding]) -> Classification:
    """The initiator's IKE_SA_INIT request was captured and the SA went on, but the
    response that chose the proposal was not (a one-direction capture). The initiator's
    own later messages still say something: the responder accepted the KE payload of its
    last request (else INVALID_KE_PAYLOAD, RFC 7296 section 1.2), each IKE_INTERMEDIATE
    request carries the key of one chosen ADDKE (RFC 9370), and an IKE_AUTH request with
    message id 1 means no IKE_INTERMEDIATE ran at all."""
    later = sorted({iana.exchange_name(m.exchange) for m in n.messages if m.exchange != iana.IKE_SA_INIT})
    evidence.append("the responder's IKE_SA_INIT response was not captured: its choice is unknown "
                    f"(later exchanges seen: {', '.join(later)})")
    result = _result(UNKNOWN, "none", None, (), pq_offered, None, ppk, None, evidence, findings, _offered_methods(n))
    if not n.offered_ke:
        return result
    ke = n.offered_ke[-1]
    primary = catalog.method(ke)
    inferences = [f"the SA went on after IKE_SA_INIT, so the responder accepted the KE payload of the last "
                  f"request: {catalog.describe(ke)}"]
    requests = [m for m in n.messages if m.exchange == iana.IKE_INTERMEDIATE and not m.response and m.complete]
    auth = [m for m in n.messages if m.exchange == iana.IKE_AUTH and not m.response]
    overhead = NO_CIPHER
    name = UNKNOWN
    if primary.is_pq:
        name = PQ_ONLY
    elif not primary.is_classical:
        name = UNKNOWN
    elif requests:
        said = [text for text in map(_intermediate_says_mlkem, requests) if text]
        excluded = True
        for m in requests:
            gone, text = _excludes(m, _ke_room(m, overhead, 0), catalog)
            inferences.append(text + " (cipher overhead not counted, so the bound is loose)")
            excluded &= gone
        inferences.extend(said)
        name = HYBRID_PQ if said else CLASSICAL if excluded else UNKNOWN
        if excluded:
            inferences.append("no ML-KEM key fits in any IKE_INTERMEDIATE request: no post-quantum "
                              "additional key exchange")
    elif auth and min(m.message_id for m in auth) == 1:
        inferences.append("the first IKE_AUTH request has message id 1: no IKE_INTERMEDIATE exchange ran, "
                          "so no additional key exchange")
        name = CLASSICAL
    if name == UNKNOWN:
        return replace(result, inferences=tuple(inferences)) if len(inferences) > 1 else result
    if name == CLASSICAL and pq_offered:
        name = CLASSICAL_PQ_OFFERED
    if name in (CLASSICAL, CLASSICAL_PQ_OFFERED):
        findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                "exchange alone: exposed to harvest-now-decrypt-later"))
    _flag_methods([primary], findings)
    return replace(_result(name, "inferred from the initiator's messages", ke, (), pq_offered, [primary], ppk,
                           None, evidence, findings, _offered_methods(n)),
                   observation=INFERRED_OBSERVATION, inferences=tuple(inferences))


def _intermediate_says_mlkem(m: TrackedMessage) -> str | None:
    """A sentence when an IKE_INTERMEDIATE request carries more key data than any
    classical method sends (allowing the largest usual SK overhead per piece)."""
    pieces = max(1, len(m.ike_lengths))
    floor = m.encrypted_bytes - pieces * LARGEST_SK_OVERHEAD - KE_PAYLOAD_HEADER
    if floor <= iana.LARGEST_CLASSICAL_KE_BYTES:
        return None
    return (f"IKE_INTERMEDIATE request (message id {m.message_id}) carries at least {floor} bytes of key data: "
            f"more than any classical method ({iana.LARGEST_CLASSICAL_KE_BYTES} B, 8192-bit MODP), so an ML-KEM key")


@functools.lru_cache(maxsize=MEMO_ENTRIES)
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
    """The chosen ADDKEs in slot order (ADDKE1 first), whatever their order on the wire:
    RFC 7296 leaves transform order free, RFC 9370 runs the exchanges by slot."""
    return tuple(sorted((t.type, t.id) for t in p.transforms
                        if t.type in iana.ADDKE_TYPES and t.id != 0))


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
    """RFC 8784 decides PPK use in IKE_AUTH: the responder that used the initiator's PPK
    returns PPK_IDENTITY in its IKE_AUTH response; without it the NO_PPK_AUTH fallback
    was taken. RFC 9867 mixes the PPK in IKE_INTERMEDIATE (USE_PPK_INT): the responder
    answers the initiator's PPK_IDENTITY_KEY with its own PPK notify there. Only a
    decrypted response proves use; USE_PPK in IKE_SA_INIT only requests it."""
    requested = any(t in (iana.USE_PPK, iana.USE_PPK_INT) for t in (*n.initiator_notifies, *n.responder_notifies))
    answers = [m for m in n.messages if m.response and m.inner is not None
               and m.exchange in (iana.IKE_AUTH, iana.IKE_INTERMEDIATE)]
    for m in answers:
        types = m.inner.notify_types()
        if m.exchange == iana.IKE_AUTH and iana.PPK_IDENTITY in types:
            return "negotiated"
        if m.exchange == iana.IKE_INTERMEDIATE and {iana.PPK_IDENTITY, iana.PPK_IDENTITY_KEY} & set(types):
            return "negotiated"
    if requested and any(m.exchange == iana.IKE_AUTH for m in answers):
        return "not-used"
    return "requested" if requested else "none"


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
        evidence.append("the responder asked for a retry and the initiator never sent one" if n.sa_init_seen else
                        "the responder asked for a retry; the initiator's requests were not captured")
    evidence.append(f"IKE_SA_INIT answered with {error or 'no SA payload'}")
    if last_error == iana.NO_PROPOSAL_CHOSEN and pq_offered:
        findings.append(Finding("medium", "pq-refused", "the initiator offered ML-KEM and the "
                                "responder accepted no proposal"))
    findings.append(Finding("low", "failed", f"negotiation failed: {error or 'no SA chosen'}"))
    return _result(FAILED, "IKE_SA_INIT", None, (), pq_offered, None, ppk, error,
                   evidence, findings, _offered_methods(n))


def _without_sa_init(n: Negotiation, catalog: KeCatalog, parent: Classification | None,
                     parent_negotiation: Negotiation | None, ppk: str) -> Classification:
    """An SA met without any IKE_SA_INIT message: judged by its decrypted rekey when
    there is one (observed), else from its own traffic or a rekey link that sizes
    support (inferred, each step named), else not at all (not observable)."""
    evidence = [f"no IKE_SA_INIT captured for this IKE SA; exchanges seen: "
                f"{', '.join(sorted({iana.exchange_name(m.exchange) for m in n.messages}))}"]
    findings: list[Finding] = []
    rekey = _rekey_exchange(n, parent_negotiation)
    if rekey is not None and rekey.chosen is not None:
        # Decrypted, the rekey's own proposal says what protects the new SA.
        evidence.append("rekeyed IKE SA: " + n.rekey_evidence)
        ke_ids = rekey.chosen.ids(iana.TRANSFORM_KE)
        ke = ke_ids[0] if ke_ids else None
        addke = _chosen_addke(rekey.chosen)
        evidence.append("the rekey's responder chose " + describe_proposal(rekey.chosen, catalog))
        methods = [catalog.method(m) for m in ([ke] if ke is not None else []) + [m for _, m in addke]]
        _flag_methods(methods, findings)
        offered = [t.id for p in rekey.offered for t in p.transforms if t.type in iana.KE_TRANSFORM_TYPES]
        pq_offered = any(catalog.method(m).is_pq for m in offered)
        name = _class_from_methods(ke, addke, pq_offered, catalog)
        if name in (CLASSICAL, CLASSICAL_PQ_OFFERED):
            findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                    "exchange alone: exposed to harvest-now-decrypt-later"))
        return replace(_result(name, REKEY_BASIS, ke, addke, pq_offered, methods, ppk, None,
                               evidence, findings, tuple(dict.fromkeys(m for m in offered if m))),
                       chosen_proposal=rekey.chosen)
    inherited = None
    if parent is not None and parent_negotiation is not None and n.rekey_linked_by == "addresses-time-and-size":
        inherited = _inherited(n, catalog, parent, parent_negotiation, ppk, evidence, findings)
        if inherited is not None and inherited.name != UNKNOWN:
            return inherited
    own = _own_traffic(n, catalog)
    if own is not None:
        name, inferences = own
        if inherited is not None:
            inferences = [*inherited.inferences, *inferences]
        if name in (CLASSICAL,):
            findings.append(Finding("medium", "classical-only", "traffic protected by classical key "
                                    "exchange alone: exposed to harvest-now-decrypt-later"))
        return replace(_result(name, "inferred from the SA's own traffic", None, (), None, None, ppk, None,
                               evidence, findings, ()),
                       observation=INFERRED_OBSERVATION, inferences=tuple(inferences))
    if inherited is not None:
        return inherited
    return replace(_result(UNKNOWN, "none", None, (), None, None, ppk, None, evidence, findings, ()),
                   observation=NOT_OBSERVABLE)


# Inner payloads every CREATE_CHILD_SA request and response carries besides its KE
# payload: a Nonce of at least 16 bytes (RFC 7296 section 3.9).
MIN_NONCE_PAYLOAD = 4 + 16
# An IKE_FOLLOWUP_KE request carries the ADDITIONAL_KEY_EXCHANGE notify (8 bytes and a
# link token) besides its KE payload (RFC 9370 section 2.2.2); the response carries one
# only when another exchange follows, so a bound on it counts none.
MIN_LINK_NOTIFY = 8


def _followup_others(m: TrackedMessage) -> int:
    return 0 if m.response else MIN_LINK_NOTIFY
# To call a KE payload larger than any classical one from outside, allow the largest
# usual SK overhead (16-byte IV, 32-byte ICV, a block of padding and its length byte)
# and a link token of up to 64 bytes: what is left is a floor on the key data.
LARGEST_SK_OVERHEAD = 16 + 32 + 16 + 1
LARGEST_LINK_TOKEN = 64


def _ke_room(m: TrackedMessage, overhead, others: int) -> int:
    """Most key data the message's KE payload can hold."""
    return plaintext_upper_bound(m, overhead) - others - KE_PAYLOAD_HEADER


def _excludes(m: TrackedMessage, room: int, catalog: KeCatalog) -> tuple[bool, str]:
    """Whether the message's room excludes every ML-KEM method, and a sentence saying
    what it excludes."""
    pq = [k for k in iana.KE_METHODS.values() if k.is_pq]
    size = (lambda k: k.responder_bytes) if m.response else (lambda k: k.initiator_bytes)
    out = [f"{k.name} ({size(k)} B)" for k in pq if size(k) > room]
    fits = [f"{k.name} ({size(k)} B)" for k in pq if size(k) <= room]
    where = (f"{iana.exchange_name(m.exchange)} {'response' if m.response else 'request'} "
             f"(message id {m.message_id}, at {m.first_timestamp:.6f})")
    text = (f"{where} has room for at most {max(room, 0)} bytes of key data"
            + (f": excludes {', '.join(out)}" if out else "")
            + (f"; fits {', '.join(fits)}" if fits else "; fits classical key exchange (e.g. Curve25519, 32 B) or none"))
    return not fits, text


def _own_traffic(n: Negotiation, catalog: KeCatalog) -> tuple[str, list[str]] | None:
    """What the SA's own rekeys show in clear headers: IKE_FOLLOWUP_KE exchanges are
    additional key exchanges (RFC 9370), and every CREATE_CHILD_SA's size bounds its KE
    payload. Sizes only ever exclude ML-KEM; a follow-up exchange larger than any
    classical key (allowing the largest usual overhead) is taken for ML-KEM."""
    overhead = sk_overhead(n.chosen)
    cipher = "negotiated cipher overhead" if overhead else "cipher unknown: no overhead assumed, so the bound is loose"
    followups = [m for m in n.messages if m.exchange == iana.IKE_FOLLOWUP_KE and m.complete]
    children = [m for m in n.messages if m.exchange == iana.CREATE_CHILD_SA and m.complete]
    intermediates = [m for m in n.messages if m.exchange == iana.IKE_INTERMEDIATE and not m.response and m.complete]
    said = [text for text in map(_intermediate_says_mlkem, intermediates) if text]
    if said:
        return HYBRID_PQ, [f"{len(intermediates)} IKE_INTERMEDIATE request(s) in clear headers: additional key "
                           "exchanges of the handshake (RFC 9370 section 2.2.1); the primary KE was not seen", *said]
    if not followups and not children:
        return None
    inferences: list[str] = []
    if followups:
        inferences.append(f"{sum(1 for m in followups if not m.response)} IKE_FOLLOWUP_KE request(s) in clear "
                          "headers: additional key exchanges ran in this SA's rekeys (RFC 9370 section 2.2.2)")
        excluded, large = True, False
        for m in followups:
            gone, text = _excludes(m, _ke_room(m, overhead, _followup_others(m)), catalog)
            inferences.append(text + f" ({cipher})")
            excluded &= gone
            said = _followup_says_mlkem(m)
            if said:
                large = True
                inferences.append(said)
        if large:
            return HYBRID_PQ, inferences
        if excluded:
            inferences.append("no ML-KEM key fits in its IKE_FOLLOWUP_KE exchanges: the additional key "
                              "exchanges are classical")
            return CLASSICAL, inferences
        return UNKNOWN, inferences
    excluded = True
    for m in children:
        gone, text = _excludes(m, _ke_room(m, overhead, MIN_NONCE_PAYLOAD), catalog)
        inferences.append(text + f" ({cipher})")
        excluded &= gone
    if excluded:
        inferences.append("no ML-KEM key fits in any of its CREATE_CHILD_SA messages and no IKE_FOLLOWUP_KE ran: "
                          "its rekeys use classical key exchange or none")
        return CLASSICAL, inferences
    inferences.append("its CREATE_CHILD_SA messages have room for an ML-KEM key: sizes cannot tell")
    return UNKNOWN, inferences


def _role(m: TrackedMessage) -> str:
    return f"{iana.exchange_name(m.exchange)} {'response' if m.response else 'request'} (message id {m.message_id})"


def _followup_says_mlkem(m: TrackedMessage) -> str | None:
    """A sentence when an IKE_FOLLOWUP_KE request carries more key data than any
    classical method sends, allowing the largest usual overhead per SK/SKF payload and
    a long link token; None otherwise."""
    pieces = max(1, len(m.ike_lengths))
    floor = (m.encrypted_bytes - pieces * LARGEST_SK_OVERHEAD - MIN_LINK_NOTIFY - LARGEST_LINK_TOKEN
             - KE_PAYLOAD_HEADER)
    if m.response or m.exchange != iana.IKE_FOLLOWUP_KE or floor <= iana.LARGEST_CLASSICAL_KE_BYTES:
        return None
    return (f"IKE_FOLLOWUP_KE request (message id {m.message_id}) carries at least {floor} bytes of key data "
            f"(after the largest usual SK overhead and a {LARGEST_LINK_TOKEN}-byte link token): more than any "
            f"classical method ({iana.LARGEST_CLASSICAL_KE_BYTES} B, 8192-bit MODP), so an ML-KEM key")


def _inherited(n: Negotiation, catalog: KeCatalog, parent: Classification, parent_negotiation: Negotiation,
               ppk: str, evidence: list[str], findings: list[Finding]) -> Classification | None:
    """A rekey linked by addresses, time and size takes the parent's key exchange when the
    rekey's own messages agree: each of the parent's ADDKEs needs its IKE_FOLLOWUP_KE
    after the rekey's CREATE_CHILD_SA, large enough for its key."""
    if parent.name not in JUDGED_BY_PROPOSAL and parent.observation != INFERRED_OBSERVATION:
        return None
    inferences = [f"rekey of IKE SA {n.rekeyed_from[0]}/{n.rekeyed_from[1]} ({n.rekey_evidence})"]
    rekeys = [m for m in parent_negotiation.messages if m.exchange == iana.CREATE_CHILD_SA
              and m.first_timestamp <= n.first_seen]
    start = rekeys[-1].first_timestamp if rekeys else n.first_seen
    # each IKE_FOLLOWUP_KE by its request, or by its response in a one-direction capture
    after = [m for m in parent_negotiation.messages if m.exchange == iana.IKE_FOLLOWUP_KE
             and start <= m.first_timestamp <= n.first_seen]
    asked = {m.message_id for m in after if not m.response}
    followups = [m for m in after if not m.response or m.message_id not in asked]
    overhead = sk_overhead(parent_negotiation.chosen)
    name = parent.name
    if parent.addke:
        if len(followups) < len(parent.addke):
            name = UNKNOWN
            findings.append(Finding("medium", "rekey-without-followup-ke",
                                    f"the parent chose {len(parent.addke)} additional key exchange(s) but its rekey ran "
                                    f"{len(followups)} IKE_FOLLOWUP_KE exchange(s): the rekeyed SA may be classical only"))
        for (slot, method_id), m in zip(parent.addke, followups):
            method = catalog.method(method_id)
            room = _ke_room(m, overhead, _followup_others(m))
            key_bytes = method.responder_bytes if m.response else method.initiator_bytes
            if key_bytes is not None and room < key_bytes:
                name = UNKNOWN
                inferences.append(f"{_role(m)} has room for at most {room} bytes of key data: too small for the "
                                  f"parent's {iana.addke_slot(slot)} {method.name}")
            else:
                inferences.append(f"{_role(m)} after the rekey has room for the parent's "
                                  f"{iana.addke_slot(slot)} {method.name}")
    elif followups and parent.name == HYBRID_PQ:
        # the parent's own class was inferred from sizes: so is the rekey's
        said = [text for text in map(_followup_says_mlkem, followups) if text]
        inferences.extend(said)
        if not said:
            name = UNKNOWN
    elif followups:
        name = UNKNOWN
        inferences.append(f"{len(followups)} IKE_FOLLOWUP_KE exchange(s) ran in the rekey although the parent chose "
                          "no additional key exchange: the rekey's proposal differs")
    elif parent.name == HYBRID_PQ:
        name = UNKNOWN
        findings.append(Finding("medium", "rekey-without-followup-ke", "the parent's rekeys ran IKE_FOLLOWUP_KE but "
                                "this one ran none: the rekeyed SA may be classical only"))
    if parent.observation == INFERRED_OBSERVATION:
        inferences.extend(f"parent: {i}" for i in parent.inferences)
    evidence.append(f"class inferred from parent IKE SA {n.rekeyed_from[0]}/{n.rekeyed_from[1]} "
                    "(the rekey's proposal is encrypted)")
    methods = [catalog.method(m) for m in ([parent.ke_method] if parent.ke_method is not None else [])
               + list(parent.addke_methods)]
    if name != UNKNOWN:
        findings.extend(f for f in parent.findings if f.code in ("weak-group", "classical-only", "private-ke"))
    ke, addke = (parent.ke_method, parent.addke) if name != UNKNOWN else (None, ())
    return replace(_result(name, "inherited from parent IKE SA", ke, addke, None,
                           methods if name != UNKNOWN else None, ppk, None, evidence, findings, ()),
                   observation=INFERRED_OBSERVATION, inferences=tuple(inferences))


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
    if c.observation == INFERRED_OBSERVATION:
        confidence = INFERRED
    elif c.name == IKEV1:
        confidence = c.confidence  # `_ikev1` judged it from the phase 1 proposals
    elif c.name in JUDGED_BY_PROPOSAL:
        if contradicted:
            confidence = CONTRADICTED
        elif c.confidence == UNCONFIRMED:
            confidence = UNCONFIRMED
        else:
            confidence = VERIFIED if confirmed and final_keys else NEGOTIATED
    return replace(c, evidence=tuple(evidence), findings=tuple(findings), confidence=confidence)


def _with_observation(n: Negotiation, c: Classification) -> Classification:
    """What every classification carries whatever its path: whether the deciding
    exchange was seen (and a finding when it was not), the downgrade-prevention notify,
    and what the PPK status rests on."""
    evidence, findings = list(c.evidence), list(c.findings)
    if c.observation != OBSERVED and c.name != IKEV1:
        how = ("its class is inferred: " + "; ".join(c.inferences) if c.observation == INFERRED_OBSERVATION
               else "nothing in the capture shows its key exchange: it cannot be assessed")
        findings.append(Finding("medium", "handshake-not-captured",
                                "the exchange that decided this IKE SA's key exchange was not captured "
                                f"(or only encrypted, without keys); {how}"))
    elif c.name == UNKNOWN and c.basis == "none" and n.sa_init_seen:
        # initiator-only: the offer was seen, the choice was not
        c = replace(c, observation=NOT_OBSERVABLE)
        findings.append(Finding("medium", "handshake-not-captured", "the responder's IKE_SA_INIT response "
                                "was not captured: what it chose cannot be assessed"))
    if c.ppk == "negotiated":
        evidence.append("PPK (RFC 8784/9867) confirmed by the responder in a decrypted exchange: a post-quantum "
                        "preshared key is mixed into the keys (not visible as a key exchange)")
    elif c.ppk == "requested":
        evidence.append("PPK requested (USE_PPK / USE_PPK_INT) but its use was not confirmed: that needs the "
                        "decrypted IKE_AUTH or IKE_INTERMEDIATE response")
    elif c.ppk == "not-used":
        evidence.append("PPK requested but the decrypted IKE_AUTH response does not confirm it: the NO_PPK_AUTH "
                        "fallback was taken or the responder ignored it")
    return replace(c, evidence=tuple(evidence), findings=tuple(findings),
                   downgrade_prevention=_downgrade_prevention(n))


def _downgrade_prevention(n: Negotiation) -> str | None:
    """IKE_SA_INIT_FULL_TRANSCRIPT_AUTH in each IKE_SA_INIT message; None unless both
    messages were captured (one side's silence is then known)."""
    responded = any(m.exchange == iana.IKE_SA_INIT and m.response for m in n.messages)
    if n.ike_version != 2 or not n.sa_init_seen or not responded:
        return None
    i = iana.IKE_SA_INIT_FULL_TRANSCRIPT_AUTH in n.initiator_notifies
    r = iana.IKE_SA_INIT_FULL_TRANSCRIPT_AUTH in n.responder_notifies
    return "both" if i and r else "initiator-only" if i else "responder-only" if r else "neither"


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


def _ikev1(n: Negotiation, catalog: KeCatalog) -> Classification:
    """IKEv1 is classical by definition: it has no post-quantum key exchange (RFC 9395
    deprecates it). What the capture adds is which phase 1 proposal was chosen, so that
    an auditor sees the group and cipher, and on what evidence the SA came up."""
    evidence = ["IKEv1 (ISAKMP) exchanges: " + ", ".join(
        iana.ikev1_exchange_name(x) for x in dict.fromkeys(n.ikev1_exchanges))]
    findings = [Finding("high", "ikev1", "IKEv1 has no post-quantum key exchange (RFC 9395 deprecates it)")]
    offered_groups = tuple(dict.fromkeys(t.group for p in n.ikev1_offered for t in p.transforms
                                         if t.group is not None))
    mode = f"{n.ikev1_mode.capitalize()} Mode" if n.ikev1_mode else "phase 1"
    if n.ikev1_offered:
        evidence.append(f"initiator offered {sum(len(p.transforms) for p in n.ikev1_offered)} phase 1 "
                        f"transform(s) in {mode}: " + "; ".join(
                            ikev1_transform_text(t, catalog) for p in n.ikev1_offered for t in p.transforms))
    chosen = n.ikev1_chosen.transforms[0] if n.ikev1_chosen and n.ikev1_chosen.transforms else None
    if chosen is not None:
        evidence.append(f"responder chose in {mode}: {ikev1_transform_text(chosen, catalog)}")
    evidence += _ikev1_established_evidence(n)
    evidence += [f"Vendor ID from the {'initiator' if who else 'responder'}: {text}"
                 for who, text in ikev1_vendor_texts(n)]
    group = chosen.group if chosen is not None else None
    methods = [catalog.method(group)] if group is not None else []
    _flag_methods(methods, findings)
    inferences: tuple[str, ...] = ()
    if chosen is not None:
        observation, confidence = OBSERVED, NEGOTIATED
    elif n.ikev1_offered:
        observation, confidence = OBSERVED, None
        evidence.append("the responder's phase 1 answer was not captured: the group used is unknown")
    else:
        observation, confidence = INFERRED_OBSERVATION, INFERRED
        inferences = ("IKEv1 from the ISAKMP version of its headers; its phase 1 was not captured, "
                      "but IKEv1 has no post-quantum key exchange, so whatever group it used it is "
                      "classical",)
    result = _result(IKEV1, mode if chosen is not None else "none", group, (),
                     False if n.ikev1_offered else None, methods, "none", None, evidence, findings,
                     offered_groups)
    return replace(result, observation=observation, confidence=confidence, inferences=inferences)


def ikev1_transform_text(t: Ikev1Transform, catalog: KeCatalog) -> str:
    """An IKEv1 phase 1 transform in words: cipher, hash, authentication, group, lifetime."""
    cipher = iana.ikev1_encryption_name(t.encryption) or "cipher not given"
    if t.key_length:
        cipher += f"-{t.key_length}"
    parts = [cipher, iana.ikev1_hash_name(t.hash) or "hash not given",
             iana.ikev1_auth_method_name(t.auth_method) or "authentication not given",
             f"group {catalog.describe(t.group)}" if t.group is not None else "group not given"]
    if t.life_seconds is not None:
        parts.append(f"lifetime {t.life_seconds} s")
    if t.life_kilobytes is not None:
        parts.append(f"lifetime {t.life_kilobytes} KB")
    return ", ".join(parts)


def _ikev1_established_evidence(n: Negotiation) -> list[str]:
    if not n.established:
        return ["not established: no exchange under the phase 1 keys was seen after it"
                if n.ikev1_mode else "not established: neither phase 1 nor an answered Quick Mode was seen"]
    under = [iana.ikev1_exchange_name(x) for x in dict.fromkeys(n.ikev1_exchanges)
             if x in (iana.IKEV1_QUICK_MODE, iana.IKEV1_INFORMATIONAL, iana.IKEV1_TRANSACTION)]
    if n.midstream or not n.ikev1_mode:
        return ["established (inferred): Quick Mode answered under the SA's cookies; its phase 1 "
                "was not captured"]
    last = "messages 5 and 6" if n.ikev1_mode == "main" else "messages 2 and 3"
    return [f"established (inferred): {n.ikev1_mode.capitalize()} Mode {last} were followed by "
            f"{' and '.join(under)} under the same cookies, which only the phase 1 keys allow"]


def ikev1_vendor_texts(n: Negotiation) -> list[tuple[bool, str]]:
    """(from initiator, name or hex) of each Vendor ID an IKEv1 peer sent."""
    named = []
    for who, raw in n.peer_vendor_ids:
        vendor_id = vendors.name_vendor_id(raw)
        named.append((who, vendor_id.label if vendor_id else f"unknown ({raw.hex()})"))
    return named


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
                       evidence: list[str], findings: list[Finding]) -> bool:
    """The KE payloads of the final IKE_SA_INIT must carry the chosen method at its
    size. True when the responder's, which answers the choice, was captured."""
    if ke is None:
        return True
    method = catalog.method(ke)
    for response in (False, True) if n.sa_init_seen else (True,):
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
    response = _last(n.messages, iana.IKE_SA_INIT, True)
    return response is not None and response.key_exchange is not None


def _check_addke_evidence(n: Negotiation, addke: tuple[tuple[int, int], ...], catalog: KeCatalog,
                          evidence: list[str], findings: list[Finding]) -> bool:
    """Each chosen ADDKE runs in its own IKE_INTERMEDIATE (RFC 9370 section 2.2.1), in slot
    order. True when every one of them was captured (one message of it at least)."""
    exchanges = _intermediate_exchanges(n)
    if not addke:
        if exchanges:
            evidence.append(f"{len(exchanges)} IKE_INTERMEDIATE exchange(s) without a chosen "
                            "additional key exchange: not evidence of post-quantum protection")
        return True
    went_on = n.state in (INTERMEDIATE, AUTH_REQUESTED, ESTABLISHED) or any(
        m.exchange not in (iana.IKE_SA_INIT, iana.IKE_INTERMEDIATE) for m in n.messages)
    missing = []
    for index, (slot, method_id) in enumerate(addke):
        method = catalog.method(method_id)
        label = f"{iana.addke_slot(slot)} {method.name}"
        if index >= len(exchanges):
            missing.append(label)
            evidence.append(f"{label}: its IKE_INTERMEDIATE exchange was not captured")
            continue
        request, response = exchanges[index]
        _check_carrier(label, method, request, method.initiator_bytes, "request", evidence, findings)
        _check_carrier(label, method, response, method.responder_bytes, "response", evidence, findings)
    if missing and went_on:
        findings.append(Finding("high", "addke-not-captured",
                                f"{', '.join(missing)} chosen but no IKE_INTERMEDIATE exchange for "
                                f"{'it' if len(missing) == 1 else 'them'} was captured although the SA went "
                                "on: the post-quantum key exchange is unconfirmed (capture loss, or a peer "
                                "that never ran it)"))
    return not missing


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
