"""Data subject requests over HTTP (SPEC §4.5): filed by an admin or by the person themself
(with their subject token), fulfilled by the dsar job (retention/dsar.py)."""

import calendar
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.keys import audit_hash
from app.base.tables import DsarExport, DsarRequest, Site
from app.http.auth import bearer, require_admin_or_subject
from app.http.consent import consent_proof
from app.http.context import Context
from app.http.deps import Subject, cors_headers
from app.http.guards import requires
from app.http.problems import Problem
from app.http.ratelimit import client_of
from consent import store
from consent.policy import Policy

Kind = Literal["access", "erasure", "opt_out"]
Regulation = Literal["gdpr", "ccpa"]
OPEN = ("pending", "in_progress")
STATUSES = (*OPEN, "completed", "rejected")
CCPA_DAYS = 45


class DsarIn(msgspec.Struct, forbid_unknown_fields=True):
    type: Kind
    subject: Subject
    regulation: Regulation = "gdpr"


class DsarOut(msgspec.Struct):
    id: uuid.UUID
    type: str
    regulation: str
    status: str
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    counts: dict[str, Any]
    overdue: bool
    export_expires_at: datetime | None


class DsarList(msgspec.Struct):
    requests: list[DsarOut]


def _end_of_day(day: datetime) -> datetime:
    return day.replace(hour=23, minute=59, second=59, microsecond=0)


def add_calendar_month(received: datetime) -> datetime:
    """Reg. 1182/71: the same date next month, or its last day when there is no such date."""
    year, month = (
        (received.year + 1, 1) if received.month == 12 else (received.year, received.month + 1)
    )
    day = min(received.day, calendar.monthrange(year, month)[1])
    return received.replace(year=year, month=month, day=day)


def due_at(received: datetime, regulation: str, policy: Policy) -> datetime:
    """GDPR: one calendar month (Art. 12(3)); CCPA: 45 days; a policy may only shorten it."""
    due = add_calendar_month(received) if regulation == "gdpr" else received + timedelta(CCPA_DAYS)
    if policy.file.dsar.max_days is not None:
        due = min(due, received + timedelta(days=policy.file.dsar.max_days))
    return _end_of_day(due)


def dsar_out(row: DsarRequest, now: datetime) -> DsarOut:
    return DsarOut(
        id=row.id,
        type=row.type,
        regulation=row.regulation,
        status=row.status,
        received_at=row.received_at,
        due_at=row.due_at,
        completed_at=row.completed_at,
        counts=row.counts,
        overdue=row.status in OPEN and row.due_at < now,
        export_expires_at=row.export_expires_at,
    )


async def _authorise(
    request: Request[Any, Any, Any], session: AsyncSession, ctx: Context, site: Site, owner: str
) -> None:
    """An admin key, or the subject token of `owner` (a subject hash); 401/403 otherwise."""

    def owns(pseudonym: str) -> bool:
        return audit_hash(ctx.keyring, pseudonym) == owner

    cors = cors_headers(site, request.headers.get("origin"))
    await require_admin_or_subject(request, session, ctx, site.slug, owns, cors)


WHO = (
    "With an admin key of the site, or with the subject's own `X-Subject-Token` (rate limited "
    "per token); a token that has expired or predates an erasure of its subject is refused (401)."
)


