"""The hit path as ordered, named steps: each returns the next value or drops the hit by
raising Dropped with a Reason (so that the common case costs no wrapping).

prepare_at_site() runs steps 1-7 in this order; the writer runs settle() on a batch:

  step                 does                                          drops as
  1 known_site         the site and its policy                       unknown_site
  2 valid_input        lengths, kind, value, a signed token          invalid
  3 signed_if_required a signed pixel where the policy asks for one  unsigned
  4 not_bot            the user agent's family                       bot
  5 pseudonymise       HMAC of the subject under the site's key
  6 read_signals       GPC, DNT, TCF, the jurisdiction
  7 to_event           the row as stored, which must fit its columns invalid
  8 settle             the consent decision as of the hit's arrival  no_consent, erased

Each step is cheaper than the next and needs only what came before; nothing raw is left after
step 7, so a Pending hit is safe to keep. docs/architecture.md says why consent comes last."""

import random
import re
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import msgspec
from sqlalchemy import Numeric, String
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.event_fields import ATTRIBUTION_FIELDS, UTM_FIELDS
from app.base.keys import KeyRing
from app.base.sites import SiteDirectory, SiteOut, jurisdiction_of
from app.base.tables import Event, is_storable
from app.hits.arrival import Hit
from app.hits.event import (
    EventRow,
    Pending,
    PublisherSeen,
    RestrictionSeen,
    SignalsSeen,
    TCFSeen,
    VendorSeen,
)
from app.hits.scrub import page_utm, referrer_host, scrub_page, scrub_text
from app.hits.signed_pixels import PixelClaim, read_pixel
from app.hits.useragent import Agent, classify
from consent import store
from consent.decide import GPC_SEEN, Decision, Record, Signals, decide
from consent.policy import Policy
from consent.tcf import RESTRICTION_NAMES, TCFError, TCString
from consent.tcf import decode as decode_tcf


class Reason(StrEnum):
    """What became of a hit: recorded, or why not. The writer counts hits by it, /metrics
    labels them with it, the debug endpoint and the events API answer with it."""

    RECORDED = "recorded"
    UNKNOWN_SITE = "unknown_site"
    INVALID = "invalid"
    UNSIGNED = "unsigned"
    BOT = "bot"
    NO_CONSENT = "no_consent"
    ERASED = "erased"


class Outcome(msgspec.Struct, gc=False):
    """What the pipeline decided; the debug endpoint returns it, the pixel records its event."""

    would_record: bool
    reason: Reason
    decision: Decision | None = None
    signals: SignalsSeen | None = None
    event: EventRow | None = None


class Dropped(Exception):
    def __init__(self, reason: Reason) -> None:
        self.reason = reason


KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_ID = 256
MAX_TEXT = 128
MAX_URL = 2048
MAX_TC_STRING = 4096  # real ones are a few hundred characters
# What the events table can hold (app/base/tables.py): a hit it could not is invalid, never
# written.
TEXT_COLUMNS = tuple(
    (column.name, column.type.length or 0)
    for column in Event.__table__.columns
    if isinstance(column.type, String)
)
_VALUE = Event.__table__.c["value"].type
assert isinstance(_VALUE, Numeric) and _VALUE.precision and _VALUE.scale is not None
VALUE_SCALE = _VALUE.scale
VALUE_LIMIT = 10 ** (_VALUE.precision - _VALUE.scale)  # values are below this in magnitude
UNKNOWN_AGENT = Agent("other", "Other", "Other", is_bot=False, mail_proxy=False)


async def prepare(
    sites: SiteDirectory,
    policies: dict[str, Policy],
    keyring: KeyRing,
    hit: Hit,
    now: datetime,
    server: bool = False,
) -> Pending:
    """Every step but the consent decision; raises Dropped. After this, nothing raw is left.

    `server`: an authenticated server-side event, which needs no signed pixel and may come
    without a user agent of the person's browser."""
    site, policy = known_site(await sites.get(hit.site), policies)
    return prepare_at_site(keyring, site, policy, hit, now, server)


