"""Hits and distinct subjects grouped by a key, over a site's days: from the report cells
(retention/report_cells.py) for days built since their last write, from raw events for the
others (today among them), and from the rollups (retention.jobs) for purged days. Every report
is made of these cells, so every report agrees with every other on the same filters.

A distinct count is exact where no rollup counted: the database counts it over raw events
alone, else the union of the cells' bitmaps of subject numbers with the raw subjects. Where a
rollup counted too, it is the merge of the rollups' sketches with the other subjects, and says
that it is an estimate. Campaigns and influencers are the credited ones (app/base/attribution)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from pyroaring import BitMap
from sqlalchemy import ColumnElement, Integer, Row, Select, and_, cast, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.attribution import (
    Influencers,
    credited_campaign,
    credited_influencer,
    influencer_of,
    influencers,
)
from app.base.db import as_date
from app.base.sketches import Union
from app.base.tables import Event, ReportCell, ReportDirty, RollupDaily, RollupDetail, SubjectNumber
from retention.report_cells import ALL, DAY, MONTH, PLAIN, SPLIT, month_of, next_month


class Scope(msgspec.Struct, frozen=True):
    """What a report covers: one site's days, `first` to `last` inclusive (UTC), filtered."""

    site: str
    first: date
    last: date
    kind: str | None = None
    campaign: str | None = None
    influencer: str | None = None
    machine: bool | None = None  # opens by mail image proxies, or by people
    attribution_days: int = 30  # the policy's reports.attribution_window_days
    min_subjects: int = 1  # the policy's reports.min_subjects (k-anonymity)


@dataclass(frozen=True)
class Sql:
    """What the SQL of a key or filter needs: the session (its dialect), the site's
    influencers and the attribution window."""

    session: AsyncSession
    known: Influencers
    days: int

    def column(self, name: str) -> ColumnElement[Any]:
        """A dimension of raw events, credited where attribution applies."""
        if name == "campaign":
            return credited_campaign(self.session, self.days, self.known)
        if name == "influencer":
            return credited_influencer(self.session, self.days, self.known)
        if name == "hour":
            hour: ColumnElement[Any]
            if self.session.get_bind().dialect.name == "postgresql":
                hour = func.extract("hour", func.timezone("UTC", Event.occurred_at))
            else:
                hour = func.strftime("%H", Event.occurred_at)
            return cast(hour, Integer)
        column: ColumnElement[Any] = getattr(Event, name)
        return column


def rolled_value(row: Any, name: str, known: Influencers) -> Any:
    """The same dimension of a rollup row, credited when it was rolled up."""
    if name == "influencer":
        return row.influencer or influencer_of(row.utm_source, known)
    if name == "hour":
        return row.hour or 0
    return getattr(row, name)


COLUMNS = ("kind", "campaign", "influencer", "machine")  # of every split report cell


@dataclass
class Key:
    """How a report groups: SQL over events, the same over a rollup row, and the value the
    report names a group by, from what the database returned; and over report cells, which
    dimension's cells hold it (None: none do) and its value from a cell."""

    raw: Callable[[Sql], list[ColumnElement[Any]]]
    rolled: Callable[[Any, Influencers], Any]
    named: Callable[[tuple[Any, ...]], Any] = lambda values: values[0]
    dimension: str | None = None
    cell: Callable[[Any], Any] = lambda row: None
    months: bool = True  # whether a whole month's cells will do for its days


def cell_value(row: Any, name: str) -> Any:
    if name in COLUMNS:
        return getattr(row, name)
    return int(row.key) if name == "hour" else row.key


def dimensions(*names: str) -> Key:
    """Groups by some dimensions: by their value, or by a tuple of them for several."""
    others = [name for name in names if name not in COLUMNS]
    dimension = None
    if not others:
        dimension = ""
    elif len(others) == 1 and others[0] in (*SPLIT, *PLAIN):
        dimension = others[0]
    if len(names) == 1:
        [name] = names
        return Key(
            raw=lambda sql: [sql.column(name)],
            rolled=lambda row, k: rolled_value(row, name, k),
            dimension=dimension,
            cell=lambda row: cell_value(row, name),
        )
    return Key(
        raw=lambda sql: [sql.column(name) for name in names],
        rolled=lambda row, known: tuple(rolled_value(row, name, known) for name in names),
        named=tuple,
        dimension=dimension,
        cell=lambda row: tuple(cell_value(row, name) for name in names),
    )