@post(
    "/v1/sites/{site:str}/dsar",
    status_code=202,
    summary="File a data subject request",
    description=WHO
    + " An `opt_out` needs neither: it is public, rate limited per client, and takes effect "
    "at once.",
)
async def file_request(
    request: Request[Any, Any, State],
    site: FromPath[str],
    data: JSONBody[DsarIn],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> Response[DsarOut]:
    now = utcnow()
    pseudonym = ctx.keyring.pseudonym(site, data.subject)
    owner = audit_hash(ctx.keyring, pseudonym)
    anonymous = data.type == "opt_out" and not bearer(request)
    if anonymous and "x-subject-token" not in request.headers:
        # CCPA: an opt-out needs no identity check, only a brake on floods.
        client = client_of(request, ctx.settings.trusted_proxies)
        cors = cors_headers(site_row, request.headers.get("origin"))
        ctx.consent_limiter.check(site, client, cors)
    else:
        await _authorise(request, session, ctx, site_row, owner)
    policy = ctx.policies[site_row.policy]
    row = DsarRequest(
        site=site,
        id=uuid.uuid4(),
        type=data.type,
        regulation=data.regulation,
        status="pending",
        subject=pseudonym,
        subject_hash=owner,
        received_at=now,
        due_at=due_at(now, data.regulation, policy),
        counts={},
    )
    if data.type == "opt_out":
        # Takes effect at once: a denial of every sale/share purpose in the registry.
        denied = policy.sale_or_share()
        if denied:
            await store.record(
                session,
                site=site,
                subject=pseudonym,
                purposes=dict.fromkeys(denied, False),
                policy=policy,
                proof=consent_proof(
                    request,
                    site_row,
                    ctx,
                    "opt-out-request",
                    # The admin key, not a subject token, let the site's server in.
                    by_key=bearer(request) is not None and "x-subject-token" not in request.headers,
                ),
                now=now,
            )
        row.status, row.completed_at, row.subject = "completed", now, None
        row.counts = {"purposes_denied": len(denied)}
    session.add(row)
    return Response(dsar_out(row, now), status_code=202)


async def provide_request(
    request: Request[Any, Any, State],
    request_id: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
    site_row: NamedDependency[Site],
) -> DsarRequest:
    """The path's request, for an admin key or its own subject's token: 404 for an unknown
    request before any check of who asks, as for an unknown site."""
    try:
        key = uuid.UUID(request_id)
    except ValueError:
        raise Problem(404, "unknown request") from None
    row = await session.get(DsarRequest, (site_row.slug, key))
    if row is None:
        raise Problem(404, "unknown request")
    await _authorise(request, session, ctx, site_row, row.subject_hash)
    return row


@get(
    "/v1/sites/{site:str}/dsar/{request_id:str}",
    dependencies={"dsar_request": Provide(provide_request)},
    summary="A data subject request's status",
    description=WHO,
)
async def read_request(dsar_request: NamedDependency[DsarRequest]) -> DsarOut:
    return dsar_out(dsar_request, utcnow())


@get(
    "/v1/sites/{site:str}/dsar/{request_id:str}/export",
    dependencies={"dsar_request": Provide(provide_request)},
    media_type="application/json",
    summary="Download an access request's export",
    description=WHO,
)
async def download_export(
    site: FromPath[str],
    dsar_request: NamedDependency[DsarRequest],
    session: NamedDependency[AsyncSession],
) -> Response[bytes]:
    now, row = utcnow(), dsar_request
    if row.type != "access":
        raise Problem(404, f"a {row.type} request has no export")
    if row.status in OPEN:
        raise Problem(404, "the export is not ready: the request is still pending")
    export = await session.get(DsarExport, (site, row.id))
    if export is None or export.expires_at <= now:
        raise Problem(404, "the export has expired or was erased; file a new access request")
    filename = f"pixelgate-export-{site}-{row.id}.json"
    return Response(
        export.document,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@get(
    "/v1/sites/{site:str}/dsar",
    dependencies=requires("admin"),
    summary="Data subject requests, with overdue flags",
)
async def list_requests(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    session: NamedDependency[AsyncSession],
    status: Annotated[str | None, QueryParameter(schema_extra={"enum": list(STATUSES)})] = None,
) -> DsarList:
    if status is not None and status not in STATUSES:
        raise Problem(422, f"status must be one of {', '.join(STATUSES)}")
    query = select(DsarRequest).where(DsarRequest.site == site)
    if status is not None:
        query = query.where(DsarRequest.status == status)
    rows = await session.scalars(query.order_by(DsarRequest.received_at))
    now = utcnow()
    return DsarList(requests=[dsar_out(row, now) for row in rows])


async def open_and_overdue(session: AsyncSession, now: datetime) -> tuple[int, int]:
    open_count = await session.scalar(
        select(func.count()).select_from(DsarRequest).where(DsarRequest.status.in_(OPEN))
    )
    overdue = await session.scalar(
        select(func.count())
        .select_from(DsarRequest)
        .where(DsarRequest.status.in_(OPEN), DsarRequest.due_at < now)
    )
    return int(open_count or 0), int(overdue or 0)
