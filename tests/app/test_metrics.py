"""/metrics: what was recorded, denied and why, and the writer's counters."""

import re
from typing import Any

from litestar.testing import TestClient

from app.settings import Settings
from tests.factories import CHROME, GOOGLEBOT, make_site, raw, settle, subject_id

Client = TestClient[Any]


def sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_hits_by_outcome_and_reason(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    given = client.post(f"/v1/sites/{site}/consent", json={"purposes": {"analytics": True}})
    subject = raw(given.json()["subject"])  # a visitor id the server minted
    before = client.get("/metrics").text
    browser = {"User-Agent": CHROME}
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers=browser)
    client.get(f"/p/{site}/pixel.gif", params={"u": subject_id()}, headers=browser)
    client.get(f"/p/{site}/pixel.gif", params={"u": subject}, headers={"User-Agent": GOOGLEBOT})
    client.get("/p/no-such-site/pixel.gif", headers=browser)
    settle(client)
    response = client.get("/metrics")
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