@dataclass
class Cell:
    hits: int = 0
    anonymous_hits: int = 0
    value: Decimal | None = None
    exact_subjects: int = 0  # counted by the database: raw events only
    # Where report cells or rollups count: the numbers of the subjects (cells' bitmaps and raw
    # events'), and the raw pseudonyms without a number yet, which no cell or sketch holds.
    members: BitMap | None = None
    raw_subjects: set[str] = field(default_factory=set)
    sketches: list[bytes] = field(default_factory=list)
    unsketched: int = 0  # rollup rows from before sketches: their own distinct counts, summed

    @property
    def estimated(self) -> bool:
        return bool(self.sketches or self.unsketched)

    def folded(self, minimum: int) -> bool:
        """k-anonymity: it counts subjects, but fewer than `minimum`. A cell of anonymous
        hits only is about no one."""
        return 0 < self.subjects() < minimum

    def subjects(self) -> int:
        return distinct([self])

    def add(self, other: "Cell") -> None:
        """`other`'s hits and values; its subjects are merged by `distinct`, not here."""
        self.hits += other.hits
        self.anonymous_hits += other.anonymous_hits
        if other.value is not None:
            self.value = other.value + (self.value or 0)


def distinct(cells: list[Cell]) -> int:
    """The distinct subjects of several cells together, where rollups count (exact counts of
    several cells need the database: `Cells.distinct_outside`)."""
    numbers = [cell.members for cell in cells if cell.members is not None]
    if not any(cell.estimated for cell in cells):
        if not numbers:
            return sum(cell.exact_subjects for cell in cells)
        counted = len(BitMap.union(*numbers))
        return counted + len(set().union(*(cell.raw_subjects for cell in cells)))
    union = Union()
    union.add(BitMap.union(*numbers))  # a cell with sketches always has a bitmap
    for cell in cells:
        union.add(cell.raw_subjects)
        for sketch in cell.sketches:
            union.add_sketch(sketch)
    return union.estimate() + sum(cell.unsketched for cell in cells)


async def rolled_up_until(session: AsyncSession, site: str) -> dict[str, date]:
    """Per kind, the last day retention rolled up: its raw events before that are gone, and
    any left are counted in the rollup, not twice."""
    last_days = select(RollupDaily.kind, func.max(RollupDaily.day)).where(RollupDaily.site == site)
    rows = await session.execute(last_days.group_by(RollupDaily.kind))
    return {kind: as_date(day) for kind, day in rows}


async def core(session: AsyncSession, query: Select[Any]) -> Sequence[Row[Any]]:
    """Rows of columns without the ORM's loading, which costs more than the query's own
    time on the thousands of rows a report reads."""
    connection = await session.connection()
    rows: Sequence[Row[Any]] = (await connection.execute(query)).all()
    return rows


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


DAY_LONG = timedelta(days=1)


def _raw_filters(scope: Scope, sql: Sql, rolled: dict[str, date]) -> list[Any]:
    where: list[Any] = [
        Event.site == scope.site,
        Event.occurred_at >= _start(scope.first),
        Event.occurred_at < _start(scope.last + timedelta(days=1)),
    ]
    if scope.kind is not None:
        where.append(Event.kind == scope.kind)
    if scope.machine is not None:
        where.append(Event.machine == scope.machine)
    if scope.campaign is not None:
        where.append(sql.column("campaign") == scope.campaign)
    if scope.influencer is not None:
        where.append(sql.column("influencer") == scope.influencer)
    for kind, day in rolled.items():
        rolled_up = and_(Event.kind == kind, Event.occurred_at < _start(day + timedelta(days=1)))
        where.append(not_(rolled_up))
    return where


def _rollup_filters(scope: Scope, known: Influencers) -> list[Any]:
    where: list[Any] = [
        RollupDetail.site == scope.site,
        RollupDetail.day >= scope.first,
        RollupDetail.day <= scope.last,
    ]
    if scope.kind is not None:
        where.append(RollupDetail.kind == scope.kind)
    if scope.machine is not None:
        where.append(RollupDetail.machine == scope.machine)
    if scope.campaign is not None:
        where.append(RollupDetail.campaign == scope.campaign)
    if scope.influencer is not None:
        by_source = RollupDetail.influencer.is_(None) & (
            RollupDetail.utm_source == scope.influencer
        )
        credited = RollupDetail.influencer == scope.influencer
        where.append(or_(credited, by_source) if scope.influencer in known else credited)
    return where


