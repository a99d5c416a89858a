"""Server-side events (SPEC §4.6) and signed pixel URLs (SPEC §4.3)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import dialect_insert, utcnow
from app.base.event_fields import ATTRIBUTION_FIELDS, Attribution
from app.base.tables import EventId, Site, is_storable
from app.hits.arrival import Hit
from app.hits.event import EventRow, Pending
from app.hits.registries import registries_met
from app.hits.signed_pixels import PixelClaim, sign_pixel
from app.hits.steps import MAX_TEXT, Dropped, Reason, prepare, settle
from app.hits.writer import write_events
from app.http.context import Context
from app.http.deps import Subject
from app.http.guards import requires
from app.http.problems import Problem
from app.reports.cells import rolled_up_until
from consent import store

MAX_EVENTS = 1000
MAX_PIXEL_URLS = 10_000
MAX_FUTURE = timedelta(minutes=5)  # clocks drift; an event from further ahead is a mistake


class ServerEvent(Attribution, forbid_unknown_fields=True, kw_only=True):
    kind: str = "pageview"
    subject: str | None = None
    email: str | None = None
    page: str | None = None
    value: Decimal | None = None
    currency: str | None = None
    occurred_at: datetime | None = None
    user_agent: str | None = None  # the person's browser, when the server saw it
    event_id: str | None = None  # the sender's own id: a repeat is counted once


class EventsIn(msgspec.Struct, forbid_unknown_fields=True):
    events: list[ServerEvent]


class Rejected(msgspec.Struct):
    index: int
    reason: Reason  # no_consent, invalid or bot


class EventsOut(msgspec.Struct):
    accepted: int
    rejected: list[Rejected]


def _storable_id(event_id: str) -> bool:
    return 0 < len(event_id) <= MAX_TEXT and is_storable(event_id)


def _hit(site: str, event: ServerEvent) -> Hit:
    texts = [v for v in msgspec.structs.astuple(event) if isinstance(v, str)]
    if not all(is_storable(text) for text in texts):
        raise Dropped(Reason.INVALID)  # a NUL or other control character in any field
    if event.event_id is not None and not _storable_id(event.event_id):
        raise Dropped(Reason.INVALID)
    if event.subject is not None and event.email is not None:
        raise Dropped(Reason.INVALID)  # one identifier per event
    if event.email is not None and ("@" not in event.email or len(event.email) > 254):
        raise Dropped(Reason.INVALID)
    return Hit(
        site=site,
        kind=event.kind,
        subject=event.subject if event.subject is not None else event.email,
        page=event.page,
        **{name: getattr(event, name) for name in ATTRIBUTION_FIELDS},
        value=str(event.value) if event.value is not None else None,
        currency=event.currency,
        user_agent=event.user_agent or "",
    )


def _id_hashes(ctx: Context, site: str, events: list[ServerEvent]) -> list[str | None]:
    """Each event's id as a keyed hash, per site: ids are the sender's and might name a
    person (an order number, an address), so they are not stored as they are."""
    return [
        ctx.keyring.mac(e.event_id.encode(), "site", site, "event-id").hex()
        if e.event_id is not None and _storable_id(e.event_id)
        else None
        for e in events
    ]


async def _seen(session: AsyncSession, site: str, hashes: list[str | None]) -> set[str]:
    ids = {h for h in hashes if h is not None}
    if not ids:
        return set()
    found = await session.scalars(
        select(EventId.id_hash).where(EventId.site == site, EventId.id_hash.in_(ids))
    )
    return set(found)


async def _first_times(
    session: AsyncSession,
    site: str,
    recorded: list[tuple[str | None, EventRow]],
    now: datetime,
) -> list[EventRow]:
    """The rows to write: those without an event_id, and the first of each id not written
    before. Ids are claimed in this transaction; one a concurrent request claimed first
    (ON CONFLICT) is counted there."""
    rows, firsts = [], dict[str, EventRow]()
    for id_hash, row in recorded:
        if id_hash is None:
            rows.append(row)
        else:
            firsts.setdefault(id_hash, row)
    if firsts:
        claim = dialect_insert(session)(EventId).values(
            [{"site": site, "id_hash": h, "seen_at": now} for h in firsts]
        )
        claimed = await session.scalars(
            claim.on_conflict_do_nothing(index_elements=["site", "id_hash"]).returning(
                EventId.id_hash
            )
        )
        rows.extend(firsts[h] for h in claimed)
    return rows


EVENTS_DESCRIPTION = """\
Up to 1,000 events, decided like pixel hits and written before the answer, all or nothing.
Each is accepted or rejected with a reason: `no_consent`, `invalid` (a malformed or
unstorable field, such as a control character, or an `occurred_at` on a day whose events of
that kind retention has already rolled up) or `bot`.

