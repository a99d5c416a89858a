"""The summary, breakdown and timeseries reports (SPEC §4.8), made of the cells of cells.py.

k-anonymity: a cell that counts subjects, but fewer than the policy's `reports.min_subjects`,
is folded into `other`; so are breakdown rows past the limit. A cell of anonymous hits only
(no subject at all) is about no one and is shown."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import msgspec
from sqlalchemy import ColumnElement, func
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.attribution import Influencers
from app.base.db import day_of
from app.base.tables import Event
from app.reports.cells import Cell, Cells, Key, Scope, Sql, cells, dimensions

BY = (
    "page",
    "campaign",
    "influencer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "referrer",
    "device",
    "browser",
    "os",
    "kind",
    "jurisdiction",
)
Interval = Literal["hour", "day", "week", "month"]
INTERVALS: tuple[Interval, ...] = ("hour", "day", "week", "month")
NO_CURRENCY = "XXX"  # ISO 4217's code for "no currency": values sent without one


class Figures(msgspec.Struct):
    hits: int
    subjects: int
    subjects_estimated: bool


class Summary(msgspec.Struct):
    hits: int
    subjects: int
    subjects_estimated: bool
    anonymous_hits: int
    by_kind: dict[str, int]
    conversions: int
    revenue: dict[str, str]  # per ISO 4217 currency, a decimal string; refunds subtract
    # Fewer subjects than reports.min_subjects: every figure is withheld (0 or empty).
    suppressed: bool = False


class Row(msgspec.Struct):
    key: str | None
    hits: int
    subjects: int
    subjects_estimated: bool


class Breakdown(msgspec.Struct):
    by: str
    rows: list[Row]
    other: Figures


class Point(msgspec.Struct):
    t: str
    hits: int
    subjects: int
    subjects_estimated: bool


class Timeseries(msgspec.Struct):
    interval: str
    points: list[Point]
    other: Figures


def amount(value: Decimal) -> str:
    """A sum of money as text: at least two decimals, and no trailing zeros past them."""
    cents = value.quantize(Decimal("0.01"))
    return str(cents) if cents == value else str(value.normalize())


def revenue_of(by_currency: dict[Any, Cell]) -> dict[str, str]:
    """The sums of values per currency, of cells keyed by currency."""
    return {
        currency or NO_CURRENCY: amount(cell.value)
        for currency, cell in sorted(by_currency.items(), key=lambda kv: kv[0] or "")
        if cell.value is not None
    }


async def summary(session: AsyncSession, scope: Scope) -> Summary:
    """Kinds of fewer subjects than min_subjects are counted under "other"; a summary of
    fewer subjects than that withholds every figure."""
    by_kind = await cells(session, scope, dimensions("kind"))
    subjects = await by_kind.distinct_outside([])
    estimated = any(cell.estimated for cell in by_kind.by_key.values())
    if 0 < subjects < scope.min_subjects:
        return Summary(0, 0, estimated, 0, {}, 0, {}, suppressed=True)
    total = Cell()
    kinds: dict[str, int] = {}
    for kind, cell in sorted(by_kind.by_key.items()):
        total.add(cell)
        shown = "other" if cell.folded(scope.min_subjects) else kind
        kinds[shown] = kinds.get(shown, 0) + cell.hits
    revenue: dict[str, str] = {}
    if scope.kind in (None, "conversion"):
        sold = msgspec.structs.replace(scope, kind="conversion")
        revenue = revenue_of((await cells(session, sold, dimensions("currency"))).by_key)
    return Summary(
        hits=total.hits,
        subjects=subjects,
        subjects_estimated=estimated,
        anonymous_hits=total.anonymous_hits,
        by_kind=kinds,
        conversions=kinds.get("conversion", 0),
        revenue=revenue if "conversion" in kinds else {},
    )


async def _other(found: Cells, shown: list[Any]) -> Figures:
    rest = Cell()
    estimated = False
    for key, cell in found.by_key.items():
        if key not in shown:
            rest.add(cell)
            estimated = estimated or cell.estimated
    return Figures(rest.hits, await found.distinct_outside(shown), estimated)


async def breakdown(session: AsyncSession, scope: Scope, by: str, limit: int) -> Breakdown:
    found = await cells(session, scope, dimensions(by))
    ranked = sorted(found.by_key.items(), key=lambda kv: (-kv[1].hits, kv[0] is None, kv[0] or ""))
    rows: list[Row] = []
    for key, cell in ranked:
        if len(rows) < limit and not cell.folded(scope.min_subjects):
            rows.append(Row(key, cell.hits, cell.subjects(), cell.estimated))
    return Breakdown(by=by, rows=rows, other=await _other(found, [row.key for row in rows]))


def _bucket_key(session: AsyncSession, interval: Interval) -> Key:
    """Buckets start at whole hours, days, Mondays or first days of months, in UTC."""
    postgresql = session.get_bind().dialect.name == "postgresql"

    def raw(_sql: Sql) -> list[ColumnElement[Any]]:
        if interval == "day":
            return [day_of(session, Event.occurred_at)]
        if postgresql:
            return [func.date_trunc(interval, func.timezone("UTC", Event.occurred_at))]
        return [
            {
                "hour": func.strftime("%Y-%m-%dT%H:00:00", Event.occurred_at),
                "week": func.date(Event.occurred_at, "weekday 0", "-6 days"),
                "month": func.strftime("%Y-%m-01", Event.occurred_at),
            }[interval]
        ]

    def rolled(row: Any, _known: Influencers) -> Any:
        return bucket_of(
            datetime.combine(row.day, datetime.min.time()).replace(hour=row.hour or 0), interval
        )

    def named(values: tuple[Any, ...]) -> Any:
        [value] = values
        moment = value if isinstance(value, date) else datetime.fromisoformat(str(value))
        if not isinstance(moment, datetime):
            moment = datetime.combine(moment, datetime.min.time())
        return bucket_of(moment, interval)

    def cell(row: Any) -> Any:
        hour = int(row.key) if interval == "hour" else 0
        return bucket_of(
            datetime.combine(row.period, datetime.min.time()).replace(hour=hour), interval
        )

    # Hours from the cells by hour of the day; a bucket needs its day's cells, not its month's.
    dimension = "hour" if interval == "hour" else ""
    return Key(raw=raw, rolled=rolled, named=named, dimension=dimension, cell=cell, months=False)


def bucket_of(moment: datetime, interval: Interval) -> datetime:
    """The start of the bucket a naive UTC moment falls in."""
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def buckets(first: date, last: date, interval: Interval) -> list[datetime]:
    start = bucket_of(datetime.combine(first, datetime.min.time()), interval)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time())
    found = []
    while start < end:
        found.append(start)
        if interval == "hour":
            start += timedelta(hours=1)
        elif interval == "day":
            start += timedelta(days=1)
        elif interval == "week":
            start += timedelta(days=7)
        else:
            start = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    return found


def _name_of(start: datetime, interval: Interval) -> str:
    if interval == "hour":
        return start.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return start.date().isoformat()


async def timeseries(session: AsyncSession, scope: Scope, interval: Interval) -> Timeseries:
    found = await cells(session, scope, _bucket_key(session, interval))
    points, shown = [], []
    for start in buckets(scope.first, scope.last, interval):
        cell = found.by_key.get(start, Cell())
        if cell.folded(scope.min_subjects):
            cell = Cell()
        else:
            shown.append(start)
        points.append(Point(_name_of(start, interval), cell.hits, cell.subjects(), cell.estimated))
    return Timeseries(interval=interval, points=points, other=await _other(found, shown))
