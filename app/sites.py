"""Sites (tenants): create, list, look up."""

import re
import time
from datetime import datetime
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Site
from app.problems import Problem
from consent.policy import JURISDICTION, Policy

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# EU and EEA countries: a region header naming one of them means the "eu" jurisdiction.
EEA = {
    *"at be bg hr cy cz dk ee fi fr de gr hu ie it lv lt lu mt nl pl pt ro sk si es se".split(),
    *("is", "li", "no"),
}


class SiteOut(msgspec.Struct, frozen=True):
    slug: str
    policy: str
    origins: list[str]
    jurisdiction: str
    created_at: datetime


def site_out(site: Site) -> SiteOut:
    return SiteOut(site.slug, site.policy, site.origins, site.jurisdiction, site.created_at)


def check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"origin {origin!r} must be scheme://host[:port]")
    return f"{parts.scheme}://{parts.netloc.lower()}"


async def create_site(
    session: AsyncSession,
    *,
    slug: str,
    policy: str,
    policies: dict[str, Policy],
    origins: list[str],
    jurisdiction: str | None = None,
    now: datetime,
) -> Site:
    """Raises ValueError with a one-line reason for any bad argument. Without a jurisdiction,
    the site takes the one its policy is written for."""
    if not SLUG.match(slug):
        raise ValueError(f"slug {slug!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    if policy not in policies:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(sorted(policies))})")
    if jurisdiction is None:
        jurisdiction = policies[policy].file.jurisdiction
    if not JURISDICTION.match(jurisdiction):
        raise ValueError(f"jurisdiction {jurisdiction!r} must look like eu, us or us-ca")
    if await session.get(Site, slug) is not None:
        raise ValueError(f"site {slug!r} already exists")
    site = Site(
        slug=slug,
        policy=policy,
        origins=[check_origin(o) for o in origins],
        jurisdiction=jurisdiction,
        created_at=now,
    )
    session.add(site)
    return site


async def list_sites(session: AsyncSession) -> list[Site]:
    return list(await session.scalars(select(Site).order_by(Site.slug)))


async def get_site(session: AsyncSession, slug: str) -> Site | None:
    return await session.get(Site, slug) if SLUG.match(slug) else None


async def site_or_404(session: AsyncSession, slug: str) -> Site:
    # A slug no site can have (one with a NUL, say) is not looked up: PostgreSQL refuses it.
    site = await get_site(session, slug) if SLUG.fullmatch(slug) else None
    if site is None:
        raise Problem(404, f"unknown site {slug!r}")
    return site


def jurisdiction_of(region: str | None, site_default: str) -> str:
    """The jurisdiction a CDN region header points to, else the site's own."""
    if not region:
        return site_default
    value = region.strip().lower()
    country = value.split("-", 1)[0]
    if country in EEA:
        return "eu"
    return value if JURISDICTION.match(value) else site_default


class SiteDirectory:
    """Sites by slug for the hot path. Sites never change once created, so a found site is
    kept for the life of the process; an unknown slug is asked again after a few seconds."""

    MAX_UNKNOWN = 10_000

    def __init__(self, sessions: async_sessionmaker[AsyncSession], unknown_ttl: float = 5.0):
        self._sessions = sessions
        self._unknown_ttl = unknown_ttl
        self._known: dict[str, SiteOut] = {}
        self._unknown: dict[str, float] = {}  # slug -> when to ask again

    async def load(self) -> None:
        """Know every site there is: at start-up, so that hits for them can still be read and
        spooled if the database goes away before a site's first hit."""
        async with self._sessions() as session:
            for row in await list_sites(session):
                self._known[row.slug] = site_out(row)

    def knows(self, slug: str) -> bool:
        return slug in self._known

    async def get(self, slug: str) -> SiteOut | None:
        site = self._known.get(slug)
        if site is not None or not SLUG.match(slug):
            return site
        if self._unknown.get(slug, 0.0) > time.monotonic():
            return None
        async with self._sessions() as session:
            row = await get_site(session, slug)
        if row is None:
            if len(self._unknown) >= self.MAX_UNKNOWN:
                self._unknown.clear()
            self._unknown[slug] = time.monotonic() + self._unknown_ttl
            return None
        site = self._known[slug] = site_out(row)
        return site