def prepare_at_site(
    keyring: KeyRing,
    site: SiteOut,
    policy: Policy,
    hit: Hit,
    now: datetime,
    server: bool = False,
) -> Pending:
    """prepare() once the site is known: no I/O, for the writer's batches."""
    hit, value, claim = valid_input(keyring, hit)
    if not server:
        signed_if_required(policy, hit)
    agent = UNKNOWN_AGENT if server and not hit.user_agent else not_bot(hit)
    subject = pseudonymise(keyring, hit, claim)
    signals, seen = read_signals(hit, site, policy)
    event = to_event(hit, site, subject, agent, value, seen.jurisdiction, now)
    check_storable(event)
    return Pending(policy.name, event, signals, seen, hit.from_link)


def known_site(site: SiteOut | None, policies: dict[str, Policy]) -> tuple[SiteOut, Policy]:
    """The site and its policy; a hit for a site (or policy) not known is dropped."""
    if site is None or site.policy not in policies:
        raise Dropped(Reason.UNKNOWN_SITE)
    return site, policies[site.policy]


def valid_input(keyring: KeyRing, hit: Hit) -> tuple[Hit, Decimal | None, PixelClaim | None]:
    """Lengths, kind, value; a `t` token replaces u/c/p/k, and a bad one drops the hit."""
    claim = None
    if hit.token:
        claim = read_pixel(keyring, hit.site, hit.token)
        if claim is None:
            raise Dropped(Reason.INVALID)
        hit = msgspec.structs.replace(
            hit, kind=claim.kind, subject=None, campaign=claim.campaign, page=claim.page
        )
    if not KIND.match(hit.kind):
        raise Dropped(Reason.INVALID)
    check_subject(hit.subject)
    for name in ATTRIBUTION_FIELDS:
        text = getattr(hit, name)
        if text is not None and len(text) > MAX_TEXT:
            raise Dropped(Reason.INVALID)
    if len(hit.gdpr_consent or "") > MAX_TC_STRING or len(hit.referrer or "") > MAX_URL:
        raise Dropped(Reason.INVALID)
    value = None
    if hit.value:
        try:
            value = Decimal(hit.value)
        except InvalidOperation:
            raise Dropped(Reason.INVALID) from None
        value = storable_value(value)
    if hit.currency is not None and not CURRENCY.match(hit.currency):
        raise Dropped(Reason.INVALID)
    return hit, value, claim


def check_subject(subject: str | None) -> None:
    if subject is not None and not 0 < len(subject.strip()) <= MAX_ID:
        raise Dropped(Reason.INVALID)


def storable_value(value: Decimal) -> Decimal:
    """The value as its column stores it (rounded to its scale), or Dropped if it cannot."""
    if not value.is_finite() or abs(value) >= VALUE_LIMIT:
        raise Dropped(Reason.INVALID)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -VALUE_SCALE:
        # Rounded here as the database would, and so that no driver meets a value with
        # thousands of decimals; rounding may reach the limit.
        value = value.quantize(Decimal(1).scaleb(-VALUE_SCALE))
        if abs(value) >= VALUE_LIMIT:
            raise Dropped(Reason.INVALID)
    return value


def signed_if_required(policy: Policy, hit: Hit) -> None:
    if hit.kind in policy.file.require_signed_pixels and not hit.token:
        raise Dropped(Reason.UNSIGNED)


def not_bot(hit: Hit) -> Agent:
    agent = classify(hit.user_agent)
    if agent.is_bot:
        raise Dropped(Reason.BOT)
    return agent


def pseudonymise(keyring: KeyRing, hit: Hit, claim: PixelClaim | None) -> str | None:
    if claim is not None:
        return claim.subject
    return keyring.pseudonym(hit.site, hit.subject) if hit.subject else None


