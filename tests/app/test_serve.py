"""`pixelgate serve` for real: granian on a free port, requests over loopback (app/http/front.py in
front of the litestar app)."""

import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from app.base.db import migrate
from app.hits.spool import SpoolInUse
from app.http.pixel import GIF
from app.main import create_app
from tests.app.hits.test_registries import wait_for_metric
from tests.app.http.test_web import assert_page_headers, references
from tests.factories import (
    CHROME,
    POLICIES,
    SECRET,
    auth,
    make_key,
    make_site,
    raw,
    settings_for,
    subject_id,
    table_rows,
    wait_for_rows,
)
from tests.servers import START_LIMIT, Server, environment, free_port

# In one process: the module's server is then started once per database, not once per process.
pytestmark = pytest.mark.xdist_group("serve")


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server per database for the tests of this module: each uses a site of its own.
    It reads the region from CF-IPCountry; without the header a hit has its site's region."""
    running = Server(
        database_url, tmp_path_factory.mktemp("serve"), PIXELGATE_REGION_HEADER="CF-IPCountry"
    ).start()
    yield running.url
    assert running.stop() == 0
    running.assert_clean_log()


def test_the_served_app_answers_health_readiness_and_openapi(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready"}
    schema = httpx.get(f"{server}/schema/openapi.json").json()
    assert "/p/{site}/pixel.gif" in schema["paths"]
    assert "/v1/sites/{site}/consent" in schema["paths"]
    docs = httpx.get(f"{server}/schema")
    assert docs.status_code == 200
    assert_page_headers(docs)  # the page headers reach granian through the bridge
    for url in references(docs.text).urls:
        if not url.startswith("data:"):
            assert httpx.get(f"{server}{url}").status_code == 200, url


def test_a_consented_hit_over_the_network_is_recorded_with_a_truncated_ip(
    server: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url)
    created = subprocess.run(
        [sys.executable, "-m", "app.cli", "sites", "create", "live-shop", "--policy",
         "gdpr-strict"],
        cwd=tmp_path,
        env={
            "PATH": os.environ["PATH"],
            "PIXELGATE_DATABASE_URL": database_url,
            "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
            "PIXELGATE_POLICIES_DIR": str(POLICIES),
        },
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    assert json.loads(created.stdout)["slug"] == "live-shop"
    # The server listens on 127.0.0.1; we speak from 127.0.0.2, a client address that may
    # appear nowhere but as its /24.
    with httpx.Client(transport=httpx.HTTPTransport(local_address=raw("127.0.0.2"))) as client:
        headers = {"User-Agent": CHROME}
        unknown = subject_id()
        before = client.get(
            f"{server}/p/live-shop/pixel.gif", params={"u": unknown}, headers=headers
        )
        given = client.post(
            f"{server}/v1/sites/live-shop/consent",
            json={"purposes": {"analytics": True}},
            headers=headers,
        )
        assert given.status_code == 201
        subject = raw(given.json()["subject"])  # the visitor id the server minted
        after = client.get(
            f"{server}/p/live-shop/pixel.gif", params={"u": subject}, headers=headers
        )
        assert len(wait_for_rows(settings, "events", 1, site="live-shop")) == 1
        [entry] = table_rows(settings, "consent_ledger", site="live-shop")
        assert entry["ip_prefix"] == "127.0.0.0"
        # On the wire too, the response does not tell recorded from not recorded.
        for response in (before, after):
            response.headers.pop("date", None)
        assert before.content == after.content
        assert sorted(before.headers.items()) == sorted(after.headers.items())
        assert "set-cookie" not in after.headers


def test_the_pixel_answered_in_front_of_litestar_takes_every_method(
    server: str, database_url: str
) -> None:
    """The server answers /p/ before litestar's router (the other tests reach the same code
    through a litestar route): GET, HEAD, the JSON beacon and a wrong path."""
    settings = settings_for(database_url)
    site = make_site(settings)
    headers = {"User-Agent": CHROME}
    given = httpx.post(f"{server}/v1/sites/{site}/consent", json={"purposes": {"analytics": True}})
    assert given.status_code == 201
    subject = raw(given.json()["subject"])
    pixel = f"{server}/p/{site}/pixel.gif"
    got = httpx.get(pixel, params={"u": subject, "p": "/a"}, headers=headers)
    head = httpx.head(pixel, params={"u": subject, "p": "/b"}, headers=headers)
    beacon = httpx.post(
        f"{server}/p/{site}/collect", json={"u": subject, "p": "/c"}, headers=headers
    )
    wrong = httpx.get(f"{server}/p/{site}/pixel.png", params={"u": subject}, headers=headers)
    assert (got.status_code, head.status_code, beacon.status_code) == (200, 200, 204)
    assert wrong.status_code == 404
    assert got.headers["content-type"] == head.headers["content-type"] == "image/gif"
    assert head.content == b""
    rows = wait_for_rows(settings, "events", 2, site=site)
    assert sorted(row["page"] for row in rows) == ["/a", "/c"]  # HEAD records nothing


def test_the_served_beacon_grants_cors_to_the_sites_own_origin_only(
    server: str, database_url: str
) -> None:
    settings = settings_for(database_url)
    shop = "https://shop.example"
    site = make_site(settings, origins=(shop,))
    subject = subject_id()
    consent = {"subject": subject, "purposes": {"analytics": True}}
    admin = auth(make_key(settings, site))
    given = httpx.post(f"{server}/v1/sites/{site}/consent", json=consent, headers=admin)
    assert given.status_code == 201
    collect = f"{server}/p/{site}/collect"
    asking = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    granted = httpx.options(collect, headers={"Origin": shop, **asking})
    assert granted.status_code == 204
    assert granted.headers["access-control-allow-origin"] == shop
    assert granted.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert granted.headers["access-control-allow-headers"] == "Content-Type"
    assert granted.headers["access-control-allow-credentials"] == "true"
    refused = [
        httpx.options(collect, headers={"Origin": "https://evil.example", **asking}),
        httpx.options(f"{server}/p/no-such-site/collect", headers={"Origin": shop, **asking}),
    ]
    for response in refused:
        assert response.status_code == 204
        assert not any(name.startswith("access-control-") for name in response.headers)
    sent = httpx.post(
        collect, json={"u": subject, "p": "/beacon"}, headers={"User-Agent": CHROME, "Origin": shop}
    )
    assert sent.status_code == 204
    assert sent.headers["access-control-allow-origin"] == shop
    [event] = wait_for_rows(settings, "events", 1, site=site)
    assert event["page"] == "/beacon"


# app/http/front.py: the pixel answered in granian's RSGI interface, the rest bridged to litestar.


def test_the_served_pixel_answers_get_and_head_alike(server: str) -> None:
    got = httpx.get(f"{server}/p/nowhere/pixel.gif")
    head = httpx.head(f"{server}/p/nowhere/pixel.gif")
    assert got.content == GIF
    for response in (got, head):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["content-length"] == str(len(GIF))
        assert response.headers["cache-control"].startswith("no-store")
    beacon = httpx.post(f"{server}/p/nowhere/collect", content=b"x" * 100_000)
    assert (beacon.status_code, beacon.content) == (204, b"")  # too long, answered all the same


def test_sec_gpc_counts_in_any_of_several_headers(server: str, database_url: str) -> None:
    """granian gives one value per header name unless asked for all: the pixel asks."""
    settings = settings_for(database_url)
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")  # GPC denies marketing
    pixel = f"{server}/p/{site}/pixel.gif"
    for page, gpc in (("/objected", ["0", "1"]), ("/kept", ["0"])):
        headers = [("User-Agent", CHROME), *(("Sec-GPC", value) for value in gpc)]
        params = {"u": subject_id(), "p": page, "k": "conversion"}
        assert httpx.get(pixel, params=params, headers=headers).status_code == 200
    denied = f'pixelgate_hits_total{{outcome="denied",reason="no_consent",site="{site}"}}'
    assert wait_for_metric(server, denied, 1) == 1  # the hit objected to, decided
    assert [row["page"] for row in wait_for_rows(settings, "events", 1, site=site)] == ["/kept"]


def test_the_region_header_and_referrer_reach_the_writer(server: str, database_url: str) -> None:
    """The pixel keeps only the headers the writer reads: the configured region one too."""
    settings = settings_for(database_url)
    site = make_site(settings)  # gdpr-strict grants analytics by default in us-ca only
    for region in ("US-CA", "DE"):
        headers = {
            "User-Agent": CHROME,
            "CF-IPCountry": region,
            "Referer": "https://News.Example.org/story?id=1",
        }
        assert httpx.get(f"{server}/p/{site}/pixel.gif", headers=headers).status_code == 200
    [event] = wait_for_rows(settings, "events", 1, site=site)
    assert (event["jurisdiction"], event["referrer"]) == ("us-ca", "news.example.org")


def test_other_requests_reach_litestar_with_their_body_query_and_errors(
    server: str, database_url: str
) -> None:
    settings = settings_for(database_url)
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    key = auth(make_key(settings, site, "ingest"))
    events = f"{server}/v1/sites/{site}/events"
    # A body of several hundred kB arrives in many chunks.
    batch = [
        {"kind": "pageview", "page": f"/page-{n:04d}?utm_source=x" + "y" * 200} for n in range(1000)
    ]
    accepted = httpx.post(events, json={"events": batch}, headers=key)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 1000
    refused = httpx.post(events, json={"events": batch + batch[:1]}, headers=key)
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("application/problem+json")
    broken = httpx.post(
        events, content=b'{"events": [', headers={**key, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    # Query strings and paths arrive as sent; an unknown path is litestar's 404.
    read = auth(make_key(settings, site, "read"))
    debug = httpx.get(
        f"{server}/v1/sites/{site}/debug",
        params={"p": "/a b", "k": "pageview"},
        headers={**read, "User-Agent": CHROME},
    )
    assert debug.status_code == 200, debug.text
    assert debug.json()["event"]["page"] == "/a%20b"
    assert httpx.get(f"{server}/v1/nothing%20here").status_code == 404


def test_a_start_up_that_fails_stops_the_server(tmp_path: Path) -> None:
    """The app's lifespan runs in granian's start-up hook: if it fails, no request is ever
    answered and the server exits with an error."""
    database = tmp_path / "broken.db"
    url = f"sqlite+aiosqlite:///{database}"
    migrate(url)
    with sqlite3.connect(database) as connection:  # what start-up writes to is gone
        connection.execute("DROP TABLE receipt_keys")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=tmp_path,
            env=environment(url, PIXELGATE_PORT=str(port)),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    answers = []
    try:
        # Until it has exited, however long that takes, it is asked for its health.
        deadline = time.monotonic() + START_LIMIT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5))
            except httpx.TransportError:
                time.sleep(0.05)
        exited = process.poll()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    output = log.read_text()
    assert exited is not None and exited != 0, output
    assert answers == []
    # The worker says why (its log queue is written out before it exits), then granian's
    # main process says it is going.
    assert "lifespan.startup failed" in output, output
    assert "Unexpected exit from worker-1" in output, output
    assert "Shutting down granian" in output, output


def test_the_bridge_streams_a_streamed_body_and_answers_one_never_sent(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "rsgi", "--port", str(port),
         "tests.app.bridge_app:app"],
        cwd=Path(__file__).parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                streamed = httpx.get(f"http://127.0.0.1:{port}/stream")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the bridge app did not start"
                time.sleep(0.1)
        assert (streamed.status_code, streamed.content) == (200, b"one,two,three")
        assert streamed.headers["x-parts"] == "3"
        bodiless = httpx.get(f"http://127.0.0.1:{port}/no-body")
        assert (bodiless.status_code, bodiless.headers["etag"]) == (304, '"1"')
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_second_server_on_the_same_spool_directory_refuses_to_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "shared-spool"
    first = Server(sqlite_url, tmp_path / "one", PIXELGATE_SPOOL_DIR=str(spool)).start()
    try:
        port = free_port()
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=tmp_path,
            env=environment(sqlite_url, PIXELGATE_PORT=str(port), PIXELGATE_SPOOL_DIR=str(spool)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stdout == ""
        [line] = second.stderr.splitlines()
        assert line.startswith(f"pixelgate: PIXELGATE_SPOOL_DIR {spool} is in use")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert httpx.get(f"{first.url}/readyz").status_code == 200
    finally:
        assert first.stop() == 0
    # the lock goes with the server: the next one starts
    again = Server(sqlite_url, tmp_path / "two", PIXELGATE_SPOOL_DIR=str(spool)).start()
    assert httpx.get(f"{again.url}/readyz").status_code == 200
    assert again.stop() == 0
    first.assert_clean_log()
    again.assert_clean_log()


def test_an_app_that_writes_in_process_holds_its_spool_directory_while_it_runs(
    sqlite_url: str,
) -> None:
    settings = settings_for(sqlite_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        with pytest.raises(ExceptionGroup) as refused, TestClient(create_app(settings)):
            pass
        assert refused.group_contains(SpoolInUse, match="PIXELGATE_SPOOL_DIR")
    with TestClient(create_app(settings)) as client:  # released when the first one stopped
        assert client.get("/readyz").status_code == 200
