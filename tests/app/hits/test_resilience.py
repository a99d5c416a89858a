"""Never lose a consented hit: shutdown under load, a database outage, a restart in between,
and consent changes reaching every server process. Real server processes, real databases."""

import asyncio
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.main import _stopped, create_app
from consent import store
from consent.policy import load_policies
from tests.app.hits.test_ingest import events_table_gone, readyz_until
from tests.factories import (
    CHROME,
    POLICIES,
    auth,
    make_key,
    make_site,
    raw,
    run,
    settings_for,
    table_rows,
    wait_for_rows,
)
from tests.servers import Server, TcpProxy

HEADERS = {"User-Agent": CHROME}


def seed(database_url: str, count: int) -> tuple[str, list[str]]:
    """A gdpr-strict site and `count` subjects who consented to analytics."""
    settings = settings_for(database_url)
    site = make_site(settings)
    subjects = [raw(f"load-{site}-{n}") for n in range(count)]
    policy = load_policies(POLICIES)["gdpr-strict"]
    keyring = KeyRing(settings.secret_key)

    async def work() -> None:
        engine = make_engine(database_url)
        async with transaction(make_sessionmaker(engine)) as session:
            for subject in subjects:
                await store.record(
                    session,
                    site=site,
                    subject=keyring.pseudonym(site, subject),
                    purposes={"analytics": True},
                    policy=policy,
                    proof=store.Proof("test", None, None, "eu"),
                    now=utcnow(),
                )
        await engine.dispose()

    run(work())
    return site, subjects


