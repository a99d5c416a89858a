"""A hit is decided as of its arrival (SPEC §4.1, §4.4, §4.5): a consent withdrawn while the
hit waited to be written does not undo it, one given after it does not allow it, and an
erasure leaves none of the subject's waiting hits to be written. Real writer, real server,
both databases."""

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing, audit_hash
from app.base.metrics import Metrics, Tally
from app.base.settings import Settings
from app.base.sites import SiteDirectory
from app.base.tables import DsarRequest
from app.hits.arrival import Arrival
from app.hits.queue import Ingest
from app.hits.spool import Frame, Spool
from app.hits.writer import Writer, writer_for
from consent import store
from consent.cache import ConsentCache, listen
from consent.policy import load_policies
from retention.dsar import run_dsar
from tests.app.hits.test_ingest import NOWHERE, known_sites, pending
from tests.app.hits.test_resilience import HEADERS, metric
from tests.factories import (
    CHROME,
    POLICIES,
    SECRET,
    auth,
    make_key,
    make_site,
    run,
    settings_for,
    subject_id,
    table_rows,
    wait_for_rows,
)
from tests.servers import Server, environment

POLICY_SET = load_policies(POLICIES)
PROOF = store.Proof("test", None, None, "eu")
KEYRING = KeyRing(SECRET)  # the servers' and the test settings'
Sessions = Any


def arrival(site: str, subject: str) -> Arrival:
    """A pixel hit as the pixel queues it, arriving now."""
    return Arrival(site, f"p=/&u={subject}", (("user-agent", CHROME),), time.time())


async def give(sessions: Sessions, site: str, subject: str, policy: str = "gdpr-strict") -> str:
    """Consent to analytics, as another process would record it; the ledger entry's id."""
    async with transaction(sessions) as session:
        entry = await store.record(
            session,
            site=site,
            subject=subject,
            purposes={"analytics": True},
            policy=POLICY_SET[policy],
            proof=PROOF,
            now=utcnow(),
        )
    return str(entry.id)


async def take_back(sessions: Sessions, site: str, subject: str) -> None:
    async with transaction(sessions) as session:
        await store.withdraw(
            session,
            site=site,
            subject=subject,
            policy=POLICY_SET["gdpr-strict"],
            proof=PROOF,
            now=utcnow(),
        )


async def request_erasure(sessions: Sessions, site: str, subject: str) -> None:
    """An erasure request as the dsar API files it, pending until the dsar job runs."""
    now = utcnow()
    async with transaction(sessions) as session:
        session.add(
            DsarRequest(
                site=site,
                id=uuid.uuid4(),
                type="erasure",
                regulation="gdpr",
                status="pending",
                subject=subject,
                subject_hash=audit_hash(KEYRING, subject),
                received_at=now,
                due_at=now + timedelta(days=30),
                counts={},
            )
        )


async def erase(
    database_url: str, site: str, subject: str, sessions: Sessions | None = None
) -> None:
    """File an erasure and run the dsar job, as `pixelgate jobs run` would or, given the
    `sessions` of a consent cache, the server's own scheduler (whose cache hears it)."""
    engine = make_engine(database_url)
    sessions = sessions or make_sessionmaker(engine)
    await request_erasure(sessions, site, subject)
    await run_dsar(sessions, POLICY_SET, utcnow())
    await engine.dispose()


