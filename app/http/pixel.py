"""The pixel and collect edges, and the debug endpoint that explains them.

The pixel is the hot path: it queues the request as it came (an Arrival, in memory only) and
answers; the writer (app/hits/queue.py) reads it. Under `pixelgate serve` the pixel is answered
before litestar sees the request (app/http/front.py); elsewhere by the ASGI route here.
"""

import base64
import hmac
import time
from collections.abc import Awaitable
from typing import Any, cast

import msgspec
from litestar import Request, Response, asgi, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    RequestBody,
    Schema,
)
from litestar.params import FromPath
from litestar.types import HTTPScope, Receive, Scope, Send
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.event_fields import UTM_FIELDS, Utm
from app.base.settings import Settings
from app.base.tables import Site
from app.hits.arrival import Arrival, HitHeaders, hit_headers, hit_values, read_hit
from app.hits.steps import Outcome, evaluate
from app.http.auth import bearer
from app.http.context import Context
from app.http.dsar import open_and_overdue
from app.http.guards import requires
from app.http.problems import Problem
from app.http.ratelimit import client_address, is_allowed

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
CACHE_CONTROL = "no-store, no-cache, must-revalidate, max-age=0"
# The pixel's and the beacon's response headers, as granian's RSGI takes them (app/http/front.py)
# and, encoded, as ASGI messages.
PIXEL_HEADERS = [
    ("content-type", "image/gif"),
    ("content-length", str(len(GIF))),
    ("cache-control", CACHE_CONTROL),
]
COLLECT_HEADERS = [("cache-control", CACHE_CONTROL), ("vary", "Origin")]
# What a beacon's preflight is told when its origin is one of the site's. A beacon is sent
# with credentials, so the grant must allow them; pixelgate sets and reads no cookie.
PREFLIGHT_HEADERS = [
    ("access-control-allow-methods", "POST, OPTIONS"),
    ("access-control-allow-headers", "Content-Type"),
    ("access-control-max-age", "600"),
    ("vary", "Origin"),
]
NO_GRANT = [("vary", "Origin")]


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers]


PIXEL_START = {"type": "http.response.start", "status": 200, "headers": _encoded(PIXEL_HEADERS)}
PIXEL_BODY = {"type": "http.response.body", "body": GIF}
NOT_FOUND = {"type": "http.response.start", "status": 404, "headers": []}
EMPTY_BODY = {"type": "http.response.body", "body": b""}
MAX_BODY = 16384


class CollectBody(Utm, kw_only=True):
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


COLLECT_DECODER = msgspec.json.Decoder(CollectBody)


def queue_hit(
    ctx: Context,
    site: str,
    query: str,
    headers: HitHeaders,
    values: dict[str, str] | None = None,
) -> Awaitable[None]:
    """Everything the pixel does before it answers: the writer reads the hit later."""
    return ctx.ingest.submit(Arrival(site, query, headers, time.time(), values))


def beacon_values(body: bytes) -> dict[str, str] | None:
    """A collect body's hit values; None when it is too long or not the JSON object asked."""
    if len(body) > MAX_BODY:
        return None
    try:
        beacon = COLLECT_DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    return hit_values(
        (k, str(v)) for k, v in msgspec.structs.asdict(beacon).items() if v is not None
    )


async def cors_grant(ctx: Context, site: str, origin: str | None) -> list[tuple[str, str]]:
    """The CORS grant for a request from one of the site's own origins, else none. An unknown
    site and a foreign origin get the same answer: the beacon tells nothing more than CORS
    needs."""
    if not origin:
        return []
    try:
        found = await ctx.sites.get(site)
    except (SQLAlchemyError, OSError):  # the database is away: no grant, the answer stands
        return []
    if found is None or origin.lower() not in found.origins:
        return []
    return [("access-control-allow-origin", origin), ("access-control-allow-credentials", "true")]


async def collect_headers(ctx: Context, site: str, origin: str | None) -> list[tuple[str, str]]:
    """The beacon's answer headers: fetch() from the site's page may read its (empty) answer."""
    return COLLECT_HEADERS + await cors_grant(ctx, site, origin)


