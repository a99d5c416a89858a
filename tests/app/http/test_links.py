"""Campaigns and tracked links (SPEC §4.7), on both databases."""

import secrets
from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.settings import Settings
from app.base.tables import Link
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    auth,
    make_key,
    make_site,
    run,
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
    assert (
        follow.headers["location"] == "https://shop.example/sale?ref=ig&utm_campaign=summer-launch"
    )
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


def assert_problem(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(field)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sends": 2**31}, "sends"),
        ({"sends": 2**63}, "sends"),
        ({"sends": -1}, "sends"),
        ({"name": "Summer\x00launch"}, "name"),
        ({"name": "Summer\nlaunch"}, "name"),
        ({"influencer": "ana\x00"}, "influencer"),
    ],
)
def test_a_campaign_field_no_column_can_take_is_a_422_naming_it_and_nothing_is_written(
    client: Client, settings: Settings, change: dict[str, Any], field: str
) -> None:
    site = make_site(settings)
    body = {"name": "Summer launch", "channel": "influencer", "influencer": "ana", **change}
    response = client.put(
        f"/v1/sites/{site}/campaigns/summer", json=body, headers=auth(make_key(settings, site))
    )
    assert_problem(response, 422, field)
    assert table_rows(settings, "campaigns", site=site) == []


def test_the_largest_sends_a_column_can_take_is_kept(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    body = {"name": "Everyone", "sends": 2**31 - 1}
    response = client.put(
        f"/v1/sites/{site}/campaigns/all", json=body, headers=auth(make_key(settings, site))
    )
    assert response.status_code == 200, response.text
    assert table_rows(settings, "campaigns", site=site)[0]["sends"] == 2**31 - 1


@pytest.mark.parametrize("campaign", ["a%00b", "a%0Ab", "a%01b"])
def test_a_campaign_id_with_a_control_character_is_a_422_naming_it(
    client: Client, settings: Settings, campaign: str
) -> None:
    site = make_site(settings)
    response = client.put(
        f"/v1/sites/{site}/campaigns/{campaign}",
        json={"name": "Summer"},
        headers=auth(make_key(settings, site)),
    )
    assert_problem(response, 422, "campaign")
    assert table_rows(settings, "campaigns", site=site) == []


def make_link(client: Client, settings: Settings, site: str, **body: Any) -> Any:
    return client.post(f"/v1/sites/{site}/links", json=body, headers=auth(make_key(settings, site)))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"destination": "https://shop.example/a\r\nSet-Cookie: x=1"}, "destination"),
        ({"destination": "https://shop.example/a\nb"}, "destination"),
        ({"destination": "https://shop.example/a\tb"}, "destination"),
        ({"destination": "https://shop.example/a\x00b"}, "destination"),
        ({"destination": "https://shop.exa\x00mple/"}, "destination"),
        ({"destination": "https://shop.example/\x7f"}, "destination"),
        ({"destination": "https://shop..example/"}, "destination"),
        ({"destination": "https://shop example/"}, "destination"),
        ({"destination": "https://shop.example:99999/"}, "destination"),
        ({"destination": "https://shop.example/" + "☃" * 400}, "destination"),
        ({"destination": "https://shop.example/", "campaign": "a\x00b"}, "campaign"),
        ({"destination": "https://shop.example/", "influencer": "a\x00b"}, "influencer"),
    ],
)
def test_a_link_field_no_column_or_uri_can_take_is_a_422_naming_it_and_no_row(
    client: Client, settings: Settings, body: dict[str, str], field: str
) -> None:
    site = make_site(settings)
    assert_problem(make_link(client, settings, site, **body), 422, field)
    assert table_rows(settings, "links", site=site) == []


@pytest.mark.parametrize(
    ("destination", "stored"),
    [
        ("https://bücher.example/☃", "https://xn--bcher-kva.example/%E2%98%83"),
        ("HTTPS://Shop.Example:8443/a b?q=ü#teil ☃", "https://shop.example:8443/a%20b?q=%C3%BC#teil%20%E2%98%83"),
        ("https://shop.example/%E2%98%83?off=50%", "https://shop.example/%E2%98%83?off=50%25"),
        ("https://shop.example/{x}|\"y\"", "https://shop.example/%7Bx%7D%7C%22y%22"),
        ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
    ],
)  # fmt: skip
def test_a_destination_is_stored_as_an_ascii_uri_and_clicks_redirect_to_it(
    client: Client, settings: Settings, destination: str, stored: str
) -> None:
    site = make_site(settings)
    made = make_link(client, settings, site, destination=destination)
    assert made.status_code == 201, made.text
    [row] = table_rows(settings, "links", site=site)
    assert row["destination"] == stored
    follow = client.get(f"/l/{made.json()['code']}", follow_redirects=False)
    assert follow.status_code == 302
    assert follow.headers["location"] == stored


def store_link(settings: Settings, site: str, code: str, destination: str) -> None:
    async def work() -> None:
        engine = make_engine(settings.database_url)
        async with transaction(make_sessionmaker(engine)) as session:
            session.add(Link(site=site, code=code, destination=destination, created_at=utcnow()))
        await engine.dispose()

    run(work())


