"""The consent decision for one hit: pure, no I/O. SPEC §4.1 steps 1-4, in that order."""

from datetime import datetime, timedelta

import msgspec

from app.base.attribution import CLICK
from consent.policy import Policy
from consent.tcf import NOT_ALLOWED, REQUIRE_LI, TCString

# TCF 2.2 lets no vendor rely on legitimate interest for purposes 1 and 3-6.
_NEVER_LI = frozenset({1, 3, 4, 5, 6})

LINK_KIND = CLICK  # what a tracked link records (app/http/links.py)
# In a recorded event's basis beside its purposes (no purpose name has a colon): the browser
# sent Global Privacy Control. Audiences leave such a subject out of marketing.
GPC_SEEN = "signal:gpc"


class Record(msgspec.Struct, frozen=True, gc=False):
    """The registry's latest word on one purpose for one subject."""

    granted: bool
    policy_version: str
    # The ledger entry's id as text: what the basis quotes, and (unlike a UUID object) not
    # a container the garbage collector has to walk in a cache of a million registries.
    record_id: str
    expires_at: datetime | None
    updated_at: datetime | None = None


class Signals(msgspec.Struct, frozen=True, gc=False):
    gpc: bool = False
    dnt: bool = False
    gdpr_applies: bool = True
    tcf: TCString | None = None  # only a valid, decoded string


class PurposeDecision(msgspec.Struct, frozen=True, gc=False):
    purpose: str
    allowed: bool
    reason: str  # consent_granted, consent_withdrawn, consent_expired, consent_voided,
    # tcf_granted, tcf_denied, default_granted, default_denied, gpc, dnt
    basis: str | None  # what allowed it: consent:<ledger id>, tcf:<cmp>, default:<policy@version>


class Decision(msgspec.Struct, frozen=True, gc=False):
    record: bool
    anonymous: bool  # record without a subject
    basis: dict[str, str]
    purposes: list[PurposeDecision]


def _registry(policy: Policy, purpose: str, record: Record, now: datetime) -> tuple[bool, str]:
    if not record.granted:
        return False, "consent_withdrawn"
    end = record.expires_at
    if record.updated_at is not None:
        # The policy may have shortened consent_ttl_days since: the shorter lifetime wins.
        ttl = timedelta(days=policy.file.purposes[purpose].consent_ttl_days)
        if end is None or record.updated_at + ttl < end:
            end = record.updated_at + ttl
    if end is not None and end <= now:
        return False, "consent_expired"
    if policy.file.reconsent_on_change and record.policy_version != policy.version:
        return False, "consent_voided"
    return True, "consent_granted"


def _tcf(policy: Policy, purpose: str, signals: Signals) -> bool | None:
    """None when TCF does not speak for this purpose (no string, not mapped, gdpr=0, or a
    first party's string without a Publisher TC segment)."""
    tcf = policy.file.tcf
    tc = signals.tcf
    if tc is None or tcf is None or not signals.gdpr_applies or purpose not in tcf.purposes:
        return None
    if tcf.vendor_id == 0:  # first party: the publisher's consent for its own processing
        if tc.publisher is None:
            return None
        return all(p in tc.publisher.purposes_consent for p in tcf.purposes[purpose])
    return all(_vendor_allowed(tc, p, tcf.vendor_id) for p in tcf.purposes[purpose])


def _vendor_allowed(tc: TCString, purpose: int, vendor: int) -> bool:
    """A TCF purpose for a vendor: by consent (the purpose's and the vendor's), unless the
    publisher restricts it. A purpose counts as allowed under legitimate interest only where
    the publisher requires legitimate interest for it and both LI bits are set: the policy's
    mapping asks for consent, and nothing else says the vendor relies on LI."""
    restriction = tc.restriction(purpose, vendor)
    if restriction == NOT_ALLOWED:
        return False
    if restriction == REQUIRE_LI:
        return purpose not in _NEVER_LI and purpose in tc.purposes_li and vendor in tc.vendor_li
    return purpose in tc.purposes_consent and vendor in tc.vendor_consents


def decide_purpose(
    policy: Policy,
    purpose: str,
    record: Record | None,
    signals: Signals,
    jurisdiction: str,
    now: datetime,
) -> PurposeDecision:
    if record is not None:
        allowed, reason = _registry(policy, purpose, record, now)
        basis = f"consent:{record.record_id}"
    elif (by_tcf := _tcf(policy, purpose, signals)) is not None:
        allowed, reason = by_tcf, "tcf_granted" if by_tcf else "tcf_denied"
        tc = signals.tcf
        basis = f"tcf:cmp={tc.cmp_id}:updated={tc.last_updated:%Y-%m-%d}" if tc else "tcf"
    else:
        allowed = policy.default_for(purpose, jurisdiction) == "granted"
        reason = "default_granted" if allowed else "default_denied"
        basis = f"default:{policy.name}@{policy.version}"
    # Signals may only deny, never allow (and they override a granted consent: CCPA 7025(c)(3)).
    if allowed and signals.gpc and purpose in policy.gpc_denies():
        allowed, reason = False, "gpc"
    if allowed and signals.dnt and purpose in policy.file.signals.dnt:
        allowed, reason = False, "dnt"
    return PurposeDecision(purpose, allowed, reason, basis if allowed else None)


def decide(
    policy: Policy,
    kind: str,
    registry: dict[str, Record],
    signals: Signals,
    jurisdiction: str,
    now: datetime,
    *,
    has_subject: bool = True,
    from_link: bool = False,
) -> Decision:
    """Record only if every purpose the kind needs is allowed.

    A hit without a subject that the purposes do not allow may still be counted where the
    policy counts its kind anonymously (the audience-measurement exemption), unless a privacy
    signal objected. A hit with a subject never is: a refusal or withdrawal means nothing. A
    click is counted so only `from_link`: a request to the site's own tracked link, which the
    server sees itself, not a pixel that anyone may send with `k=click`."""
    purposes = [
        decide_purpose(policy, p, registry.get(p), signals, jurisdiction, now)
        for p in policy.purposes_for(kind)
    ]
    if not purposes:  # a kind the policy does not know (and no "*"): never recorded
        return Decision(record=False, anonymous=False, basis={}, purposes=[])
    if all(p.allowed for p in purposes):
        basis = {p.purpose: p.basis or "" for p in purposes}
        return Decision(record=True, anonymous=False, basis=basis, purposes=purposes)
    objected = any(p.reason in ("gpc", "dnt") for p in purposes)
    exempt = policy.counted_anonymously(kind) is not None and (kind != LINK_KIND or from_link)
    if exempt and not has_subject and not objected:
        basis = {p.purpose: f"anonymous_counting:{policy.name}@{policy.version}" for p in purposes}
        return Decision(record=True, anonymous=True, basis=basis, purposes=purposes)
    return Decision(record=False, anonymous=False, basis={}, purposes=purposes)