def read_signals(hit: Hit, site: SiteOut, policy: Policy) -> tuple[Signals, SignalsSeen]:
    gdpr_applies = hit.gdpr != "0"  # absent means applies (IAB's recommended default)
    tc, seen = None, None
    vendor_id = policy.file.tcf.vendor_id if policy.file.tcf else 0
    if hit.gdpr_consent and len(hit.gdpr_consent) > MAX_TC_STRING:  # only /debug gets here
        seen = TCFSeen(valid=False, error=f"TC string longer than {MAX_TC_STRING} characters")
    elif hit.gdpr_consent:
        try:
            tc = decode_tcf(hit.gdpr_consent)
            seen = tcf_seen(tc, vendor_id)
        except TCFError as exc:
            seen = TCFSeen(valid=False, error=str(exc), read=_readable(exc.read))
    jurisdiction = jurisdiction_of(hit.region, site.jurisdiction)
    signals = Signals(gpc=hit.gpc, dnt=hit.dnt, gdpr_applies=gdpr_applies, tcf=tc)
    return signals, SignalsSeen(hit.gpc, hit.dnt, gdpr_applies, seen, jurisdiction)


def tcf_seen(tc: TCString, vendor_id: int) -> TCFSeen:
    vendor = None
    if vendor_id:
        restrictions = [
            RestrictionSeen(r.purpose, RESTRICTION_NAMES[r.restriction_type])
            for r in tc.restrictions
            if r.covers(vendor_id)
        ]
        consent, li = vendor_id in tc.vendor_consents, vendor_id in tc.vendor_li
        vendor = VendorSeen(vendor_id, consent, li, restrictions)
    publisher = None
    if (segment := tc.publisher) is not None:
        publisher = PublisherSeen(
            sorted(segment.purposes_consent),
            sorted(segment.purposes_li),
            sorted(segment.custom_consent),
            sorted(segment.custom_li),
        )
    return TCFSeen(
        valid=True,
        cmp_id=tc.cmp_id,
        purposes_consent=sorted(tc.purposes_consent),
        purposes_li=sorted(tc.purposes_li),
        vendor_consents=len(tc.vendor_consents),
        vendor=vendor,
        publisher=publisher,
    )


_VENDOR_SETS = ("vendor_consents", "vendor_li", "disclosed_vendors")


def _readable(read: dict[str, Any]) -> dict[str, Any]:
    """The fields of a string that failed, as JSON shows them: sets sorted, vendor sets
    (up to 65535 ids) counted."""
    shown: dict[str, Any] = {}
    for name, value in read.items():
        if name in _VENDOR_SETS and value is not None:
            value = len(value)
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, msgspec.Struct):  # the Publisher TC segment
            value = {k: sorted(v) for k, v in msgspec.structs.asdict(value).items()}
        shown[name] = value
    return shown


def to_event(
    hit: Hit,
    site: SiteOut,
    subject: str | None,
    agent: Agent,
    value: Decimal | None,
    jurisdiction: str,
    now: datetime,
) -> EventRow:
    return EventRow(
        site=site.slug,
        occurred_at=now,
        id=new_event_id(),
        kind=hit.kind,
        subject=subject,
        page=scrub_page(hit.page) if hit.page else None,
        campaign=scrub_text(hit.campaign) if hit.campaign else None,
        **attribution(hit),
        referrer=referrer_host(hit.referrer) if hit.referrer else None,
        device=agent.device,
        browser=agent.browser,
        os=agent.os,
        jurisdiction=jurisdiction,
        value=value,
        currency=hit.currency if value is not None else None,
        machine=agent.mail_proxy,
        basis={},
    )


def attribution(hit: Hit) -> dict[str, str | None]:
    """The hit's utm fields, scrubbed; those it leaves empty are filled from its page's
    query, so that a report by source finds them."""
    found = {name: scrub_text(getattr(hit, name)) for name in UTM_FIELDS}
    if hit.page:
        for name, value in page_utm(hit.page):
            if name in found and found[name] is None:
                found[name] = value
    return found


