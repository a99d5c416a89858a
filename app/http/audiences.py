"""Retargeting audiences (SPEC §4.9): made, listed, read and deleted by an admin key; their
members listed (admin), one visitor checked (read), or the site's own candidates matched
(admin) without any identifier leaving: candidates are neither stored nor logged."""

import hashlib
import secrets
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.keys import normalise_identifier
from app.base.tables import Site, is_storable
from app.http.context import Context
from app.http.deps import Subject
from app.http.guards import requires
from app.http.problems import Problem
from consent import audiences
from consent.audiences import Members, Rule
from consent.tables import Audience

MAX_CANDIDATES = 10_000


class AudienceIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    rule: Rule = msgspec.field(default_factory=Rule)


class AudienceId(msgspec.Struct):
    id: str


class AudienceOut(msgspec.Struct):
    id: str
    name: str
    rule: Rule
    created_at: datetime


class AudienceList(msgspec.Struct):
    audiences: list[AudienceOut]


class Membership(msgspec.Struct):
    member: bool


class MatchIn(msgspec.Struct, forbid_unknown_fields=True):
    candidates: Annotated[list[Subject], msgspec.Meta(max_length=MAX_CANDIDATES)]


class Matched(msgspec.Struct, omit_defaults=True):
    candidate: str
    # For an e-mail address: SHA-256 of it trimmed and lowercased, as ad platforms' customer
    # lists take it.
    sha256: str | None = None


class MatchOut(msgspec.Struct):
    members: list[Matched]


def _out(row: Audience) -> AudienceOut:
    return AudienceOut(row.id, row.name, msgspec.convert(row.rule, Rule), row.created_at)


async def provide_audience(
    site_row: NamedDependency[Site],  # the key's check comes first
    audience_id: FromPath[str],
    session: NamedDependency[AsyncSession],
) -> Audience:
    key = (site_row.slug, audience_id)
    found = await session.get(Audience, key) if is_storable(audience_id) else None
    if found is None:
        raise Problem(404, "unknown audience")
    return found


# The key's check first (a 404 for an unknown site, 401 or 403), then the audience.
ADMIN = {**requires("admin"), "audience": Provide(provide_audience)}
READ = {**requires("read"), "audience": Provide(provide_audience)}


async def members_of(
    ctx: Context, session: AsyncSession, site_row: Site, row: Audience, subjects: Any = None
) -> Members:
    rule = msgspec.convert(row.rule, Rule)
    policy = ctx.policies[site_row.policy]
    return await audiences.members(
        session, site_row.slug, rule, policy, site_row.jurisdiction, utcnow(), subjects
    )


@post("/v1/sites/{site:str}/audiences", dependencies=requires("admin"), summary="Make an audience")
async def create_audience(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    data: JSONBody[AudienceIn],
    session: NamedDependency[AsyncSession],
) -> AudienceId:
    field = "name" if not is_storable(data.name) else data.rule.unstorable()
    if field is not None:
        raise Problem(422, f"{field} must not contain control characters")
    row = Audience(
        site=site,
        id=secrets.token_hex(8),
        name=data.name,
        rule=msgspec.to_builtins(data.rule),
        created_at=utcnow(),
    )
    session.add(row)
    return AudienceId(row.id)


async def site_audiences(session: AsyncSession, site: str) -> list[Audience]:
    """The site's audiences, oldest first."""
    rows = await session.scalars(
        select(Audience).where(Audience.site == site).order_by(Audience.created_at, Audience.id)
    )
    return list(rows)


@get("/v1/sites/{site:str}/audiences", dependencies=requires("admin"), summary="List audiences")
async def list_audiences(
    site: FromPath[str], site_row: NamedDependency[Site], session: NamedDependency[AsyncSession]
) -> AudienceList:
    return AudienceList([_out(row) for row in await site_audiences(session, site)])


@get(
    "/v1/sites/{site:str}/audiences/{audience_id:str}",
    dependencies=ADMIN,
    summary="Read an audience",
)
async def read_audience(audience: NamedDependency[Audience]) -> AudienceOut:
    return _out(audience)


@delete(
    "/v1/sites/{site:str}/audiences/{audience_id:str}",
    dependencies=ADMIN,
    summary="Delete an audience",
)
async def delete_audience(
    audience: NamedDependency[Audience], session: NamedDependency[AsyncSession]
) -> None:
    await session.delete(audience)


@get(
    "/v1/sites/{site:str}/audiences/{audience_id:str}/members",
    dependencies=ADMIN,
    summary="The audience's members (pseudonyms) whose marketing is allowed now",
)
async def audience_members(
    site_row: NamedDependency[Site],
    audience: NamedDependency[Audience],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> Members:
    return await members_of(ctx, session, site_row, audience)


@get(
    "/v1/sites/{site:str}/audiences/{audience_id:str}/members/{subject:str}",
    dependencies=READ,
    summary="Whether one visitor the site knows is a member now",
)
async def is_member(
    site_row: NamedDependency[Site],
    audience: NamedDependency[Audience],
    subject: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> Membership:
    pseudonym = ctx.keyring.pseudonym(site_row.slug, subject)
    found = await members_of(ctx, session, site_row, audience, [pseudonym])
    return Membership(member=bool(found.members))


def email_sha256(candidate: str) -> str:
    return hashlib.sha256(candidate.strip().lower().encode()).hexdigest()


@post(
    "/v1/sites/{site:str}/audiences/{audience_id:str}/match",
    dependencies=ADMIN,
    status_code=200,
    summary="Which of the site's own candidates (ids or e-mail addresses) are members now",
)
async def match_audience(
    site_row: NamedDependency[Site],
    audience: NamedDependency[Audience],
    data: JSONBody[MatchIn],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> MatchOut:
    by_pseudonym = {ctx.keyring.pseudonym(site_row.slug, c): c for c in data.candidates}
    found = await members_of(ctx, session, site_row, audience, sorted(by_pseudonym))
    matched = []
    for pseudonym in found.members:
        candidate = by_pseudonym[pseudonym]
        is_email = "@" in normalise_identifier(candidate)
        matched.append(Matched(candidate, email_sha256(candidate) if is_email else None))
    return MatchOut(sorted(matched, key=lambda one: one.candidate))