`event_id` (optional, 1 to 128 characters) makes an event idempotent: an event whose id the
site already recorded in the last 7 days (at least), or earlier in the same batch, is
counted in `accepted` but not written again. A retried batch therefore answers the same
`accepted` and adds no rows. Only recorded events keep their id: one that was rejected is
decided afresh when it is sent again."""


@post(
    "/v1/sites/{site:str}/events",
    dependencies=requires("ingest"),
    status_code=200,
    summary="Server-side events",
    description=EVENTS_DESCRIPTION,
)
async def post_events(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    data: JSONBody[EventsIn],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> EventsOut:
    """Decided like pixel hits, but written before the answer, all or nothing."""
    if len(data.events) > MAX_EVENTS:
        raise Problem(413, f"at most {MAX_EVENTS} events per request, got {len(data.events)}")
    now = utcnow()
    rejected: list[Rejected] = []
    pending: list[tuple[int, Pending]] = []
    hashes = _id_hashes(ctx, site, data.events)
    seen = await _seen(session, site, hashes)
    # A day retention already rolled up takes no more events of its kind: reports read that
    # day from the rollup, and the next purge would delete the event uncounted.
    rolled = await rolled_up_until(session, site)
    repeats = 0
    for index, event in enumerate(data.events):
        if hashes[index] in seen:
            repeats += 1
            continue
        occurred = event.occurred_at or now
        try:
            if occurred.tzinfo is None or occurred > now + MAX_FUTURE:
                raise Dropped(Reason.INVALID)
            last_rolled = rolled.get(event.kind)
            if last_rolled is not None and occurred.astimezone(UTC).date() <= last_rolled:
                raise Dropped(Reason.INVALID)
            pending.append(
                (
                    index,
                    await prepare(
                        ctx.sites, ctx.policies, ctx.keyring, _hit(site, event), occurred, True
                    ),
                )
            )
        except Dropped as dropped:
            rejected.append(Rejected(index, dropped.reason))
    keys = list({(site, p.event.subject) for _, p in pending if p.event.subject})
    registries = await store.registries(session, keys)
    # As of each event's occurred_at; one from before the request may meet an erasure.
    batch = [one for _, one in pending]
    met = await registries_met(session, ctx.keyring, batch, registries, lambda _, at: at < now)
    recorded = []
    for (index, one), registry in zip(pending, met, strict=True):
        outcome = settle(ctx.policies[one.policy], one, registry)
        if outcome.would_record and outcome.event is not None:
            recorded.append((hashes[index], outcome.event))
        else:
            rejected.append(Rejected(index, Reason.NO_CONSENT))
    rows = await _first_times(session, site, recorded, now)
    window = ctx.policies[site_row.policy].file.reports.attribution_window_days
    await write_events(session, rows, window=window)
    ctx.metrics.flushed.inc(len(rows))
    accepted = repeats + len(recorded)
    return EventsOut(accepted=accepted, rejected=sorted(rejected, key=lambda r: r.index))


class PixelUrlsIn(msgspec.Struct, forbid_unknown_fields=True):
    subjects: list[Subject]
    kind: str = "open"
    campaign: str | None = None
    page: str | None = None


class PixelUrlsOut(msgspec.Struct):
    urls: dict[str, str]


@post(
    "/v1/sites/{site:str}/pixel-urls",
    dependencies=requires("ingest"),
    status_code=200,
    summary="Signed pixel URLs",
)
async def pixel_urls(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    data: JSONBody[PixelUrlsIn],
    ctx: NamedDependency[Context],
) -> PixelUrlsOut:
    """One URL per recipient; its token carries the pseudonym, never the recipient's id."""
    if len(data.subjects) > MAX_PIXEL_URLS:
        raise Problem(413, f"at most {MAX_PIXEL_URLS} subjects per request")
    probe = Hit(site=site, kind=data.kind, campaign=data.campaign, page=data.page)
    try:
        prepared = await prepare(ctx.sites, ctx.policies, ctx.keyring, probe, utcnow(), server=True)
    except Dropped as dropped:
        raise Problem(422, f"kind, campaign or page is {dropped.reason}") from None
    base = f"{ctx.settings.base_url}/p/{site}/pixel.gif?t="
    urls = {}
    for subject in data.subjects:
        claim = PixelClaim(
            site=site,
            subject=ctx.keyring.pseudonym(site, subject),
            kind=data.kind,
            campaign=prepared.event.campaign,
            page=data.page,
        )
        urls[subject] = base + sign_pixel(ctx.keyring, claim)
    return PixelUrlsOut(urls=urls)