async def preflight_headers(ctx: Context, site: str, origin: str | None) -> list[tuple[str, str]]:
    """OPTIONS /p/{site}/collect: a JSON beacon from another origin asks first."""
    grant = await cors_grant(ctx, site, origin)
    return grant + PREFLIGHT_HEADERS if grant else NO_GRANT


def pixel_route(path: str) -> tuple[str, str]:
    """(site, action) of what follows /p: "/{site}/pixel.gif" or "/{site}/collect"."""
    site, _, action = path.strip("/").partition("/")
    return site, action


async def _collect(ctx: Context, site: str, scope: Scope, receive: Receive, send: Send) -> None:
    body, more = b"", True
    while more and len(body) <= MAX_BODY:
        message = await receive()
        body += cast(bytes, message.get("body", b""))
        more = bool(message.get("more_body", False))
    values = beacon_values(body)
    if values is not None:
        await queue_hit(ctx, site, "", asgi_headers(ctx, scope), values)
    await _answer(send, 204, await collect_headers(ctx, site, _origin(scope)))


async def _answer(send: Send, status: int, headers: list[tuple[str, str]]) -> None:
    start = {"type": "http.response.start", "status": status, "headers": _encoded(headers)}
    await send(start)  # type: ignore[arg-type]
    await send(EMPTY_BODY)  # type: ignore[arg-type]


