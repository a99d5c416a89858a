"""/metrics: what was recorded, denied and why, and the writer's counters; and who may read
them (PIXELGATE_METRICS_ALLOW, PIXELGATE_METRICS_TOKEN)."""

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from app.base.settings import Settings
from app.main import create_app
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    METRICS_TOKEN,
    auth,
    make_site,
    raw,
    settings_for,
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


Parser = Callable[[str], Iterable[Metric]]
HitCounts = dict[tuple[str, str, str], float]


def hits_by(text: str, parse: Parser = text_string_to_metric_families) -> HitCounts:
    """pixelgate_hits_total by (site, outcome, reason), as a Prometheus parser reads it."""
    found = {}
    for family in parse(text):
        for s in family.samples:
            if s.name == "pixelgate_hits_total":
                found[s.labels["site"], s.labels["outcome"], s.labels["reason"]] = s.value
    return found


def of_site(counts: HitCounts, site: str) -> HitCounts:
    return {key: value for key, value in counts.items() if key[0] == site}


def send_hits_to_two_sites(client: Client, settings: Settings) -> tuple[str, str]:
    """To an opt-in site: one hit recorded, one without consent, one from a bot; to an
    opt-out site, two recorded and one from a bot; and one to a site that does not exist."""
    strict, open_ = make_site(settings), make_site(settings, policy="ccpa", jurisdiction="us-ca")
    given = client.post(f"/v1/sites/{strict}/consent", json={"purposes": {"analytics": True}})
    subject = raw(given.json()["subject"])  # a visitor id the server minted
    browser, bot = {"User-Agent": CHROME}, {"User-Agent": GOOGLEBOT}
    client.get(f"/p/{strict}/pixel.gif", params={"u": subject}, headers=browser)
    client.get(f"/p/{strict}/pixel.gif", params={"u": subject_id()}, headers=browser)
    client.get(f"/p/{strict}/pixel.gif", params={"u": subject}, headers=bot)
    for _ in range(2):
        client.get(f"/p/{open_}/pixel.gif", params={"u": subject_id()}, headers=browser)
    client.get(f"/p/{open_}/pixel.gif", headers=bot)
    client.get("/p/no-such-site/pixel.gif", headers=browser)
    settle(client)
    return strict, open_


def assert_counted_by_site(counts: HitCounts, strict: str, open_: str) -> None:
    assert of_site(counts, strict) == {
        (strict, "recorded", "recorded"): 1,
        (strict, "denied", "no_consent"): 1,
        (strict, "denied", "bot"): 1,
    }
    assert of_site(counts, open_) == {
        (open_, "recorded", "recorded"): 2,
        (open_, "denied", "bot"): 1,
    }


def test_metrics_count_hits_by_site_outcome_and_reason(client: Client, settings: Settings) -> None:
    before = client.get("/metrics", headers=SCRAPER).text
    strict, open_ = send_hits_to_two_sites(client, settings)
    response = client.get("/metrics", headers=SCRAPER)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    counts = hits_by(after)
    assert_counted_by_site(counts, strict, open_)
    # A site that does not exist is counted under no name: its slug came from anyone.
    unknown = ("", "denied", "unknown_site")
    assert counts[unknown] - hits_by(before).get(unknown, 0) == 1

    def grew(name: str, labels: str = "") -> float:
        return sample(after, name, labels) - sample(before, name, labels)

    # Every hit is queued (the pixel answers before anything is read); the writer sorts them.
    assert grew("pixelgate_events_queued_total") == 7
    assert grew("pixelgate_events_flushed_total") == 3
    assert sample(after, "pixelgate_events_dropped_total") == 0
    assert "pixelgate_flush_seconds_bucket" in after and "pixelgate_queue_depth" in after


def test_metrics_have_no_created_series(client: Client, settings: Settings) -> None:
    send_hits_to_two_sites(client, settings)
    for accept in ("", OPENMETRICS):
        text = client.get("/metrics", headers={**SCRAPER, "Accept": accept}).text
        assert "pixelgate_hits_total" in text and "pixelgate_flush_seconds_bucket" in text
        assert "_created" not in text


@pytest.mark.parametrize(
    "accept",
    [
        OPENMETRICS,
        "application/openmetrics-text",
        # What Prometheus itself sends.
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
        "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ],
)
def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(
    client: Client, settings: Settings, accept: str
) -> None:
    strict, open_ = send_hits_to_two_sites(client, settings)
    response = client.get("/metrics", headers={**SCRAPER, "Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == OPENMETRICS
    assert response.text.endswith("# EOF\n")
    assert_counted_by_site(hits_by(response.text, openmetrics_families), strict, open_)


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "text/plain",
        "text/plain, application/openmetrics-text;q=0.5",
        "application/openmetrics-text;q=0, text/plain;q=0.1",
    ],
)
def test_the_text_format_is_served_unless_openmetrics_is_preferred(
    client: Client, accept: str
) -> None:
    response = client.get("/metrics", headers={**SCRAPER, "Accept": accept})
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in response.text
    assert list(text_string_to_metric_families(response.text))


def test_hits_counted_in_the_writer_process_keep_their_site(database_url: str) -> None:
    """`pixelgate serve` writes from a child process, whose counts cross a pipe."""
    settings = settings_for(database_url)
    with TestClient(create_app(settings, writer_process=True)) as client:
        strict, open_ = send_hits_to_two_sites(client, settings)
        text = client.get("/metrics", headers=SCRAPER).text
    assert_counted_by_site(hits_by(text), strict, open_)


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
    sqlite_url: str, tmp_path: Path
) -> None:
    server = Server(sqlite_url, tmp_path, **NO_JOBS).start()
    try:
        served = httpx.get(f"{server.url}/metrics")
        assert served.status_code == 200
        assert "pixelgate_hits_total" in served.text
    finally:
        server.stop()
    server.assert_clean_log()


def test_the_served_metrics_follow_metrics_allow_the_token_and_trusted_proxies(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Loopback is no longer allowed once PIXELGATE_METRICS_ALLOW names another network; a
    forwarded address counts only from a trusted proxy (here 127.0.0.2, not 127.0.0.1)."""
    scraper = raw("192.0.2.45")
    server = Server(
        sqlite_url,
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
