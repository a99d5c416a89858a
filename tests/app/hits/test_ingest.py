"""The batching writer and its spool, in process: what the database refuses is kept on disk
and written, in order and once, when it answers again."""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy.dialects import sqlite

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.metrics import Metrics
from app.base.sites import SiteDirectory
from app.base.tables import Event
from app.hits.arrival import Arrival
from app.hits.event import EventRow, Pending, SignalsSeen
from app.hits.queue import Ingest
from app.hits.spool import HEADER, Frame, Spool
from app.hits.writer import SQLITE_BINDERS, Writer, writer_for
from app.hits.writer_process import WRITER_SQLITE_CACHE_MIB
from app.main import create_app
from consent import store
from consent.cache import ConsentCache
from consent.decide import Signals
from consent.policy import load_policies
from tests.factories import (
    CHROME,
    POLICIES,
    SECRET,
    make_site,
    run,
    settings_for,
    subject_id,
    table_rows,
    wait_for_rows,
)

POLICY_SET = load_policies(POLICIES)
KEYRING = KeyRing(SECRET)  # the test settings'
NOWHERE = "postgresql+asyncpg://postgres@127.0.0.1:9/nothing-listens-here"


def pending(site: str, subject: str | None, seconds_ago: float = 0) -> Pending:
    event = EventRow(
        site=site,
        occurred_at=utcnow() - timedelta(seconds=seconds_ago),
        id=uuid.uuid4(),
        kind="pageview",
        subject=subject,
        page="/",
        campaign=None,
        utm_source=None,
        utm_medium=None,
        utm_campaign=None,
        utm_content=None,
        utm_term=None,
        referrer=None,
        device="desktop",
        browser="Firefox",
        os="Linux",
        jurisdiction="eu",
        value=None,
        currency=None,
        machine=False,
        basis={},
    )
    seen = SignalsSeen(gpc=False, dnt=False, gdpr_applies=True, tcf=None, jurisdiction="eu")
    return Pending(policy="gdpr-strict", event=event, signals=Signals(), seen=seen)


def arrival(site: str, subject: str | None) -> Arrival:
    query = f"p=/&u={subject}" if subject else "p=/"
    return Arrival(site, query, (("user-agent", CHROME),), time.time())


