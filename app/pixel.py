"""The pixel and collect edges, and the debug endpoint that explains them.

This is the only place a request's raw subject id, user agent and signals are read.
"""

import base64
import logging
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.auth import require_key
from app.context import Context
from app.db import utcnow
from app.ingest import write_events
from app.pipeline import Hit, Outcome, evaluate
from app.sites import site_or_404

log = logging.getLogger("pixelgate.pixel")

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0"}
QUERY_FIELDS = {
    "k": "kind",
    "u": "subject",
    "p": "page",
    "c": "campaign",
    "r": "referrer",
    "v": "value",
    "cur": "currency",
    "t": "token",
    "gdpr": "gdpr",
    "gdpr_consent": "gdpr_consent",
    **{f: f for f in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")},
}


class CollectBody(msgspec.Struct, kw_only=True):
    """POST /p/{site}/collect: the pixel's query fields as a JSON object (sendBeacon)."""

    k: str | None = None
    u: str | None = None
    p: str | None = None
    c: str | None = None
    r: str | None = None
    v: str | float | None = None
    cur: str | None = None
    t: str | None = None
    gdpr: str | int | None = None
    gdpr_consent: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


def read_hit(
    request: Request[Any, Any, Any], site: str, ctx: Context, fields: dict[str, str]
) -> Hit:
    headers = request.headers
    values = {QUERY_FIELDS[k]: v for k, v in fields.items() if k in QUERY_FIELDS and v != ""}
    if "referrer" not in values and "referer" in headers:
        values["referrer"] = headers["referer"]
    region_header = ctx.settings.region_header
    return Hit(
        site=site,
        **values,
        user_agent=headers.get("user-agent", ""),
        # GPC: only exactly "1" counts, in any one of several headers (joined with commas).
        gpc=any(
            part.strip() == "1" for v in headers.getall("sec-gpc", []) for part in v.split(",")
        ),
        dnt=headers.get("dnt") == "1",
        region=headers.get(region_header) if region_header else None,
    )


async def record_hit(ctx: Context, hit: Hit) -> Outcome:
    async with ctx.sessions() as session, session.begin():
        outcome = await evaluate(session, ctx, hit, utcnow())
        if outcome.would_record and outcome.event is not None:
            await write_events(session, [outcome.event])
    return outcome


async def _record_quietly(ctx: Context, hit: Hit) -> None:
    """The pixel must answer the same whatever happens, so nothing here may escape."""
    try:
        await record_hit(ctx, hit)
    except Exception as exc:  # only the error's type: its text could quote the request
        log.error("hit not recorded: %s", type(exc).__name__)


def pixel_response() -> Response[bytes]:
    return Response(GIF, media_type="image/gif", headers=PIXEL_HEADERS)


@get("/p/{site:str}/pixel.gif", include_in_schema=True, summary="The tracking pixel")
async def pixel(
    request: Request[Any, Any, State], site: FromPath[str], ctx: NamedDependency[Context]
) -> Response[bytes]:
    fields = {k: v for k, v in request.query_params.items()}
    await _record_quietly(ctx, read_hit(request, site, ctx, fields))
    return pixel_response()


@post("/p/{site:str}/collect", status_code=204, summary="The pixel as a JSON beacon")
async def collect(
    request: Request[Any, Any, State], site: FromPath[str], ctx: NamedDependency[Context]
) -> Response[None]:
    try:
        body = msgspec.json.decode(await request.body(), type=CollectBody)
    except msgspec.DecodeError:
        body = None
    if body is not None:
        fields = {k: str(v) for k, v in msgspec.structs.asdict(body).items() if v is not None}
        await _record_quietly(ctx, read_hit(request, site, ctx, fields))
    return Response(None, status_code=204, headers=PIXEL_HEADERS)


@get("/v1/sites/{site:str}/debug", summary="Explain what the pixel would do (records nothing)")
async def debug(
    request: Request[Any, Any, State], site: FromPath[str], ctx: NamedDependency[Context]
) -> Outcome:
    async with ctx.sessions() as session:
        await site_or_404(session, site)
        await require_key(request, session, ctx.keyring, site, "read")
        hit = read_hit(request, site, ctx, dict(request.query_params.items()))
        return await evaluate(session, ctx, hit, utcnow())
