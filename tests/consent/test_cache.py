"""The consent cache in front of the registry, on SQLite and PostgreSQL."""

import asyncio
import gc
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from consent import store
from consent.cache import ConsentCache, listen
from consent.decide import Record
from consent.policy import load_policies
from consent.tables import ConsentState
from tests.factories import POLICIES

POLICY = load_policies(POLICIES)["gdpr-strict"]
PROOF = store.Proof(source="test", ip_prefix=None, ua_family=None, jurisdiction="eu")


async def grant(sessions: Any, site: str, subject: str, granted: bool = True) -> None:
    async with transaction(sessions) as session:
        await store.record(
            session,
            site=site,
            subject=subject,
            purposes={"analytics": granted},
            policy=POLICY,
            proof=PROOF,
            now=utcnow(),
        )


def elsewhere(sessions: Any) -> Any:
    """Sessions of the same database that no cache hears: as another process's are."""
    return make_sessionmaker(sessions.kw["bind"])


async def test_a_loaded_registry_is_served_until_invalidated(sessions: Any) -> None:
    cache = ConsentCache(sessions)
    key = ("cache-a", "p-1")
    await grant(sessions, *key)
    assert (await cache.registries([key]))[key]["analytics"].granted is True
    await grant(elsewhere(sessions), *key, granted=False)  # behind the cache's back
    assert (await cache.registries([key]))[key]["analytics"].granted is True
    cache.invalidate(*key)
    assert (await cache.registries([key]))[key]["analytics"].granted is False


async def test_a_change_committed_through_the_caches_sessions_reaches_it_at_once(
    sessions: Any,
) -> None:
    """No caller empties the cache by hand: the registry tells it, once the change commits."""
    cache = ConsentCache(sessions)
    key = ("cache-a", "p-2")
    await grant(sessions, *key)
    await cache.registries([key])
    started = utcnow()
    async with transaction(sessions) as session:
        await store.withdraw(
            session, site=key[0], subject=key[1], policy=POLICY, proof=PROOF, now=utcnow()
        )
        assert key in cache._entries  # not yet committed: nothing to hear
    assert key not in cache._entries and cache.changed_since(key, started)
    assert (await cache.registries([key]))[key]["analytics"].granted is False


async def test_followers_hear_of_every_invalidation(sessions: Any) -> None:
    """How a writer process's cache follows its worker's (app/hits/writer_process.py)."""
    cache, heard = ConsentCache(sessions), list[object]()
    cache.followers.append(heard.append)
    cache.invalidate("cache-f", "p-1")
    cache.clear()
    assert heard == [("cache-f", "p-1"), None]


async def test_subjects_without_records_are_cached_as_empty(sessions: Any) -> None:
    cache = ConsentCache(sessions)
    assert await cache.registries([("cache-b", "nobody")]) == {("cache-b", "nobody"): {}}


