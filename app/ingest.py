"""The batching writer: hits are queued in memory as they came, then read, pseudonymised,
decided and written a batch at a time.

The pixel answers before any of this happens. A batch is one consent lookup (for subjects not
cached) and one COPY (PostgreSQL) or executemany (SQLite). When the database is unreachable,
batches go to the spool, pseudonymised, and are replayed in order once it answers again. On
shutdown the queue is drained.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import dialect_insert, driver_connection
from app.metrics import Metrics
from app.models import Event
from app.pipeline import (
    Arrival,
    Dropped,
    EventRow,
    Pending,
    known_site,
    parse_query,
    prepare_at_site,
    read_hit,
    settle,
)
from app.pseudonym import KeyRing
from app.sites import SiteDirectory, SiteOut
from app.spool import Frame, Spool
from consent import store
from consent.cache import ConsentCache, Registry
from consent.policy import Policy

log = logging.getLogger("pixelgate.ingest")
# COPY talks to asyncpg directly, so its errors come unwrapped.
UNREACHABLE = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
EVENT_COLUMNS = list(EventRow.__struct_fields__)  # basis last, as JSON text
PLACEHOLDERS = ", ".join("?" * len(EVENT_COLUMNS))
INSERT_EVENTS = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({PLACEHOLDERS})"  # noqa: S608
# The writer shares the event loop with the pixel: it lets the pixel answer between every
# this many hits it reads or decides (about half a millisecond of work).
YIELD_EVERY = 50


async def write_events(
    session: AsyncSession, rows: Sequence[EventRow], skip_existing: bool = False
) -> None:
    """One multi-row insert (COPY on PostgreSQL); a replay skips rows an interrupted earlier
    replay already wrote."""
    if not rows:
        return
    if not skip_existing and session.get_bind().dialect.name == "postgresql":
        # COPY takes the rows as they are, without SQLAlchemy's per-value processing.
        records = [
            (*msgspec.structs.astuple(row)[:-1], msgspec.json.encode(row.basis).decode())
            for row in rows
        ]
        driver = await driver_connection(session)
        await driver.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        return
    if skip_existing:
        values = [msgspec.structs.asdict(row) for row in rows]
        await session.execute(dialect_insert(session)(Event).on_conflict_do_nothing(), values)
        return
    # SQLite: one executemany of rows bound as the columns' types bind them (the stored
    # formats are SQLAlchemy's own), without the ORM's bulk-insert work for every row.
    dialect = session.get_bind().dialect
    table = Event.__table__
    types = [table.c[name].type.dialect_impl(dialect) for name in EVENT_COLUMNS]
    binders = [(n, type_.bind_processor(dialect)) for n, type_ in enumerate(types)]
    processors = [(n, process) for n, process in binders if process is not None]
    params = []
    for row in rows:
        values = list(msgspec.structs.astuple(row))
        for n, process in processors:
            values[n] = process(values[n])
        params.append(tuple(values))
    connection = await session.connection()
    await connection.exec_driver_sql(INSERT_EVENTS, params)


class Ingest:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        policies: dict[str, Policy],
        sites: SiteDirectory,
        keyring: KeyRing,
        consent: ConsentCache,
        spool: Spool,
        metrics: Metrics,
        region_header: str | None = None,
        batch_rows: int = 1000,
        batch_seconds: float = 0.01,
        capacity: int = 100_000,
        retry_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._policies = policies
        self._sites = sites
        self._keyring = keyring
        self._consent = consent
        self._spool = spool
        self._metrics = metrics
        self._region_header = region_header
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._capacity = capacity
        self._retry_seconds = retry_seconds
        # A plain deque and three events rather than an asyncio.Queue: the pixel's side is
        # one append, and the writer takes a whole batch at once.
        self._arrivals: deque[Arrival] = deque()
        self._arrived = asyncio.Event()  # the deque is no longer empty (or we are closing)
        self._full = asyncio.Event()  # a whole batch is waiting (or we are closing)
        self._room = asyncio.Event()  # the writer took a batch: a full deque has room again
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._submitted = 0  # counted into the `queued` counter a batch at a time
        self._published = 0
        self._down_until = 0.0  # while the database is down, batches go straight to the spool
        self._replay_needed = spool.has_files()  # files left by an earlier run, perhaps
        self._task: asyncio.Task[None] | None = None

    async def submit(self, arrival: Arrival) -> None:
        """Queue a hit; only when the queue is full does the caller wait (back-pressure)."""
        while len(self._arrivals) >= self._capacity:
            self._room.clear()
            await self._room.wait()
        arrivals = self._arrivals
        arrivals.append(arrival)
        self._submitted += 1
        if len(arrivals) == 1:
            self._arrived.set()
            self._idle.clear()
        elif len(arrivals) == self._batch_rows:
            self._full.set()

    def publish(self) -> None:
        """Bring the queue's counters in /metrics up to date."""
        self._metrics.queued.inc(self._submitted - self._published)
        self._published = self._submitted
        self._metrics.queue_depth.set(len(self._arrivals))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pixelgate-ingest")

    async def close(self) -> None:
        """Drain: everything queued is written (or spooled) before this returns."""
        if self._task is not None:
            self._closing = True
            self._arrived.set()
            self._full.set()
            await self._task
            self._task = None
        self._spool.close()

    async def settled(self) -> None:
        """Wait until everything submitted so far has been written or spooled."""
        await self._idle.wait()  # cleared by the first hit queued, set when all are written

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                started = time.perf_counter()
                try:
                    await self._write(batch)
                except Exception as exc:  # a bug: lose this batch, not the writer
                    log.error("%d hits lost: %s", len(batch), type(exc).__name__)
                    self._metrics.dropped.inc(len(batch))
                self._metrics.flush_seconds.observe(time.perf_counter() - started)
            if self._replay_needed:
                await self._replay_if_due()
            if not self._arrivals:
                self._idle.set()
            self.publish()
            if self._closing and not self._arrivals:
                return

    async def _next_batch(self) -> list[Arrival]:
        """Up to batch_rows hits, or what came within batch_seconds of the first."""
        if not self._arrivals and not self._closing:
            self._arrived.clear()
            timeout = self._retry_seconds if self._replay_needed else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        if len(self._arrivals) < self._batch_rows and not self._closing:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._batch_seconds)
        arrivals = self._arrivals
        batch = [arrivals.popleft() for _ in range(min(len(arrivals), self._batch_rows))]
        self._room.set()
        return batch

    def _database_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("database unreachable (%s); spooling events", type(exc).__name__)
        self._down_until = time.monotonic() + self._retry_seconds

    async def _write(self, arrivals: list[Arrival]) -> None:
        batch = await self._prepare(arrivals)
        if not batch:
            return
        if time.monotonic() < self._down_until:
            self._spill(Frame(pending=batch), len(batch))
            return
        try:
            rows = await self._decide(batch)
        except UNREACHABLE as exc:
            self._database_down(exc)
            self._spill(Frame(pending=batch), len(batch))
            return
        try:
            async with self._sessions() as session, session.begin():
                await write_events(session, rows)
        except UNREACHABLE as exc:
            self._database_down(exc)
            self._spill(Frame(rows=rows), len(rows))
            return
        self._metrics.flushed.inc(len(rows))

    async def _prepare(self, arrivals: list[Arrival]) -> list[Pending]:
        """Read, check and pseudonymise each hit; after this nothing raw is left."""
        sites: dict[str, SiteOut | None] = {}
        unreadable = set()
        for slug in {a.site for a in arrivals}:
            if time.monotonic() < self._down_until and not self._sites.knows(slug):
                unreadable.add(slug)  # no point asking a database known to be down
                continue
            try:
                sites[slug] = await self._sites.get(slug)
            except UNREACHABLE as exc:
                self._database_down(exc)
                unreadable.add(slug)
        batch, dropped, lost = [], Counter[str](), 0
        for number, arrival in enumerate(arrivals, 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if arrival.site in unreadable:
                lost += 1
                continue
            try:
                site, policy = known_site(sites[arrival.site], self._policies)
                values = arrival.values
                if values is None:
                    values = parse_query(arrival.query)
                hit = read_hit(site.slug, values, arrival.headers, self._region_header)
                at = datetime.fromtimestamp(arrival.at, UTC)
                batch.append(prepare_at_site(self._keyring, site, policy, hit, at))
            except Dropped as exc:
                dropped[exc.reason] += 1
            except Exception as exc:
                # Only the type: the text could quote the request.
                log.error("hit not accepted: %s", type(exc).__name__)
                dropped["error"] += 1
        self._count_denied(dropped)
        if lost:
            # Without its site's policy a hit can be neither decided nor spooled (the spool
            # holds nothing raw): only a site first seen during an outage comes to this.
            log.error("%d hits lost: their site is not cached and the database is down", lost)
            self._metrics.dropped.inc(lost)
        return batch

    def _count_denied(self, reasons: Counter[str]) -> None:
        for reason, count in reasons.items():
            self._metrics.hits.labels("denied", reason).inc(count)

    async def _decide(self, batch: list[Pending]) -> list[EventRow]:
        keys = [(p.event.site, p.event.subject) for p in batch if p.event.subject]
        registries = await self._consent.registries(keys)
        return await self._settle(batch, registries)

    async def _settle(
        self, batch: list[Pending], registries: dict[tuple[str, str], Registry]
    ) -> list[EventRow]:
        rows, denied = [], Counter[str]()
        for number, pending in enumerate(batch, 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            event = pending.event
            registry = registries.get((event.site, event.subject), {}) if event.subject else {}
            outcome = settle(self._policies[pending.policy], pending, registry)
            if outcome.would_record and outcome.event is not None:
                rows.append(outcome.event)
            else:
                denied[outcome.reason] += 1
        self._metrics.hits.labels("recorded", "recorded").inc(len(rows))
        self._count_denied(denied)
        return rows

    def _spill(self, frame: Frame, count: int) -> None:
        try:
            self._spool.append(frame)
        except OSError as exc:
            log.error("events lost: cannot spool (%s)", type(exc).__name__)
            self._metrics.dropped.inc(count)
            return
        self._replay_needed = True
        self._metrics.spilled.inc(count)

    async def _replay_if_due(self) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except UNREACHABLE as exc:
            self._database_down(exc)
            return
        self._spool.close()  # new spills, if any, start a new file
        for path in self._spool.files():
            try:
                with self._spool.claim(path) as frames:
                    for frame in frames or []:
                        await self._replay(frame)
            except UNREACHABLE as exc:
                self._database_down(exc)
                return
        self._replay_needed = False

    async def _replay(self, frame: Frame) -> None:
        rows = list(frame.rows)
        if frame.pending:
            keys = [(p.event.site, p.event.subject) for p in frame.pending if p.event.subject]
            async with self._sessions() as session:
                registries = await store.registries(session, list(set(keys)))
            rows.extend(await self._settle(frame.pending, registries))
        async with self._sessions() as session, session.begin():
            await write_events(session, rows, skip_existing=True)
        self._metrics.replayed.inc(len(rows))
