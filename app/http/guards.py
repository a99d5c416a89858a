"""Who may call a handler, as litestar guards: they run before the body is read and before
any dependency, in their own short session, and answer with the same problems as the API's
other errors (404 for an unknown site first, then 401, then 403)."""

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from app.http.auth import require_admin_or_subject, require_key
from app.http.context import Context
from app.http.deps import cors_headers, site_or_404

AnyConnection = ASGIConnection[Any, Any, Any, Any]


def requires(scope: str) -> Guard:
    """A key of the path's site granting `scope` (admin includes read and ingest)."""

    async def guard(connection: AnyConnection, _: BaseRouteHandler) -> None:
        ctx: Context = connection.app.state.ctx
        site = connection.path_params["site"]
        async with ctx.sessions() as session:
            await site_or_404(session, site)
            await require_key(connection, session, ctx.keyring, site, scope)

    return guard


async def admin_or_path_subject(connection: AnyConnection, _: BaseRouteHandler) -> None:
    """An admin key of the site, or the `X-Subject-Token` of the path's `{subject}`."""
    ctx: Context = connection.app.state.ctx
    site, subject = connection.path_params["site"], connection.path_params["subject"]
    async with ctx.sessions() as session:
        found = await site_or_404(session, site)
        pseudonym = ctx.keyring.pseudonym(site, subject)
        cors = cors_headers(found, connection.headers.get("origin"))
        await require_admin_or_subject(connection, session, ctx, site, pseudonym.__eq__, cors)
