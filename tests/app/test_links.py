"""Campaigns and tracked links (SPEC §4.7), on both databases."""

from typing import Any

import pytest
from litestar.testing import TestClient

from app.settings import Settings
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    auth,
    make_key,
    make_site,
    settle,
    subject_id,
    table_rows,
)

Client = TestClient[Any]


def test_a_campaign_is_created_then_updated(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    url = f"/v1/sites/{site}/campaigns/summer-launch"
    body = {"name": "Summer launch", "channel": "influencer", "influencer": "ana", "sends": 10}
    assert client.put(url, json=body, headers=admin).status_code == 200
    updated = client.put(url, json={**body, "sends": 1000}, headers=admin).json()
    assert updated["sends"] == 1000 and updated["id"] == "summer-launch"
    [row] = table_rows(settings, "campaigns", site=site)
    assert (row["name"], row["channel"], row["sends"]) == ("Summer launch", "influencer", 1000)
    bad = client.put(url, json={**body, "channel": "carrier-pigeon"}, headers=admin)
    assert bad.status_code == 422
    assert (
        client.put(url, json=body, headers=auth(make_key(settings, site, "read"))).status_code
        == 403
    )


def test_a_link_records_a_click_and_redirects_only_to_its_destination(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    admin = auth(make_key(settings, site))
    made = client.post(
        f"/v1/sites/{site}/links",
        json={"destination": "https://shop.example/sale?ref=ig", "campaign": "summer-launch"},
        headers=admin,
    )
    assert made.status_code == 201
    code = made.json()["code"]
    assert made.json()["url"].endswith(f"/l/{code}")
    follow = client.get(
        f"/l/{code}",
        params={"u": subject_id(), "next": "https://evil.example", "url": "https://evil.example"},
        headers={"User-Agent": CHROME},
        follow_redirects=False,
    )
    assert follow.status_code == 302
    assert follow.headers["location"] == "https://shop.example/sale?ref=ig"
    assert "set-cookie" not in follow.headers
    client.get(f"/l/{code}", headers={"User-Agent": GOOGLEBOT}, follow_redirects=False)
    settle(client)
    [click] = table_rows(settings, "events", site=site)
    assert (click["kind"], click["campaign"], click["page"]) == (
        "click",
        "summer-launch",
        f"/l/{code}",
    )
    assert click["subject"] is not None


def test_an_unknown_link_is_a_404(client: Client) -> None:
    response = client.get("/l/not-a-code", follow_redirects=False)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "destination",
    ["javascript:alert(1)", "ftp://files.example/x", "//evil.example", "not a url", "https://"],
)
def test_a_link_destination_must_be_an_http_url(
    client: Client, settings: Settings, destination: str
) -> None:
    site = make_site(settings)
    response = client.post(
        f"/v1/sites/{site}/links",
        json={"destination": destination},
        headers=auth(make_key(settings, site)),
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert table_rows(settings, "links", site=site) == []
