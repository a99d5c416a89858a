"""Campaigns and tracked links (SPEC §4.7). A link redirects only to its stored destination."""

import secrets
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import select

from app.auth import require_key
from app.context import Context
from app.db import dialect_insert, utcnow
from app.models import Campaign, Link
from app.pipeline import MAX_TEXT, hit_values
from app.pixel import CACHE_CONTROL, asgi_headers, queue_hit
from app.problems import Problem
from app.sites import site_or_404

Channel = Literal["email", "influencer", "ads", "other"]


class CampaignIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    channel: Channel = "other"
    influencer: str | None = None
    sends: int | None = None


class CampaignOut(msgspec.Struct):
    id: str
    name: str
    channel: str
    influencer: str | None
    sends: int | None
    updated_at: datetime


@put("/v1/sites/{site:str}/campaigns/{campaign:str}", summary="Create or update a campaign")
async def put_campaign(
    request: Request[Any, Any, State],
    site: FromPath[str],
    campaign: FromPath[str],
    data: JSONBody[CampaignIn],
    ctx: NamedDependency[Context],
) -> CampaignOut:
    if not 0 < len(campaign) <= MAX_TEXT or "/" in campaign:
        raise Problem(422, f"campaign ids are 1 to {MAX_TEXT} characters without '/'")
    if not 0 < len(data.name) <= 200:
        raise Problem(422, "name must be 1 to 200 characters")
    if data.sends is not None and data.sends < 0:
        raise Problem(422, "sends must not be negative")
    if data.influencer is not None and not 0 < len(data.influencer) <= MAX_TEXT:
        raise Problem(422, f"influencer must be 1 to {MAX_TEXT} characters")
    now = utcnow()
    values = {
        "site": site,
        "id": campaign,
        "name": data.name,
        "channel": data.channel,
        "influencer": data.influencer,
        "sends": data.sends,
        "updated_at": now,
    }
    async with ctx.sessions() as session, session.begin():
        await site_or_404(session, site)
        await require_key(request, session, ctx.keyring, site, "admin")
        statement = dialect_insert(session)(Campaign).values(values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["site", "id"],
                set_={k: statement.excluded[k] for k in values if k not in ("site", "id")},
            )
        )
    return CampaignOut(campaign, data.name, data.channel, data.influencer, data.sends, now)


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    destination: str
    campaign: str | None = None
    influencer: str | None = None


class LinkOut(msgspec.Struct):
    code: str
    url: str


def _check_destination(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise Problem(422, "destination must be an http(s) URL with a host, at most 2048 long")
    return url


@post("/v1/sites/{site:str}/links", status_code=201, summary="Create a tracked link")
async def create_link(
    request: Request[Any, Any, State],
    site: FromPath[str],
    data: JSONBody[LinkIn],
    ctx: NamedDependency[Context],
) -> LinkOut:
    destination = _check_destination(data.destination)
    for field in (data.campaign, data.influencer):
        if field is not None and not 0 < len(field) <= MAX_TEXT:
            raise Problem(422, f"campaign and influencer are 1 to {MAX_TEXT} characters")
    code = secrets.token_urlsafe(9)  # 72 random bits: not guessable, not enumerable
    async with ctx.sessions() as session, session.begin():
        await site_or_404(session, site)
        await require_key(request, session, ctx.keyring, site, "admin")
        session.add(
            Link(
                site=site,
                code=code,
                destination=destination,
                campaign=data.campaign,
                influencer=data.influencer,
                created_at=utcnow(),
            )
        )
    return LinkOut(code=code, url=f"{ctx.settings.base_url}/l/{code}")


@get("/l/{code:str}", summary="Follow a tracked link (records a click, then redirects)")
async def follow_link(
    request: Request[Any, Any, State], code: FromPath[str], ctx: NamedDependency[Context]
) -> Response[None]:
    async with ctx.sessions() as session:
        link = await session.scalar(select(Link).where(Link.code == code))
    if link is None:
        raise Problem(404, "unknown link")
    # The click is decided like a pixel hit: the subject is unknown unless `u` is given.
    fields = [("k", "click"), ("p", f"/l/{code}")]
    if link.campaign:
        fields.append(("c", link.campaign))
    if subject := request.query_params.get("u"):
        fields.append(("u", subject))
    await queue_hit(ctx, link.site, "", asgi_headers(ctx, request.scope), hit_values(fields))
    return Response(
        None,
        status_code=302,
        headers={"Location": link.destination, "Cache-Control": CACHE_CONTROL},
    )
