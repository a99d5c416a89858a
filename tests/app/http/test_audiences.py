"""Audiences over HTTP (SPEC §4.9), on both databases: made, listed, read, deleted; members
only while marketing is allowed; one visitor checked; the site's candidates matched."""

import hashlib
from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import CHROME, auth, make_key, make_site, settle, subject_id, table_rows

Client = TestClient[Any]


def grant(client: Client, site: str, admin: dict[str, str], subject: str, marketing: bool) -> None:
    body = {"subject": subject, "purposes": {"analytics": True, "marketing": marketing}}
    assert client.post(f"/v1/sites/{site}/consent", json=body, headers=admin).status_code == 201


def visit(client: Client, site: str, subject: str, page: str) -> None:
    client.get(
        f"/p/{site}/pixel.gif", params={"u": subject, "p": page}, headers={"User-Agent": CHROME}
    )


@pytest.fixture
def shoppers(client: Client, settings: Settings) -> tuple[str, dict[str, str], dict[str, str]]:
    """A gdpr-strict site with an admin and a read key."""
    site = make_site(settings)
    return site, auth(make_key(settings, site)), auth(make_key(settings, site, "read"))


def make(client: Client, site: str, admin: dict[str, str], **rule: Any) -> str:
    made = client.post(
        f"/v1/sites/{site}/audiences", json={"name": "shoe lovers", "rule": rule}, headers=admin
    )
    assert made.status_code == 201, made.text
    audience_id: str = made.json()["id"]
    return audience_id


def test_members_are_visitors_the_rule_finds_whose_marketing_is_allowed_right_now(
    client: Client, shoppers: tuple[str, dict[str, str], dict[str, str]]
) -> None:
    site, admin, read = shoppers
    keen, shy, elsewhere = "keen@example.com", subject_id(), subject_id()
    grant(client, site, admin, keen, marketing=True)
    grant(client, site, admin, shy, marketing=False)
    grant(client, site, admin, elsewhere, marketing=True)
    for subject, page in [(keen, "/product/shoe"), (shy, "/product/shoe"), (elsewhere, "/blog")]:
        visit(client, site, subject, page)
    settle(client)
    audience = make(client, site, admin, kinds=["pageview"], page_prefix="/product/")
    base = f"/v1/sites/{site}/audiences/{audience}"
    listed = client.get(f"{base}/members", headers=admin).json()
    assert len(listed["members"]) == 1 and listed["excluded"] == {
        "no_consent": 1,
        "gpc": 0,
        "opt_out": 0,
    }
    assert keen not in str(listed)  # pseudonyms only
    assert client.get(f"{base}/members/{keen}", headers=read).json() == {"member": True}
    assert client.get(f"{base}/members/{shy}", headers=read).json() == {"member": False}

    matched = client.post(
        f"{base}/match",
        json={"candidates": [" Keen@Example.com", shy, "nobody@example.com"]},
        headers=admin,
    )
    assert matched.status_code == 200, matched.text
    expected = hashlib.sha256(b"keen@example.com").hexdigest()
    assert matched.json() == {"members": [{"candidate": " Keen@Example.com", "sha256": expected}]}

    withdrawn = client.delete(f"/v1/sites/{site}/consent/{keen}", headers=admin)
    assert withdrawn.status_code == 200
    assert client.get(f"{base}/members/{keen}", headers=read).json() == {"member": False}
    assert client.get(f"{base}/members", headers=admin).json()["members"] == []


