"""Hits and distinct subjects grouped by one key, over a site's days, from raw events where
they still exist and from the rollups (retention.jobs) where they were purged. Every report is
made of these cells, so every report agrees with every other on the same filters.

A distinct count is exact where only raw events counted: the database counts it. Where a
rollup counted too, it is the merge of the rollups' sketches with the raw subjects, and says
that it is an estimate."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, and_, func, not_, or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.sketches import Union
from app.base.tables import Campaign, Event, Link, RollupDaily, RollupDetail


class Scope(msgspec.Struct, frozen=True):
    """What a report covers: one site's days, `first` to `last` inclusive (UTC), filtered."""

    site: str
    first: date
    last: date
    kind: str | None = None
    campaign: str | None = None
    influencer: str | None = None


@dataclass
class Cell:
    hits: int = 0
    anonymous_hits: int = 0
    value: Decimal | None = None
    exact_subjects: int = 0  # counted by the database: raw events only
    raw_subjects: set[str] = field(default_factory=set)  # where rollups count too
    sketches: list[bytes] = field(default_factory=list)
    unsketched: int = 0  # rollup rows from before sketches: their own distinct counts, summed

    @property
    def estimated(self) -> bool:
        return bool(self.sketches or self.unsketched)

    def subjects(self) -> int:
        return distinct([self])

    def add(self, other: "Cell") -> None:
        """`other`'s hits and values; its subjects are merged by `distinct`, not here."""
        self.hits += other.hits
        self.anonymous_hits += other.anonymous_hits
        if other.value is not None:
            self.value = other.value + (self.value or 0)


def distinct(cells: list[Cell]) -> int:
    """The distinct subjects of several cells together: exact ones need the database (see
    `Cells.distinct_outside`); this merges what the rollups and fetched subjects hold."""
    if not any(cell.estimated for cell in cells):
        return sum(cell.exact_subjects for cell in cells)
    union = Union()
    for cell in cells:
        union.add_subjects(cell.raw_subjects)
        for sketch in cell.sketches:
            union.add_sketch(sketch)
    return union.estimate() + sum(cell.unsketched for cell in cells)


@dataclass
class Key:
    """How a report groups: an SQL expression over events, and the same over a rollup row."""

    raw: Callable[[AsyncSession, "Influencers"], ColumnElement[Any]]
    rolled: Callable[[Any, "Influencers"], Any]
    # the database's value of `raw` as the report names it (dates come back as text on SQLite)
    named: Callable[[Any], Any] = lambda value: value


Influencers = frozenset[str]


async def influencers(session: AsyncSession, site: str) -> Influencers:
    """The influencers the site named on its campaigns and links. A hit's influencer is its
    `utm_source` when that is one of them: the tracked link's redirect puts it there."""
    named = union(
        select(Campaign.influencer).where(Campaign.site == site),
        select(Link.influencer).where(Link.site == site),
    )
    return frozenset(value for value in await session.scalars(named) if value)


def influencer_of(utm_source: str | None, known: Influencers) -> str | None:
    return utm_source if utm_source in known else None


async def _rolled_up_until(session: AsyncSession, site: str) -> dict[str, date]:
    """Per kind, the last day retention rolled up: its raw events before that are gone, and
    any left are counted in the rollup, not twice."""
    last_days = select(RollupDaily.kind, func.max(RollupDaily.day)).where(RollupDaily.site == site)
    rows = await session.execute(last_days.group_by(RollupDaily.kind))
    return {kind: _as_date(day) for kind, day in rows}


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _filters(table: type[Event | RollupDetail], scope: Scope, known: Influencers) -> list[Any]:
    """The scope's filters, on events or on rollup rows alike."""
    where: list[Any] = [table.site == scope.site]
    if scope.kind is not None:
        where.append(table.kind == scope.kind)
    if scope.campaign is not None:
        where.append(table.campaign == scope.campaign)
    if scope.influencer is not None:
        known_one = scope.influencer in known
        where.append(and_(table.utm_source == scope.influencer, known_one))  # type: ignore[arg-type]
    return where


def _raw_filters(scope: Scope, rolled: dict[str, date], known: Influencers) -> list[Any]:
    where = [
        *_filters(Event, scope, known),
        Event.occurred_at >= _start(scope.first),
        Event.occurred_at < _start(scope.last + timedelta(days=1)),
    ]
    for kind, day in rolled.items():
        rolled_up = and_(Event.kind == kind, Event.occurred_at < _start(day + timedelta(days=1)))
        where.append(not_(rolled_up))
    return where


class Cells:
    """The cells of one report, by key, and what is needed to merge some of them later."""

    def __init__(self, by_key: dict[Any, Cell], exact_outside: Callable[..., Any]) -> None:
        self.by_key = by_key
        self._exact_outside = exact_outside

    async def distinct_outside(self, shown: list[Any]) -> int:
        """Distinct subjects of every cell whose key is not in `shown` (what `other` is)."""
        rest = [cell for key, cell in self.by_key.items() if key not in shown]
        if any(cell.estimated for cell in rest):
            return distinct(rest)
        if not rest:
            return 0
        result: int = await self._exact_outside(shown)
        return result


async def cells(session: AsyncSession, scope: Scope, key: Key) -> Cells:
    known = await influencers(session, scope.site)
    rolled = await _rolled_up_until(session, scope.site)
    by_key: dict[Any, Cell] = {}
    in_period = (RollupDetail.day >= scope.first, RollupDetail.day <= scope.last)
    rollups = await session.execute(
        select(RollupDetail).where(*_filters(RollupDetail, scope, known), *in_period)
    )
    for (row,) in rollups:
        cell = by_key.setdefault(key.rolled(row, known), Cell())
        cell.add(Cell(row.hits, row.anonymous_hits or 0, row.value))
        if row.sketch is not None:
            cell.sketches.append(row.sketch)
        else:
            cell.unsketched += row.subjects
    raw_key = key.raw(session, known)
    where = _raw_filters(scope, rolled, known)
    grouped = select(
        raw_key,
        func.count(),
        func.count(Event.subject),
        func.count(Event.subject.distinct()),
        func.sum(Event.value),
    )
    as_stored: dict[Any, Any] = {}
    for value, hits, with_subject, subjects, total in await session.execute(
        grouped.where(*where).group_by(raw_key)
    ):
        as_stored[key.named(value)] = value
        cell = by_key.setdefault(key.named(value), Cell())
        cell.add(Cell(hits, hits - with_subject, total))
        cell.exact_subjects = subjects
    if any(cell.estimated for cell in by_key.values()):
        # Rollups count too: the raw subjects are merged with their sketches.
        pairs = select(raw_key, Event.subject).where(*where, Event.subject.is_not(None))
        for value, subject in await session.execute(pairs.distinct()):
            by_key[key.named(value)].raw_subjects.add(subject)

    async def exact_outside(shown: list[Any]) -> int:
        stored = [as_stored[value] for value in shown if value in as_stored]
        named = [value for value in stored if value is not None]
        if None in stored:
            outside = and_(raw_key.is_not(None), raw_key.not_in(named))
        else:
            outside = or_(raw_key.is_(None), raw_key.not_in(named))
        query = select(func.count(Event.subject.distinct())).where(*where, outside)
        return int(await session.scalar(query) or 0)

    return Cells(by_key, exact_outside)