def check_storable(event: EventRow) -> None:
    """Every text of the row as it will be stored fits its column on both databases:
    scrubbing decodes escapes, so a `%2500` becomes a NUL only now."""
    for name, length in TEXT_COLUMNS:
        text = getattr(event, name)
        if text is not None and (len(text) > length or not is_storable(text)):
            raise Dropped(Reason.INVALID)


def new_event_id() -> uuid.UUID:
    """A random (version 4) id. Event ids need to be unique, not unguessable: Python's own
    generator (reseeded in every forked worker) costs a fraction of a read of os.urandom.
    The UUID is filled in as uuid.UUID.__init__ fills it, without its argument checks: they
    cost twice the rest, and the writer makes an id a hit."""
    bits = random.getrandbits(128) & ~(0xF000 << 64 | 0xC << 60) | (0x4000 << 64 | 0x8 << 60)
    event_id = object.__new__(uuid.UUID)
    object.__setattr__(event_id, "int", bits)
    object.__setattr__(event_id, "is_safe", uuid.SafeUUID.unknown)
    return event_id


def settle(policy: Policy, pending: Pending, registry: dict[str, Record] | None) -> Outcome:
    """The consent decision (SPEC §4.1), as of the moment of the hit.

    Hits are decided a little after they arrive (or much later, replayed from the spool, or
    sent with a past `occurred_at`): `registry` is the one the hit met (registries_met()),
    None when its subject has been erased since; then nothing of the hit may be written."""
    if registry is None:
        return Outcome(would_record=False, reason=Reason.ERASED, signals=pending.seen)
    event = pending.event
    decision = decide(
        policy,
        event.kind,
        registry,
        pending.signals,
        pending.seen.jurisdiction,
        event.occurred_at,
        has_subject=event.subject is not None,
        from_link=pending.from_link,
    )
    if decision.anonymous:
        # Counted under the exemption: no value, and no campaign or utm parameter (not even in
        # the page's own query) but those the policy keeps for the kind (a tracked link's).
        kept = policy.counted_anonymously(event.kind) or []
        event = msgspec.structs.replace(
            event,
            page=event.page.partition("?")[0] if event.page else None,
            **{field: None for field in ATTRIBUTION_FIELDS if field not in kept},
            value=None,
            currency=None,
            basis=decision.basis,
        )
    elif decision.record:
        event.basis = decision.basis  # the pending hit is used once: no copy needed
        if pending.signals.gpc and event.subject is not None:  # for audiences to leave out
            event.basis = {**decision.basis, GPC_SEEN: "1"}
    return Outcome(
        would_record=decision.record,
        reason=Reason.RECORDED if decision.record else Reason.NO_CONSENT,
        decision=decision,
        signals=pending.seen,
        event=event,
    )


async def evaluate(
    session: AsyncSession,
    sites: SiteDirectory,
    policies: dict[str, Policy],
    keyring: KeyRing,
    hit: Hit,
    now: datetime,
) -> Outcome:
    """The whole pipeline against the registry itself (no cache); records nothing."""
    try:
        pending = await prepare(sites, policies, keyring, hit, now)
    except Dropped as dropped:
        return Outcome(
            would_record=False, reason=dropped.reason, signals=await _seen(sites, policies, hit)
        )
    subject = pending.event.subject
    registry = await store.registry(session, pending.event.site, subject) if subject else {}
    return settle(policies[pending.policy], pending, registry)


async def _seen(sites: SiteDirectory, policies: dict[str, Policy], hit: Hit) -> SignalsSeen | None:
    """The signals of a hit dropped before the decision (bot, unsigned, invalid), for
    /debug; None when its site is unknown."""
    site = await sites.get(hit.site)
    if site is None or site.policy not in policies:
        return None
    return read_signals(hit, site, policies[site.policy])[1]