def ingest_for(
    url: str, spool: Path, metrics: Metrics, sites: SiteDirectory | None = None
) -> tuple[Ingest, Any]:
    """`sites`: a directory that knows the sites already (as a server's does by the time its
    database goes away); by default one that asks `url`."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    settings = settings_for(url, spool_dir=spool, write_retry_seconds=0.05)
    sites = sites or SiteDirectory(sessions)
    writer = writer_for(settings, engine, sessions, sites, ConsentCache(sessions))
    return Ingest(writer, metrics), engine


async def known_sites(database_url: str, *slugs: str) -> SiteDirectory:
    engine = make_engine(database_url)
    sites = SiteDirectory(make_sessionmaker(engine))
    for slug in slugs:
        assert await sites.get(slug) is not None
    await engine.dispose()  # what it found stays known
    return sites


def consented(database_url: str, site: str, subject: str, when: Any = None) -> None:
    async def work() -> None:
        engine = make_engine(database_url)
        async with transaction(make_sessionmaker(engine)) as session:
            await store.record(
                session,
                site=site,
                subject=subject,
                purposes={"analytics": True},
                policy=POLICY_SET["gdpr-strict"],
                proof=store.Proof("test", None, None, "eu"),
                now=when or utcnow() - timedelta(minutes=5),
            )
        await engine.dispose()

    run(work())


def test_what_the_database_refuses_is_spooled_then_replayed_once(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(settings_for(database_url))
    person = subject_id()
    consented(database_url, site, KEYRING.pseudonym(site, person))
    hits = [arrival(site, person) for _ in range(25)] + [arrival(site, None)]

    async def while_down() -> Metrics:
        metrics = Metrics()
        sites = await known_sites(database_url, site)
        writer, engine = ingest_for(NOWHERE, tmp_path, metrics, sites)
        await writer.start()
        for hit in hits:
            await writer.submit(hit)
        await writer.close()  # drains: into the spool, the database being unreachable
        await engine.dispose()
        return metrics

    down = run(while_down())
    assert down.spilled._value.get() == 26 and down.dropped._value.get() == 0
    assert len(list(tmp_path.glob("*.spool"))) == 1

    async def once_back() -> Metrics:
        metrics = Metrics()
        writer, engine = ingest_for(database_url, tmp_path, metrics)
        await writer.start()
        await writer.close()
        await engine.dispose()
        return metrics

    back = run(once_back())
    rows = table_rows(settings_for(database_url), "events", site=site)
    assert len(rows) == 25  # the anonymous hit is not recorded under an opt-in policy
    assert back.replayed._value.get() == 25
    assert not list(tmp_path.glob("*.spool"))
    run(once_back())  # nothing left: a second start replays nothing
    assert len(table_rows(settings_for(database_url), "events", site=site)) == 25


def test_hits_for_a_site_first_seen_during_an_outage_are_counted_as_dropped(
    database_url: str, tmp_path: Path
) -> None:
    """Without its site's policy a hit can be neither decided nor spooled (the spool holds
    nothing raw): the loss is counted, never silent."""
    site = make_site(settings_for(database_url))

    async def while_down() -> Metrics:
        metrics = Metrics()
        writer, engine = ingest_for(NOWHERE, tmp_path, metrics)
        await writer.start()
        for _ in range(3):
            await writer.submit(arrival(site, subject_id()))
        await writer.close()
        await engine.dispose()
        return metrics

    down = run(while_down())
    assert down.dropped._value.get() == 3 and down.spilled._value.get() == 0
    assert not list(tmp_path.glob("*.spool"))


def test_a_batch_that_fails_for_another_reason_is_counted_lost_and_the_writer_goes_on(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    site = make_site(settings_for(database_url))
    person = subject_id()
    consented(database_url, site, KEYRING.pseudonym(site, person))
    real = Writer._decide
    calls = 0

    async def failing_once(self: Writer, batch: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real(self, batch)

    monkeypatch.setattr(Writer, "_decide", failing_once)

    async def two_batches() -> Metrics:
        metrics = Metrics()
        writer, engine = ingest_for(database_url, tmp_path, metrics)
        await writer.start()
        for _ in range(3):
            await writer.submit(arrival(site, person))
        await asyncio.wait_for(writer.settled(), 10)  # a dead writer would never settle
        await writer.submit(arrival(site, person))
        await asyncio.wait_for(writer.close(), 10)
        await engine.dispose()
        return metrics

    metrics = run(two_batches())
    assert metrics.dropped._value.get() == 3 and metrics.flushed._value.get() == 1
    assert len(table_rows(settings_for(database_url), "events", site=site)) == 1


def test_a_hit_spooled_before_the_consent_is_not_recorded_at_replay(
    database_url: str, tmp_path: Path
) -> None:
    """Decided as of its arrival, when nothing allowed it (tests/app/hits/test_registries.py)."""
    site = make_site(settings_for(database_url))
    subject = KEYRING.pseudonym(site, subject_id())
    Spool(tmp_path).append(Frame(pending=[pending(site, subject, seconds_ago=60)]))
    consented(database_url, site, subject, when=utcnow())  # after the hit

    async def replay() -> None:
        writer, engine = ingest_for(database_url, tmp_path, Metrics())
        await writer.start()
        await writer.close()
        await engine.dispose()

    run(replay())
    assert table_rows(settings_for(database_url), "events", site=site) == []


def test_a_frame_cut_short_by_a_crash_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(Frame(pending=[pending("s", None)]))
    spool.close()
    [path] = list(tmp_path.glob("*.spool"))
    with path.open("ab") as file:
        file.write(HEADER.pack(1000) + b"half a fra")
    with Spool(tmp_path).claim(path) as frames:
        assert frames is not None and len(frames) == 1
    assert not path.exists()


def test_a_file_a_live_process_still_writes_is_left_alone(tmp_path: Path) -> None:
    writing = Spool(tmp_path)
    writing.append(Frame(pending=[pending("s", None)]))
    [path] = list(tmp_path.glob("*.spool"))
    with Spool(tmp_path).claim(path) as frames:
        assert frames is None
    assert path.exists()
    writing.close()
    with Spool(tmp_path).claim(tmp_path / "gone.spool") as frames:
        assert frames is None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 29, 19, 24, 41, 755224, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_the_writers_sqlite_timestamps_are_sqlalchemys_own_text(moment: datetime) -> None:
    """SQLite compares timestamps as text: the writer's faster binder must not differ."""
    dialect = sqlite.dialect()
    own = Event.__table__.c["occurred_at"].type.dialect_impl(dialect).bind_processor(dialect)
    assert own is not None
    assert SQLITE_BINDERS["occurred_at"](moment) == own(moment)