@asynccontextmanager
async def writer_on(
    database_url: str, spool: Path, sites: SiteDirectory | None = None
) -> AsyncIterator[tuple[Writer, ConsentCache]]:
    """The writer as a server runs it, with its consent cache following changes made
    elsewhere (on PostgreSQL through LISTEN, as the server's worker does). `sites`: a
    directory that knows them already, for a database that is down."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    cache = ConsentCache(sessions)
    listener = None
    if database_url.startswith("postgresql") and sites is None:
        ready = asyncio.Event()
        listener = asyncio.create_task(listen(cache, database_url, ready))
        await asyncio.wait_for(ready.wait(), 10)
    settings = settings_for(database_url, spool_dir=spool, write_retry_seconds=0.05)
    writer = writer_for(settings, engine, sessions, sites or SiteDirectory(sessions), cache)
    try:
        yield writer, cache
    finally:
        await writer.close()
        if listener is not None:
            listener.cancel()
        await engine.dispose()


async def heard(cache: ConsentCache, site: str, subject: str, since: datetime) -> None:
    """Until the cache has heard of a change made by another process: on PostgreSQL its
    NOTIFY comes a moment after the commit (SQLite's rows are read with the next batch)."""
    for _ in range(500):
        if cache.changed_since((site, subject), since):
            return
        await asyncio.sleep(0.01)


def pseudonym(site: str, subject: str) -> str:
    return KEYRING.pseudonym(site, subject)


def events_of(settings: Settings, site: str, subject: str) -> list[dict[str, Any]]:
    return table_rows(settings, "events", site=site, subject=pseudonym(site, subject))


def test_a_hit_queued_while_consent_was_granted_is_recorded_though_withdrawn_before_its_batch(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url)
    site, person = make_site(settings), subject_id()
    subject = pseudonym(site, person)

    async def work() -> tuple[str, Tally]:
        async with writer_on(database_url, tmp_path) as (writer, _):
            grant = await give(writer._sessions, site, subject)
            await writer.write([arrival(site, person)])  # the grant is now in the cache
            queued = arrival(site, person)
            await take_back(writer._sessions, site, subject)  # the cache hears it at commit
            await writer.write([queued, arrival(site, person)])  # the second came after it
            return grant, writer.take_tally()

    grant, tally = run(work())
    rows = events_of(settings, site, person)
    assert len(rows) == 2
    assert {r["basis"]["analytics"] for r in rows} == {f"consent:{grant}"}
    assert tally.hits == {site: {"recorded": 2, "no_consent": 1}}


def test_a_hit_queued_before_the_grant_is_not_recorded(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url)
    site, person = make_site(settings), subject_id()
    subject = pseudonym(site, person)

    async def work() -> Tally:
        async with writer_on(database_url, tmp_path) as (writer, _):
            await writer.write([arrival(site, person)])  # no consent yet: cached as such
            queued = arrival(site, person)
            await give(writer._sessions, site, subject)
            await writer.write([queued, arrival(site, person)])
            return writer.take_tally()

    tally = run(work())
    assert len(events_of(settings, site, person)) == 1  # the one after the grant
    assert tally.hits == {site: {"recorded": 1, "no_consent": 2}}


def test_queued_hits_of_a_subject_erased_before_their_batch_are_not_written_and_counted(
    database_url: str, tmp_path: Path
) -> None:
    """On an opt-out site, where nothing but the erasure stands in their way. The dsar job
    runs once in the server (which tells the writer's cache itself) and once from cron
    (which the cache hears of through the database)."""
    settings = settings_for(database_url)
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    people = [subject_id(), subject_id()]

    async def work() -> list[Tally]:
        tallies = []
        async with writer_on(database_url, tmp_path) as (writer, cache):
            for person, in_server in zip(people, (True, False), strict=True):
                subject = pseudonym(site, person)
                await writer.write([arrival(site, person)])  # written, and cached
                queued = [arrival(site, person) for _ in range(3)]
                started = utcnow()
                await erase(database_url, site, subject, writer._sessions if in_server else None)
                if database_url.startswith("postgresql"):
                    await heard(cache, site, subject, started)
                writer.take_tally()
                await writer.write([*queued, arrival(site, person)])  # the last came after
                tallies.append(writer.take_tally())
        return tallies

    for tally in run(work()):
        assert tally.hits == {site: {"erased": 3, "recorded": 1}}
    for person in people:
        assert len(events_of(settings, site, person)) == 1  # only the hit after the erasure


def test_spooled_hits_are_decided_at_replay_as_of_their_arrival(
    database_url: str, tmp_path: Path
) -> None:
    """A withdrawal while they were on disk does not undo them; an erasure leaves none,
    whether they were spooled undecided or decided and waiting to be written."""
    settings = settings_for(database_url)
    site = make_site(settings)
    kept, erased = subject_id(), subject_id()
    grants: dict[str, str] = {}

    async def consent_everyone() -> None:
        engine = make_engine(database_url)
        for person in (kept, erased):
            subject = pseudonym(site, person)
            grants[person] = await give(make_sessionmaker(engine), site, subject)
        await engine.dispose()

    async def while_down() -> Metrics:
        metrics = Metrics()
        sites = await known_sites(database_url, site)
        async with writer_on(NOWHERE, tmp_path, sites) as (writer, _):
            ingest = Ingest(writer, metrics)
            await ingest.start()
            for person in (kept, erased):
                await ingest.submit(arrival(site, person))
            await ingest.close()
        return metrics

    async def changes_meanwhile() -> None:
        engine = make_engine(database_url)
        await take_back(make_sessionmaker(engine), site, pseudonym(site, kept))
        await engine.dispose()
        await erase(database_url, site, pseudonym(site, erased))

    async def once_back() -> Tally:
        async with writer_on(database_url, tmp_path) as (writer, _):
            await writer.start()
        return writer.take_tally()

    run(consent_everyone())
    assert run(while_down()).spilled._value.get() == 2
    decided = pending(site, pseudonym(site, erased))
    decided.event.basis = {"analytics": f"consent:{grants[erased]}"}
    spool = Spool(tmp_path)
    spool.append(Frame(rows=[decided.event]))  # decided, then the write failed
    spool.close()
    run(changes_meanwhile())
    tally = run(once_back())
    [row] = table_rows(settings, "events", site=site)
    assert row["subject"] == pseudonym(site, kept)
    assert row["basis"] == {"analytics": f"consent:{grants[kept]}"}
    assert tally.hits == {site: {"recorded": 1, "erased": 2}} and tally.replayed == 1
    assert not list(tmp_path.glob("*.spool"))


def wait_for_metric(base: str, name: str, value: float) -> float:
    """The counter once it reaches `value` (the writer counts a moment after it answers)."""
    for _ in range(100):
        if (found := metric(base, name)) >= value:
            return found
        time.sleep(0.1)
    return metric(base, name)


@pytest.mark.slow
def test_a_withdrawal_or_erasure_by_another_process_reaches_a_running_server_at_once(
    database_url: str, tmp_path: Path
) -> None:
    """Changes the server did not make itself: a withdrawal by another program sharing the
    database, and an erasure by `pixelgate jobs run` from cron. The very next hit after
    each is not recorded."""
    settings = settings_for(database_url)
    site = make_site(settings)
    withdrawing, erased = subject_id(), subject_id()
    denied = f'pixelgate_hits_total{{outcome="denied",reason="no_consent",site="{site}"}}'

    async def consent_everyone() -> None:
        engine = make_engine(database_url)
        for person in (withdrawing, erased):
            await give(make_sessionmaker(engine), site, pseudonym(site, person))
        await engine.dispose()

    async def withdraw_elsewhere() -> None:
        engine = make_engine(database_url)
        await take_back(make_sessionmaker(engine), site, pseudonym(site, withdrawing))
        await engine.dispose()

    def hit(person: str) -> None:
        params = {"u": person, "p": "/"}
        answer = httpx.get(f"{server.url}/p/{site}/pixel.gif", params=params, headers=HEADERS)
        assert answer.status_code == 200

    run(consent_everyone())
    server = Server(database_url, tmp_path, PIXELGATE_JOBS="off").start()
    try:
        hit(withdrawing)
        hit(erased)
        assert len(wait_for_rows(settings, "events", 2, site=site)) == 2  # grants now cached
        run(withdraw_elsewhere())
        hit(withdrawing)
        assert wait_for_metric(server.url, denied, 1) == 1
        body = {"type": "erasure", "subject": erased}
        admin = auth(make_key(settings, site))
        filed = httpx.post(f"{server.url}/v1/sites/{site}/dsar", json=body, headers=admin)
        assert filed.status_code == 202
        cron = _pixelgate_jobs_run(database_url, tmp_path)
        assert cron.returncode == 0, cron.stderr
        hit(erased)
        assert wait_for_metric(server.url, denied, 2) == 2
        assert len(events_of(settings, site, withdrawing)) == 1
        assert events_of(settings, site, erased) == []
    finally:
        server.stop()
    server.assert_clean_log()


def _pixelgate_jobs_run(database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "jobs", "run", "--only", "dsar"],
        cwd=cwd,
        env=environment(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def post_events(client: Any, site: str, key: str, *events: dict[str, Any]) -> Any:
    response = client.post(f"/v1/sites/{site}/events", json={"events": events}, headers=auth(key))
    assert response.status_code == 200
    return response.json()


def test_a_server_side_event_is_decided_as_of_when_it_occurred(
    client: Any, settings: Settings
) -> None:
    site, person = make_site(settings), subject_id()
    admin, ingest = make_key(settings, site), make_key(settings, site, "ingest")
    body = {"subject": person, "purposes": {"analytics": True}}
    assert client.post(f"/v1/sites/{site}/consent", json=body, headers=auth(admin)).status_code
    granted = utcnow().isoformat()
    client.delete(f"/v1/sites/{site}/consent/{person}", headers=auth(admin))
    event = {"kind": "pageview", "subject": person, "occurred_at": granted}
    assert post_events(client, site, ingest, event) == {"accepted": 1, "rejected": []}
    ledger = table_rows(settings, "consent_ledger", site=site)
    [given] = [entry["id"] for entry in ledger if entry["action"] == "given"]
    [row] = events_of(settings, site, person)
    assert row["basis"] == {"analytics": f"consent:{uuid.UUID(str(given))}"}  # hex on SQLite


def test_a_server_side_event_from_before_its_subjects_erasure_is_not_recorded(
    client: Any, settings: Settings
) -> None:
    site, person = make_site(settings, policy="ccpa", jurisdiction="us-ca"), subject_id()
    ingest = make_key(settings, site, "ingest")
    before = utcnow().isoformat()
    run(erase(settings.database_url, site, pseudonym(site, person)))
    event = {"kind": "pageview", "subject": person}
    answer = post_events(client, site, ingest, {**event, "occurred_at": before}, event)
    assert answer == {"accepted": 1, "rejected": [{"index": 0, "reason": "no_consent"}]}
