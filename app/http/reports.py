"""The reports API (SPEC §4.8): parameters checked, the report asked, JSON or CSV answered.
A bad parameter is a 422 whose detail begins with the parameter's name."""

import csv
import io
from collections.abc import Iterable
from datetime import date
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.tables import Site, is_storable
from app.http.context import Context
from app.http.guards import requires
from app.http.problems import Problem
from app.reports import traffic
from app.reports.cells import Scope

MAX_DAYS = 3660
MAX_HOUR_DAYS = 3 * 366  # hourly points: at most about three years of them
MAX_LIMIT = 1000
# Days a report may name: the day after the last one and its time zone arithmetic must exist.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)
From = Annotated[str, QueryParameter(name="from", schema_extra={"format": "date"})]
To = Annotated[str, QueryParameter(name="to", schema_extra={"format": "date"})]


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


def _scope(
    site: str, start: str, end: str, kind: str | None, campaign: str | None, influencer: str | None
) -> Scope:
    first, last = _day("from", start), _day("to", end)
    if last < first or (last - first).days > MAX_DAYS:
        raise Problem(422, f"to must not be before from, nor more than {MAX_DAYS} days after")
    return Scope(
        site,
        first,
        last,
        _filter("kind", kind),
        _filter("campaign", campaign),
        _filter("influencer", influencer),
    )


def _wants_csv(request: Request[Any, Any, State]) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def _csv(header: list[str], rows: Iterable[Iterable[object]]) -> Response[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv")


def _min_subjects(ctx: Context, site_row: Site) -> int:
    return ctx.policies[site_row.policy].file.reports.min_subjects


@get(
    "/v1/sites/{site:str}/reports/summary",
    dependencies=requires("read"),
    summary="Hits, distinct subjects, hits by kind, conversions and revenue",
)
async def summary(
    request: Request[Any, Any, State],
    site: FromPath[str],
    site_row: NamedDependency[Site],  # the key's check: see app/http/guards.py
    session: NamedDependency[AsyncSession],
    start: From,
    end: To,
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
    influencer: FromQuery[str | None] = None,
) -> Response[Any]:
    scope = _scope(site, start, end, kind, campaign, influencer)
    result = await traffic.summary(session, scope)
    if _wants_csv(request):
        rows: list[list[Any]] = [
            ["hits", "", result.hits],
            ["subjects", "", result.subjects],
            ["subjects_estimated", "", str(result.subjects_estimated).lower()],
            ["anonymous_hits", "", result.anonymous_hits],
            *(["by_kind", k, v] for k, v in result.by_kind.items()),
            ["conversions", "", result.conversions],
            *(["revenue", c, v] for c, v in result.revenue.items()),
        ]
        return _csv(["figure", "key", "value"], rows)
    return Response(result)


@get(
    "/v1/sites/{site:str}/reports/breakdown",
    dependencies=requires("read"),
    summary="Hits and distinct subjects by one dimension, the rest in `other`",
)
async def breakdown(
    request: Request[Any, Any, State],
    site: FromPath[str],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    ctx: NamedDependency[Context],
    start: From,
    end: To,
    by: FromQuery[str],
    limit: FromQuery[str] = "10",
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
    influencer: FromQuery[str | None] = None,
) -> Response[Any]:
    scope = _scope(site, start, end, kind, campaign, influencer)
    if by not in traffic.BY:
        raise Problem(422, f"by must be one of {', '.join(traffic.BY)}")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise Problem(422, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    result = await traffic.breakdown(session, scope, by, int(limit), _min_subjects(ctx, site_row))
    if _wants_csv(request):
        other = result.other
        rows = [[r.key, r.hits, r.subjects, str(r.subjects_estimated).lower()] for r in result.rows]
        tail = ["(other)", other.hits, other.subjects, str(other.subjects_estimated).lower()]
        return _csv([by, "hits", "subjects", "subjects_estimated"], [*rows, tail])
    return Response(result)


@get(
    "/v1/sites/{site:str}/reports/timeseries",
    dependencies=requires("read"),
    summary="Hits and distinct subjects per hour, day, week or month; empty ones as zeros",
)
async def timeseries(
    request: Request[Any, Any, State],
    site: FromPath[str],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    ctx: NamedDependency[Context],
    start: From,
    end: To,
    interval: FromQuery[str] = "day",
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
    influencer: FromQuery[str | None] = None,
) -> Response[Any]:
    scope = _scope(site, start, end, kind, campaign, influencer)
    if interval not in traffic.INTERVALS:
        raise Problem(422, f"interval must be one of {', '.join(traffic.INTERVALS)}")
    if interval == "hour" and (scope.last - scope.first).days >= MAX_HOUR_DAYS:
        raise Problem(422, f"interval hour covers at most {MAX_HOUR_DAYS} days; take day")
    result = await traffic.timeseries(session, scope, interval, _min_subjects(ctx, site_row))
    if _wants_csv(request):
        other = result.other
        rows = [[p.t, p.hits, p.subjects, str(p.subjects_estimated).lower()] for p in result.points]
        tail = ["(other)", other.hits, other.subjects, str(other.subjects_estimated).lower()]
        return _csv(["t", "hits", "subjects", "subjects_estimated"], [*rows, tail])
    return Response(result)
