"""The reports API (SPEC §4.8): parameters checked, the query asked, JSON or CSV answered."""

import csv
import io
from datetime import date
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.tables import Site, is_storable
from app.http.guards import requires
from app.http.problems import Problem
from app.reports.summary import summary_of

MAX_DAYS = 3660
# Days a report may name: the day after the last one and its time zone arithmetic must exist.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


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


def _csv(rows: list[list[object]]) -> Response[str]:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return Response(out.getvalue(), media_type="text/csv")


@get(
    "/v1/sites/{site:str}/reports/summary",
    dependencies=requires("read"),
    summary="Hits, subjects and hits by kind",
)
async def summary(
    request: Request[Any, Any, State],
    site: FromPath[str],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    start: Annotated[str, QueryParameter(name="from", schema_extra={"format": "date"})],
    end: Annotated[str, QueryParameter(name="to", schema_extra={"format": "date"})],
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
) -> Response[Any]:
    first, last = _period(start, end)
    kind, campaign = _filter("kind", kind), _filter("campaign", campaign)
    result = await summary_of(session, site, first, last, kind, campaign)
    if "text/csv" in request.headers.get("accept", ""):
        rows: list[list[object]] = [["kind", "hits"], *([k, v] for k, v in result.by_kind.items())]
        return _csv([*rows, ["total", result.hits], ["subjects", result.subjects]])
    return Response(result)
