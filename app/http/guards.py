"""Who may call a handler. Each check is the handler's `site_row` dependency: the path's site,
handed over only once the caller has shown a key (or token) that opens it.

They are dependencies, not litestar guards, because guards run before the body is read: a
malformed body is a 400 whoever sends it, and the checks answer in the order the API always
has (the body, then 404 for an unknown site, then 401, then 403). A handler given one of these
must name `site_row` among its parameters, else the check never runs
(tests/app/test_guards.py holds every keyed operation to it).
"""

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.tables import Site
from app.http.auth import require_admin_or_subject, require_key
from app.http.context import Context
from app.http.deps import cors_headers, site_or_404

AnyRequest = Request[Any, Any, Any]


def requires(scope: str) -> dict[str, Provide]:
    """A key of the path's site granting `scope` (admin includes read and ingest)."""

    async def site_for_key(
        request: AnyRequest,
        site: FromPath[str],
        ctx: NamedDependency[Context],
        session: NamedDependency[AsyncSession],
    ) -> Site:
        found = await site_or_404(session, site)
        # Kept for a handler that answers about the key itself (sites.key_scope).
        request.state.api_key = await require_key(request, session, ctx.keyring, site, scope)
        return found

    return {"site_row": Provide(site_for_key)}


async def site_for_admin_or_subject(
    request: AnyRequest,
    site: FromPath[str],
    subject: FromPath[str],
    ctx: NamedDependency[Context],
    session: NamedDependency[AsyncSession],
) -> Site:
    found = await site_or_404(session, site)
    pseudonym = ctx.keyring.pseudonym(site, subject)
    cors = cors_headers(found, request.headers.get("origin"))
    await require_admin_or_subject(request, session, ctx, site, pseudonym.__eq__, cors)
    return found


def admin_or_path_subject() -> dict[str, Provide]:
    """An admin key of the site, or the `X-Subject-Token` of the path's `{subject}`."""
    return {"site_row": Provide(site_for_admin_or_subject)}