async def _fire(
    base: str, site: str, subjects: list[str], count: int, on_start: object = None
) -> int:
    """`count` pixel hits from 32 concurrent clients; returns how many were answered 200."""
    answered = 0
    left = count
    # `on_start` comes in the middle of the load: once 100 hits are answered, however long
    # that takes on a busy machine.
    under_way = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal answered, left
        while left > 0:
            left -= 1
            try:
                response = await client.get(
                    f"/p/{site}/pixel.gif", params={"u": random.choice(subjects)}, headers=HEADERS
                )
            except httpx.TransportError:
                return  # the server is going away: this hit and the rest are never answered
            answered += response.status_code == 200
            if answered >= 100:
                under_way.set()
        under_way.set()  # fewer than 100 in all: no later moment comes

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        clients = [asyncio.create_task(client_loop(client)) for _ in range(32)]
        if callable(on_start):
            await under_way.wait()
            on_start()
        await asyncio.gather(*clients)
    return answered


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the tests that leave it running as it was: each uses a
    site of its own and reads global counters as differences. They share one test process."""
    running = Server(database_url, tmp_path_factory.mktemp("resilience")).start()
    yield running
    assert running.stop() == 0
    assert not list((running.workdir / "data" / "spool").glob("*.spool"))
    running.assert_clean_log()


SHARED = pytest.mark.xdist_group("resilience-shared")


def fire(base: str, site: str, subjects: list[str], count: int, on_start: object = None) -> int:
    return asyncio.run(_fire(base, site, subjects, count, on_start))


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def metric_soon(base: str, name: str, timeout: float = 5.0) -> float:
    """A counter once it is above 0: the writer process reports what it did between batches
    (a replay) within a second."""
    deadline = time.monotonic() + timeout
    while (value := metric(base, name)) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def metric_until(base: str, name: str, value: float, timeout: float = 10.0) -> float:
    """A counter once it has reached `value` (or what it is when the time is up)."""
    deadline = time.monotonic() + timeout
    while (seen := metric(base, name)) < value and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


@pytest.mark.slow
def test_sigterm_under_load_loses_no_answered_hit(database_url: str, tmp_path: Path) -> None:
    site, subjects = seed(database_url, 50)
    server = Server(database_url, tmp_path).start()
    answered = fire(server.url, site, subjects, 3000, on_start=lambda: server.process.terminate())  # type: ignore[union-attr]
    assert server.wait() == 0
    server.assert_clean_log()
    assert 0 < answered < 3000  # the signal really came in the middle of the load
    rows = table_rows(settings_for(database_url), "events", site=site)
    assert len(rows) == answered


def _proxied(postgresql_url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(postgresql_url)
    return postgresql_url.replace(parts.netloc, f"postgres@127.0.0.1:{proxy.port}")


@pytest.mark.slow
def test_a_database_outage_during_load_loses_nothing_once_it_is_back(
    postgresql_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    site, subjects = seed(postgresql_url, 50)
    server = Server(_proxied(postgresql_url, proxy), tmp_path).start()
    try:
        answered = fire(server.url, site, subjects, 300)
        proxy.cut()
        during = fire(server.url, site, subjects, 300)
        assert during == 300  # the pixel keeps answering
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        time.sleep(0.5)
        proxy.restore()
        answered += during + fire(server.url, site, subjects, 300)
        rows = wait_for_rows(settings_for(postgresql_url), "events", answered, 30, site=site)
        assert len(rows) == answered == 900
        assert metric(server.url, "pixelgate_events_spilled_total") > 0
        assert metric_soon(server.url, "pixelgate_events_replayed_total") > 0
        assert metric(server.url, "pixelgate_events_dropped_total") == 0
    finally:
        server.stop()
        proxy.close()
    server.assert_clean_log()


@pytest.mark.slow
def test_the_spool_survives_a_restart(postgresql_url: str, tmp_path: Path) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    site, subjects = seed(postgresql_url, 20)
    url = _proxied(postgresql_url, proxy)
    try:
        first = Server(url, tmp_path).start()
        fire(first.url, site, subjects, 10)  # subjects now cached: decided while it is down
        proxy.cut()
        answered = fire(first.url, site, subjects, 200)
        assert first.stop() == 0  # drains into the spool: the database is still down
        assert list((tmp_path / "data" / "spool").glob("*.spool"))
        proxy.restore()
        second = Server(url, tmp_path).start()
        rows = wait_for_rows(settings_for(postgresql_url), "events", 210, 30, site=site)
        assert len(rows) == answered + 10
        second.stop()
        assert not list((tmp_path / "data" / "spool").glob("*.spool"))
    finally:
        proxy.close()
    first.assert_clean_log()


def withdrawal_stops_recording(database_url: str, api: Server, pixels: Server) -> str:
    """Three hits to `pixels` are recorded (its writer now holds the grant in its cache); after
    a withdrawal through `api`, three more are not. Returns the site."""
    site, [subject] = seed(database_url, 1)
    settings = settings_for(database_url)
    for _ in range(3):
        httpx.get(f"{pixels.url}/p/{site}/pixel.gif", params={"u": subject}, headers=HEADERS)
    assert len(wait_for_rows(settings, "events", 3, site=site)) == 3
    admin = auth(make_key(settings, site))
    withdrawn = httpx.delete(f"{api.url}/v1/sites/{site}/consent/{subject}", headers=admin)
    assert withdrawn.status_code == 200
    for _ in range(3):
        httpx.get(f"{pixels.url}/p/{site}/pixel.gif", params={"u": subject}, headers=HEADERS)
    time.sleep(1.0)
    assert len(table_rows(settings, "events", site=site)) == 3
    return site


@pytest.mark.slow
def test_a_withdrawal_reaches_every_server_process_at_once(
    postgresql_url: str, tmp_path: Path
) -> None:
    one = Server(postgresql_url, tmp_path / "one").start()
    two = Server(postgresql_url, tmp_path / "two").start()
    try:
        withdrawal_stops_recording(postgresql_url, api=one, pixels=two)
    finally:
        one.stop()
        two.stop()


@pytest.mark.slow
@SHARED
def test_a_withdrawal_reaches_the_writer_process_at_once(database_url: str, server: Server) -> None:
    """The writer process keeps its own consent cache: the worker passes every change on."""
    site = withdrawal_stops_recording(database_url, api=server, pixels=server)
    denied = f'pixelgate_hits_total{{outcome="denied",reason="no_consent",site="{site}"}}'
    assert metric(server.url, denied) == 3


@pytest.mark.slow
@SHARED
def test_the_writer_process_ignores_sigterm_and_is_replaced_if_it_dies(
    database_url: str, server: Server
) -> None:
    site, subjects = seed(database_url, 20)
    settings = settings_for(database_url)
    dropped = metric(server.url, "pixelgate_events_dropped_total")
    writer = server.writer_pid()
    os.kill(writer, signal.SIGTERM)  # as a signal to the whole process group would
    assert fire(server.url, site, subjects, 50) == 50
    assert len(wait_for_rows(settings, "events", 50, site=site)) == 50
    assert server.writer_pid() == writer
    os.kill(writer, signal.SIGKILL)
    time.sleep(0.5)
    assert fire(server.url, site, subjects, 50) == 50
    assert len(wait_for_rows(settings, "events", 100, site=site)) == 100
    assert server.writer_pid() != writer
    assert metric(server.url, "pixelgate_events_dropped_total") == dropped
    assert "the writer process is gone; starting another" in server.log()


async def test_shutdown_waits_a_while_for_a_background_task_never_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job told to stop is let finish what it is doing; one that would not finish at all is
    cancelled after a while, named in the log, and the shutdown goes on."""
    stop, finished = asyncio.Event(), asyncio.Event()

    async def polite_job() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # the rest of the job under way: commit, give back
        finished.set()

    polite = asyncio.create_task(polite_job(), name="polite")
    await asyncio.sleep(0)
    stop.set()
    await _stopped(polite, seconds=5)
    assert finished.is_set() and not polite.cancelled() and "polite" not in caplog.text

    stubborn = asyncio.create_task(asyncio.sleep(60), name="stubborn")
    started = time.monotonic()
    await _stopped(stubborn, seconds=0.1)
    assert time.monotonic() - started < 0.4
    assert "stubborn still running" in caplog.text
    with pytest.raises(asyncio.CancelledError):
        await stubborn


