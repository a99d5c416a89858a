"""pixelgate's databases for a bench: a throwaway PostgreSQL database or a SQLite file,
migrated, with sites and consent seeded as the library writes them.

PostgreSQL is the one at PIXELGATE_TEST_PG (postgres@127.0.0.1:5432 by default, trust auth).
"""

import asyncio
import contextlib
import json
import os
import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.sites import create_site
from app.base.tables import Event
from bench.lib.pixelgate import POLICIES, POLICY, SECRET
from consent import store
from consent.decide import Signals, decide
from consent.policy import Policy, jurisdictions, load_policies
from consent.tables import ConsentLedger, ConsentState

PG_HOST = os.environ.get("PIXELGATE_TEST_PG", "postgres@127.0.0.1:5432")
NAMES = ("postgresql", "sqlite")
LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
SEED_BATCH = 100_000


def pg_dsn(database: str) -> str:
    return f"postgresql://{PG_HOST}/{database}"


async def pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(pg_dsn("test"), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create(database: str, sqlite_file: Path, cleanup: contextlib.ExitStack) -> str:
    """The URL of an empty database: on PostgreSQL a new database, dropped by `cleanup`; on
    SQLite `sqlite_file` (in the bench's temp dir)."""
    if database == "sqlite":
        return f"sqlite+aiosqlite:///{sqlite_file}"
    name = f"pixelgate_bench_{secrets.token_hex(4)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    cleanup.callback(
        lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    )
    return f"postgresql+asyncpg://{PG_HOST}/{name}"


# --- consent, as consent.store.record writes it --------------------------------------------

LEDGER_COLUMNS = (
    "site", "id", "subject", "recorded_at", "action", "purposes", "policy_version",
    "policy_sha256", "source", "ip_prefix", "ua_family", "jurisdiction", "expires_at",
)  # fmt: skip
STATE_COLUMNS = (
    "site", "subject", "purpose", "granted", "policy_version", "record_id", "updated_at",
    "expires_at",
)  # fmt: skip

PURPOSES = {"analytics": True}
PURPOSES_JSON = json.dumps(PURPOSES)


def consent_rows(
    policy: Policy, site: str, subjects: list[str], now: datetime, purposes: object
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ledger and state rows consent.store.record writes for `analytics: true`, in the
    order of LEDGER_COLUMNS and STATE_COLUMNS. `purposes` is that JSON value as the driver
    takes it: a dict for SQLAlchemy, text for COPY."""
    expires = now + timedelta(days=policy.file.purposes["analytics"].consent_ttl_days)
    version, sha256 = policy.version, policy.sha256
    ledger, state = [], []
    for subject in subjects:
        record_id = uuid.uuid4()
        ledger.append(
            (site, record_id, subject, now, "given", purposes, version, sha256, "bench",
             None, None, "eu", expires)
        )  # fmt: skip
        state.append((site, subject, "analytics", True, version, record_id, now, expires))
    return ledger, state


async def seed(database_url: str, sites: dict[str, int]) -> None:
    """Create the sites (slug -> n) under POLICY with the library, and consent for subjects
    s-0 .. s-<n-1> of each, bulk-inserted (COPY on PostgreSQL, then VACUUM ANALYZE; Core
    inserts on SQLite); then check one decision per site against the seeded rows."""
    policies = load_policies(POLICIES)
    policy = policies[POLICY]
    keyring = KeyRing(SECRET)
    now = utcnow()
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    pg = database_url.startswith("postgresql")
    raw = await asyncpg.connect(database_url.replace("+asyncpg", "")) if pg else None
    try:
        async with transaction(sessions) as session:
            for slug in sites:
                await create_site(
                    session, slug=slug, policy=POLICY, policies=jurisdictions(policies), origins=[],
                    jurisdiction="eu", now=now,
                )  # fmt: skip
        for slug, count in sites.items():
            # In key order, the indexes grow at their end: several times faster to load.
            subjects = sorted(keyring.pseudonym(slug, f"s-{n}") for n in range(count))
            for start in range(0, count, SEED_BATCH):
                batch = subjects[start : start + SEED_BATCH]
                if raw is not None:
                    await copy_consent(raw, *consent_rows(policy, slug, batch, now, PURPOSES_JSON))
                else:
                    await insert_consent(engine, *consent_rows(policy, slug, batch, now, PURPOSES))
        if raw is not None:
            # As autovacuum would have by now on a live database (and so that it does not
            # start on these tables in the middle of a measurement).
            await raw.execute("VACUUM ANALYZE")
        async with sessions() as session:
            for slug, count in sites.items():
                registry = await store.registry(session, slug, keyring.pseudonym(slug, "s-0"))
                decision = decide(policy, "pageview", registry, Signals(), "eu", utcnow())
                if decision.record != (count > 0):
                    raise RuntimeError(f"seeding {slug}: s-0 decided {decision}")
    finally:
        if raw is not None:
            await raw.close()
        await engine.dispose()


async def copy_consent(raw: Any, ledger: list[Any], state: list[Any]) -> None:
    """PostgreSQL: COPY, one transaction per batch."""
    async with raw.transaction():
        await raw.copy_records_to_table("consent_ledger", records=ledger, columns=LEDGER_COLUMNS)
        await raw.copy_records_to_table("consent_state", records=state, columns=STATE_COLUMNS)


async def insert_consent(engine: AsyncEngine, ledger: list[Any], state: list[Any]) -> None:
    """SQLite: a Core executemany (SQLAlchemy converts the values), one transaction per batch."""
    async with engine.begin() as connection:
        rows = [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in ledger]
        await connection.execute(insert(ConsentLedger), rows)
        rows = [dict(zip(STATE_COLUMNS, row, strict=True)) for row in state]
        await connection.execute(insert(ConsentState), rows)


async def events_per_site(database_url: str) -> dict[str, int]:
    """Rows in events, by site."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(Event.site, func.count()).group_by(Event.site))
            return {site: int(n) for site, n in result}
    finally:
        await engine.dispose()
