"""The writer: reads, pseudonymises, decides and writes a batch of hits at a time.

A batch is one consent lookup (for subjects not cached) and one COPY (PostgreSQL) or
executemany (SQLite). When the database is unreachable (or refuses every write), batches go
to the spool, pseudonymised, and are replayed in order once it takes them again. A row the
database refuses for its content is dropped, counted as `invalid`, and never spooled: the
rows are split until it is alone, so the others land. `pixelgate serve` runs it in
a process of its own (app/hits/writer_process.py), fed by the queue in app/hits/queue.py.
"""

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.base.db import dialect_insert, driver_connection
from app.base.keys import KeyRing
from app.base.metrics import Tally
from app.base.settings import Settings
from app.base.sites import SiteDirectory, SiteOut
from app.base.tables import Event
from app.hits.arrival import Arrival
from app.hits.event import EventRow, Pending
from app.hits.registries import erased_since, registries_met
from app.hits.shapes import Shapes
from app.hits.spool import Frame, Spool
from app.hits.steps import Dropped, Reason, known_site, settle
from consent import store
from consent.cache import ConsentCache
from consent.decide import Record
from consent.policy import MAX_ATTRIBUTION_DAYS, Policy, load_policies
from retention.report_cells import days_touched, mark_dirty

log = logging.getLogger("pixelgate.writer")
# COPY talks to asyncpg directly, so its errors come unwrapped. Besides a lost connection,
# this is a database that refuses every write (read only, disk full, a table missing): the
# hits wait in the spool for it. Rows it refuses for their content are REFUSED_ROWS.
UNREACHABLE = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# A value a column cannot hold, a constraint, or one no driver can encode: wrapped by
# SQLAlchemy (`orig`, and asyncpg's own error as the cause of that) or not.
REFUSED_ROWS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    ValueError,  # UnicodeEncodeError among them
    ArithmeticError,  # decimal.InvalidOperation
)
# The writer that has failed to write for this many retry periods in a row says so in /readyz.
STALLED_PERIODS = 3
EVENT_COLUMNS = list(EventRow.__struct_fields__)
BASIS = EVENT_COLUMNS.index("basis")  # COPY takes it as JSON text
PLACEHOLDERS = ", ".join("?" * len(EVENT_COLUMNS))
INSERT_EVENTS = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({PLACEHOLDERS})"  # noqa: S608
# In process, the writer shares the event loop with the pixel: it lets the pixel answer
# between every this many hits it reads or decides (about half a millisecond of work).
YIELD_EVERY = 50


