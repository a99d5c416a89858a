"""consent.store announces each change once it commits, and only then: to this process's
hearers (the consent cache), and to others by NOTIFY (PostgreSQL) or a consent_changes row
(SQLite). On both databases."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.base.db import transaction, utcnow
from consent import store
from consent.policy import load_policies
from tests.factories import POLICIES

POLICY = load_policies(POLICIES)["gdpr-strict"]
PROOF = store.Proof(source="test", ip_prefix=None, ua_family=None, jurisdiction="eu")
Heard = list[tuple[str, str]]


@pytest.fixture
def heard(sessions: Any) -> Heard:
    """What this process hears of, as a consent cache would."""
    found: Heard = []
    store.hear_changes(sessions, lambda site, subject: found.append((site, subject)))
    return found


@pytest.fixture
async def notified(database_url: str) -> AsyncIterator[list[str]]:
    """The NOTIFY payloads another process would get (PostgreSQL; none on SQLite)."""
    payloads: list[str] = []
    if not database_url.startswith("postgresql"):
        yield payloads
        return
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    await connection.add_listener(store.CHANNEL, lambda *args: payloads.append(args[-1]))
    yield payloads
    await connection.close()


async def record(session: Any, site: str, subject: str, granted: bool = True) -> None:
    await store.record(
        session,
        site=site,
        subject=subject,
        purposes={"analytics": granted},
        policy=POLICY,
        proof=PROOF,
        now=utcnow(),
    )


async def rows_announced(sessions: Any, site: str) -> list[str | None]:
    """The subjects of the consent_changes rows of a site (SQLite's announcements)."""
    async with sessions() as session:
        _, changes = await store.changes_after(session, 0)
    return [subject for where, subject in changes if where == site]


async def settled(payloads: list[str], count: int) -> list[str]:
    """NOTIFY arrives a moment after the commit."""
    for _ in range(200):
        if len(payloads) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and nothing more comes
    return payloads


async def test_a_change_is_heard_once_it_commits(
    sessions: Any, heard: Heard, notified: list[str], database_url: str
) -> None:
    site = "announce-a"
    async with transaction(sessions) as session:
        await record(session, site, "p-1")
        await store.withdraw(
            session, site=site, subject="p-2", policy=POLICY, proof=PROOF, now=utcnow()
        )
        assert heard == []  # not before the commit
    assert heard == [(site, "p-1"), (site, "p-2")]
    if database_url.startswith("postgresql"):
        assert await settled(notified, 2) == [f"{site}:p-1", f"{site}:p-2"]
    else:
        assert await rows_announced(sessions, site) == ["p-1", "p-2"]
    async with transaction(sessions) as session:  # the next transaction tells only its own
        await record(session, site, "p-3")
    assert heard[2:] == [(site, "p-3")]
    async with sessions() as session:  # and what was recorded is what the pixel reads
        registry = await store.registry(session, site, "p-1")
    assert list(registry) == ["analytics"] and registry["analytics"].granted
    async with sessions() as session:  # and the current rows, as the consent API shows them
        [row] = await store.current(session, site, "p-1")
    assert store.as_record(row) == registry["analytics"]


async def test_a_rolled_back_change_announces_nothing(
    sessions: Any, heard: Heard, notified: list[str]
) -> None:
    site = "announce-b"
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as session:
            await record(session, site, "p-1")
            raise RuntimeError("changed my mind")
    async with sessions() as session:  # nor one given up, never committed
        await record(session, site, "p-2")
    async with sessions() as session:  # nor a later commit in the same session
        await record(session, site, "p-3")
        await session.rollback()
        await session.commit()
    assert heard == []
    assert await rows_announced(sessions, site) == []
    assert await settled(notified, 0) == []
    async with sessions() as session:
        assert await store.current(session, site, "p-1") == []


async def test_a_savepoint_announces_nothing_before_its_transaction_commits(
    sessions: Any, heard: Heard
) -> None:
    site = "announce-c"
    async with transaction(sessions) as session:
        async with session.begin_nested():
            await record(session, site, "p-1")
        assert heard == []
    assert heard == [(site, "p-1")]


async def test_without_hearers_a_change_is_announced_to_other_processes_only(
    sessions: Any, notified: list[str], database_url: str
) -> None:
    """As `pixelgate jobs run` does: no cache in its process."""
    site = "announce-d"
    async with transaction(sessions) as session:
        await record(session, site, "p-1")
    if database_url.startswith("postgresql"):
        assert await settled(notified, 1) == [f"{site}:p-1"]
    else:
        assert await rows_announced(sessions, site) == ["p-1"]


async def test_erase_deletes_the_ledger_and_state_and_announces(
    sessions: Any, heard: Heard, notified: list[str], database_url: str
) -> None:
    """Everything of consent under the pseudonym goes, the earlier announcements that name it
    too; the erasure's own names only the site to other processes."""
    site = "announce-e"
    async with transaction(sessions) as session:
        for subject in ("p-1", "p-2"):
            await record(session, site, subject)
            await record(session, site, subject, granted=False)
    heard.clear()
    async with transaction(sessions) as session:
        counts = await store.erase(session, site, "p-1")
        assert heard == []
    assert counts == {"consent_state": 1, "consent_ledger": 2}
    assert heard == [(site, "p-1")]
    async with sessions() as session:
        assert await store.current(session, site, "p-1") == []
        assert await store.history(session, site, "p-1") == []
        assert len(await store.current(session, site, "p-2")) == 1
        assert len(await store.history(session, site, "p-2")) == 2
    if database_url.startswith("postgresql"):
        assert (await settled(notified, 5))[-1] == f"{site}:p-1"
    else:
        assert await rows_announced(sessions, site) == ["p-2", "p-2", None]
