"""The batching writer: hits are queued in memory, decided and written a batch at a time.

The pixel answers before any of this happens. A batch is one consent lookup (for subjects not
cached) and one multi-row INSERT. When the database is unreachable, batches go to the spool
and are replayed, in order, once it answers again. On shutdown the queue is drained.
"""

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
import msgspec
from sqlalchemy import insert, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import dialect_insert
from app.metrics import Metrics
from app.models import Event
from app.pipeline import EventRow, Pending, settle
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


async def write_events(
    session: AsyncSession, rows: Sequence[EventRow], skip_existing: bool = False
) -> None:
    """One multi-row insert (COPY on PostgreSQL); a replay skips rows an interrupted earlier
    replay already wrote."""
    if not rows:
        return
    if not skip_existing and session.get_bind().dialect.name == "postgresql":
        # COPY takes the rows as they are, without SQLAlchemy's per-value processing: on the
        # hot path that processing cost more than the database's own work.
        connection = await (await session.connection()).get_raw_connection()
        records = [
            (*msgspec.structs.astuple(row)[:-1], msgspec.json.encode(row.basis).decode())
            for row in rows
        ]
        driver = connection.driver_connection
        assert driver is not None  # a connection checked out of the pool is open
        await driver.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        return
    values = [msgspec.structs.asdict(row) for row in rows]
    if skip_existing:
        await session.execute(dialect_insert(session)(Event).on_conflict_do_nothing(), values)
    else:
        await session.execute(insert(Event), values)


class Ingest:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        policies: dict[str, Policy],
        consent: ConsentCache,
        spool: Spool,
        metrics: Metrics,
        batch_rows: int = 1000,
        batch_seconds: float = 0.01,
        capacity: int = 100_000,
        retry_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._policies = policies
        self._consent = consent
        self._spool = spool
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._retry_seconds = retry_seconds
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue(capacity)
        self._down_until = 0.0  # while the database is down, batches go straight to the spool
        self._replay_needed = spool.has_files()  # files left by an earlier run, perhaps
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, pending: Pending) -> None:
        """Queue a hit; only when the queue is full does the caller wait (back-pressure)."""
        self._metrics.queued.inc()
        self._idle.clear()
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            await self._queue.put(pending)

    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pixelgate-ingest")

    async def close(self) -> None:
        """Drain: everything queued is written (or spooled) before this returns."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        self._spool.close()

    async def settled(self) -> None:
        """Wait until everything submitted so far has been written or spooled."""
        await self._idle.wait()  # cleared by every submit, set when the queue runs empty

    async def _run(self) -> None:
        while True:
            batch, closing = await self._next_batch()
            if batch:
                started = time.perf_counter()
                await self._write(batch)
                self._metrics.flush_seconds.observe(time.perf_counter() - started)
            if self._replay_needed:
                await self._replay_if_due()
            if self._queue.empty():
                self._idle.set()
            self._metrics.queue_depth.set(self._queue.qsize())
            if closing:
                return

    async def _next_batch(self) -> tuple[list[Pending], bool]:
        """Up to batch_rows hits, or what came within batch_seconds of the first."""
        batch: list[Pending] = []
        timeout = self._retry_seconds if self._replay_needed else None
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return batch, False
        if first is None:
            return batch, True
        batch.append(first)
        deadline = time.monotonic() + self._batch_seconds
        while len(batch) < self._batch_rows:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _database_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("database unreachable (%s); spooling events", type(exc).__name__)
        self._down_until = time.monotonic() + self._retry_seconds

    async def _write(self, batch: list[Pending]) -> None:
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

    async def _decide(self, batch: list[Pending]) -> list[EventRow]:
        keys = [(p.event.site, p.event.subject) for p in batch if p.event.subject]
        registries = await self._consent.registries(keys)
        return await self._settle(batch, registries)

    async def _settle(
        self, batch: list[Pending], registries: dict[tuple[str, str], Registry]
    ) -> list[EventRow]:
        rows = []
        for number, pending in enumerate(batch):
            if number % 100 == 99:
                await asyncio.sleep(0)  # let the pixel answer meanwhile: it shares this loop
            event = pending.event
            registry = registries.get((event.site, event.subject), {}) if event.subject else {}
            outcome = settle(self._policies[pending.policy], pending, registry)
            if outcome.would_record and outcome.event is not None:
                rows.append(outcome.event)
                self._metrics.recorded.inc()
            else:
                self._metrics.hits.labels("denied", outcome.reason).inc()
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
