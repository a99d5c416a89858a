"""Campaigns and tracked links (SPEC §4.7): made, listed, read and deleted by an admin key. A
link redirects only to its stored destination."""

import re
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.attribution import Influencers, influencers
from app.base.db import dialect_insert, utcnow
from app.base.tables import Campaign, Link, Site, is_storable
from app.hits.arrival import FROM_LINK, hit_values
from app.hits.steps import MAX_TEXT
from app.http.context import Context
from app.http.guards import requires
from app.http.pixel import CACHE_CONTROL, asgi_headers, queue_hit
from app.http.problems import Problem
from retention.report_cells import mark_site_dirty

Channel = Literal["email", "influencer", "ads", "other"]
MAX_SENDS = 2**31 - 1  # campaigns.sends is a 32-bit integer on PostgreSQL
MAX_DESTINATION = 2048
# What a URI may carry as it is (RFC 3986 reserved and unreserved, and escapes); the rest
# (non-ASCII, space, quotes, braces, ...) is percent-encoded.
_URI_SAFE = "!#$%&'()*+,/:;=?@[]~"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_HOST = re.compile(r"[a-z0-9._-]+\.?|\[[0-9a-f:.]+\]")


Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]


class CampaignIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    channel: Channel = "other"
    influencer: Label | None = None
    # litestar leaves a minimum of 0 out of the document (it tests the bound for truth): the
    # extra schema puts it back.
    sends: (
        Annotated[
            int, msgspec.Meta(ge=0, le=MAX_SENDS, extra_json_schema={"extra": {"minimum": 0}})
        ]
        | None
    ) = None


class CampaignOut(msgspec.Struct):
    id: str
    name: str
    channel: str
    influencer: str | None
    sends: int | None
    updated_at: datetime


class Campaigns(msgspec.Struct):
    campaigns: list[CampaignOut]


def _campaign_out(row: Campaign) -> CampaignOut:
    return CampaignOut(row.id, row.name, row.channel, row.influencer, row.sends, row.updated_at)


async def _recredit_if_changed(session: AsyncSession, site: str, before: Influencers) -> None:
    """A hit's influencer is its utm_source when the site named that influencer: when the names
    change, so may the credit of any day, and every day's report cells are built again."""
    await session.flush()
    if await influencers(session, site) != before:
        await mark_site_dirty(session, site)


@put(
    "/v1/sites/{site:str}/campaigns/{campaign:str}",
    dependencies=requires("admin"),
    summary="Create or update a campaign",
)
async def put_campaign(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    campaign: FromPath[str],
    data: JSONBody[CampaignIn],
    session: NamedDependency[AsyncSession],
) -> CampaignOut:
    if not 0 < len(campaign) <= MAX_TEXT or "/" in campaign or not is_storable(campaign):
        raise Problem(
            422, f"campaign ids are 1 to {MAX_TEXT} characters without '/' or control characters"
        )
    _check_text("name", data.name)
    _check_text("influencer", data.influencer)
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
    before = await influencers(session, site)
    statement = dialect_insert(session)(Campaign).values(values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["site", "id"],
            set_={k: statement.excluded[k] for k in values if k not in ("site", "id")},
        )
    )
    await _recredit_if_changed(session, site, before)
    return CampaignOut(campaign, data.name, data.channel, data.influencer, data.sends, now)


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    destination: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    campaign: Label | None = None
    influencer: Label | None = None


class LinkOut(msgspec.Struct):
    code: str
    url: str


class LinkDetail(msgspec.Struct):
    code: str
    url: str
    destination: str
    campaign: str | None
    influencer: str | None
    created_at: datetime


class Links(msgspec.Struct):
    links: list[LinkDetail]


def _link_url(ctx: Context, code: str) -> str:
    return f"{ctx.settings.base_url}/l/{code}"


