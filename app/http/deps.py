"""What handlers are given instead of fetching it: the transaction, the site named by the
path, and the one type of a subject id. Registered once, in app/main.py."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import transaction
from app.base.sites import SLUG, get_site
from app.base.tables import Site
from app.http.context import Context
from app.http.problems import Problem

MAX_SUBJECT = 256
# A subject id as the site knows it (customer id, e-mail, visitor id): not blank, and short
# enough to be pseudonymised as it is. msgspec's pattern is a search: one visible character.
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SUBJECT, pattern=r"\S")]


async def site_or_404(session: AsyncSession, slug: str) -> Site:
    # A slug no site can have (one with a NUL, say) is not looked up: PostgreSQL refuses it.
    site = await get_site(session, slug) if SLUG.fullmatch(slug) else None
    if site is None:
        raise Problem(404, f"unknown site {slug!r}")
    return site


# Where the request's session waits in the ASGI scope for `release_session`.
_SESSION = "pixelgate.session"


async def provide_session(
    ctx: NamedDependency[Context], request: Request[Any, Any, Any]
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed after the handler returns, rolled back when it
    raises (litestar throws the error into this generator)."""
    async with transaction(ctx.sessions) as session:
        request.scope["state"][_SESSION] = session
        yield session


async def release_session(_error: Exception, scope: Scope) -> None:
    """An app `after_exception` hook. When a dependency resolved after the session refuses the
    request (404, 401, 403), litestar never resumes the session's generator: its connection
    would stay checked out until the garbage collector finds it, and a stranger sending bad
    keys could drain the pool. Closing the session rolls back and gives the connection back;
    for an error of the handler, the generator has already closed it and this does nothing."""
    session = scope["state"].pop(_SESSION, None)
    if session is not None:
        await session.close()


async def provide_site(site: FromPath[str], session: NamedDependency[AsyncSession]) -> Site:
    """The site of the path's `{site}`; a 404 problem for one that does not exist."""
    return await site_or_404(session, site)


def cors_headers(site: Site, origin: str | None) -> dict[str, str]:
    """CORS for the site's own origins only; others get no grant (and a 403 on POST)."""
    if not origin or origin.lower() not in site.origins:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, X-Subject-Token",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
