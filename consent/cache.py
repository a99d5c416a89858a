"""The registry as the hot path sees it: a bounded cache, emptied of a subject the moment
their consent changes: in this process when the change commits (consent.store tells the
cache, which hears the sessionmaker it is given), in every other through the database
(PostgreSQL: LISTEN/NOTIFY; SQLite: the consent_changes rows a writer reads before each
batch, catch_up()).

It also remembers when it last heard of each change, so that the writer can tell which of
the hits it holds arrived before a change to their subject (changed_since())."""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consent import store
from consent.decide import Record

log = logging.getLogger("pixelgate.consent")
Key = tuple[str, str]  # (site, pseudonym)
Registry = dict[str, Record]
EPOCH = datetime.min.replace(tzinfo=UTC)


class Cached(msgspec.Struct, gc=False):
    """A cache entry. Not a tuple: a tuple holding a dict stays on the garbage collector's
    books for good, and full collections walking a large cache of them paused the pixel
    (bench/README.md). This (like the dict of `gc=False` Records it holds) is never
    tracked."""

    registry: Registry
    until: float


class ConsentCache:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_entries: int = 200_000,
        ttl: float = 300.0,
        max_changes: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._max = max_entries
        self._ttl = ttl  # a safety net only: changes arrive as invalidations
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        # Bumped by every invalidation, so that a load that raced with one is not kept.
        self._epoch = 0
        # Told of every invalidation (None: all), for a cache in another process to follow.
        self.followers: list[Callable[[Key | None], None]] = []
        # When this process heard of each change, oldest first, as many as max_changes; of
        # anything before `_known_from` (a clear, or the oldest change let go) it knows nothing.
        self._max_changes = max_changes
        self._changed: OrderedDict[Key, datetime] = OrderedDict()
        self._site_changed: dict[str, datetime] = {}
        self._known_from = EPOCH
        self._last_change: int | None = None  # the consent_changes row read last (SQLite)
        self._feed: bool | None = None  # whether there are rows to read: known once asked
        store.hear_changes(sessions, self.invalidate)

    def invalidate(self, site: str, subject: str) -> None:
        key = (site, subject)
        self._entries.pop(key, None)
        self._epoch += 1
        self._changed[key] = datetime.now(UTC)
        self._changed.move_to_end(key)
        if len(self._changed) > self._max_changes:
            self._known_from = self._changed.popitem(last=False)[1]
        for follower in self.followers:
            follower(key)

    def forget_site(self, site: str) -> None:
        """Someone at this site was erased, by another process that names no pseudonym."""
        for key in [key for key in self._entries if key[0] == site]:
            del self._entries[key]
        self._epoch += 1
        self._site_changed[site] = datetime.now(UTC)

    def clear(self) -> None:
        self._entries.clear()
        self._epoch += 1
        self._changed.clear()
        self._known_from = datetime.now(UTC)
        for follower in self.followers:
            follower(None)

    def changed_since(self, key: Key, at: datetime) -> bool:
        """Whether this subject's consent may have changed (or they were erased) at or after
        `at`: a change this process heard of then or later, or a time it knows nothing of."""
        if at <= self._known_from:
            return True
        site_changed = self._site_changed.get(key[0])
        if site_changed is not None and site_changed >= at:
            return True
        changed = self._changed.get(key)
        return changed is not None and changed >= at

    async def catch_up(self) -> None:
        """SQLite: forget the subjects whose consent another process changed since the last
        look. The writer calls this before deciding each batch, the cache's only reader:
        a change committed before a hit arrived is then known before the hit is decided."""
        if self._feed is False:
            return
        async with self._sessions() as session:
            if self._feed is None:
                self._feed = session.get_bind().dialect.name == "sqlite"
                if not self._feed:
                    return  # PostgreSQL: NOTIFY does this (listen())
            last, changes = await store.changes_after(session, self._last_change)
        if self._last_change is None:
            self.clear()  # whatever changed before this first look is unknown
        for site, subject in changes:
            if subject is None:
                self.forget_site(site)
            else:
                self.invalidate(site, subject)
        self._last_change = last

    async def registries(self, keys: Iterable[Key]) -> dict[Key, Registry]:
        """The registry of each subject; one query for all those not cached."""
        now = time.monotonic()
        found: dict[Key, Registry] = {}
        missing = []
        for key in set(keys):
            entry = self._entries.get(key)
            if entry is not None and entry.until > now:
                self._entries.move_to_end(key)
                found[key] = entry.registry
            else:
                missing.append(key)
        if missing:
            epoch = self._epoch
            async with self._sessions() as session:
                loaded = await store.registries(session, missing)
            keep = epoch == self._epoch
            for key in missing:
                registry = found[key] = loaded.get(key, {})
                if keep:
                    self._entries[key] = Cached(registry, now + self._ttl)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return found


async def listen(cache: ConsentCache, database_url: str, ready: asyncio.Event) -> None:
    """Keep a LISTEN connection open for as long as the process lives; reconnect on loss.

    While it is down, nothing tells us about changes: the cache is emptied on every
    (re)connection, so no stale grant outlives an outage of the notification channel.
    """
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        site, _, subject = payload.partition(":")
        cache.invalidate(site, subject)

    while True:
        connection = None
        try:
            connection = await asyncpg.connect(dsn, timeout=5)
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _c, lost=lost: lost.set())
            await connection.add_listener(store.CHANNEL, on_notify)
            cache.clear()
            ready.set()
            await lost.wait()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("consent notifications unavailable: %s", type(exc).__name__)
        finally:
            cache.clear()
            if connection is not None and not connection.is_closed():
                await connection.close()
        await asyncio.sleep(1.0)