def _link_detail(ctx: Context, row: Link) -> LinkDetail:
    url = _link_url(ctx, row.code)
    return LinkDetail(row.code, url, row.destination, row.campaign, row.influencer, row.created_at)


def _check_text(field: str, value: str | None) -> None:
    """Lengths are checked as the body is read (CampaignIn, LinkIn); this, the rest."""
    if value is not None and not is_storable(value):
        raise Problem(422, f"{field} must not contain control characters")


def _encode(part: str) -> str:
    """Percent-encode what a URI may not carry, keeping escapes that are already there."""
    return quote(_STRAY_PERCENT.sub("%25", part), safe=_URI_SAFE, errors="replace")


def ascii_uri(url: str) -> str:
    """The http(s) URL as an ASCII URI: IDNA host, percent-encoded path, query and fragment.
    ValueError for anything else, and for control characters, which no URI carries (urlsplit
    would silently drop some of them)."""
    if _CONTROL.search(url) or not is_storable(url):
        raise ValueError("control characters")
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port  # the port raises ValueError when malformed
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("not an http(s) URL with a host")
    host = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii").lower()
    if not _HOST.fullmatch(host):
        raise ValueError("not a host name")
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{_encode(userinfo)}@" if userinfo else "") + host
    netloc += f":{port}" if port is not None else ""
    path, query, fragment = (_encode(p) for p in (parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme.lower(), netloc, path, query, fragment))


def _check_destination(url: str) -> str:
    try:
        destination = ascii_uri(url)
    except ValueError:  # UnicodeError, from the IDNA codec, is one
        destination = ""
    if not destination or len(destination) > MAX_DESTINATION:
        raise Problem(
            422,
            "destination must be an http(s) URL with a host, without control characters, "
            f"at most {MAX_DESTINATION} long once encoded",
        )
    return destination


def _location(destination: str) -> str:
    """Links stored before destinations were encoded may hold anything: never a 500 for them."""
    try:
        return ascii_uri(destination)
    except ValueError:
        return quote(_STRAY_PERCENT.sub("%25", destination), safe=_URI_SAFE, errors="replace")


