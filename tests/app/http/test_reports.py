"""Report parameters (SPEC §4.8): a bad one is a 422 naming it, on both databases."""

from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import auth, make_key, make_site

Client = TestClient[Any]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"from": "9999-01-01", "to": "9999-12-31"}, "from"),
        ({"from": "2026-01-01", "to": "9999-12-31"}, "to"),
        ({"from": "0001-01-01", "to": "2026-01-01"}, "from"),
        ({"from": "2026-02-30", "to": "2026-03-01"}, "from"),
        ({"from": "2026-03-01", "to": "2026-02-01"}, "to"),
        ({"from": "2026-01-01", "to": "2026-01-31", "kind": "open\x00"}, "kind"),
        ({"from": "2026-01-01", "to": "2026-01-31", "campaign": "a\x00b"}, "campaign"),
        ({"from": "2026-01-01"}, "to"),
        ({"to": "2026-01-01"}, "from"),
        ({"from": "2026-01-01", "to": "2026-01-31", "influencer": "x\x00"}, "influencer"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "colour"}, "by"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "0"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "1001"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "-1"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "ten"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "²"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "by": "page", "limit": "٣"}, "limit"),
        ({"from": "2026-01-01", "to": "2026-01-31", "interval": "minute"}, "interval"),
        ({"from": "2023-01-01", "to": "2026-01-31", "interval": "hour"}, "interval"),
    ],
)
def test_a_bad_report_parameter_is_a_422_naming_it(
    client: Client, settings: Settings, query: dict[str, str], parameter: str
) -> None:
    site = make_site(settings)
    report = "breakdown" if "by" in query else "timeseries" if "interval" in query else "summary"
    response = client.get(
        f"/v1/sites/{site}/reports/{report}",
        params=query,
        headers=auth(make_key(settings, site, "read")),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(parameter)


def test_a_summary_of_the_last_day_a_report_may_name_is_answered(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    response = client.get(
        f"/v1/sites/{site}/reports/summary",
        params={"from": "9998-12-31", "to": "9998-12-31", "kind": "open", "campaign": "c"},
        headers=auth(make_key(settings, site, "read")),
    )
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == 0


def test_a_site_slug_no_site_can_have_is_a_404(client: Client) -> None:
    response = client.get(
        "/v1/sites/a%00b/reports/summary", params={"from": "2026-01-01", "to": "2026-01-02"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_campaign_report_of_a_campaign_id_no_row_can_hold_is_a_404(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    response = client.get(
        f"/v1/sites/{site}/reports/campaigns/a%00b",
        params={"from": "2026-01-01", "to": "2026-01-02"},
        headers=auth(make_key(settings, site, "read")),
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_every_report_answers_csv(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    reader = {**auth(make_key(settings, site, "read")), "Accept": "text/csv"}
    period = {"from": "2026-01-01", "to": "2026-01-02"}
    for name, extra in [
        ("summary", {}),
        ("breakdown", {"by": "page"}),
        ("timeseries", {}),
        ("campaigns/spring", {}),
        ("influencers", {}),
    ]:
        response = client.get(
            f"/v1/sites/{site}/reports/{name}", params={**period, **extra}, headers=reader
        )
        assert response.status_code == 200, (name, response.text)
        assert response.headers["content-type"].startswith("text/csv"), name
        assert response.text.count("\n") >= 1, name
