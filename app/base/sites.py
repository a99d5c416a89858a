"""Sites (tenants): create, update their controller, list, look up."""

import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.base.tables import Site, is_storable

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
JURISDICTION = re.compile(r"^[a-z]{2}(-[a-z0-9]{1,3})?$")  # eu, us, us-ca
# EU and EEA countries: a region header naming one of them means the "eu" jurisdiction.
EEA = {
    *"at be bg hr cy cz dk ee fi fr de gr hu ie it lv lt lu mt nl pl pt ro sk si es se".split(),
    *("is", "li", "no"),
}


class SiteOut(msgspec.Struct, frozen=True):
    """What the hot path needs of a site, none of which changes once it is created."""

    slug: str
    policy: str
    origins: list[str]
    jurisdiction: str
    created_at: datetime


class SiteDetails(SiteOut, frozen=True):
    """A site as the command line and the admin API show it: with its controller, which
    `sites update` may change, so it is never kept in a process's SiteDirectory."""

    controller: str | None
    contact_email: str | None
    address: str | None
    phone: str | None
    homepage: str | None


def site_out(site: Site) -> SiteDetails:
    return msgspec.convert(site, SiteDetails, from_attributes=True)


def _routing(site: Site) -> SiteOut:
    return msgspec.convert(site, SiteOut, from_attributes=True)


# The controller's identity (Kantara Consent Receipt v1.1 piiControllers), as the columns of
# migration 0009 hold it: field -> longest value.
CONTROLLER_FIELDS = {
    "controller": 200,
    "contact_email": 254,
    "address": 500,
    "phone": 50,
    "homepage": 2048,
}
# Plausible, not proven: one @, no spaces, a dot in the domain. Only mail sent proves more.
EMAIL = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"


def check_controller(fields: dict[str, Any]) -> dict[str, str]:
    """The controller fields given, validated and stripped; raises ValueError naming the first
    bad one. An empty value is refused: a field is set, never blanked back to unknown."""
    checked = {}
    for field, value in fields.items():
        if field not in CONTROLLER_FIELDS:
            raise ValueError(f"{field}: not a controller field")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{field}: must be non-empty text")
        text = value.strip()
        if len(text) > CONTROLLER_FIELDS[field]:
            raise ValueError(f"{field}: at most {CONTROLLER_FIELDS[field]} characters")
        if not is_storable(text):
            raise ValueError(f"{field}: control characters are not allowed")
        if field == "contact_email" and not re.fullmatch(EMAIL, text):
            raise ValueError(f"contact_email: {text!r} is not an e-mail address")
        if field == "homepage" and not _is_web_url(text):
            raise ValueError(f"homepage: {text!r} must be an http(s) URL")
        checked[field] = text
    return checked


def _is_web_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


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
    policies: Mapping[str, str],
    origins: list[str],
    jurisdiction: str | None = None,
    controller: Mapping[str, str | None] | None = None,
    now: datetime,
) -> Site:
    """Raises ValueError with a one-line reason for any bad argument. Without a jurisdiction,
    the site takes the one its policy is written for. `policies`: the policy names there are,
    each with the jurisdiction it is written for. `controller`: any of CONTROLLER_FIELDS
    (a None value is left unknown)."""
    if not SLUG.match(slug):
        raise ValueError(f"slug {slug!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    if policy not in policies:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(sorted(policies))})")
    if jurisdiction is None:
        jurisdiction = policies[policy]
    if not JURISDICTION.match(jurisdiction):
        raise ValueError(f"jurisdiction {jurisdiction!r} must look like eu, us or us-ca")
    identity = check_controller({k: v for k, v in (controller or {}).items() if v is not None})
    checked_origins = [check_origin(o) for o in origins]
    if await session.get(Site, slug) is not None:
        raise ValueError(f"site {slug!r} already exists")
    site = Site(
        slug=slug,
        policy=policy,
        origins=checked_origins,
        jurisdiction=jurisdiction,
        created_at=now,
        **identity,
    )
    session.add(site)
    return site


async def update_site(session: AsyncSession, slug: str, controller: dict[str, str]) -> Site:
    """Set the controller fields given and leave the others as they are; raises ValueError
    for an unknown site or a bad field (nothing is changed then)."""
    if not controller:
        raise ValueError(f"nothing to update: give any of {', '.join(CONTROLLER_FIELDS)}")
    identity = check_controller(controller)
    site = await get_site(session, slug)
    if site is None:
        raise ValueError(f"unknown site {slug!r}")
    for field, value in identity.items():
        setattr(site, field, value)
    return site


async def list_sites(session: AsyncSession) -> list[Site]:
    return list(await session.scalars(select(Site).order_by(Site.slug)))


async def get_site(session: AsyncSession, slug: str) -> Site | None:
    return await session.get(Site, slug) if SLUG.match(slug) else None


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
    """Sites by slug for the hot path. What it keeps of a site (SiteOut) never changes once
    created, so a found site is kept for the life of the process; an unknown slug is asked
    again after a few seconds. The controller, which may change, is not kept: what names it
    (receipts, the notice, exports) reads the site from the database."""

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
                self._known[row.slug] = _routing(row)

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
        site = self._known[slug] = _routing(row)
        return site
