"""Retention jobs: (sessions, policies, now) -> counts. Idempotent: a second run changes
nothing. Raw events are rolled up into anonymous daily aggregates before they are deleted,
so reports keep working for purged days."""

import asyncio
import logging
import time as clock  # `time` is the datetime one here
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec
from sqlalchemy import (
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.base.attribution import (
    Influencers,
    credited_campaign,
    credited_influencer,
    influencers,
)
from app.base.db import as_date, day_of
from app.base.event_fields import DIMENSIONS
from app.base.sketches import sketch_of
from app.base.tables import DsarExport, Event, EventId, RollupDaily, RollupDetail, Site
from consent.policy import Policy
from consent.tables import ConsentChange, ConsentLedger, ConsentState
from retention.report_cells import forget_numbers, forget_purged, numbers_of

log = logging.getLogger("pixelgate.retention")
BATCH = 10_000
MONTHS_AHEAD = 2
EVENT_ID_DAYS = 7  # SPEC §4.6: a repeated event_id is counted once for at least this long
Progress = Callable[[int], None]


class EventCounts(msgspec.Struct):
    days_rolled_up: int = 0
    events_rolled_up: int = 0
    events_deleted: int = 0
    partitions_created: int = 0
    partitions_dropped: int = 0
    exports_deleted: int = 0
    event_ids_deleted: int = 0
    subject_numbers_deleted: int = 0  # of subjects with no raw event left (report_cells.py)


class ConsentCounts(msgspec.Struct):
    consents_expired: int = 0
    ledger_entries_purged: int = 0
    changes_purged: int = 0


def start_of_day(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def cutoff(now: datetime, days: int) -> datetime:
    """Events before this instant are past retention: whole days, in UTC."""
    return start_of_day(now) - timedelta(days=days)


def _month(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


async def partitions(connection: AsyncConnection) -> list[str]:
    """The partitions of events on PostgreSQL, by name (events_YYYY_MM, events_default)."""
    names = await connection.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
        )
    )
    return sorted(names)


async def ensure_partitions(engine: AsyncEngine, policies: dict[str, Policy], now: datetime) -> int:
    """PostgreSQL: monthly partitions from the oldest month retention may still hold to
    MONTHS_AHEAD ahead, so that new events never land in the default partition."""
    if engine.dialect.name != "postgresql":
        return 0
    longest = max(
        (p.retention_days for pol in policies.values() for p in pol.file.purposes.values()),
        default=0,
    )
    month, created = _month(cutoff(now, longest)), 0
    last = _month(now)
    for _ in range(MONTHS_AHEAD):
        last = _next_month(last)
    async with engine.connect() as connection:
        existing = set(await partitions(connection))
        while month <= last:
            name = f"events_{month:%Y_%m}"
            if name not in existing:
                end = _next_month(month)
                try:
                    await connection.execute(text(
                        f"CREATE TABLE {name} PARTITION OF events "
                        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
                    ))  # fmt: skip
                    await connection.commit()
                    created += 1
                except DBAPIError:  # the default partition already holds rows of that month
                    await connection.rollback()
                    log.warning("partition %s not created: rows for it are in events_default", name)
            month = _next_month(month)
    return created


async def _site_policies(session: AsyncSession, policies: dict[str, Policy]) -> dict[str, Policy]:
    rows = await session.execute(select(Site.slug, Site.policy))
    return {slug: policies[name] for slug, name in rows if name in policies}


async def _expired_groups(
    session: AsyncSession, policies: dict[str, Policy], now: datetime
) -> tuple[list[tuple[str, str, datetime, int]], bool]:
    """(site, kind, cutoff, attribution window) for every kind of every site that has events,
    and whether every site with events has a policy we know (else nothing may be dropped
    wholesale)."""
    by_site = await _site_policies(session, policies)
    groups = list(await session.execute(select(Event.site, Event.kind).distinct()))
    known = [
        (
            site,
            kind,
            cutoff(now, by_site[site].retention_days(kind)),
            by_site[site].file.reports.attribution_window_days,
        )
        for site, kind in groups
        if site in by_site
    ]
    return known, len(known) == len(groups)


async def _roll_up(
    session: AsyncSession,
    site: str,
    kind: str,
    before: datetime,
    window: int,
    counts: EventCounts,
    dry_run: bool,
) -> None:
    """Aggregate, inside the database, the expired days of one (site, kind) that no earlier
    run rolled up; the caller's transaction makes the two rollups one step."""
    day = day_of(session, Event.occurred_at)
    done = list(
        await session.scalars(
            select(RollupDaily.day)
            .where(
                RollupDaily.site == site, RollupDaily.kind == kind, RollupDaily.day < before.date()
            )
            .distinct()
        )
    )
    expired = [Event.site == site, Event.kind == kind, Event.occurred_at < before]
    if done:  # rolled up by a run cut short before its deletes: only left to delete
        iso = session.get_bind().dialect.name != "postgresql"  # SQLite's date() is text
        expired.append(day.not_in([d.isoformat() if iso else d for d in map(as_date, done)]))
    per_day = list(await session.execute(select(day, func.count()).where(*expired).group_by(day)))
    counts.days_rolled_up += len(per_day)
    counts.events_rolled_up += sum(events for _, events in per_day)
    if dry_run or not per_day:
        return
    columns = _detail_columns(session, window, await influencers(session, site))
    for expired_day, _ in per_day:
        await _roll_up_day(session, site, kind, as_date(expired_day), expired, columns)
    subjects = func.count(Event.subject.distinct())
    campaign = func.coalesce(Event.campaign, "")  # one expression: GROUP BY must match it
    await session.execute(
        insert(RollupDaily).from_select(
            ["site", "day", "kind", "campaign", "hits", "subjects"],
            select(literal(site), day, literal(kind), campaign, func.count(), subjects)
            .where(*expired)
            .group_by(day, campaign),
        )
    )


# What a detail row groups a day's events by, beside its hour.
DETAIL = (*DIMENSIONS, "jurisdiction", "currency", "influencer")


def _detail_columns(session: AsyncSession, window: int, known: Influencers) -> list[Any]:
    """DETAIL's columns of events, with the campaign and influencer credited as reports do."""
    credited = {
        "campaign": credited_campaign(session, window, known),
        "influencer": credited_influencer(session, window, known),
    }
    return [credited[name] if name in credited else getattr(Event, name) for name in DETAIL]


class _Cell:
    def __init__(self) -> None:
        self.hits, self.anonymous_hits, self.value = 0, 0, None
        self.subjects: set[int] = set()


async def _roll_up_day(
    session: AsyncSession, site: str, kind: str, day: date, expired: list[Any], columns: list[Any]
) -> None:
    """One row per hour and value of every dimension, with a sketch of its subjects' numbers:
    the sketches merge across rows and days where a sum of distinct counts would overcount."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    events = list(
        await session.execute(
            select(Event.occurred_at, Event.subject, Event.value, *columns).where(
                *expired, Event.occurred_at >= start, Event.occurred_at < start + timedelta(days=1)
            )
        )
    )
    numbers, _ = await numbers_of(session, site, events)
    cells: dict[tuple[Any, ...], _Cell] = {}
    for occurred_at, subject, value, *key in events:
        cell = cells.setdefault((occurred_at.astimezone(UTC).hour, *key), _Cell())
        cell.hits += 1
        if subject is None:
            cell.anonymous_hits += 1
        else:
            cell.subjects.add(numbers[subject])
        if value is not None:
            cell.value = value + (cell.value or 0)
    rows = [
        {
            "site": site,
            "day": day,
            "kind": kind,
            "n": n,
            "hour": hour,
            **dict(zip(DETAIL, key, strict=True)),
            "hits": cell.hits,
            "anonymous_hits": cell.anonymous_hits,
            "value": cell.value,
            "subjects": len(cell.subjects),
            "sketch": sketch_of(cell.subjects),
        }
        for n, ((hour, *key), cell) in enumerate(cells.items(), start=1)
    ]
    await session.execute(insert(RollupDetail), rows)


async def _drop_expired_partitions(
    engine: AsyncEngine, before: datetime, counts: EventCounts
) -> None:
    """Whole months that retention has passed for every site and kind: one DROP each."""
    async with engine.connect() as connection:
        for name in await partitions(connection):
            if name == "events_default":
                continue
            year, month = int(name[7:11]), int(name[12:14])
            end = _next_month(datetime(year, month, 1, tzinfo=UTC))
            if end <= before:
                rows = await connection.scalar(text(f"SELECT count(*) FROM {name}"))  # noqa: S608
                await connection.execute(text(f"DROP TABLE {name}"))
                await connection.commit()
                counts.events_deleted += int(rows or 0)
                counts.partitions_dropped += 1


async def _delete_expired(
    sessions: async_sessionmaker[AsyncSession],
    site: str,
    kind: str,
    before: datetime,
    progress: Progress | None,
    rest: bool,
) -> int:
    """In batches, each its own transaction: the pixel's writes never wait long. With `rest`
    (SQLite: one writer at a time) the purge pauses as long as each batch took, so the
    pixel's writer gets the database at least half of the time."""
    deleted = 0
    key = tuple_(Event.site, Event.occurred_at, Event.id)
    while True:
        started = clock.monotonic()
        async with sessions() as session, session.begin():
            batch = (
                select(Event.site, Event.occurred_at, Event.id)
                .where(Event.site == site, Event.kind == kind, Event.occurred_at < before)
                .limit(BATCH)
            )
            result = await session.execute(delete(Event).where(key.in_(batch)))
        count = int(getattr(result, "rowcount", 0))
        deleted += count
        if progress is not None and count:
            progress(count)
        if count < BATCH:
            return deleted
        if rest:
            await asyncio.sleep(clock.monotonic() - started)


async def purge_events(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    policies: dict[str, Policy],
    now: datetime,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> EventCounts:
    """Roll up, then delete, every event past the retention of its kind; drop expired months,
    expired access exports and event ids past their week."""
    counts = EventCounts()
    if not dry_run:
        counts.partitions_created = await ensure_partitions(engine, policies, now)
    async with sessions() as session, session.begin():
        groups, complete = await _expired_groups(session, policies, now)
        for site, kind, before, window in groups:
            await _roll_up(session, site, kind, before, window, counts, dry_run)
        if not dry_run:
            for site, kind, before, _ in groups:
                await forget_purged(session, site, kind, before)
        expired_exports = (
            select(func.count()).select_from(DsarExport).where(DsarExport.expires_at <= now)
        )
        counts.exports_deleted = int(await session.scalar(expired_exports) or 0)
        old_ids = EventId.seen_at < cutoff(now, EVENT_ID_DAYS)
        found_ids = select(func.count()).select_from(EventId).where(old_ids)
        counts.event_ids_deleted = int(await session.scalar(found_ids) or 0)
        if dry_run:
            for site, kind, before, _ in groups:
                found = await session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.site == site, Event.kind == kind, Event.occurred_at < before)
                )
                counts.events_deleted += int(found or 0)
            return counts
        await session.execute(delete(DsarExport).where(DsarExport.expires_at <= now))
        await session.execute(delete(EventId).where(old_ids))
    if engine.dialect.name == "postgresql" and groups and complete:
        await _drop_expired_partitions(engine, min(before for _, _, before, _ in groups), counts)
    for site, kind, before, _ in groups:
        rest = engine.dialect.name == "sqlite"
        counts.events_deleted += await _delete_expired(sessions, site, kind, before, progress, rest)
    async with sessions() as session, session.begin():
        counts.subject_numbers_deleted = await forget_numbers(session)
    return counts


