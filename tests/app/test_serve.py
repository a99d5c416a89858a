"""`pixelgate serve` for real: granian on a free port, requests over loopback."""

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import (
    CHROME,
    POLICIES,
    SECRET,
    make_site,
    raw,
    settings_for,
    subject_id,
    table_rows,
    wait_for_rows,
)
from tests.servers import Server


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    running = Server(database_url, tmp_path).start()
    yield running.url
    running.stop()
    running.assert_clean_log()


def test_the_served_app_answers_health_readiness_and_openapi(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready"}
    schema = httpx.get(f"{server}/schema/openapi.json").json()
    assert "/p/{site}/pixel.gif" in schema["paths"]
    assert "/v1/sites/{site}/consent" in schema["paths"]
    assert httpx.get(f"{server}/schema").status_code == 200


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
    subject = subject_id()
    # The server listens on 127.0.0.1; we speak from 127.0.0.2, a client address that may
    # appear nowhere but as its /24.
    client = httpx.Client(transport=httpx.HTTPTransport(local_address=raw("127.0.0.2")))
    headers = {"User-Agent": CHROME}
    before = client.get(f"{server}/p/live-shop/pixel.gif", params={"u": subject}, headers=headers)
    given = client.post(
        f"{server}/v1/sites/live-shop/consent",
        json={"subject": subject, "purposes": {"analytics": True}},
        headers=headers,
    )
    assert given.status_code == 201
    after = client.get(f"{server}/p/live-shop/pixel.gif", params={"u": subject}, headers=headers)
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
    subject = subject_id()
    headers = {"User-Agent": CHROME}
    consent = {"subject": subject, "purposes": {"analytics": True}}
    assert httpx.post(f"{server}/v1/sites/{site}/consent", json=consent).status_code == 201
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