def test_on_an_opt_out_site_a_visitor_whose_browser_sent_gpc_is_no_member(
    client: Client, settings: Settings
) -> None:
    """No banner, no consent record: the pixel's hit with Sec-GPC is what is remembered."""
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    admin = auth(make_key(settings, site))
    quiet, private = subject_id(), subject_id()
    visit(client, site, quiet, "/product/shoe")
    client.get(
        f"/p/{site}/pixel.gif",
        params={"u": private, "p": "/product/hat"},
        headers={"User-Agent": CHROME, "Sec-GPC": "1"},
    )
    settle(client)
    [seen] = table_rows(settings, "events", site=site, page="/product/hat")
    assert seen["basis"]["signal:gpc"] == "1"
    audience = make(client, site, admin, page_prefix="/product/")
    listed = client.get(f"/v1/sites/{site}/audiences/{audience}/members", headers=admin).json()
    assert len(listed["members"]) == 1
    assert listed["excluded"] == {"no_consent": 0, "gpc": 1, "opt_out": 0}
    base = f"/v1/sites/{site}/audiences/{audience}/members"
    assert client.get(f"{base}/{private}", headers=admin).json() == {"member": False}
    assert client.get(f"{base}/{quiet}", headers=admin).json() == {"member": True}


def test_audiences_are_listed_read_and_deleted_by_an_admin_key(
    client: Client, shoppers: tuple[str, dict[str, str], dict[str, str]]
) -> None:
    site, admin, read = shoppers
    first = make(client, site, admin, within_days=7, utm={"utm_source": "ana"})
    second = make(client, site, admin)
    listed = client.get(f"/v1/sites/{site}/audiences", headers=admin).json()["audiences"]
    assert sorted(a["id"] for a in listed) == sorted([first, second])
    one = client.get(f"/v1/sites/{site}/audiences/{first}", headers=admin).json()
    assert one["rule"]["within_days"] == 7 and one["rule"]["utm"] == {"utm_source": "ana"}
    assert client.get(f"/v1/sites/{site}/audiences", headers=read).status_code == 403
    assert (
        client.get(f"/v1/sites/{site}/audiences/{first}/members", headers=read).status_code == 403
    )
    assert client.delete(f"/v1/sites/{site}/audiences/{first}", headers=admin).status_code == 204
    assert client.get(f"/v1/sites/{site}/audiences/{first}", headers=admin).status_code == 404
    assert [
        a["id"]
        for a in client.get(f"/v1/sites/{site}/audiences", headers=admin).json()["audiences"]
    ] == [second]
    other = make_site_for(client)
    assert client.get(f"/v1/sites/{other}/audiences/{second}", headers=admin).status_code in (
        401,
        403,
    )


def make_site_for(client: Client) -> str:
    return make_site(client.app.state.ctx.settings)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "x", "rule": {"min_hits": 0}}, "min_hits"),
        ({"name": "x", "rule": {"within_days": 99999}}, "within_days"),
        ({"name": "x", "rule": {"kinds": ["Page View"]}}, "kinds"),
        ({"name": "x", "rule": {"utm": {"utm_colour": "red"}}}, "utm"),
        ({"name": "x", "rule": {"page_prefix": "/a\x00"}}, "page_prefix"),
        ({"name": "x", "rule": {"utm": {"utm_source": "a\x01"}}}, "utm.utm_source"),
        ({"name": "x", "rule": {"colour": "red"}}, "colour"),
    ],
)
def test_a_bad_audience_is_a_422_naming_the_field_and_nothing_is_stored(
    client: Client,
    settings: Settings,
    shoppers: tuple[str, dict[str, str], dict[str, str]],
    body: dict[str, Any],
    field: str,
) -> None:
    site, admin, _ = shoppers
    made = client.post(f"/v1/sites/{site}/audiences", json=body, headers=admin)
    assert made.status_code in (400, 422), made.text
    assert made.headers["content-type"].startswith("application/problem+json")
    assert field in made.text
    assert table_rows(settings, "audiences", site=site) == []


def test_an_audience_id_no_row_can_hold_is_a_404_and_too_many_candidates_a_clear_error(
    client: Client, shoppers: tuple[str, dict[str, str], dict[str, str]]
) -> None:
    site, admin, _ = shoppers
    assert client.get(f"/v1/sites/{site}/audiences/a%00b", headers=admin).status_code == 404
    audience = make(client, site, admin)
    many = {"candidates": [f"c-{n}" for n in range(10_001)]}
    refused = client.post(f"/v1/sites/{site}/audiences/{audience}/match", json=many, headers=admin)
    assert refused.status_code in (400, 413, 422)
    assert refused.headers["content-type"].startswith("application/problem+json")