def refuses_rows(exc: BaseException) -> bool:
    """Whether the database refused the rows themselves rather than the connection."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, REFUSED_ROWS):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return False
        seen = seen.orig if isinstance(seen, DBAPIError) else seen.__cause__
    return False


def _sqlite_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _compact_json(value: dict[str, str]) -> str:
    return msgspec.json.encode(value).decode()


# SQLAlchemy's own binders for these two cost more than the rest of a row: the same text for
# the timestamp (tests/app/hits/test_ingest.py checks), compact JSON for the basis (read back the
# same).
SQLITE_BINDERS: dict[str, Callable[[Any], str]] = {
    "occurred_at": _sqlite_timestamp,
    "basis": _compact_json,
}


async def write_events(
    session: AsyncSession,
    rows: Sequence[EventRow],
    skip_existing: bool = False,
    window: int = MAX_ATTRIBUTION_DAYS,
) -> None:
    """One multi-row insert (COPY on PostgreSQL); a replay skips rows an interrupted earlier
    replay already wrote. Marks the days written for the report cells to be built again (a
    late click its `window` of attribution days too)."""
    if not rows:
        return
    today = datetime.now(UTC).date()
    touched = {(row.site, row.occurred_at.astimezone(UTC).date(), row.kind) for row in rows}
    days = {
        (site, touched_day)
        for site, day, kind in touched
        for touched_day in days_touched(kind, day, today, window)
    }
    await mark_dirty(session, days)
    if not skip_existing and session.get_bind().dialect.name == "postgresql":
        # COPY takes the rows as they are, without SQLAlchemy's per-value processing.
        records = []
        for row in rows:
            record = list(msgspec.structs.astuple(row))
            record[BASIS] = _compact_json(row.basis)
            records.append(record)
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
    processors: list[tuple[int, Callable[[Any], Any]]] = []
    for n, name in enumerate(EVENT_COLUMNS):
        type_ = table.c[name].type.dialect_impl(dialect)
        process = SQLITE_BINDERS.get(name) or type_.bind_processor(dialect)
        if process is not None:
            processors.append((n, process))
    params = []
    for row in rows:
        bound: list[Any] = list(msgspec.structs.astuple(row))
        for n, process in processors:
            bound[n] = process(bound[n])
        params.append(tuple(bound))
    connection = await session.connection()
    await connection.exec_driver_sql(INSERT_EVENTS, params)


class Writer:
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
        region_header: str | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._policies = policies
        self._sites = sites
        self._keyring = keyring
        self._consent = consent
        self._spool = spool
        self._region_header = region_header
        self._retry_seconds = retry_seconds
        self._tally = Tally()
        self._down_until = 0.0  # while the database is down, batches go straight to the spool
        self._failing_since: float | None = None  # since when nothing could be written
        self._failure = ""  # the type of the error that keeps it from writing
        self._replay_needed = spool.has_files()  # files left by an earlier run, perhaps
        self._busy = asyncio.Lock()  # a batch and a replay never interleave
        self._replayer: asyncio.Task[None] | None = None
        self._shapes = Shapes()

    def take_tally(self) -> Tally:
        """What was counted since the last call; nothing while a batch or a replay is under
        way (a row the database refuses is taken back from `recorded` before it ends)."""
        if self._busy.locked():
            return Tally()
        tally, self._tally = self._tally, Tally()
        return tally

    def problem(self) -> str | None:
        """Why the writer cannot make progress, once it has failed for a while; else None."""
        if self._failing_since is None:
            return None
        if time.monotonic() - self._failing_since < STALLED_PERIODS * self._retry_seconds:
            return None
        return (
            f"the writer cannot write events ({self._failure}): hits are spooled until the "
            "database takes them again"
        )

    async def start(self) -> None:
        self._replayer = asyncio.create_task(self._replay_when_due(), name="pixelgate-replay")

    async def close(self) -> None:
        """After a last try at the spool (a replay under way is let finish)."""
        async with self._busy:
            if self._replayer is not None:
                self._replayer.cancel()
            await self._replay_if_due()
        if self._replayer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        self._spool.close()

    async def write(self, arrivals: list[Arrival]) -> None:
        """Write (or spool) a batch; a bug loses the batch, counted, never the writer."""
        async with self._busy:
            try:
                await self._write(arrivals)
            except Exception as exc:
                log.error("%d hits lost: %s", len(arrivals), type(exc).__name__)
                self._tally.dropped += len(arrivals)

    async def _replay_when_due(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            async with self._busy:
                await self._replay_if_due()

    def _database_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now >= self._down_until:
            log.warning(
                "database unreachable or refusing writes (%s); spooling events",
                type(exc).__name__,
            )
        self._down_until = now + self._retry_seconds
        if self._failing_since is None:
            self._failing_since = now
        self._failure = type(exc).__name__

    def _progress(self) -> None:
        self._failing_since = None

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
            written = await self._insert(rows, decided_here=True)
        except UNREACHABLE as exc:
            self._database_down(exc)
            self._spill(Frame(rows=rows), len(rows))
            return
        self._progress()
        self._tally.flushed += written

    async def _insert(
        self, rows: list[EventRow], *, decided_here: bool, skip_existing: bool = False
    ) -> int:
        """Insert rows, split in halves around those the database refuses for their content
        until each such row is alone: it is dropped and counted `invalid`, the others land.
        Returns how many were written; raises if the database cannot be written at all.
        `decided_here`: their `recorded` count is in this batch's tally, to take back."""
        if not rows:
            return 0
        try:
            async with self._sessions() as session, session.begin():
                await write_events(session, rows, skip_existing)
        except Exception as exc:
            if not refuses_rows(exc):
                raise
            if len(rows) > 1:
                half = len(rows) // 2
                first = await self._insert(
                    rows[:half], decided_here=decided_here, skip_existing=skip_existing
                )
                rest = await self._insert(
                    rows[half:], decided_here=decided_here, skip_existing=skip_existing
                )
                return first + rest
            log.warning("an event the database refuses is dropped: %s", type(exc).__name__)
            site = rows[0].site
            self._tally.count_hits({(site, Reason.INVALID): 1})
            counted = self._tally.hits.get(site, {})
            if decided_here and counted.get(Reason.RECORDED, 0) > 0:
                counted[Reason.RECORDED] -= 1
            return 0
        return len(rows)

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
        batch, dropped, lost = [], Counter[tuple[str, str]](), 0
        region = self._region_header
        for number, arrival in enumerate(arrivals, 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if arrival.site in unreadable:
                lost += 1
                continue
            try:
                site, policy = known_site(sites[arrival.site], self._policies)
                at = datetime.fromtimestamp(arrival.at, UTC)
                pending = self._shapes.prepare(self._keyring, site, policy, arrival, region, at)
                batch.append(pending)
            except Dropped as exc:
                dropped[_label(sites, arrival.site), exc.reason] += 1
            except Exception as exc:
                # Only the type: the text could quote the request.
                log.error("hit not accepted: %s", type(exc).__name__)
                dropped[_label(sites, arrival.site), "error"] += 1
        self._tally.count_hits(dropped)
        if lost:
            # Without its site's policy a hit can be neither decided nor spooled (the spool
            # holds nothing raw): only a site first seen during an outage comes to this.
            log.error("%d hits lost: their site is not cached and the database is down", lost)
            self._tally.dropped += lost
        return batch

    async def _decide(self, batch: list[Pending]) -> list[EventRow]:
        await self._consent.catch_up()  # SQLite: what other processes changed
        registries = await self._consent.registries(_subject_keys(batch))
        async with self._sessions() as session:  # connects only if a hit needs the ledger
            met = await registries_met(
                session, self._keyring, batch, registries, self._consent.changed_since
            )
        return await self._settle(batch, met)

    async def _settle(
        self, batch: list[Pending], met: list[dict[str, Record] | None]
    ) -> list[EventRow]:
        rows, denied = [], Counter[tuple[str, str]]()
        for number, (pending, registry) in enumerate(zip(batch, met, strict=True), 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            outcome = settle(self._policies[pending.policy], pending, registry)
            if outcome.would_record and outcome.event is not None:
                rows.append(outcome.event)
            else:
                denied[pending.event.site, outcome.reason] += 1
        recorded = Counter[str](map(attrgetter("site"), rows))  # in C, not in the loop above
        self._tally.count_hits({(site, Reason.RECORDED): n for site, n in recorded.items()})
        self._tally.count_hits(denied)
        return rows

    def _spill(self, frame: Frame, count: int) -> None:
        try:
            self._spool.append(frame)
        except OSError as exc:
            log.error("events lost: cannot spool (%s)", type(exc).__name__)
            self._tally.dropped += count
            return
        self._replay_needed = True
        self._tally.spilled += count

    async def _replay_if_due(self) -> None:
        """Replay the spool, oldest first, unless the database is (still) known to be down.
        A file is held up only by the database: what in it cannot be replayed is skipped."""
        due = self._replay_needed or self._failing_since is not None
        if not due or time.monotonic() < self._down_until:
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
                    if frames is not None and not await self._replay_file(frames):
                        bad = self._spool.set_aside(path)
                        log.error("spool file kept as %s: part of it cannot be replayed", bad.name)
                        self._tally.bad_files += 1
            except UNREACHABLE as exc:
                self._database_down(exc)
                return
        self._replay_needed = False
        self._progress()

    async def _replay_file(self, frames: list[Frame | None]) -> bool:
        """Replay what can be of a file's frames; False if any could not be (undecodable,
        or one that fails for a reason not the database's): the file is then kept aside."""
        whole = True
        for frame in frames:
            if frame is None:
                log.error("a spooled frame cannot be decoded")
                whole = False
                continue
            try:
                await self._replay(frame)
            except UNREACHABLE:
                raise
            except Exception as exc:
                count = len(frame.rows) + len(frame.pending)
                log.error("%d spooled events cannot be replayed: %s", count, type(exc).__name__)
                self._tally.dropped += count
                whole = False
        return whole

    async def _replay(self, frame: Frame) -> None:
        decided_before = list(frame.rows)
        if decided_before:
            # Decided before the spill: their subjects may have been erased since.
            async with self._sessions() as session:
                erased = await erased_since(session, self._keyring, decided_before)
            gone = Counter(row.site for row in decided_before if row.id in erased)
            decided_before = [row for row in decided_before if row.id not in erased]
            self._tally.count_hits({(site, Reason.ERASED): n for site, n in gone.items()})
        decided_here: list[EventRow] = []
        if frame.pending:
            # The registry itself, not the cache: notifications may have been lost meanwhile.
            keys = list(set(_subject_keys(frame.pending)))
            async with self._sessions() as session:
                registries = await store.registries(session, keys)
                met = await registries_met(
                    session, self._keyring, frame.pending, registries, _anything_may_have_changed
                )
            decided_here = await self._settle(frame.pending, met)
        # Rows decided before they were spooled were counted then, maybe by another process.
        replayed = await self._insert(decided_before, decided_here=False, skip_existing=True)
        replayed += await self._insert(decided_here, decided_here=True, skip_existing=True)
        self._tally.replayed += replayed


def _label(sites: dict[str, SiteOut | None], slug: str) -> str:
    """The site a hit is counted under in /metrics: "" for one that does not exist."""
    return slug if sites.get(slug) is not None else ""


def _anything_may_have_changed(_key: tuple[str, str], _at: datetime) -> bool:
    """A replay knows nothing of what happened while its hits were on disk."""
    return True


def _subject_keys(batch: Sequence[Pending]) -> list[tuple[str, str]]:
    """The (site, pseudonym) of each hit that has a subject."""
    return [(p.event.site, p.event.subject) for p in batch if p.event.subject]


def writer_for(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    sites: SiteDirectory,
    consent: ConsentCache,
) -> Writer:
    """The writer a server (or its writer process) runs, as its settings say."""
    return Writer(
        engine=engine,
        sessions=sessions,
        policies=load_policies(settings.policies_dir),
        sites=sites,
        keyring=KeyRing(settings.secret_key),
        consent=consent,
        spool=Spool(settings.spool_dir),
        region_header=settings.region_header,
        retry_seconds=settings.write_retry_seconds,
    )
