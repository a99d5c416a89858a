"""Plain factory functions for tests, and a register of every raw identifier they hand out.

The register lets the session end with a search of the whole database (and the logs) for
anything raw: pseudonymisation is tested like any other correctness property.
"""

import asyncio
import functools
import hashlib
import secrets
import tempfile
import time
import uuid
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import MetaData, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.settings import Settings
from app.base.sites import create_site
from app.hits.event import EventRow
from app.http.auth import create_key
from consent.policy import jurisdictions, load_policies
from retention.report_cells import build_cells

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
SECRET = bytes(range(32))
# The test client's peer is the name "testclient", not an address within
# PIXELGATE_METRICS_ALLOW: tests that read /metrics through it show this token.
METRICS_TOKEN = "metrics-token-of-the-tests"

TEST_IP = "203.0.113.77"
TEST_IPV6 = "2001:db8:abcd:12:3456::7"
TEST_EMAIL = "alice@example.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

RAW_IDENTIFIERS: set[str] = {TEST_IP, TEST_IPV6, TEST_EMAIL, CHROME, IPHONE, GMAIL_PROXY}


def raw(value: str) -> str:
    """Register a raw identifier that must never reach storage or logs."""
    RAW_IDENTIFIERS.add(value)
    return value


def subject_id() -> str:
    return raw(f"visitor-{secrets.token_hex(6)}")


def forbidden_strings() -> set[str]:
    """The raw values, and the unkeyed hashes someone might store in their place."""
    found = set(RAW_IDENTIFIERS)
    for value in RAW_IDENTIFIERS:
        found.add(hashlib.sha256(value.encode()).hexdigest())
        found.add(hashlib.md5(value.encode()).hexdigest())  # noqa: S324
    return found


@functools.cache
def spools() -> Path:
    """Where one test process keeps its spool directories; removed when its session ends."""
    return Path(tempfile.mkdtemp(prefix="pixelgate-test-spools-"))


def spool_directory() -> Path:
    return Path(tempfile.mkdtemp(dir=spools()))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "policies_dir": POLICIES,
        "spool_dir": spool_directory(),
        "jobs": False,  # tests run jobs when they mean to; test_schedule runs the scheduler
        "metrics_token": METRICS_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)


async def _in_session(settings: Settings, work: Any) -> Any:
    engine = make_engine(settings.database_url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def build_report_cells(
    settings: Settings, now: datetime | None = None, dry_run: bool = False
) -> Any:
    """The `reports` job's run, as the scheduler would start it: the counts it gives."""

    async def work() -> Any:
        engine = make_engine(settings.database_url)
        try:
            policies = load_policies(settings.policies_dir)
            sessions = make_sessionmaker(engine)
            return await build_cells(sessions, policies, now or utcnow(), dry_run)
        finally:
            await engine.dispose()

    return run(work())


def make_site(
    settings: Settings,
    policy: str = "gdpr-strict",
    origins: tuple[str, ...] = (),
    jurisdiction: str = "eu",
) -> str:
    slug = f"site-{secrets.token_hex(4)}"

    async def work(session: AsyncSession) -> None:
        await create_site(
            session,
            slug=slug,
            policy=policy,
            policies=jurisdictions(load_policies(settings.policies_dir)),
            origins=list(origins),
            jurisdiction=jurisdiction,
            now=utcnow(),
        )

    run(_in_session(settings, work))
    return slug


def make_key(settings: Settings, site: str, scope: str = "admin") -> str:
    async def work(session: AsyncSession) -> str:
        created = await create_key(session, KeyRing(settings.secret_key), site, scope, utcnow())
        return created.key

    key: str = run(_in_session(settings, work))
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# Tables as the database describes them, by (database URL, name): reflecting one on
# PostgreSQL costs more than the query.
_REFLECTED: dict[tuple[str, str], Table] = {}


def table_rows(settings: Settings, table: str, **where: Any) -> list[dict[str, Any]]:
    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        key = (settings.database_url, table)
        if key not in _REFLECTED:
            metadata = MetaData()
            await session.run_sync(lambda s: metadata.reflect(s.connection(), only=[table]))
            _REFLECTED[key] = metadata.tables[table]
        t = _REFLECTED[key]
        query = select(t).where(*(t.c[k] == v for k, v in where.items()))
        return [dict(row._mapping) for row in await session.execute(query)]

    rows: list[dict[str, Any]] = run(_in_session(settings, work))
    return rows


def delete_rows(settings: Settings, table: str, **where: Any) -> None:
    """Deletes rows behind the application's back (as no write of it would)."""
    table_rows(settings, table)  # reflects the table once

    async def work(session: AsyncSession) -> None:
        t = _REFLECTED[(settings.database_url, table)]
        await session.execute(t.delete().where(*(t.c[k] == v for k, v in where.items())))

    run(_in_session(settings, work))


def dump_database(database_url: str) -> str:
    """Every row of every table as text, the way `pg_dump` or `.dump` would show it."""

    async def work(session: AsyncSession) -> str:
        metadata = MetaData()
        await session.run_sync(lambda s: metadata.reflect(s.connection()))
        lines = []
        for table in metadata.sorted_tables:
            for row in await session.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
        return "\n".join(lines)

    text: str = run(_in_session(settings_for(database_url), work))
    return text


def settle(client: Any) -> None:
    """Wait until every hit the app has accepted is written: the pixel answers first."""
    client.blocking_portal.call(client.app.state.ctx.ingest.settled)


def wait_for_rows(
    settings: Settings, table: str, count: int, timeout: float = 10.0, **where: Any
) -> list[dict[str, Any]]:
    """For a live server, which writes a few milliseconds after it answers."""
    deadline = time.monotonic() + timeout
    while True:
        rows = table_rows(settings, table, **where)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def event_row(
    site: str, kind: str, at: datetime, subject: str | None = "p-1", **extra: Any
) -> EventRow:
    """An event as the writer stores it, for tests that seed events directly."""
    values: dict[str, Any] = {
        "site": site,
        "occurred_at": at,
        "id": uuid.uuid4(),
        "kind": kind,
        "subject": subject,
        "page": "/",
        "campaign": None,
        "utm_source": None,
        "utm_medium": None,
        "utm_campaign": None,
        "utm_content": None,
        "utm_term": None,
        "referrer": None,
        "device": "desktop",
        "browser": "Firefox",
        "os": "Linux",
        "jurisdiction": "eu",
        "value": None,
        "currency": None,
        "machine": False,
        "basis": {"analytics": "test"},
    }
    values.update(extra)
    return EventRow(**values)
