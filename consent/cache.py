"""The registry as the hot path sees it: a bounded cache, emptied of a subject the moment
their consent changes, in this process and (through PostgreSQL LISTEN/NOTIFY) in every other."""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consent import store
from consent.decide import Record

log = logging.getLogger("pixelgate.consent")
Key = tuple[str, str]  # (site, pseudonym)
Registry = dict[str, Record]


class Cached(msgspec.Struct, gc=False):
    """A cache entry. Not a tuple: a tuple holding a dict stays on the garbage collector's
    books for good, and full collections walking a cache of 200,000 of them paused the
    pixel for up to 80 ms. This (like the dict of `gc=False` Records it holds) is never
    tracked."""

    registry: Registry
    until: float


class ConsentCache:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_entries: int = 200_000,
        ttl: float = 300.0,
    ) -> None:
        self._sessions = sessions
        self._max = max_entries
        self._ttl = ttl  # a safety net only: changes arrive as invalidations
        self._entries: OrderedDict[Key, Cached] = OrderedDict()
        # Bumped by every invalidation, so that a load that raced with one is not kept.
        self._epoch = 0
        # Told of every invalidation (None: all), for a cache in another process to follow.
        self.followers: list[Callable[[Key | None], None]] = []

    def invalidate(self, site: str, subject: str) -> None:
        self._entries.pop((site, subject), None)
        self._epoch += 1
        for follower in self.followers:
            follower((site, subject))

    def clear(self) -> None:
        self._entries.clear()
        self._epoch += 1
        for follower in self.followers:
            follower(None)

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