def test_every_hit_that_comes_while_the_queue_closes_is_written_or_counted_lost(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Hits keep coming while close() drains the queue and closes the writer: each is either
    written or counted as dropped, none vanishes (nor waits forever for room)."""
    site = make_site(settings_for(database_url))
    person = subject_id()
    consented(database_url, site, KEYRING.pseudonym(site, person))
    real_close = Writer.close

    async def slow_close(self: Writer) -> None:
        await asyncio.sleep(0.2)  # the window in which no writer is left
        await real_close(self)

    monkeypatch.setattr(Writer, "close", slow_close)

    async def hits_during_close() -> tuple[Metrics, int]:
        metrics = Metrics()
        ingest, engine = ingest_for(database_url, tmp_path, metrics)
        await ingest.start()
        for _ in range(3):
            await ingest.submit(arrival(site, person))
        closing = asyncio.create_task(ingest.close())
        sent = 3
        # Until the queue is drained, however long a slow machine takes; then a few more
        # that find no writer left.
        while not ingest._drained:
            await ingest.submit(arrival(site, person))
            sent += 1
            await asyncio.sleep(0.01)
        for _ in range(5):
            await ingest.submit(arrival(site, person))
        await asyncio.wait_for(closing, 10)
        await engine.dispose()
        return metrics, sent + 5

    metrics, sent = run(hits_during_close())
    rows = len(table_rows(settings_for(database_url), "events", site=site))
    dropped = metrics.dropped._value.get()
    assert rows == metrics.flushed._value.get() >= 3
    assert dropped >= 5 and rows + dropped == sent


def test_an_engine_can_give_sqlite_a_larger_page_cache(tmp_path: Path) -> None:
    """What the writer process asks of its engine (WRITER_SQLITE_CACHE_MIB); other engines
    keep SQLite's default."""

    async def cache_sizes() -> list[int]:
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
        sizes = []
        for engine in (make_engine(url), make_engine(url, WRITER_SQLITE_CACHE_MIB)):
            async with engine.connect() as connection:
                sizes.append((await connection.exec_driver_sql("PRAGMA cache_size")).scalar())
            await engine.dispose()
        return sizes

    assert run(cache_sizes()) == [-2000, -WRITER_SQLITE_CACHE_MIB * 1024]  # KiB


def row(site: str, page: str = "/", **fields: Any) -> EventRow:
    """An event decided before it was spooled."""
    event = pending(site, None).event
    return msgspec.structs.replace(event, page=page, basis={"analytics": "test"}, **fields)


@contextmanager
def refusing(database_url: str, page: str) -> Iterator[None]:
    """The database refuses every event row for `page` for its content (a constraint), as it
    would a value it cannot store."""
    if database_url.startswith("sqlite"):
        create = [
            "CREATE TRIGGER refuse_page BEFORE INSERT ON events "
            f"WHEN NEW.page = '{page}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
        drop = ["DROP TRIGGER refuse_page"]
    else:
        create = [
            "CREATE FUNCTION refuse_page() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.page = '{page}' THEN RAISE EXCEPTION 'refused' USING ERRCODE = "
            "'check_violation'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_page BEFORE INSERT ON events "
            "FOR EACH ROW EXECUTE FUNCTION refuse_page()",
        ]
        drop = ["DROP TRIGGER refuse_page ON events", "DROP FUNCTION refuse_page()"]

    async def execute(statements: list[str]) -> None:
        engine = make_engine(database_url)
        async with engine.begin() as connection:
            for statement in statements:
                await connection.exec_driver_sql(statement)
        await engine.dispose()

    run(execute(create))
    try:
        yield
    finally:
        run(execute(drop))


@contextmanager
def events_table_gone(database_url: str) -> Iterator[None]:
    """The database answers but refuses every event (its table is renamed meanwhile)."""

    async def rename(old: str, new: str) -> None:
        engine = make_engine(database_url)
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
        await engine.dispose()

    run(rename("events", "events_away"))
    try:
        yield
    finally:
        run(rename("events_away", "events"))


def readyz_until(get: Callable[[], Any], status: int, between: Callable[[], None]) -> Any:
    """Ask /readyz (with `between` done before each retry) until it answers `status`."""
    deadline = time.monotonic() + 30
    while (ready := get()).status_code != status:
        assert time.monotonic() < deadline, f"/readyz never answered {status}"
        between()
        time.sleep(0.2)
    return ready


def test_an_app_that_writes_in_process_says_in_readyz_when_it_cannot_write(
    database_url: str,
) -> None:
    settings = settings_for(database_url)
    site, person = make_site(settings), subject_id()
    consented(database_url, site, KeyRing(settings.secret_key).pseudonym(site, person))
    sent = 0

    def hit() -> None:
        nonlocal sent
        client.get(f"/p/{site}/pixel.gif", params={"u": person}, headers={"User-Agent": CHROME})
        sent += 1

    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        with events_table_gone(database_url):
            stuck = readyz_until(lambda: client.get("/readyz"), 503, hit)
        assert stuck.json()["detail"].startswith("the writer cannot write events")
        readyz_until(lambda: client.get("/readyz"), 200, lambda: None)
        rows = wait_for_rows(settings, "events", sent, 30, site=site)
    assert len(rows) == sent > 0


def replay_spool(database_url: str, spool: Path) -> Metrics:
    async def work() -> Metrics:
        metrics = Metrics()
        writer, engine = ingest_for(database_url, spool, metrics)
        await writer.start()
        await writer.close()
        await engine.dispose()
        return metrics

    return run(work())


def hits_by(metrics: Metrics, site: str, outcome: str, reason: str) -> float:
    value: float = metrics.hits.labels(site, outcome, reason)._value.get()
    return value


def test_a_batch_with_a_row_the_database_refuses_writes_the_others_and_spools_nothing(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(settings_for(database_url))
    person = subject_id()
    consented(database_url, site, KEYRING.pseudonym(site, person))
    pages = [f"/good-{n}" for n in range(7)]
    hits = [arrival(site, person) for _ in pages]
    for hit, page in zip(hits, pages, strict=True):
        hit.query = f"p={page}&u={person}"
    hits.insert(3, Arrival(site, f"p=/refused&u={person}", hits[0].headers, time.time()))

    async def write() -> Metrics:
        metrics = Metrics()
        ingest, engine = ingest_for(database_url, tmp_path, metrics)
        await ingest.start()
        for hit in hits:
            await ingest.submit(hit)
        await ingest.close()
        await engine.dispose()
        return metrics

    with refusing(database_url, "/refused"):
        metrics = run(write())
    rows = table_rows(settings_for(database_url), "events", site=site)
    assert sorted(r["page"] for r in rows) == pages
    assert hits_by(metrics, site, "denied", "invalid") == 1
    assert hits_by(metrics, site, "recorded", "recorded") == metrics.flushed._value.get() == 7
    assert metrics.spilled._value.get() == 0 and not list(tmp_path.glob("*.spool"))


def test_a_spooled_row_the_database_refuses_is_dropped_and_the_rest_replayed(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(settings_for(database_url))
    frame = [row(site, "/a"), row(site, "/refused"), row(site, "/b")]
    if database_url.startswith("postgresql"):
        frame.append(row(site, "/nul", utm_source="\x00"))  # what an older version spooled
    first = Spool(tmp_path)
    first.append(Frame(rows=frame))
    first.append(Frame(rows=[row(site, "/c")]))
    first.close()
    later = Spool(tmp_path)
    later.append(Frame(rows=[row(site, "/d")]))
    later.close()

    with refusing(database_url, "/refused"):
        metrics = replay_spool(database_url, tmp_path)
    rows = table_rows(settings_for(database_url), "events", site=site)
    assert sorted(r["page"] for r in rows) == ["/a", "/b", "/c", "/d"]
    assert hits_by(metrics, site, "denied", "invalid") == len(frame) - 2
    assert metrics.replayed._value.get() == 4
    assert not list(tmp_path.glob("*.spool")) and not list(tmp_path.glob("*.bad"))


def test_a_spool_file_that_cannot_be_read_whole_is_kept_aside_and_later_ones_replayed(
    database_url: str, tmp_path: Path
) -> None:
    site = make_site(settings_for(database_url))
    first = Spool(tmp_path)
    first.append(Frame(rows=[row(site, "/a")]))
    first.close()
    [broken] = list(tmp_path.glob("*.spool"))
    with broken.open("ab") as file:
        file.write(HEADER.pack(5) + b"\xc1junk")  # a whole frame, not msgpack
    after = Spool(tmp_path)
    after.append(Frame(rows=[row(site, "/b")]))
    gone = msgspec.structs.replace(pending(site, None), policy="a-policy-since-removed")
    after.append(Frame(pending=[gone]))  # cannot be decided any more
    after.append(Frame(rows=[row(site, "/c")]))
    after.close()
    later = Spool(tmp_path)
    later.append(Frame(rows=[row(site, "/d")]))
    later.close()

    metrics = replay_spool(database_url, tmp_path)
    rows = table_rows(settings_for(database_url), "events", site=site)
    assert sorted(r["page"] for r in rows) == ["/a", "/b", "/c", "/d"]
    assert metrics.bad_files._value.get() == 2 and metrics.dropped._value.get() == 1
    assert not list(tmp_path.glob("*.spool"))
    assert len(list(tmp_path.glob("*.bad"))) == 2  # kept for a person to look at
    assert replay_spool(database_url, tmp_path).replayed._value.get() == 0  # not tried again