def hits_answered(base: str, site: str, queries: list[dict[str, str]]) -> None:
    """Pixel hits, one after another, each answered 200 with the GIF."""
    for params in queries:
        response = httpx.get(f"{base}/p/{site}/pixel.gif", params=params, headers=HEADERS)
        assert response.status_code == 200


@pytest.mark.slow
@SHARED
def test_values_no_database_can_store_are_invalid_and_recording_goes_on(
    database_url: str, server: Server
) -> None:
    """The attack of issue 14: a NUL in a utm field or campaign once made PostgreSQL refuse
    the whole batch, which went to the spool and blocked its replay for ever."""
    site, subjects = seed(database_url, 4)
    settings = settings_for(database_url)
    spilled = metric(server.url, "pixelgate_events_spilled_total")
    good = 0
    for round_ in range(3):
        for subject in subjects:
            hits_answered(server.url, site, [{"u": subject, "p": f"/good-{round_}"}])
            good += 1
        bad = [
            {"u": subjects[0], "p": "/x", "utm_source": "\x00"},
            {"u": subjects[1], "p": "/x", "c": "\x00"},
            {"u": subjects[2], "p": "/x", "utm_term": "%00"},  # a NUL once scrubbed
        ]
        hits_answered(server.url, site, bad)
        beacon = httpx.post(
            f"{server.url}/p/{site}/collect",
            json={"u": subjects[3], "p": "/x", "utm_source": "a\x00b"},
            headers=HEADERS,
        )
        assert beacon.status_code == 204
    rows = wait_for_rows(settings, "events", good, 30, site=site)
    assert sorted(row["page"] for row in rows) == sorted(
        f"/good-{n}" for n in range(3) for _ in subjects
    )
    invalid = f'pixelgate_hits_total{{outcome="denied",reason="invalid",site="{site}"}}'
    assert metric_until(server.url, invalid, 12) == 12
    recorded = f'pixelgate_hits_total{{outcome="recorded",reason="recorded",site="{site}"}}'
    assert metric(server.url, recorded) == good
    assert metric(server.url, "pixelgate_events_spilled_total") == spilled
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert not list((server.workdir / "data" / "spool").glob("*.spool"))


@pytest.mark.slow
@SHARED
def test_readyz_says_when_the_writer_cannot_write_and_recovers_once_it_can(
    database_url: str, server: Server
) -> None:
    """The database answers but refuses every write (here: its events table is gone): the
    hits wait in the spool, /readyz says why, and all of them land once it takes them."""
    site, subjects = seed(database_url, 3)
    settings = settings_for(database_url)
    replayed = metric(server.url, "pixelgate_events_replayed_total")
    spilled = metric(server.url, "pixelgate_events_spilled_total")
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    sent = 0

    def hits() -> None:
        nonlocal sent
        hits_answered(server.url, site, [{"u": subject} for subject in subjects])
        sent += len(subjects)

    def readyz() -> httpx.Response:
        return httpx.get(f"{server.url}/readyz")

    with events_table_gone(database_url):
        stuck = readyz_until(readyz, 503, hits)
        assert table_rows(settings, "events_away", site=site) == []
    assert stuck.headers["content-type"].startswith("application/problem+json")
    assert stuck.json()["detail"].startswith("the writer cannot write events")
    readyz_until(readyz, 200, lambda: None)
    assert len(wait_for_rows(settings, "events", sent, 30, site=site)) == sent
    replayed_now = metric_until(server.url, "pixelgate_events_replayed_total", replayed + sent)
    assert replayed_now - replayed == sent
    assert metric(server.url, "pixelgate_events_spilled_total") - spilled == sent


def test_the_api_answers_503_while_the_database_is_away(
    postgresql_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    direct = settings_for(postgresql_url)
    site = make_site(direct)
    admin = auth(make_key(direct, site))
    try:
        with TestClient(create_app(settings_for(_proxied(postgresql_url, proxy)))) as client:
            made = client.post(
                f"/v1/sites/{site}/links",
                json={"destination": "https://shop.example/"},
                headers=admin,
            )
            code = made.json()["code"]
            proxy.cut()
            for method, path, body in [
                ("GET", f"/l/{code}", None),
                ("GET", f"/v1/sites/{site}/policy", None),
                ("GET", "/.well-known/jwks.json", None),
                ("POST", f"/v1/sites/{site}/consent", {"purposes": {"analytics": True}}),
            ]:
                response = client.request(method, path, json=body, follow_redirects=False)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"] == "5"
            assert client.get(f"/p/{site}/pixel.gif").status_code == 200
            proxy.restore()
            assert client.get(f"/l/{code}", follow_redirects=False).status_code == 302
    finally:
        proxy.close()
