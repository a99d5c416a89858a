"""Events for a bench: what a live site's hits look like (pages, campaigns, referrers,
devices, weighted as on most sites) and a fast load into either database: COPY on
PostgreSQL, executemany in big transactions on SQLite."""

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.base.tables import Event

# The columns the bench fills, in the order of the tuples it generates.
COLUMNS = (
    "site", "occurred_at", "id", "kind", "subject", "page", "campaign", "utm_source",
    "utm_medium", "utm_campaign", "utm_content", "utm_term", "referrer", "device", "browser",
    "os", "jurisdiction", "value", "currency", "machine", "basis",
)  # fmt: skip
BASIS = {"analytics": "consent:bench"}


def weighted(pairs: list[tuple[Any, float]]) -> tuple[list[Any], list[float]]:
    """Values and cumulative weights, for random.choices."""
    values, cumulative, total = [], [], 0.0
    for value, weight in pairs:
        total += weight
        values.append(value)
        cumulative.append(total)
    return values, cumulative


def _pages() -> list[tuple[str, float]]:
    """A few hundred paths; popularity falls off as 1/rank, as on most sites."""
    paths = ["/", "/pricing", "/about", "/contact", "/blog", "/docs", "/signup", "/login"]
    paths += [f"/blog/post-{n}" for n in range(1, 181)]
    paths += [f"/docs/page-{n}" for n in range(1, 81)]
    paths += [f"/products/item-{n}" for n in range(1, 41)]
    return [(path, 1 / rank) for rank, path in enumerate(paths, start=1)]


# (campaign, utm_source, utm_medium, utm_campaign, utm_content, utm_term), weight
CAMPAIGNS = weighted([
    ((None, None, None, None, None, None), 85),
    (("spring-sale", "newsletter", "email", "spring-sale", "hero", None), 4),
    (("spring-sale", "instagram", "social", "spring-sale", None, None), 3),
    (("brand-search", "google", "cpc", "brand", None, "pixelgate"), 3),
    (("newsletter-weekly", "newsletter", "email", "weekly", "footer", None), 3),
    (("creator-ana", "youtube", "influencer", "creator-ana", "video-3", None), 1),
    (("black-friday", "facebook", "social", "black-friday", "carousel", None), 1),
])  # fmt: skip
PAGES = weighted(_pages())
REFERRERS = weighted([
    (None, 55), ("www.google.com", 25), ("duckduckgo.com", 4), ("www.bing.com", 3),
    ("t.co", 3), ("news.ycombinator.com", 2), ("l.facebook.com", 3), ("www.reddit.com", 2),
    ("github.com", 3),
])  # fmt: skip
AGENTS = weighted([
    (("desktop", "Chrome", "Windows"), 30), (("desktop", "Edge", "Windows"), 7),
    (("desktop", "Firefox", "Windows"), 4), (("desktop", "Safari", "Mac OS X"), 8),
    (("desktop", "Chrome", "Mac OS X"), 6), (("desktop", "Firefox", "Linux"), 2),
    (("mobile", "Chrome Mobile", "Android"), 20), (("mobile", "Mobile Safari", "iOS"), 17),
    (("mobile", "Samsung Internet", "Android"), 3), (("tablet", "Mobile Safari", "iOS"), 3),
])  # fmt: skip


def ages_in_order(rng: random.Random, count: int, span: float, chunk: int) -> Iterator[list[float]]:
    """The ages (seconds before now) of `count` events spread over `span` seconds, oldest
    first, `chunk` at a time: chunk i covers the i-th slice of the span, so that the whole
    load is in time order, as a live site writes it."""
    chunks = max(1, -(-count // chunk))
    for index in range(chunks):
        k = count // chunks + (1 if index < count % chunks else 0)
        oldest = span * (1 - index / chunks)
        yield sorted((oldest - rng.random() * span / chunks for _ in range(k)), reverse=True)


async def load_events(
    url: str, engine: AsyncEngine, rows: Iterator[list[tuple[Any, ...]]], before: datetime
) -> tuple[int, int]:
    """Write the rows; returns (rows written, rows among them older than `before`)."""
    written = expired = 0
    if engine.dialect.name == "postgresql":
        raw = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            basis = json.dumps(BASIS)
            for chunk in rows:
                records = [(*row[:-1], basis) for row in chunk]
                async with raw.transaction():
                    await raw.copy_records_to_table("events", records=records, columns=COLUMNS)
                written += len(chunk)
                expired += sum(1 for row in chunk if row[1] < before)
            await raw.execute("VACUUM ANALYZE events")
        finally:
            await raw.close()
        return written, expired

    # SQLite: the values as SQLAlchemy would bind them, through the same type processors.
    table = Event.__table__
    process = [
        table.c[name].type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        for name in COLUMNS
    ]
    statement = (
        f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )
    connection = sqlite3.connect(url.split(":///", 1)[1], timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        for chunk in rows:
            values = [
                tuple(
                    value if p is None else p(value) for p, value in zip(process, row, strict=True)
                )
                for row in chunk
            ]
            with connection:  # one transaction per chunk
                connection.executemany(statement, values)
            written += len(chunk)
            expired += sum(1 for row in chunk if row[1] < before)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return written, expired
