"""Report cells: per site, day and dimension, the hits, values and subjects of the events, kept
up to date by the `reports` job so that a report over a year reads thousands of rows, not
millions of events (app/reports/cells.py reads them).

- Every write of events marks its (site, day) dirty (`mark_dirty`, one statement per batch):
  reports count a dirty day from raw events, a clean one from its cells. The job builds the
  past days that are dirty; today stays raw until it is over.
- Subjects are kept as a Roaring bitmap of small numbers (`subject_numbers`), so distinct counts
  over any days are exact unions. An erasure deletes the number with the events and marks the
  days dirty; retention deletes the cells of purged days (the rollups keep those) and a number
  once its subject's last raw event is purged: what is left in a bitmap is then nobody's.
- Whole past months get cells of their own, merged from their days': a year is twelve of them.
- A visit's credited campaign and influencer are the ones when its day was built. A late click
  marks the days of its attribution window dirty; naming a new influencer marks every day."""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

import msgspec
from pyroaring import BitMap
from sqlalchemy import Table, delete, exists, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.base.attribution import CLICK, Click, LastClicks, influencers
from app.base.db import as_date, day_of, dialect_insert, is_one_of
from app.base.tables import Event, ReportCell, ReportDirty, Site, SubjectNumber
from consent.policy import Policy

# Dimensions whose cells are also split by credited campaign and influencer and by machine:
# the ones reports filtered by those read ("" is no dimension: totals by kind).
SPLIT = ("", "hour", "currency")
# The others, split by kind only: a breakdown filtered by campaign counts raw events.
# They also have a cell of every kind together (kind ALL, which no kind matches): a year's
# breakdown then reads a third of the rows and bitmaps.
PLAIN = (
    "page",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "referrer",
    "device",
    "browser",
    "os",
    "jurisdiction",
)
ALL = "*"
DAY, MONTH = "d", "m"
CHUNK = 5000  # keys per statement: SQLite binds at most 32,766 values at once


class CellCounts(msgspec.Struct):
    days_built: int = 0
    months_built: int = 0
    subjects_numbered: int = 0


def month_of(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


async def mark_dirty(session: AsyncSession, site_days: Iterable[tuple[str, date]]) -> None:
    """The days' cells are out of date: a new mark, which a build under way will not remove.
    In one order, so that two writers marking the same days never wait for each other."""
    rows = [
        {"site": site, "day": day, "mark": secrets.randbits(62)}
        for site, day in sorted(set(site_days))
    ]
    if not rows:
        return
    statement = dialect_insert(session)(ReportDirty).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["site", "day"], set_={"mark": statement.excluded.mark}
        )
    )


def days_touched(kind: str, day: date, today: date, window: int) -> list[date]:
    """The days an event changes the cells of: its own, and for a late click the days whose
    visits it may be credited with."""
    if kind != CLICK or day >= today:
        return [day]
    return [day + timedelta(days=n) for n in range(min(window, (today - day).days) + 1)]


async def mark_site_dirty(session: AsyncSession, site: str) -> None:
    """Every day of the site that has events (the credit of any of them may have changed)."""
    day = day_of(session, Event.occurred_at)
    days = await session.scalars(select(day).where(Event.site == site).distinct())
    await mark_dirty(session, [(site, as_date(value)) for value in days])


@dataclass
class _Cell:
    hits: int = 0
    anonymous_hits: int = 0
    value: Decimal | None = None
    members: BitMap = field(default_factory=BitMap)


_Key = tuple[str, str | None, str, str | None, str | None, bool | None]
KEY = ("dimension", "key", "kind", "campaign", "influencer", "machine")  # a cell's, as _Key
FIGURES = ("hits", "anonymous_hits", "value", "members")


def _row(site: str, grain: str, period: date, n: int, key: _Key, cell: _Cell) -> dict[str, Any]:
    return {
        "site": site,
        "grain": grain,
        "period": period,
        "n": n,
        **dict(zip(KEY, key, strict=True)),
        "hits": cell.hits,
        "anonymous_hits": cell.anonymous_hits,
        "value": cell.value,
        "members": cell.members.serialize(),
    }


async def _replace(
    session: AsyncSession, site: str, grain: str, period: date, cells: dict[_Key, _Cell]
) -> None:
    where = [ReportCell.site == site, ReportCell.grain == grain, ReportCell.period == period]
    await session.execute(
        delete(ReportCell).execution_options(synchronize_session=False).where(*where)
    )
    rows = [_row(site, grain, period, n, *kv) for n, kv in enumerate(cells.items(), start=1)]
    if rows:  # a Core insert: SQLAlchemy sends a page of rows a statement
        await session.execute(insert(cast(Table, ReportCell.__table__)), rows)