@pytest.mark.parametrize(
    ("destination", "location"),
    [
        ("https://bücher.example/☃", "https://xn--bcher-kva.example/%E2%98%83"),
        ("https://shop.example/a\r\nSet-Cookie: x=1", "https://shop.example/a%0D%0ASet-Cookie:%20x=1"),
        ("https://bü cher.example/", "https://b%C3%BC%20cher.example/"),
    ],
)  # fmt: skip
def test_a_link_stored_before_destinations_were_encoded_still_redirects_to_an_ascii_uri(
    client: Client, settings: Settings, destination: str, location: str
) -> None:
    site = make_site(settings)
    code = f"old-{secrets.token_hex(4)}"
    store_link(settings, site, code, destination)
    follow = client.get(f"/l/{code}", follow_redirects=False)
    assert follow.status_code == 302
    assert follow.headers["location"] == location
    assert "set-cookie" not in follow.headers


def test_a_link_code_no_link_can_have_is_a_404(client: Client) -> None:
    response = client.get("/l/a%00b", follow_redirects=False)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_click_adds_the_utm_parameters_the_destination_lacks_encoded(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    campaign = {"name": "Été", "channel": "influencer", "influencer": "Zoë & co"}
    assert (
        client.put(f"/v1/sites/{site}/campaigns/été 2026", json=campaign, headers=admin).status_code
        == 200
    )
    clicks = {
        "https://shop.example/sale#top": "https://shop.example/sale?utm_source=Zo%C3%AB%20%26%20co"
        "&utm_medium=influencer&utm_campaign=%C3%A9t%C3%A9%202026#top",
        "https://shop.example/?utm_campaign=x&UTM_SOURCE=y": "https://shop.example/"
        "?utm_campaign=x&UTM_SOURCE=y&utm_medium=influencer",
    }
    for destination, location in clicks.items():
        made = make_link(client, settings, site, destination=destination, campaign="été 2026")
        assert made.status_code == 201, made.text
        follow = client.get(f"/l/{made.json()['code']}", follow_redirects=False)
        assert follow.headers["location"] == location
    own = make_link(client, settings, site, destination="https://shop.example/", influencer="ana")
    follow = client.get(f"/l/{own.json()['code']}", follow_redirects=False)
    assert follow.headers["location"] == "https://shop.example/?utm_source=ana"


def test_campaigns_are_listed_read_and_deleted_by_an_admin_key(
    client: Client, settings: Settings
) -> None:
    site, other = make_site(settings), make_site(settings)
    admin = auth(make_key(settings, site))
    base = f"/v1/sites/{site}/campaigns"
    spring = {"name": "Spring", "channel": "email", "sends": 500}
    launch = {"name": "Launch", "channel": "influencer", "influencer": "ana"}
    assert client.put(f"{base}/spring", json=spring, headers=admin).status_code == 200
    assert client.put(f"{base}/launch", json=launch, headers=admin).status_code == 200
    other_admin = auth(make_key(settings, other))
    client.put(f"/v1/sites/{other}/campaigns/theirs", json=spring, headers=other_admin)

    listed = client.get(base, headers=admin).json()["campaigns"]
    assert [(c["id"], c["name"], c["channel"], c["influencer"], c["sends"]) for c in listed] == [
        ("launch", "Launch", "influencer", "ana", None),
        ("spring", "Spring", "email", None, 500),
    ]
    read = client.get(f"{base}/spring", headers=admin)
    assert read.status_code == 200 and read.json() == listed[1]

    assert client.delete(f"{base}/spring", headers=admin).status_code == 204
    assert client.get(f"{base}/spring", headers=admin).status_code == 404
    assert client.delete(f"{base}/spring", headers=admin).status_code == 404
    assert [c["id"] for c in client.get(base, headers=admin).json()["campaigns"]] == ["launch"]
    assert [row["id"] for row in table_rows(settings, "campaigns", site=other)] == ["theirs"]


def test_links_are_listed_read_and_deleted_and_a_deleted_one_no_longer_redirects(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    made = [
        client.post(
            f"/v1/sites/{site}/links",
            json={"destination": f"https://shop.example/{n}", "campaign": "c", "influencer": "ana"},
            headers=admin,
        ).json()
        for n in range(2)
    ]
    listed = client.get(f"/v1/sites/{site}/links", headers=admin).json()["links"]
    assert sorted((link["code"], link["url"]) for link in listed) == sorted(
        (link["code"], link["url"]) for link in made
    )
    code = made[0]["code"]
    read = client.get(f"/v1/sites/{site}/links/{code}", headers=admin).json()
    assert (read["destination"], read["campaign"], read["influencer"]) == (
        "https://shop.example/0",
        "c",
        "ana",
    )
    assert client.get(f"/l/{code}", follow_redirects=False).status_code == 302

    assert client.delete(f"/v1/sites/{site}/links/{code}", headers=admin).status_code == 204
    assert client.get(f"/l/{code}", follow_redirects=False).status_code == 404
    assert client.get(f"/v1/sites/{site}/links/{code}", headers=admin).status_code == 404
    assert [link["code"] for link in table_rows(settings, "links", site=site)] == [made[1]["code"]]


@pytest.mark.parametrize(
    "path",
    [
        "campaigns",
        "campaigns/spring",
        "links",
        "links/somecode",
    ],
)
def test_managing_campaigns_and_links_takes_an_admin_key(
    client: Client, settings: Settings, path: str
) -> None:
    site = make_site(settings)
    reader = auth(make_key(settings, site, scope="read"))
    for method in ("GET", "DELETE") if "/" in path else ("GET",):
        assert client.request(method, f"/v1/sites/{site}/{path}").status_code == 401
        assert client.request(method, f"/v1/sites/{site}/{path}", headers=reader).status_code == 403
        assert client.request(method, f"/v1/sites/nosuchsite/{path}").status_code == 404


@pytest.mark.parametrize("name", ["nul%00here", "x" * 5000, "%C3%A9t%C3%A9", "%FF", "a%0Ab"])
def test_a_campaign_id_or_link_code_no_row_can_hold_is_a_404_never_a_500(
    client: Client, settings: Settings, name: str
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    for path in (f"campaigns/{name}", f"links/{name}"):
        for method in ("GET", "DELETE"):
            answer = client.request(method, f"/v1/sites/{site}/{path}", headers=admin)
            assert answer.status_code == 404, (method, path)
            assert answer.headers["content-type"].startswith("application/problem+json")


def test_under_gdpr_exempt_a_followers_click_and_a_page_view_count_anonymously_and_no_more(
    client: Client, settings: Settings
) -> None:
    """An influencer's follower who never saw a banner: the click on the site's own link counts
    by link, campaign and influencer; the landing page view counts without its utm
    parameters; nothing else is recorded without consent, and nothing identifies them."""
    site = make_site(settings, policy="gdpr-exempt")
    admin = auth(make_key(settings, site))
    campaign = {"name": "Spring", "channel": "influencer", "influencer": "ana"}
    client.put(f"/v1/sites/{site}/campaigns/spring", json=campaign, headers=admin)
    code = make_link(
        client, settings, site, destination="https://shop.example/", campaign="spring"
    ).json()["code"]
    browser = {"User-Agent": CHROME}
    follow = client.get(f"/l/{code}", headers=browser, follow_redirects=False)
    landing = follow.headers["location"]
    assert landing.endswith("?utm_source=ana&utm_medium=influencer&utm_campaign=spring")
    query = "&".join(landing.split("?")[1:])
    pixel = f"/p/{site}/pixel.gif?p=/&{query}&c=spring"
    client.get(pixel, headers=browser)
    client.get(f"/p/{site}/pixel.gif?k=open&c=spring", headers=browser)  # needs consent
    # A click the server did not see on its own link: anyone may send these.
    forged = "k=click&c=spring&utm_source=ana&p=/l/" + code
    client.get(f"/p/{site}/pixel.gif?{forged}&from_link=1", headers=browser)
    beacon = {"k": "click", "c": "spring", "utm_source": "ana", "from_link": "1"}
    client.post(f"/p/{site}/collect", json=beacon, headers=browser)
    client.get(f"{pixel}&u={subject_id()}", headers=browser)  # a person: consent first
    settle(client)
    rows = table_rows(settings, "events", site=site)
    by_kind = {row["kind"]: row for row in rows}
    assert sorted(by_kind) == ["click", "pageview"] and len(rows) == 2
    click, view = by_kind["click"], by_kind["pageview"]
    assert (click["page"], click["campaign"], click["utm_source"]) == (
        f"/l/{code}",
        "spring",
        "ana",
    )
    assert (click["utm_medium"], click["utm_campaign"]) == ("influencer", "spring")
    assert (view["page"], view["campaign"], view["utm_source"], view["utm_campaign"]) == (
        "/",
        None,
        None,
        None,
    )
    assert click["subject"] is None and view["subject"] is None
    assert (
        click["basis"]
        == view["basis"]
        == {"analytics": "anonymous_counting:gdpr-exempt@2025-07-07"}
    )
    reader = auth(make_key(settings, site, "read"))
    day = click["occurred_at"].date().isoformat()
    influencers = client.get(
        f"/v1/sites/{site}/reports/breakdown",
        params={"by": "influencer", "from": day, "to": day},
        headers=reader,
    ).json()
    assert [(row["key"], row["hits"]) for row in influencers["rows"]] == [("ana", 1), (None, 1)]
    summary = client.get(
        f"/v1/sites/{site}/reports/summary", params={"from": day, "to": day}, headers=reader
    ).json()
    assert (summary["hits"], summary["anonymous_hits"], summary["subjects"]) == (2, 2, 0)


def test_under_gdpr_strict_a_click_without_consent_is_not_recorded(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    code = make_link(client, settings, site, destination="https://shop.example/").json()["code"]
    assert client.get(f"/l/{code}", follow_redirects=False).status_code == 302
    settle(client)
    assert table_rows(settings, "events", site=site) == []
