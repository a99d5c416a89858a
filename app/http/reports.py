"""The reports API (SPEC §4.8): parameters checked, the report asked, JSON or CSV answered.
A bad parameter is a 422 whose detail begins with the parameter's name."""

import csv
import io
from collections.abc import Iterable
from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.tables import Site, is_storable
from app.http.audiences import members_of, site_audiences
from app.http.context import Context
from app.http.guards import requires
from app.http.problems import Problem
from app.reports import marketing, traffic
from app.reports.cells import Scope
from app.reports.consent_rates import consent_rates as rates_of

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


def _path(name: str, value: str) -> str:
    if not is_storable(value):
        raise Problem(404, f"unknown {name}")
    return value


def _filter(name: str, value: str | None) -> str | None:
    if value is not None and not is_storable(value):
        raise Problem(422, f"{name} must not contain control characters")
    return value


async def _scope(
    site_row: NamedDependency[Site],
    ctx: NamedDependency[Context],
    start: From,
    end: To,
    kind: FromQuery[str | None] = None,
    campaign: FromQuery[str | None] = None,
    influencer: FromQuery[str | None] = None,
) -> Scope:
    """The parameters every report takes (SPEC §4.8), checked."""
    reports = ctx.policies[site_row.policy].file.reports
    first, last = _day("from", start), _day("to", end)
    if last < first or (last - first).days > MAX_DAYS:
        raise Problem(422, f"to must not be before from, nor more than {MAX_DAYS} days after")
    return Scope(
        site_row.slug,
        first,
        last,
        _filter("kind", kind),
        _filter("campaign", campaign),
        _filter("influencer", influencer),
        attribution_days=reports.attribution_window_days,
        min_subjects=reports.min_subjects,
    )