async def test_a_load_that_raced_with_an_invalidation_is_not_kept(
    sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ConsentCache(sessions)
    key = ("cache-c", "p-1")
    await grant(sessions, *key)
    real = store.registries

    async def racing(session: Any, keys: Any) -> Any:
        loaded = await real(session, keys)
        cache.invalidate(*key)  # a withdrawal arrives while the rows are on their way
        return loaded

    monkeypatch.setattr(store, "registries", racing)
    await cache.registries([key])
    monkeypatch.setattr(store, "registries", real)
    await grant(sessions, *key, granted=False)
    assert (await cache.registries([key]))[key]["analytics"].granted is False


async def test_the_cache_is_bounded_and_entries_expire(sessions: Any) -> None:
    small = ConsentCache(sessions, max_entries=2)
    await small.registries([("cache-d", f"p-{n}") for n in range(5)])
    assert len(small._entries) == 2
    stale = ConsentCache(sessions, ttl=0.0)
    key = ("cache-d", "p-9")
    await stale.registries([key])
    await grant(sessions, *key)
    assert (await stale.registries([key]))[key]["analytics"].granted is True


async def test_cached_registries_give_the_garbage_collector_nothing_to_walk(
    sessions: Any,
) -> None:
    """Full collections walk every tracked object: a cache of a million registries that the
    collector tracks paused the pixel for up to 80 ms at a time (bench/pixel_throughput.py, 1M)."""
    keys = [("cache-gc", f"p-{n}") for n in range(1000)]
    for key in keys[:100]:
        await grant(sessions, *key)
    cache = ConsentCache(sessions)
    await cache.registries([("cache-gc", "warm-up")])  # statement caches and the like
    gc.collect()
    before = len(gc.get_objects())
    await cache.registries(keys)
    gc.collect()
    assert len(gc.get_objects()) - before < len(keys) / 4  # not one (or three) per entry


async def test_a_notification_from_another_process_invalidates(postgresql_url: str) -> None:
    database_url = postgresql_url
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    cache = ConsentCache(sessions)
    ready = asyncio.Event()
    listener = asyncio.create_task(listen(cache, database_url, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        key = ("cache-e", "p-1")
        await grant(sessions, *key)
        await cache.registries([key])
        await grant(elsewhere(sessions), *key, granted=False)  # as another process would
        for _ in range(100):
            if key not in cache._entries:
                break
            await asyncio.sleep(0.01)
        assert (await cache.registries([key]))[key]["analytics"].granted is False

        # A lost LISTEN connection empties the cache and comes back.
        await cache.registries([key])
        ready.clear()
        dsn = database_url.replace("postgresql+asyncpg", "postgresql")
        admin = await asyncpg.connect(dsn)
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )
        await admin.close()
        await asyncio.wait_for(ready.wait(), 10)
        assert key not in cache._entries
    finally:
        listener.cancel()
        await engine.dispose()


async def test_without_postgresql_the_listener_keeps_trying_and_trusts_nothing(
    sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ConsentCache(sessions)
    await cache.registries([("cache-f", "p-1")])
    ready = asyncio.Event()
    nowhere = "postgresql+asyncpg://postgres@127.0.0.1:9/nothing-listens-here"
    listener = asyncio.create_task(listen(cache, nowhere, ready))
    await asyncio.sleep(0.3)
    listener.cancel()
    assert not ready.is_set() and not cache._entries
    assert "consent notifications unavailable" in caplog.text


async def test_the_lookup_reads_the_registry_as_the_orm_reads_it(sessions: Any) -> None:
    """The writer's lookup is the driver's own statement: the same values, types and record
    ids (as text) as the mapped rows give, on both databases."""
    site = "cache-orm"
    for subject, granted in (("p-1", True), ("p-2", False), ("p-3", True)):
        await grant(sessions, site, subject, granted)
    keys = [(site, "p-1"), (site, "p-2"), (site, "p-3"), (site, "nobody")]
    async with sessions() as session:
        found = await store.registries(session, keys)
        query = select(ConsentState).where(ConsentState.site == site)
        mapped = (await session.scalars(query)).all()
    expected = {
        (site, row.subject): {
            row.purpose: Record(
                row.granted, row.policy_version, str(row.record_id), row.expires_at, row.updated_at
            )
        }
        for row in mapped
    }
    assert found == expected and len(found) == 3
    for registry in found.values():
        record = registry["analytics"]
        assert type(record.granted) is bool and record.updated_at is not None
        assert record.updated_at.tzinfo is not None
        if record.granted:  # a grant expires, a refusal does not
            assert record.expires_at is not None and record.expires_at.tzinfo is not None
        else:
            assert record.expires_at is None


async def test_a_registry_is_rebuilt_from_the_ledger_as_it_was_at_each_moment(
    sessions: Any,
) -> None:
    """What a hit met when it arrived, though the registry changed before it was decided:
    for each purpose the latest entry at or before the moment, as record() made it then."""
    site, subject = "cache-past", "p-1"
    start = utcnow() - timedelta(hours=1)
    entries = []
    async with transaction(sessions) as session:
        for minutes, purposes in ((10, {"analytics": True, "marketing": True}),
                                  (20, {"marketing": False})):  # fmt: skip
            entries.append(
                await store.record(
                    session,
                    site=site,
                    subject=subject,
                    purposes=purposes,
                    policy=POLICY,
                    proof=PROOF,
                    now=start + timedelta(minutes=minutes),
                )
            )
        await store.withdraw(
            session,
            site=site,
            subject=subject,
            policy=POLICY,
            proof=PROOF,
            now=start + timedelta(minutes=30),
        )
    given, refused = entries
    moments = [start + timedelta(minutes=m) for m in (5, 10, 25, 40)]
    async with sessions() as session:
        found = await store.registries_at(
            session, [*((site, subject, at) for at in moments), (site, "nobody", moments[0])]
        )
        [now_state] = (await store.registries(session, [(site, subject)])).values()

    def granted(entry: Any) -> Record:
        return Record(True, POLICY.version, str(entry.id), entry.expires_at, entry.recorded_at)

    refusal = Record(False, POLICY.version, str(refused.id), None, refused.recorded_at)
    assert found[(site, subject, moments[0])] == {}  # before the first entry
    assert found[(site, subject, moments[1])] == {
        "analytics": granted(given),
        "marketing": granted(given),
    }
    assert found[(site, subject, moments[2])] == {
        "analytics": granted(given),
        "marketing": refusal,
    }
    assert found[(site, subject, moments[3])] == {
        p: Record(False, r.policy_version, r.record_id, None, r.updated_at)
        for p, r in now_state.items()
    }  # after the withdrawal: the registry as it is now
    assert found[(site, "nobody", moments[0])] == {}


async def test_changes_committed_by_other_processes_reach_the_cache_on_sqlite(
    sessions: Any,
) -> None:
    """Before each batch the writer reads what others committed since its last look (SQLite:
    no NOTIFY; on PostgreSQL listen() does it). An erasure names only its site: every
    subject of the site is forgotten."""
    cache = ConsentCache(sessions)
    sqlite = sessions.kw["bind"].dialect.name == "sqlite"
    before = utcnow()
    await cache.catch_up()  # the first look: what came before it is in doubt
    assert cache.changed_since(("cache-h", "p-1"), before) is sqlite
    keys = [("cache-h", "p-1"), ("cache-h", "p-2"), ("cache-i", "p-1")]
    for key in keys:
        await grant(sessions, *key)
    await cache.catch_up()
    await cache.registries(keys)
    started = utcnow()
    await grant(elsewhere(sessions), *keys[0], granted=False)  # another process withdraws
    async with transaction(elsewhere(sessions)) as session:  # and another erases someone
        await store.erase(session, "cache-h", "p-2")
    await cache.catch_up()
    await cache.catch_up()  # nothing new: nothing more forgotten
    if not sqlite:
        assert set(cache._entries) == set(keys)
        return
    assert set(cache._entries) == {keys[2]}
    assert [cache.changed_since(key, started) for key in keys] == [True, True, False]
    async with sessions() as session:
        _, changes = await store.changes_after(session, 0)
    assert changes[-1] == ("cache-h", None)


async def test_the_cache_remembers_recent_changes_and_doubts_what_it_let_go(
    sessions: Any,
) -> None:
    cache = ConsentCache(sessions, max_changes=2)
    start = utcnow()
    assert not cache.changed_since(("cache-j", "p-1"), start)
    for n in range(3):
        cache.invalidate("cache-j", f"p-{n}")
    assert cache.changed_since(("cache-j", "p-2"), start)
    assert cache.changed_since(("cache-j", "p-9"), start)  # before p-0 was let go: unknown
    later = utcnow()
    assert not cache.changed_since(("cache-j", "p-9"), later)
    cache.forget_site("cache-k")
    assert not cache.changed_since(("cache-j", "p-9"), later)
    assert cache.changed_since(("cache-k", "p-9"), later)
    cache.clear()
    assert cache.changed_since(("cache-j", "p-9"), later)
