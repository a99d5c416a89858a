"""/metrics: what was recorded, denied and why, and the writer's counters; and who may read
them (PIXELGATE_METRICS_ALLOW, PIXELGATE_METRICS_TOKEN)."""

import re
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import TestClient

from app.settings import Settings
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    METRICS_TOKEN,
    auth,
    make_site,
    raw,
    settle,
    subject_id,
)
from tests.servers import Server

Client = TestClient[Any]
SCRAPER = auth(METRICS_TOKEN)
# These servers are stopped at once: without jobs, none is cut off in its first run.
NO_JOBS = {"PIXELGATE_JOBS": "off"}


def sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_hits_by_outcome_and_reason(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    given = client.post(f"/v1/sites/{site}/consent", json={"purposes": {"analytics": True}})
    subject = raw(given.json()["subject"])  # a visitor id the server minted
    before = client.get("/metrics", headers=SCRAPER).text
    browser = {"User-Agent": CHROME}
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers=browser)
    client.get(f"/p/{site}/pixel.gif", params={"u": subject_id()}, headers=browser)
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers={"User-Agent": GOOGLEBOT})
    client.get("/p/no-such-site/pixel.gif", headers=browser)
    settle(client)
    response = client.get("/metrics", headers=SCRAPER)
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, labels: str = "") -> float:
        return sample(after, name, labels) - sample(before, name, labels)

    assert grew("pixelgate_hits_total", '{outcome="recorded",reason="recorded"}') == 1
    assert grew("pixelgate_hits_total", '{outcome="denied",reason="no_consent"}') == 1
    assert grew("pixelgate_hits_total", '{outcome="denied",reason="bot"}') == 1
    assert grew("pixelgate_hits_total", '{outcome="denied",reason="unknown_site"}') == 1
    # Every hit is queued (the pixel answers before anything is read); the writer sorts them.
    assert grew("pixelgate_events_queued_total") == 4
    assert grew("pixelgate_events_flushed_total") == 1
    assert sample(after, "pixelgate_events_dropped_total") == 0
    assert "pixelgate_flush_seconds_bucket" in after and "pixelgate_queue_depth" in after
    assert subject not in after


def test_metrics_are_refused_to_a_client_outside_the_allowed_networks_without_the_token(
    client: Client,
) -> None:
    """The test client's peer is no address at all, so only the token opens /metrics to it."""
    for headers in ({}, auth("not-" + METRICS_TOKEN), {"Authorization": METRICS_TOKEN}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "PIXELGATE_METRICS_ALLOW" in refused.json()["detail"]
        assert "pixelgate_" not in refused.text
    assert client.get("/metrics", headers=SCRAPER).status_code == 200


def test_the_served_metrics_are_open_to_loopback_by_default(
    database_url: str, tmp_path: Path
) -> None:
    server = Server(database_url, tmp_path, **NO_JOBS).start()
    try:
        served = httpx.get(f"{server.url}/metrics")
        assert served.status_code == 200
        assert "pixelgate_hits_total" in served.text
    finally:
        server.stop()
    server.assert_clean_log()


def test_the_served_metrics_follow_metrics_allow_the_token_and_trusted_proxies(
    database_url: str, tmp_path: Path
) -> None:
    """Loopback is no longer allowed once PIXELGATE_METRICS_ALLOW names another network; a
    forwarded address counts only from a trusted proxy (here 127.0.0.2, not 127.0.0.1)."""
    scraper = raw("192.0.2.45")
    server = Server(
        database_url,
        tmp_path,
        PIXELGATE_METRICS_ALLOW="192.0.2.0/24",
        PIXELGATE_METRICS_TOKEN="s3cret-scrape-token",
        PIXELGATE_TRUSTED_PROXIES="127.0.0.2/32",
        **NO_JOBS,
    ).start()
    url = f"{server.url}/metrics"
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        forwarded = {"X-Forwarded-For": scraper}
        assert httpx.get(url).status_code == 403
        assert httpx.get(url, headers=forwarded).status_code == 403  # not from a trusted proxy
        assert httpx.get(url, headers=auth("wrong")).status_code == 403
        assert httpx.get(url, headers=auth("s3cret-scrape-token")).status_code == 200
        assert proxy.get(url).status_code == 403  # the proxy itself is not allowed
        assert proxy.get(url, headers=forwarded).status_code == 200
    finally:
        proxy.close()
        server.stop()
    server.assert_clean_log()
