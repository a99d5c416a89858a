"""app/front.py under granian: the pixel answered in RSGI, the rest bridged to litestar."""

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.db import migrate
from app.pixel import GIF
from tests.factories import CHROME, auth, make_key, make_site, settings_for, subject_id
from tests.factories import wait_for_rows as rows_soon
from tests.servers import Server, environment, free_port


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    running = Server(database_url, tmp_path).start()
    yield running.url
    running.stop()
    running.assert_clean_log()


def test_the_pixel_answers_the_same_bytes_and_headers_as_over_asgi(server: str) -> None:
    got = httpx.get(f"{server}/p/nowhere/pixel.gif")
    head = httpx.head(f"{server}/p/nowhere/pixel.gif")
    assert got.content == GIF
    for response in (got, head):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["content-length"] == str(len(GIF))
        assert response.headers["cache-control"].startswith("no-store")
    beacon = httpx.post(f"{server}/p/nowhere/collect", content=b"x" * 100_000)
    assert (beacon.status_code, beacon.content) == (204, b"")  # too long: read no further


def test_sec_gpc_counts_in_any_of_several_headers(server: str, database_url: str) -> None:
    """granian gives one value per header name unless asked for all: the pixel asks."""
    settings = settings_for(database_url)
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")  # GPC denies marketing
    pixel = f"{server}/p/{site}/pixel.gif"
    for page, gpc in (("/objected", ["0", "1"]), ("/kept", ["0"])):
        headers = [("User-Agent", CHROME), *(("Sec-GPC", value) for value in gpc)]
        params = {"u": subject_id(), "p": page, "k": "conversion"}
        assert httpx.get(pixel, params=params, headers=headers).status_code == 200
    rows_soon(settings, "events", 1, site=site)
    time.sleep(0.3)  # the hit objected to would have landed with the other
    assert [row["page"] for row in rows_soon(settings, "events", 1, site=site)] == ["/kept"]


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
    """The app's lifespan runs in granian's start-up hook: if it fails, nothing listens."""
    database = tmp_path / "broken.db"
    url = f"sqlite+aiosqlite:///{database}"
    migrate(url)
    with sqlite3.connect(database) as connection:  # what start-up writes to is gone
        connection.execute("DROP TABLE receipt_keys")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env=environment(url, PIXELGATE_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "lifespan.startup failed" in done.stdout + done.stderr


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