def _origin(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


def asgi_headers(ctx: Context, scope: Scope) -> HitHeaders:
    """The request headers as a hit keeps them."""
    return hit_headers(scope["headers"], ctx.settings.region_header)


async def serve_pixel(ctx: Context, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """/p/{site}/pixel.gif and /p/{site}/collect; `path` is what follows /p."""
    site, action = pixel_route(path)
    method = cast("HTTPScope", scope)["method"]
    if method == "GET" and action == "pixel.gif":
        query = scope["query_string"].decode("latin-1")
        await queue_hit(ctx, site, query, asgi_headers(ctx, scope))
        await send(PIXEL_START)  # type: ignore[arg-type]
        await send(PIXEL_BODY)  # type: ignore[arg-type]
    elif method == "HEAD" and action == "pixel.gif":  # a probe: same answer, nothing recorded
        await send(PIXEL_START)  # type: ignore[arg-type]
        await send(EMPTY_BODY)  # type: ignore[arg-type]
    elif method == "POST" and action == "collect":
        await _collect(ctx, site, scope, receive, send)
    elif method == "OPTIONS" and action == "collect":
        await _answer(send, 204, await preflight_headers(ctx, site, _origin(scope)))
    else:
        await send(NOT_FOUND)  # type: ignore[arg-type]
        await send(EMPTY_BODY)  # type: ignore[arg-type]


# The pixel as a litestar route (a raw ASGI mount: litestar cannot route an ASGI handler with a
# path parameter), wherever the app runs as ASGI (embedded, the tests). `pixelgate serve`
# answers the pixel before litestar sees it instead (app/http/front.py).
@asgi("/p", is_mount=True, copy_scope=False, include_in_schema=False)
async def pixel_edge(scope: Scope, receive: Receive, send: Send) -> None:
    await serve_pixel(scope["litestar_app"].state.ctx, scope["path"], scope, receive, send)


@get(
    "/v1/sites/{site:str}/debug",
    dependencies=requires("read"),
    summary="Explain what the pixel would do (records nothing)",
)
async def debug(
    request: Request[Any, Any, State],
    site: FromPath[str],
    site_row: NamedDependency[Site],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> Outcome:
    values = hit_values(request.query_params.items())
    region = ctx.settings.region_header
    hit = read_hit(site, values, hit_headers(request.scope["headers"], region), region)
    return await evaluate(session, ctx.sites, ctx.policies, ctx.keyring, hit, utcnow())


def may_read_metrics(request: Request[Any, Any, Any], settings: Settings) -> bool:
    """From PIXELGATE_METRICS_ALLOW (a trusted proxy's X-Forwarded-For counts), or with the
    metrics token, compared in constant time."""
    if is_allowed(client_address(request, settings.trusted_proxies), settings.metrics_allow):
        return True
    token = bearer(request)
    expected = settings.metrics_token
    return bool(token and expected and hmac.compare_digest(token.encode(), expected.encode()))


@get(
    "/metrics",
    media_type="text/plain; version=0.0.4",
    summary="Prometheus metrics",
    description="To a client within PIXELGATE_METRICS_ALLOW (loopback by default), or with "
    "`Authorization: Bearer <PIXELGATE_METRICS_TOKEN>`; anyone else gets a 403. In the "
    "Prometheus text format 0.0.4, or in OpenMetrics 1.0 (`application/openmetrics-text; "
    "version=1.0.0; charset=utf-8`, ending in `# EOF`) when the `Accept` header prefers it. "
    "`pixelgate_hits_total{site, outcome, reason}` counts hits recorded and denied (`site` "
    "is empty for a site that does not exist); no `*_created` series are served.",
)
async def metrics(
    request: Request[Any, Any, State], ctx: NamedDependency[Context]
) -> Response[bytes]:
    if not may_read_metrics(request, ctx.settings):
        raise Problem(
            403, "metrics are served to PIXELGATE_METRICS_ALLOW or with PIXELGATE_METRICS_TOKEN"
        )
    ctx.ingest.publish()
    try:
        async with ctx.sessions() as session:
            open_count, overdue = await open_and_overdue(session, utcnow())
        ctx.metrics.dsar_open.set(open_count)
        ctx.metrics.dsar_overdue.set(overdue)
    except SQLAlchemyError:
        pass  # the database is down: the other counters are worth more than nothing
    body, media_type = ctx.metrics.render(request.headers.get("accept", ""))
    return Response(body, media_type=media_type)


def _query(name: str, description: str) -> Parameter:
    return Parameter(
        name=name, param_in="query", required=False, description=description,
        schema=Schema(type=OpenAPIType.STRING),
    )  # fmt: skip


PIXEL_PARAMETERS = [
    Parameter(name="site", param_in="path", required=True, schema=Schema(type=OpenAPIType.STRING)),
    _query("k", "kind: pageview (default), open, click, conversion or a custom kind"),
    _query("u", "subject identifier (pseudonymised at once, never stored)"),
    _query("p", "page path or message id"),
    _query("c", "campaign id"),
    *(_query(f, "attribution") for f in UTM_FIELDS),
    _query("r", "referrer override (else the Referer header)"),
    _query("v", "conversion value (decimal)"),
    _query("cur", "ISO 4217 currency"),
    _query("gdpr", "IAB TCF: 1 when GDPR applies, 0 when not"),
    _query("gdpr_consent", "IAB TCF v2 TC string"),
    _query("t", "signed pixel token standing for u, c, p, k"),
]


def document_pixel(schema: OpenAPI) -> None:
    """The mounted edge is invisible to litestar's schema generator: describe it by hand."""
    schema.paths = schema.paths or {}
    schema.paths["/p/{site}/pixel.gif"] = PathItem(
        get=Operation(
            summary="The tracking pixel",
            description="Always the same 1x1 GIF, whatever was decided; no cookie.",
            parameters=list(PIXEL_PARAMETERS),
            responses={"200": OpenAPIResponse(description="a 1x1 transparent GIF")},
        )
    )
    schema.paths["/p/{site}/collect"] = PathItem(
        post=Operation(
            summary="The pixel as a JSON beacon (navigator.sendBeacon)",
            parameters=[PIXEL_PARAMETERS[0]],
            request_body=RequestBody(
                content={
                    "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))
                },
                description="the pixel's query fields as a JSON object",
            ),
            responses={"204": OpenAPIResponse(description="always, whatever was decided")},
        ),
        options=Operation(
            summary="CORS preflight of a JSON beacon from another origin",
            description="Granted to the site's own origins only (sites create --origin).",
            parameters=[PIXEL_PARAMETERS[0]],
            responses={"204": OpenAPIResponse(description="with or without the grant")},
        ),
    )
