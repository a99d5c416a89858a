"""The hit path as ordered named steps; each yields the next value or a drop reason.

Raw identifiers (subject id, user agent) live only in the Arrival and the Hit, in memory;
what leaves is an EventRow, pseudonymised and reduced.
"""

import random
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from sqlalchemy import Numeric, String
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.keys import KeyRing, audit_hash
from app.base.sites import SiteDirectory, SiteOut, jurisdiction_of
from app.base.tables import Event, is_storable
from app.hits.scrub import page_utm, referrer_host, scrub_page, scrub_text
from app.hits.signed_pixels import PixelClaim, read_pixel
from app.hits.useragent import Agent, classify
from consent import store
from consent.decide import Decision, Record, Signals, decide
from consent.policy import Policy
from consent.tcf import RESTRICTION_NAMES, TCFError, TCString
from consent.tcf import decode as decode_tcf

KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_ID = 256
MAX_TEXT = 128
MAX_URL = 2048
MAX_TC_STRING = 4096  # real ones are a few hundred characters
MAX_QUERY = 8192
# What the events table can hold (app/base/tables.py): a hit it could not is invalid, never written.
TEXT_COLUMNS = tuple(
    (column.name, column.type.length or 0)
    for column in Event.__table__.columns
    if isinstance(column.type, String)
)
_VALUE = Event.__table__.c["value"].type
assert isinstance(_VALUE, Numeric) and _VALUE.precision and _VALUE.scale is not None
VALUE_SCALE = _VALUE.scale
VALUE_LIMIT = 10 ** (_VALUE.precision - _VALUE.scale)  # values are below this in magnitude
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# The pixel's query parameters and the Hit fields they fill.
QUERY_FIELDS = {
    "k": "kind",
    "u": "subject",
    "p": "page",
    "c": "campaign",
    "r": "referrer",
    "v": "value",
    "cur": "currency",
    "t": "token",
    "gdpr": "gdpr",
    "gdpr_consent": "gdpr_consent",
    **{f: f for f in UTM_FIELDS},
}

# (name in lower case, value) of each header read_hit() reads: text, as granian gives headers
# (app/http/front.py), where ASGI's bytes would be encoded only to be decoded again in the writer.
HitHeaders = tuple[tuple[str, str], ...]


class Arrival(msgspec.Struct, gc=False, array_like=True):
    """A pixel request as it came in, kept only in memory until the writer reads it.

    The pixel answers after queueing this and nothing more: reading, pseudonymising and
    deciding happen in the writer, a batch at a time. Holds raw values, like a Hit.

    Batches of these cross the pipe to the writer process as msgpack arrays, without field
    names: 15 % fewer bytes, and half the writer's decoding time (0.48 -> 0.24 µs a hit)."""

    site: str
    query: str  # the raw query string, or "" when `values` are given
    headers: HitHeaders
    at: float  # time.time() when it arrived
    values: dict[str, str] | None = None  # hit_values() of a beacon or link, instead of query