async def numbers_of(
    session: AsyncSession, site: str, events: list[Any]
) -> tuple[dict[str, int], int]:
    """The number of every subject of the events (rows with a `subject`), new ones numbered
    now; and how many were new. Found by their key, a chunk of them at a time."""
    subjects = sorted({row.subject for row in events if row.subject is not None})
    numbers: dict[str, int] = {}
    for start in range(0, len(subjects), CHUNK):
        chunk = subjects[start : start + CHUNK]
        found = await session.execute(
            select(SubjectNumber.subject, SubjectNumber.number).where(
                SubjectNumber.site == site, is_one_of(session, SubjectNumber.subject, chunk)
            )
        )
        numbers.update((subject, number) for subject, number in found)
    new = [subject for subject in subjects if subject not in numbers]
    if new:
        top = await session.scalar(
            select(func.max(SubjectNumber.number)).where(SubjectNumber.site == site)
        )
        first = (top or 0) + 1
        assigned = {subject: first + n for n, subject in enumerate(new)}
        values = [
            {"site": site, "subject": subject, "number": number}
            for subject, number in assigned.items()
        ]
        await session.execute(insert(cast(Table, SubjectNumber.__table__)), values)
        numbers.update(assigned)
    return numbers, len(new)


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def add_clicks(
    session: AsyncSession, site: str, first: date, end: date, to: LastClicks
) -> None:
    """The site's clicks of subjects from `first` to before `end`, for attribution."""
    rows = await session.execute(
        select(Event.subject, Event.occurred_at, Event.id, Event.campaign, Event.utm_source).where(
            Event.site == site,
            Event.kind == CLICK,
            Event.occurred_at >= _start(first),
            Event.occurred_at < _start(end),
            Event.subject.is_not(None),
        )
    )
    for row in rows:
        to.add(row.subject, Click(row.occurred_at, row.id, row.campaign, row.utm_source))


async def build_day(session: AsyncSession, site: str, day: date, clicks: LastClicks) -> int:
    """The day's cells from its raw events, credited with `clicks`, which holds the clicks of
    the window before the day (the day's own are added here); returns how many subjects were
    numbered."""
    of_day = [
        Event.site == site,
        Event.occurred_at >= _start(day),
        Event.occurred_at < _start(day + timedelta(days=1)),
    ]
    plain = (getattr(Event, name) for name in PLAIN)
    events = list(
        await session.execute(
            select(
                Event.kind,
                Event.subject,
                Event.value,
                Event.occurred_at,
                Event.id,
                Event.machine,
                Event.currency,
                Event.campaign,
                *plain,
            ).where(*of_day)
        )
    )
    numbers, numbered = await numbers_of(session, site, events)
    for row in events:
        if row.kind == CLICK and row.subject is not None:
            clicks.add(row.subject, Click(row.occurred_at, row.id, row.campaign, row.utm_source))
    cells: dict[_Key, _Cell] = {}
    for row in events:
        campaign, influencer = clicks.credited(
            row.kind, row.subject, row.occurred_at, row.campaign, row.utm_source
        )
        split = (row.kind, campaign, influencer, row.machine)
        keys: list[_Key] = [
            ("", None, *split),
            ("hour", str(row.occurred_at.astimezone(UTC).hour), *split),
            ("currency", row.currency, *split),
        ]
        keys += [
            (name, getattr(row, name), kind, None, None, None)
            for name in PLAIN
            for kind in (row.kind, ALL)
        ]
        number = None if row.subject is None else numbers[row.subject]
        for key in keys:
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = _Cell()
            cell.hits += 1
            if number is None:
                cell.anonymous_hits += 1
            else:
                cell.members.add(number)
            if row.value is not None:
                cell.value = row.value + (cell.value or 0)
    await _replace(session, site, DAY, day, cells)
    await session.execute(
        delete(ReportCell)
        .execution_options(synchronize_session=False)
        .where(
            ReportCell.site == site, ReportCell.grain == MONTH, ReportCell.period == month_of(day)
        )
    )
    return numbered