class Cells:
    """The cells of one report, by key, and what is needed to merge some of them later."""

    def __init__(self, by_key: dict[Any, Cell], exact_outside: Callable[..., Any]) -> None:
        self.by_key = by_key
        self._exact_outside = exact_outside

    def get(self, key: Any) -> Cell:
        return self.by_key.get(key, Cell())

    async def distinct_outside(self, shown: list[Any]) -> int:
        """Distinct subjects of every cell whose key is not in `shown` (what `other` is), for
        a key of one dimension."""
        rest = [cell for key, cell in self.by_key.items() if key not in shown]
        if any(cell.estimated or cell.members is not None for cell in rest):
            return distinct(rest)
        if not rest:
            return 0
        result: int = await self._exact_outside(shown)
        return result


def _from_cells(scope: Scope, key: Key) -> bool:
    """Whether report cells hold what the report asks: a key of one dimension, and filters
    the cells of that dimension are split by."""
    if key.dimension is None or scope.kind == ALL:  # no event is of kind ALL
        return False
    filtered = scope.campaign is not None or scope.influencer is not None
    return key.dimension in SPLIT or not (filtered or scope.machine is not None)


def _ranges(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) pairs."""
    found: list[tuple[date, date]] = []
    for day in days:
        if found and found[-1][1] + timedelta(days=1) == day:
            found[-1] = (found[-1][0], day)
        else:
            found.append((day, day))
    return found


def _kinds(scope: Scope, key: Key, rolled: dict[str, date]) -> ColumnElement[bool]:
    """Which kinds' cells to read: the filter's; else for a dimension with cells of every
    kind together, those, for the periods after the last day rolled up of any kind (before
    it, rollups count the purged kinds, and each other kind its own cells)."""
    if scope.kind is not None:
        return ReportCell.kind == scope.kind
    if key.dimension not in PLAIN:
        return ReportCell.kind != ALL
    horizon = max(rolled.values(), default=None)
    if horizon is None:
        return ReportCell.kind == ALL
    return or_(
        and_(ReportCell.period > horizon, ReportCell.kind == ALL),
        and_(ReportCell.period <= horizon, ReportCell.kind != ALL),
    )


async def _read_report_cells(
    session: AsyncSession, scope: Scope, key: Key, by_key: dict[Any, Cell], rolled: dict[str, date]
) -> list[tuple[date, date]]:
    """Adds the report cells of the days built since their last write (whole months' where
    they do); returns the other days, for raw events to count."""
    site = scope.site
    dirty = {
        as_date(day)
        for day in await session.scalars(
            select(ReportDirty.day).where(
                ReportDirty.site == site, ReportDirty.day.between(scope.first, scope.last)
            )
        )
    }
    periods = await session.execute(
        select(ReportCell.grain, ReportCell.period)
        .where(
            ReportCell.site == site,
            ReportCell.dimension == "",
            ReportCell.period.between(month_of(scope.first), scope.last),
        )
        .distinct()
    )
    built_days, months = set(), set()
    for grain, value in periods:
        period = as_date(value)
        if grain == DAY and scope.first <= period <= scope.last and period not in dirty:
            built_days.add(period)
        elif grain == MONTH and key.months and scope.first <= period:
            end = next_month(period)
            if end - timedelta(days=1) <= scope.last and not any(period <= d < end for d in dirty):
                months.add(period)
    days = sorted(day for day in built_days if month_of(day) not in months)
    where = [
        ReportCell.site == site,
        ReportCell.dimension == key.dimension,
        _kinds(scope, key, rolled),
    ]
    if key.dimension in SPLIT:
        for name in ("campaign", "influencer", "machine"):
            if getattr(scope, name) is not None:
                where.append(getattr(ReportCell, name) == getattr(scope, name))
    periods_read = or_(
        and_(ReportCell.grain == MONTH, ReportCell.period.in_(sorted(months))),
        and_(ReportCell.grain == DAY, ReportCell.period.in_(days)),
    )
    columns = (ReportCell.period, ReportCell.key, *(getattr(ReportCell, c) for c in COLUMNS))
    figures = (ReportCell.hits, ReportCell.anonymous_hits, ReportCell.value, ReportCell.members)
    members: dict[Any, list[BitMap]] = {}
    if months or days:
        found_cells = select(*columns, *figures).where(*where, periods_read)
        for row in await core(session, found_cells):
            found = key.cell(row)
            by_key.setdefault(found, Cell()).add(Cell(row.hits, row.anonymous_hits, row.value))
            members.setdefault(found, []).append(BitMap.deserialize(row.members))
    for found, bitmaps in members.items():
        by_key[found].members = BitMap.union(*bitmaps)
    counted = set(days)
    for month in months:
        counted.update(month + timedelta(days=n) for n in range((next_month(month) - month).days))
    every = [scope.first + timedelta(days=n) for n in range((scope.last - scope.first).days + 1)]
    return _ranges([day for day in every if day not in counted])


async def cells(session: AsyncSession, scope: Scope, key: Key) -> Cells:
    known = await influencers(session, scope.site)
    sql = Sql(session, known, scope.attribution_days)
    by_key: dict[Any, Cell] = {}
    rollups = await session.execute(select(RollupDetail).where(*_rollup_filters(scope, known)))
    for (rolled,) in rollups:
        cell = by_key.setdefault(key.rolled(rolled, known), Cell())
        cell.add(Cell(rolled.hits, rolled.anonymous_hits or 0, rolled.value))
        if rolled.sketch is not None:
            cell.sketches.append(rolled.sketch)
        else:
            cell.unsketched += rolled.subjects
    raw_keys = key.raw(sql)
    rolled_until = await rolled_up_until(session, scope.site)
    where = _raw_filters(scope, sql, rolled_until)
    from_cells = _from_cells(scope, key)
    raw = True
    if from_cells:
        raw_days = await _read_report_cells(session, scope, key, by_key, rolled_until)
        raw = bool(raw_days)
        spans = [
            and_(Event.occurred_at >= _start(lo), Event.occurred_at < _start(hi) + DAY_LONG)
            for lo, hi in raw_days
        ]
        if spans:
            where.append(or_(*spans))
    figures = (
        func.count(),
        func.count(Event.subject),
        func.count(Event.subject.distinct()),
        func.sum(Event.value),
    )
    grouped = select(*raw_keys, *figures).where(*where).group_by(*raw_keys)
    as_stored: dict[Any, Any] = {}
    width = len(raw_keys)
    for row in await core(session, grouped) if raw else []:
        values, (hits, with_subject, subjects, total) = tuple(row[:width]), row[width:]
        as_stored[key.named(values)] = values[0]
        cell = by_key.setdefault(key.named(values), Cell())
        cell.add(Cell(hits, hits - with_subject, total))
        cell.exact_subjects = subjects
    if from_cells or any(cell.estimated for cell in by_key.values()):
        # Cells' bitmaps or rollups' sketches count too: the raw subjects join them by their
        # numbers; those without one (new since the last build) are in neither.
        for cell in by_key.values():
            cell.members = BitMap() if cell.members is None else cell.members
        pairs = (
            select(*raw_keys, Event.subject, SubjectNumber.number)
            .outerjoin(
                SubjectNumber,
                and_(SubjectNumber.site == Event.site, SubjectNumber.subject == Event.subject),
            )
            .where(*where, Event.subject.is_not(None))
            .distinct()
        )
        for row in await core(session, pairs) if raw else []:
            cell = by_key.setdefault(key.named(tuple(row[:width])), Cell(members=BitMap()))
            subject, number = row[width:]
            if number is None:
                cell.raw_subjects.add(subject)
            else:
                assert cell.members is not None
                cell.members.add(number)

    async def exact_outside(shown: list[Any]) -> int:
        [raw_key] = raw_keys
        stored = [as_stored[value] for value in shown if value in as_stored]
        named = [value for value in stored if value is not None]
        if None in stored:
            outside = and_(raw_key.is_not(None), raw_key.not_in(named))
        else:
            outside = or_(raw_key.is_(None), raw_key.not_in(named))
        query = select(func.count(Event.subject.distinct())).where(*where, outside)
        return int(await session.scalar(query) or 0)

    return Cells(by_key, exact_outside)
