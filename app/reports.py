"""Reports (SPEC §4.8), read-only. Days whose raw events retention purged are read from the
rollups, the rest from the events themselves, so a purge changes no figure.

`subjects` counts distinct subjects per day, kind and campaign, summed over the period: the
finest figure that anonymous daily rollups can keep, computed the same way from raw events."""

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import require_key
from app.context import Context
from app.models import Event, RollupDaily
from app.problems import Problem
from app.scrub import is_storable
from app.sites import site_or_404
from retention.jobs import day_of

MAX_DAYS = 3660
# Days a report may name: the day after the last one and its time zone arithmetic must exist.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


class Summary(msgspec.Struct):
    hits: int
    subjects: int
    by_kind: dict[str, int]


def _day(name: str, value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise Problem(
            422, f"{name} must be an ISO date from {FIRST_DAY} to {LAST_DAY}, e.g. 2026-07-01"
        )
    return day


def _filter(name: str, value: str | None) -> str | None:
    if value is not None and not is_storable(value):
        raise Problem(422, f"{name} must not contain control characters")
    return value


def _period(start: str, end: str) -> tuple[date, date]:
    first, last = _day("from", start), _day("to", end)
    if last < first or (last - first).days > MAX_DAYS:
        raise Problem(422, f"to must not be before from, nor more than {MAX_DAYS} days after")
    return first, last


async def summary_of(
    session: AsyncSession,
    site: str,
    first: date,
    last: date,
    kind: str | None = None,
    campaign: str | None = None,
) -> Summary:
    rolled = select(RollupDaily.kind, RollupDaily.hits, RollupDaily.subjects).where(
        RollupDaily.site == site, RollupDaily.day >= first, RollupDaily.day <= last
    )
    if kind is not None:
        rolled = rolled.where(RollupDaily.kind == kind)
    if campaign is not None:
        rolled = rolled.where(RollupDaily.campaign == campaign)
    day = day_of(session, Event.occurred_at)
    # Raw events of a day already rolled up (a purge under way) are counted there, not here.
    rolled_up = exists().where(
        and_(RollupDaily.site == Event.site, RollupDaily.day == day, RollupDaily.kind == Event.kind)
    )
    raw = (
        select(Event.kind, func.count(), func.count(Event.subject.distinct()))
        .where(
            Event.site == site,
            Event.occurred_at >= datetime.combine(first, time(), tzinfo=UTC),
            Event.occurred_at < datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC),
            ~rolled_up,
        )
        .group_by(day, Event.kind, Event.campaign)
    )
    if kind is not None:
        raw = raw.where(Event.kind == kind)
    if campaign is not None:
        raw = raw.where(Event.campaign == campaign)
    hits, subjects, by_kind = 0, 0, dict[str, int]()
    for row_kind, row_hits, row_subjects in [
        *await session.execute(rolled),
        *await session.execute(raw),
    ]:
        hits += row_hits
        subjects += row_subjects
        by_kind[row_kind] = by_kind.get(row_kind, 0) + row_hits
    return Summary(hits=hits, subjects=subjects, by_kind=dict(sorted(by_kind.items())))


def _csv(rows: list[list[object]]) -> Response[str]:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return Response(out.getvalue(), media_type="text/csv")


@get("/v1/sites/{site:str}/reports/summary", summary="Hits, subjects and hits by kind")
async def summary(
    request: Request[Any, Any, State],
    site: FromPath[str],
    ctx: NamedDependency[Context],
    start: Annotated[str, QueryParameter(name="from", schema_extra={"format": "date"})],
    end: Annotated[str, QueryParameter(name="to", schema_extra={"format": "date"})],
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
) -> Response[Any]:
    first, last = _period(start, end)
    kind, campaign = _filter("kind", kind), _filter("campaign", campaign)
    async with ctx.sessions() as session:
        await site_or_404(session, site)
        await require_key(request, session, ctx.keyring, site, "read")
        result = await summary_of(session, site, first, last, kind, campaign)
    if "text/csv" in request.headers.get("accept", ""):
        rows: list[list[object]] = [["kind", "hits"], *([k, v] for k, v in result.by_kind.items())]
        return _csv([*rows, ["total", result.hits], ["subjects", result.subjects]])
    return Response(result)
