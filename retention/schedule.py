"""The one table of what runs when, and the loop that runs it inside the server.

On PostgreSQL a job runs under an advisory lock, so however many processes share the
database (servers, `pixelgate jobs run` from cron), one runs a given job at a time.
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from consent.policy import Policy
from retention.dsar import run_dsar
from retention.jobs import expire_consents, purge_events
from retention.report_cells import build_cells

log = logging.getLogger("pixelgate.jobs")


@dataclass(frozen=True)
class JobContext:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    policies: dict[str, Policy]
    progress: Callable[[int], None] | None = None  # told how many events each batch deleted


@dataclass(frozen=True)
class Job:
    name: str
    every: timedelta
    run: Callable[[JobContext, datetime, bool], Awaitable[msgspec.Struct]]


async def _dsar(ctx: JobContext, now: datetime, dry_run: bool) -> msgspec.Struct:
    return await run_dsar(ctx.sessions, ctx.policies, now, dry_run=dry_run)


async def _retention(ctx: JobContext, now: datetime, dry_run: bool) -> msgspec.Struct:
    return await purge_events(ctx.engine, ctx.sessions, ctx.policies, now, dry_run, ctx.progress)


async def _consent_expiry(ctx: JobContext, now: datetime, dry_run: bool) -> msgspec.Struct:
    return await expire_consents(ctx.sessions, ctx.policies, now, dry_run)


async def _reports(ctx: JobContext, now: datetime, dry_run: bool) -> msgspec.Struct:
    return await build_cells(ctx.sessions, ctx.policies, now, dry_run)


JOBS = [
    Job("dsar", timedelta(minutes=1), _dsar),
    Job("consent-expiry", timedelta(hours=1), _consent_expiry),
    Job("retention", timedelta(hours=24), _retention),
    # After retention: a run of both builds no cells of days it has just purged.
    Job("reports", timedelta(minutes=1), _reports),
]


def _lock_key(name: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"pixelgate-job:{name}".encode()).digest()[:8], "big", signed=True
    )


async def run_job(ctx: JobContext, job: Job, now: datetime, dry_run: bool = False) -> Any:
    """The job's counts, or None when another process holds it right now."""
    if ctx.engine.dialect.name != "postgresql":
        return await job.run(ctx, now, dry_run)
    async with ctx.engine.connect() as connection:
        key = _lock_key(job.name)
        held = await connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        await connection.commit()
        if not held:
            return None
        try:
            return await job.run(ctx, now, dry_run)
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await connection.commit()


async def scheduler(
    ctx: JobContext, clock: Callable[[], datetime], stop: asyncio.Event, tick: float = 5.0
) -> None:
    """Run each job when it is due, until `stop` is set. A job under way when it is set runs
    to its end, so that it commits (or rolls back) and gives its connection back before the
    server disposes of its engine."""
    last: dict[str, float] = {}
    while not stop.is_set():
        for job in JOBS:
            if stop.is_set():
                return
            if time.monotonic() - last.get(job.name, -1e9) < job.every.total_seconds():
                continue
            last[job.name] = time.monotonic()
            try:
                counts = await run_job(ctx, job, clock())
            except Exception as exc:  # a failed run is retried at the next due time
                log.error("job %s failed: %s", job.name, type(exc).__name__)
                continue
            done = "held by another process" if counts is None else msgspec.json.encode(counts)
            log.info("job %s: %s", job.name, done if isinstance(done, str) else done.decode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