@post(
    "/v1/sites/{site:str}/links",
    dependencies=requires("admin"),
    status_code=201,
    summary="Create a tracked link",
)
async def create_link(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    data: JSONBody[LinkIn],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> LinkOut:
    destination = _check_destination(data.destination)
    _check_text("campaign", data.campaign)
    _check_text("influencer", data.influencer)
    code = secrets.token_urlsafe(9)  # 72 random bits: not guessable, not enumerable
    before = await influencers(session, site)
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
    await _recredit_if_changed(session, site, before)
    return LinkOut(code=code, url=_link_url(ctx, code))


def with_utm(location: str, **utm: str | None) -> str:
    """The ASCII URI with the utm parameters it does not have yet (SPEC §4.7), encoded."""
    parts = urlsplit(location)
    present = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = [(key, value) for key, value in utm.items() if value and key not in present]
    if not added:
        return location
    query = "&".join(q for q in (parts.query, urlencode(added, quote_via=quote, safe="")) if q)
    return urlunsplit(parts._replace(query=query))


@get(
    "/l/{code:str}",
    status_code=302,
    summary="Follow a tracked link (records a click, then redirects)",
    response_description="a redirect to the link's stored destination",
    response_headers=[
        ResponseHeader(
            name="Location",
            description="the stored destination, an ASCII URI",
            required=True,
            documentation_only=True,
        )
    ],
)
async def follow_link(
    request: Request[Any, Any, State], code: FromPath[str], ctx: NamedDependency[Context]
) -> Response[None]:
    found = None
    if is_storable(code):
        async with ctx.sessions() as session:
            its_campaign = and_(Campaign.site == Link.site, Campaign.id == Link.campaign)
            query = select(Link, Campaign.channel, Campaign.influencer)
            query = query.outerjoin(Campaign, its_campaign)
            found = (await session.execute(query.where(Link.code == code))).first()
    if found is None:
        raise Problem(404, "unknown link")
    link, channel, influencer = found
    # What the redirect passes on to the landing page, the click carries too: reports find
    # the link's influencer in its utm_source.
    utm = {"utm_source": link.influencer or influencer, "utm_medium": channel}
    utm["utm_campaign"] = link.campaign
    # The click is decided like a pixel hit: the subject is unknown unless `u` is given.
    fields = [("k", "click"), ("p", f"/l/{code}")]
    fields += [(name, value) for name, value in utm.items() if value]
    if link.campaign:
        fields.append(("c", link.campaign))
    if subject := request.query_params.get("u"):
        fields.append(("u", subject))
    values = hit_values(fields) | {FROM_LINK: "1"}
    await queue_hit(ctx, link.site, "", asgi_headers(ctx, request.scope), values)
    return Response(
        None,
        status_code=302,
        headers={
            "Location": with_utm(_location(link.destination), **utm),
            "Cache-Control": CACHE_CONTROL,
        },
    )


# Reading and deleting. An id or code no row can hold (a NUL, say) is simply not found: it is
# never handed to a database that would refuse it.


Row = TypeVar("Row", Campaign, Link)


async def _row_or_404(session: AsyncSession, table: type[Row], site: str, key: str) -> Row:
    found = await session.get(table, (site, key)) if is_storable(key) else None
    if found is None:
        raise Problem(404, f"unknown {'campaign' if table is Campaign else 'link'}")
    return found


@get(
    "/v1/sites/{site:str}/campaigns",
    dependencies=requires("admin"),
    summary="List the site's campaigns",
)
async def list_campaigns(
    site: FromPath[str], site_row: NamedDependency[Site], session: NamedDependency[AsyncSession]
) -> Campaigns:
    query = select(Campaign).where(Campaign.site == site).order_by(Campaign.id)
    return Campaigns([_campaign_out(row) for row in await session.scalars(query)])


@get(
    "/v1/sites/{site:str}/campaigns/{campaign:str}",
    dependencies=requires("admin"),
    summary="Read a campaign",
)
async def read_campaign(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    campaign: FromPath[str],
    session: NamedDependency[AsyncSession],
) -> CampaignOut:
    return _campaign_out(await _row_or_404(session, Campaign, site, campaign))


@delete(
    "/v1/sites/{site:str}/campaigns/{campaign:str}",
    dependencies=requires("admin"),
    summary="Delete a campaign (its links and recorded events stay)",
)
async def delete_campaign(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    campaign: FromPath[str],
    session: NamedDependency[AsyncSession],
) -> None:
    before = await influencers(session, site)
    await session.delete(await _row_or_404(session, Campaign, site, campaign))
    await _recredit_if_changed(session, site, before)


@get(
    "/v1/sites/{site:str}/links",
    dependencies=requires("admin"),
    summary="List the site's tracked links",
)
async def list_links(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> Links:
    query = select(Link).where(Link.site == site).order_by(Link.created_at, Link.code)
    return Links([_link_detail(ctx, row) for row in await session.scalars(query)])


@get(
    "/v1/sites/{site:str}/links/{code:str}",
    dependencies=requires("admin"),
    summary="Read a tracked link",
)
async def read_link(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    code: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> LinkDetail:
    return _link_detail(ctx, await _row_or_404(session, Link, site, code))


@delete(
    "/v1/sites/{site:str}/links/{code:str}",
    dependencies=requires("admin"),
    summary="Delete a tracked link: /l/{code} is a 404 from then on",
)
async def delete_link(
    site: FromPath[str],
    site_row: NamedDependency[Site],
    code: FromPath[str],
    session: NamedDependency[AsyncSession],
) -> None:
    before = await influencers(session, site)
    await session.delete(await _row_or_404(session, Link, site, code))
    await _recredit_if_changed(session, site, before)