async def build_month(session: AsyncSession, site: str, month: date) -> None:
    """A whole month's cells, merged from its days'."""
    columns = [getattr(ReportCell, name) for name in (*KEY, *FIGURES)]
    rows = await session.execute(
        select(*columns).where(
            ReportCell.site == site,
            ReportCell.grain == DAY,
            ReportCell.period >= month,
            ReportCell.period < next_month(month),
        )
    )
    cells: dict[_Key, _Cell] = {}
    for row in rows:
        key = cast(_Key, tuple(getattr(row, name) for name in KEY))
        cell = cells.setdefault(key, _Cell())
        cell.hits += row.hits
        cell.anonymous_hits += row.anonymous_hits
        if row.value is not None:
            cell.value = row.value + (cell.value or 0)
        cell.members |= BitMap.deserialize(row.members)
    await _replace(session, site, MONTH, month, cells)


async def _months_due(session: AsyncSession, site: str, today: date) -> list[date]:
    """Past months with day cells, no month cells and no dirty day."""
    periods = await session.execute(  # every event is in the cells of no dimension
        select(ReportCell.grain, ReportCell.period)
        .where(ReportCell.site == site, ReportCell.dimension == "")
        .distinct()
    )
    with_days: set[date] = set()
    built: set[date] = set()
    for grain, period in periods:
        (with_days if grain == DAY else built).add(month_of(as_date(period)))
    dirty = {
        month_of(as_date(day))
        for day in await session.scalars(select(ReportDirty.day).where(ReportDirty.site == site))
    }
    return sorted(m for m in with_days - built - dirty if next_month(m) <= today)


async def build_cells(
    sessions: async_sessionmaker[AsyncSession],
    policies: dict[str, Policy],
    now: datetime,
    dry_run: bool = False,
) -> CellCounts:
    """Every dirty day before today, each in its own transaction, then the months due (with
    `dry_run`, only counts the days that would be built)."""
    counts = CellCounts()
    today = now.astimezone(UTC).date()
    async with sessions() as session:
        windows = {
            slug: policies[name].file.reports.attribution_window_days
            for slug, name in await session.execute(select(Site.slug, Site.policy))
            if name in policies
        }
        dirty = list(
            await session.execute(
                select(ReportDirty.site, ReportDirty.day, ReportDirty.mark)
                .where(ReportDirty.day < today)
                .order_by(ReportDirty.site, ReportDirty.day)
            )
        )
    if dry_run:
        return CellCounts(days_built=sum(1 for site, _, _ in dirty if site in windows))
    clicks: LastClicks | None = None
    after = None  # the day after the last one built: its clicks are in `clicks`
    for site, value, mark in dirty:
        if site not in windows:
            continue
        day = as_date(value)
        async with sessions() as session, session.begin():
            if clicks is None or (site, day) != after:
                clicks = LastClicks(await influencers(session, site), windows[site])
                start = day - timedelta(days=windows[site])
                await add_clicks(session, site, start, day, to=clicks)
            counts.subjects_numbered += await build_day(session, site, day, clicks)
            # Only if no write marked the day again meanwhile (it waits for such a write's
            # transaction to end): else the day stays dirty for the next run.
            await session.execute(
                delete(ReportDirty).where(
                    ReportDirty.site == site, ReportDirty.day == value, ReportDirty.mark == mark
                )
            )
        counts.days_built += 1
        after = (site, day + timedelta(days=1))
    for site in windows:
        async with sessions() as session, session.begin():
            due = await _months_due(session, site, today)
        for month in due:
            async with sessions() as session, session.begin():
                await build_month(session, site, month)
            counts.months_built += 1
    return counts


async def forget_purged(session: AsyncSession, site: str, kind: str, before: datetime) -> None:
    """Retention purged the site's events of `kind` before `before`: their day cells go (the
    rollups count those days now), with the cells of every kind together, and the cells of
    their months, which are built again from the days left."""
    await session.execute(
        delete(ReportCell)
        .execution_options(synchronize_session=False)
        .where(
            ReportCell.site == site,
            ReportCell.kind.in_([kind, ALL]),
            ReportCell.grain == DAY,
            ReportCell.period < before.date(),
        )
    )
    await session.execute(
        delete(ReportCell)
        .execution_options(synchronize_session=False)
        .where(
            ReportCell.site == site, ReportCell.grain == MONTH, ReportCell.period < before.date()
        )
    )


async def forget_numbers(session: AsyncSession) -> int:
    """The numbers of subjects without a raw event left: what the bitmaps hold of them is
    nobody's from now on. Returns how many."""
    has_events = exists().where(
        Event.site == SubjectNumber.site, Event.subject == SubjectNumber.subject
    )
    result = await session.execute(
        delete(SubjectNumber).execution_options(synchronize_session=False).where(~has_events)
    )
    return int(getattr(result, "rowcount", 0))