def _wants_csv(request: Request[Any, Any, State]) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def _cell(value: object) -> object:
    """A stranger's text (a page, a referrer, a utm value) that a spreadsheet would take for a
    formula is quoted as text (OWASP's advice on CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(header: list[str], rows: Iterable[Iterable[object]]) -> Response[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return Response(out.getvalue(), media_type="text/csv")


def _figures_csv(
    first: str, rows: Iterable[tuple[Any, Any]], other: traffic.Figures
) -> Response[str]:
    """One line per row, then `other`: its key, hits, subjects and whether they are estimated."""
    lines = [
        [key, one.hits, one.subjects, str(one.subjects_estimated).lower()]
        for key, one in [*rows, ("(other)", other)]
    ]
    return _csv([first, "hits", "subjects", "subjects_estimated"], lines)


# The key's check (app/http/guards.py) and the report's scope, for every report.
REPORT = {**requires("read"), "report_scope": Provide(_scope)}


@get(
    "/v1/sites/{site:str}/reports/summary",
    dependencies=REPORT,
    summary="Hits, distinct subjects, hits by kind, conversions and revenue",
)
async def summary(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],  # the key's check: see app/http/guards.py
    session: NamedDependency[AsyncSession],
    report_scope: NamedDependency[Scope],
) -> Response[Any]:
    result = await traffic.summary(session, report_scope)
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
    dependencies=REPORT,
    summary="Hits and distinct subjects by one dimension, the rest in `other`",
)
async def breakdown(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    report_scope: NamedDependency[Scope],
    by: FromQuery[str],
    limit: FromQuery[str] = "10",
) -> Response[Any]:
    if by not in traffic.BY:
        raise Problem(422, f"by must be one of {', '.join(traffic.BY)}")
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if not (limit.isascii() and limit.isdecimal()) or not 1 <= int(limit) <= MAX_LIMIT:
        raise Problem(422, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    result = await traffic.breakdown(session, report_scope, by, int(limit))
    if _wants_csv(request):
        return _figures_csv(by, ((row.key, row) for row in result.rows), result.other)
    return Response(result)


@get(
    "/v1/sites/{site:str}/reports/timeseries",
    dependencies=REPORT,
    summary="Hits and distinct subjects per hour, day, week or month; empty ones as zeros",
)
async def timeseries(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    report_scope: NamedDependency[Scope],
    interval: FromQuery[str] = "day",
) -> Response[Any]:
    if interval not in traffic.INTERVALS:
        raise Problem(422, f"interval must be one of {', '.join(traffic.INTERVALS)}")
    if interval == "hour" and (report_scope.last - report_scope.first).days >= MAX_HOUR_DAYS:
        raise Problem(422, f"interval hour covers at most {MAX_HOUR_DAYS} days; take day")
    result = await traffic.timeseries(session, report_scope, interval)
    if _wants_csv(request):
        return _figures_csv("t", ((point.t, point) for point in result.points), result.other)
    return Response(result)


@get(
    "/v1/sites/{site:str}/reports/campaigns/{campaign_id:str}",
    dependencies=REPORT,
    summary="A campaign's sends, opens, clicks, conversions and revenue, with rates",
)
async def campaign(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],  # the key's check: see app/http/guards.py
    session: NamedDependency[AsyncSession],
    report_scope: NamedDependency[Scope],
    campaign_id: FromPath[str],
) -> Response[Any]:
    # The path names the campaign: a `campaign` filter in the query has nothing to add.
    wanted = _path("campaign", campaign_id)
    result = await marketing.campaign_report(session, report_scope, wanted)
    if _wants_csv(request):
        figures = msgspec.structs.asdict(result)
        hours = figures.pop("opens_by_hour")
        revenue = figures.pop("revenue")
        rows: list[list[Any]] = [[name, "", value] for name, value in figures.items()]
        rows += [["opens_by_hour", hour, opens] for hour, opens in enumerate(hours)]
        rows += [["revenue", currency, value] for currency, value in revenue.items()]
        return _csv(["figure", "key", "value"], rows)
    return Response(result)


@get(
    "/v1/sites/{site:str}/reports/influencers",
    dependencies=REPORT,
    summary="Per influencer: clicks, visits, conversions and revenue, with rates",
)
async def influencers(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    report_scope: NamedDependency[Scope],
) -> Response[Any]:
    result = await marketing.influencer_report(session, report_scope)
    if _wants_csv(request):
        header = ["influencer", "clicks", "visits", "conversions", "visit_rate", "conversion_rate"]
        lines = [
            [
                row.influencer,
                row.clicks,
                row.visits,
                row.conversions,
                row.visit_rate,
                row.conversion_rate,
            ]
            + [f"{value} {currency}" for currency, value in row.revenue.items()]
            for row in [*result.rows, *([result.other] if result.other else [])]
        ]
        return _csv([*header, "revenue"], lines)
    return Response(result)


class AudienceSize(msgspec.Struct):
    id: str
    name: str
    # Each count withheld (null) when it counts fewer people than reports.min_subjects.
    members: int | None
    excluded: dict[str, int | None]  # no_consent, gpc, opt_out


class AudienceSizes(msgspec.Struct):
    audiences: list[AudienceSize]


@get(
    "/v1/sites/{site:str}/reports/audiences",
    dependencies=requires("read"),
    summary="How many people each audience holds now, and how many it leaves out, by reason",
    description="Sizes only: the members themselves are for an admin key.",
)
async def audience_sizes(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    ctx: NamedDependency[Context],
) -> Response[Any]:
    least = ctx.policies[site_row.policy].file.reports.min_subjects

    def shown(count: int) -> int | None:
        return None if 0 < count < least else count

    sizes = []
    for audience in await site_audiences(session, site_row.slug):
        found = await members_of(ctx, session, site_row, audience)
        excluded = {name: shown(n) for name, n in msgspec.structs.asdict(found.excluded).items()}
        sizes.append(AudienceSize(audience.id, audience.name, shown(len(found.members)), excluded))
    if _wants_csv(request):
        header = ["audience", "members", "no_consent", "gpc", "opt_out"]
        rows = [
            [a.name, a.members, a.excluded["no_consent"], a.excluded["gpc"], a.excluded["opt_out"]]
            for a in sizes
        ]
        return _csv(header, rows)
    return Response(AudienceSizes(sizes))


@get(
    "/v1/sites/{site:str}/reports/consent",
    dependencies=requires("read"),
    summary="Per purpose, how many people the registry knows allow it now",
)
async def consent_rates(
    request: Request[Any, Any, State],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    ctx: NamedDependency[Context],
) -> Response[Any]:
    result = await rates_of(session, site_row.slug, ctx.policies[site_row.policy], utcnow())
    if _wants_csv(request):
        rows = [[p.purpose, p.granted, p.not_granted, p.rate] for p in result.purposes]
        return _csv(["purpose", "granted", "not_granted", "rate"], rows)
    return Response(result)