async def expire_consents(
    sessions: async_sessionmaker[AsyncSession],
    policies: dict[str, Policy],
    now: datetime,
    dry_run: bool = False,
) -> ConsentCounts:
    """Mark lapsed grants expired; purge the ledger of people who withdrew long enough ago."""
    counts = ConsentCounts()
    lapsed = (
        ConsentState.granted.is_(True),
        ConsentState.expires_at <= now,
        ConsentState.expired_at.is_(None),
    )
    async with sessions() as session, session.begin():
        if dry_run:
            found = await session.scalar(
                select(func.count()).select_from(ConsentState).where(*lapsed)
            )
            counts.consents_expired = int(found or 0)
        else:
            result = await session.execute(
                update(ConsentState).where(*lapsed).values(expired_at=ConsentState.expires_at)
            )
            counts.consents_expired = int(getattr(result, "rowcount", 0))
        by_site = await _site_policies(session, policies)
        # Correlated, not `NOT IN (subquery)`: PostgreSQL plans that one quadratically once the
        # subquery outgrows work_mem (seen at a million subjects).
        still_granted = exists().where(
            ConsentState.site == ConsentLedger.site,
            ConsentState.subject == ConsentLedger.subject,
            ConsentState.granted.is_(True),
            ConsentState.expired_at.is_(None),
        )
        shortest = min((p.file.consent_proof_days for p in by_site.values()), default=0)
        latest = await session.execute(
            select(ConsentLedger.site, ConsentLedger.subject, func.max(ConsentLedger.recorded_at))
            .where(~still_granted)
            .group_by(ConsentLedger.site, ConsentLedger.subject)
            .having(func.max(ConsentLedger.recorded_at) < now - timedelta(days=shortest))
        )
        done: dict[str, list[str]] = {}
        for site, subject, last in latest:
            if site in by_site and _aware(last) < now - timedelta(
                days=by_site[site].file.consent_proof_days
            ):
                done.setdefault(site, []).append(subject)
        for site, subjects in done.items():
            for start in range(0, len(subjects), 500):
                chunk = (
                    ConsentLedger.site == site,
                    ConsentLedger.subject.in_(subjects[start : start + 500]),
                )
                if dry_run:
                    found = await session.scalar(
                        select(func.count()).select_from(ConsentLedger).where(*chunk)
                    )
                    counts.ledger_entries_purged += int(found or 0)
                else:
                    result = await session.execute(delete(ConsentLedger).where(*chunk))
                    counts.ledger_entries_purged += int(getattr(result, "rowcount", 0))
        counts.changes_purged = await _purge_changes(session, now, dry_run)
    return counts


async def _purge_changes(session: AsyncSession, now: datetime, dry_run: bool) -> int:
    """The consent_changes announcements (SQLite) of more than a day ago: every server has
    read them, and its cache has long let go of what they were about. By the real clock
    too: a run `--as-of` a later day must not take rows a server has yet to read."""
    old = ConsentChange.changed_at < min(now, datetime.now(UTC)) - timedelta(days=1)
    if dry_run:
        found = await session.scalar(select(func.count()).select_from(ConsentChange).where(old))
        return int(found or 0)
    result = await session.execute(delete(ConsentChange).where(old))
    return int(getattr(result, "rowcount", 0))


def _aware(moment: Any) -> datetime:
    value: datetime = (
        moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    )
    return value if value.tzinfo else value.replace(tzinfo=UTC)