class Hit(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A request as read by the writer. Holds raw values: never stored, logged or returned.

    Hot-path structs are `gc=False`: they hold no cycles, and thousands are made a second
    (Pending ones may also wait in a spool frame) for the garbage collector to walk. Frozen,
    so that a hit without its subject can key the Shapes it shares with others."""

    site: str
    kind: str = "pageview"
    subject: str | None = None
    page: str | None = None
    campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    referrer: str | None = None
    value: str | None = None
    currency: str | None = None
    gdpr: str | None = None
    gdpr_consent: str | None = None
    token: str | None = None
    user_agent: str = ""
    gpc: bool = False
    dnt: bool = False
    region: str | None = None


class EventRow(msgspec.Struct, kw_only=True, gc=False):
    """An event as stored: pseudonymised and reduced."""

    site: str
    occurred_at: datetime
    id: uuid.UUID
    kind: str
    subject: str | None
    page: str | None
    campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_content: str | None
    utm_term: str | None
    referrer: str | None
    device: str
    browser: str
    os: str
    jurisdiction: str
    value: Decimal | None
    currency: str | None
    machine: bool
    basis: dict[str, str]


class RestrictionSeen(msgspec.Struct, gc=False):
    purpose: int
    type: str  # not_allowed, require_consent, require_li


class VendorSeen(msgspec.Struct, gc=False):
    """What the string says of the vendor the policy names (`[tcf] vendor_id`)."""

    id: int
    consent: bool
    legitimate_interest: bool
    restrictions: list[RestrictionSeen]


class PublisherSeen(msgspec.Struct, gc=False):
    """The Publisher TC segment: what decides for a first party (`vendor_id = 0`)."""

    purposes_consent: list[int]
    purposes_li: list[int]
    custom_consent: list[int]
    custom_li: list[int]


class TCFSeen(msgspec.Struct, gc=False):
    valid: bool
    error: str | None = None
    cmp_id: int | None = None
    purposes_consent: list[int] = []
    purposes_li: list[int] = []
    vendor_consents: int = 0  # how many vendors have consent
    vendor: VendorSeen | None = None  # None in first-party mode
    publisher: PublisherSeen | None = None  # None when the string has no such segment
    # An invalid string: every field read before it failed (all of them when a TCF 2.2 rule
    # refused it), vendor sets as counts.
    read: dict[str, Any] | None = None


class SignalsSeen(msgspec.Struct, gc=False):
    gpc: bool
    dnt: bool
    gdpr_applies: bool
    tcf: TCFSeen | None
    jurisdiction: str


class Outcome(msgspec.Struct, gc=False):
    """What the pipeline decided; the debug endpoint returns it, the pixel records its event."""

    would_record: bool
    reason: str  # "recorded" or the drop reason: unknown_site, invalid, unsigned, bot,
    # no_consent, erased
    decision: Decision | None = None
    signals: SignalsSeen | None = None
    event: EventRow | None = None


class Pending(msgspec.Struct, gc=False):
    """A hit reduced and pseudonymised, its consent not decided yet. Safe to keep or spool."""

    policy: str
    event: EventRow  # basis still empty
    signals: Signals
    seen: SignalsSeen


class Dropped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def hit_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The pixel's parameters among `pairs`, by the Hit field they fill; blanks left out."""
    return {QUERY_FIELDS[k]: v for k, v in pairs if k in QUERY_FIELDS and v != ""}


def parse_query(query: str) -> dict[str, str]:
    """hit_values() of a raw query string. Most pixel queries have nothing escaped: those are
    split here, several times faster than parse_qsl, with the same result."""
    text = query[:MAX_QUERY]
    if "%" in text or "+" in text:
        return hit_values(parse_qsl(text))
    values = {}
    for pair in text.split("&"):
        key, _, value = pair.partition("=")
        if value and key in QUERY_FIELDS:
            values[QUERY_FIELDS[key]] = value
    return values


# The headers read_hit() reads, besides the configured region header, and the only ones a hit
# keeps. Sec-GPC may come more than once.
HIT_HEADERS = ("user-agent", "referer", "dnt")
REPEATED_HIT_HEADERS = ("sec-gpc",)


def single_hit_headers(region_header: str | None) -> tuple[str, ...]:
    """The names of the headers a hit keeps one of: HIT_HEADERS and the region header."""
    return (*HIT_HEADERS, region_header.lower()) if region_header else HIT_HEADERS


def hit_headers(raw: Iterable[tuple[bytes, bytes]], region_header: str | None) -> HitHeaders:
    """The headers a hit keeps, out of an ASGI request's (names already in lower case)."""
    names = (*single_hit_headers(region_header), *REPEATED_HIT_HEADERS)
    return tuple(
        (name, value.decode("latin-1"))
        for key, value in raw
        if (name := key.decode("latin-1")) in names
    )


def read_hit(
    site: str,
    values: dict[str, str],
    headers: HitHeaders,
    region_header: str | None,
) -> Hit:
    """`values`: a fresh dict from hit_values() or parse_query() (the Referer header may be
    added to it); the request's headers give the rest."""
    user_agent, gpc, dnt, region = "", False, False, None
    region_name = region_header.lower() if region_header else None
    for name, value in headers:
        if name == "user-agent":
            user_agent = value
        elif name == "referer":
            values.setdefault("referrer", value)
        elif name == "sec-gpc":
            # Only exactly "1" counts, in any one of several headers (or a comma-joined one).
            gpc = gpc or any(part.strip() == "1" for part in value.split(","))
        elif name == "dnt":
            dnt = value.strip() == "1"
        elif name == region_name:
            region = value
    return Hit(site=site, **values, user_agent=user_agent, gpc=gpc, dnt=dnt, region=region)


def check_subject(subject: str | None) -> None:
    if subject is not None and not 0 < len(subject.strip()) <= MAX_ID:
        raise Dropped("invalid")


def valid_input(keyring: KeyRing, hit: Hit) -> tuple[Hit, Decimal | None, PixelClaim | None]:
    """Lengths, kind, value; a `t` token replaces u/c/p/k, and a bad one drops the hit."""
    claim = None
    if hit.token:
        claim = read_pixel(keyring, hit.site, hit.token)
        if claim is None:
            raise Dropped("invalid")
        hit = msgspec.structs.replace(
            hit, kind=claim.kind, subject=None, campaign=claim.campaign, page=claim.page
        )
    if not KIND.match(hit.kind):
        raise Dropped("invalid")
    check_subject(hit.subject)
    attribution = (hit.campaign, hit.utm_source, hit.utm_medium, hit.utm_campaign)
    for text in (*attribution, hit.utm_content, hit.utm_term):
        if text is not None and len(text) > MAX_TEXT:
            raise Dropped("invalid")
    if len(hit.gdpr_consent or "") > MAX_TC_STRING or len(hit.referrer or "") > MAX_URL:
        raise Dropped("invalid")
    value = None
    if hit.value:
        try:
            value = Decimal(hit.value)
        except InvalidOperation:
            raise Dropped("invalid") from None
        value = storable_value(value)
    if hit.currency is not None and not CURRENCY.match(hit.currency):
        raise Dropped("invalid")
    return hit, value, claim


def storable_value(value: Decimal) -> Decimal:
    """The value as its column stores it (rounded to its scale), or Dropped if it cannot."""
    if not value.is_finite() or abs(value) >= VALUE_LIMIT:
        raise Dropped("invalid")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -VALUE_SCALE:
        # Rounded here as the database would, and so that no driver meets a value with
        # thousands of decimals; rounding may reach the limit.
        value = value.quantize(Decimal(1).scaleb(-VALUE_SCALE))
        if abs(value) >= VALUE_LIMIT:
            raise Dropped("invalid")
    return value


def check_storable(event: EventRow) -> None:
    """Every text of the row as it will be stored fits its column on both databases:
    scrubbing decodes escapes, so a `%2500` becomes a NUL only now."""
    for name, length in TEXT_COLUMNS:
        text = getattr(event, name)
        if text is not None and (len(text) > length or not is_storable(text)):
            raise Dropped("invalid")


def signed_if_required(policy: Policy, hit: Hit) -> None:
    if hit.kind in policy.file.require_signed_pixels and not hit.token:
        raise Dropped("unsigned")


def not_bot(hit: Hit) -> Agent:
    agent = classify(hit.user_agent)
    if agent.is_bot:
        raise Dropped("bot")
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


def known_site(site: SiteOut | None, policies: dict[str, Policy]) -> tuple[SiteOut, Policy]:
    """The site and its policy; a hit for a site (or policy) not known is dropped."""
    if site is None or site.policy not in policies:
        raise Dropped("unknown_site")
    return site, policies[site.policy]


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
    return Pending(policy=policy.name, event=event, signals=signals, seen=seen)


Said = str | tuple[tuple[str, str], ...]  # what a hit says besides its subject: see said_by()


def said_by(arrival: Arrival) -> tuple[str | None, Said]:
    """An arrival's subject, and the rest of what it says, not read yet: the rest of its
    query, or its values as pairs. Most queries are split without being read; one with
    escapes is read whole (its `u` may be escaped)."""
    if arrival.values is not None:
        values = dict(arrival.values)
        return values.pop("subject", None), tuple(values.items())
    text = arrival.query[:MAX_QUERY]
    if "%" in text or "+" in text:
        values = parse_query(text)
        return values.pop("subject", None), tuple(values.items())
    if "u=" not in text:
        return None, text
    subject, rest = None, []
    for pair in text.split("&"):
        if pair.startswith("u="):
            subject = pair[2:] or subject  # as parse_query(): the last one not blank
        else:
            rest.append(pair)
    return subject, "&".join(rest)


class Shapes:
    """What hits of one shape share, read once.

    Most hits repeat an earlier one but for who sent it and when: the opens of a newsletter
    (one message id and campaign, fetched by a handful of mail proxies), the views of a
    popular page from the common browsers. A hit's shape is the hit without its subject:
    what the rest of its query (or values) and its headers say. Reading, checking it,
    classifying its user agent, reading its signals and reducing its fields are done once a
    shape and kept, and each hit adds its pseudonym, id and time. The keys hold raw values
    other than the subject, in memory only, like the hits themselves."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        # An OrderedDict, whose oldest entry is dropped in constant time (a dict's first key,
        # after many deletions, is found by scanning past them).
        self._shapes: OrderedDict[tuple[str, str, str, Said, HitHeaders], Pending | str]
        self._shapes = OrderedDict()

    def prepare(
        self,
        keyring: KeyRing,
        site: SiteOut,
        policy: Policy,
        arrival: Arrival,
        region_header: str | None,
        now: datetime,
    ) -> Pending:
        """prepare_at_site() of the hit that came as `arrival`, at `site`; raises Dropped."""
        subject, said = said_by(arrival)
        key = (site.slug, site.policy, site.jurisdiction, said, arrival.headers)
        shared = self._shapes.get(key)
        if shared is None:
            values = parse_query(said) if isinstance(said, str) else dict(said)
            shape = read_hit(site.slug, values, arrival.headers, region_header)
            if shape.token:
                # A signed pixel names its own subject (any `u` is ignored) and is one of a kind.
                return prepare_at_site(keyring, site, policy, shape, now)
            try:
                shared = prepare_at_site(keyring, site, policy, shape, now)
            except Dropped as exc:
                shared = exc.reason
            if len(self._shapes) >= self._max:
                self._shapes.popitem(last=False)  # the oldest
            self._shapes[key] = shared
        check_subject(subject)  # as valid_input() does, before anything that drops a shape
        if isinstance(shared, str):
            raise Dropped(shared)
        event = msgspec.structs.replace(
            shared.event,
            subject=keyring.pseudonym(site.slug, subject) if subject else None,
            occurred_at=now,
            id=new_event_id(),
            basis={},
        )
        return Pending(shared.policy, event, shared.signals, shared.seen)


def settle(policy: Policy, pending: Pending, registry: dict[str, Record] | None) -> Outcome:
    """The consent decision (SPEC §4.1), as of the moment of the hit.

    Hits are decided a little after they arrive (or much later, replayed from the spool, or
    sent with a past `occurred_at`): `registry` is the one the hit met (registries_met()),
    None when its subject has been erased since; then nothing of the hit may be written."""
    if registry is None:
        return Outcome(would_record=False, reason="erased", signals=pending.seen)
    event = pending.event
    decision = decide(
        policy,
        event.kind,
        registry,
        pending.signals,
        pending.seen.jurisdiction,
        event.occurred_at,
        has_subject=event.subject is not None,
    )
    if decision.anonymous:
        # Counted under the exemption: no campaign, attribution or value may ride along, not
        # even in the page's own utm parameters.
        event = msgspec.structs.replace(
            event,
            page=event.page.partition("?")[0] if event.page else None,
            campaign=None,
            **dict.fromkeys(UTM_FIELDS),
            value=None,
            currency=None,
            basis=decision.basis,
        )
    elif decision.record:
        event.basis = decision.basis  # the pending hit is used once: no copy needed
    return Outcome(
        would_record=decision.record,
        reason="recorded" if decision.record else "no_consent",
        decision=decision,
        signals=pending.seen,
        event=event,
    )


Key = tuple[str, str]  # (site, pseudonym)
# Whether a subject's consent may have changed at or after a moment (a hit's arrival).
MayHaveChanged = Callable[[Key, datetime], bool]


async def registries_met(
    session: AsyncSession,
    keyring: KeyRing,
    batch: Sequence[Pending],
    current: dict[Key, dict[str, Record]],
    may_have_changed: MayHaveChanged,
) -> list[dict[str, Record] | None]:
    """The registry each hit of `batch` met when it arrived, for settle(); None for a hit
    whose subject has been erased since. `current`: the registries now (the cache's).

    Most hits met the registry as it is now. One whose subject's registry changed after it
    arrived gets the registry as it was then, rebuilt from the ledger. An erasure leaves
    the registry empty (or newer than the hit, if consent was given again since), so the
    erasures' audit record is asked only for a hit whose registry is newer, or empty while
    `may_have_changed` (the cache heard of a change since the hit, or knows nothing).
    Hits that need neither cost no query."""
    past: set[store.Moment] = set()
    erasable: list[EventRow] = []
    for pending in batch:
        event = pending.event
        if event.subject is None:
            continue
        key = (event.site, event.subject)
        registry = current.get(key)
        changed = False
        for record in registry.values() if registry else ():
            if record.updated_at is not None and record.updated_at > event.occurred_at:
                changed = True
                break
        if changed:
            past.add((event.site, event.subject, event.occurred_at))
        if changed or (not registry and may_have_changed(key, event.occurred_at)):
            erasable.append(event)
    erased = await erased_since(session, keyring, erasable) if erasable else set()
    rebuilt = await store.registries_at(session, past) if past else {}
    met: list[dict[str, Record] | None] = []
    for pending in batch:
        event = pending.event
        if event.subject is None:
            met.append({})
        elif event.id in erased:
            met.append(None)
        else:
            moment = (event.site, event.subject, event.occurred_at)
            found = rebuilt.get(moment)
            met.append(found if found is not None else current.get(moment[:2], {}))
    return met


async def erased_since(
    session: AsyncSession, keyring: KeyRing, events: Iterable[EventRow]
) -> set[uuid.UUID]:
    """The ids of the events whose subject has been erased at or after the event: what an
    erasure leaves is its audit record, which names the subject by a keyed hash."""
    by_site: dict[str, list[tuple[str, EventRow]]] = {}
    for event in events:
        if event.subject is not None:
            by_site.setdefault(event.site, []).append((audit_hash(keyring, event.subject), event))
    found: set[uuid.UUID] = set()
    for site, hashed in by_site.items():
        erased = await store.erased_at(session, site, {h for h, _ in hashed})
        found.update(e.id for h, e in hashed if h in erased and erased[h] >= e.occurred_at)
    return found


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
