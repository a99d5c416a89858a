"""GET /v1/sites/{site}/banner.js as a script: what it is given of the site and its policy,
and a site's own words that cannot end the script or break out of its literal."""

import gzip
import json
from typing import Any

from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import auth, make_key, make_site

Client = TestClient[Any]


def config_of(script: str) -> Any:
    """The object the script calls pixelgateBanner with."""
    start = script.rindex("pixelgateBanner(") + len("pixelgateBanner(")
    end = script.rindex(", document.currentScript);")
    return json.loads(script[start:end])


def test_it_carries_the_policy_s_purposes_and_the_site_s_urls(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    answer = client.get(f"/v1/sites/{site}/banner.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert len(gzip.compress(answer.content)) < 15 * 1024
    config = config_of(answer.text)
    assert [(p["name"], p["gpc"]) for p in config["purposes"]] == [
        ("analytics", False),
        ("marketing", True),
        ("email", False),
    ]
    assert config["purposes"][1]["title"] == {"en": "Marketing", "de": "Marketing"}
    assert config["kinds"]["open"] == ["email"]
    assert config["api"] == f"{settings.base_url}/v1/sites/{site}"
    assert config["pixel"] == f"{settings.base_url}/p/{site}/pixel.gif"
    assert config["privacy"] == f"{settings.base_url}/privacy/{site}"
    assert set(config["texts"]) == {"en", "de"}
    forged = client.get(f"/v1/sites/{site}/banner.js", headers={"Host": "evil.example"})
    assert "evil.example" not in forged.text


def test_a_site_s_name_cannot_end_the_script_or_its_literal(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    name = "Shoes </script><script>alert(1)</script> \u2028 \u2029 Ltd"
    admin = auth(make_key(settings, site))
    assert client.patch(f"/v1/sites/{site}", json={"controller": name}, headers=admin).is_success
    script = client.get(f"/v1/sites/{site}/banner.js").text
    assert "</script" not in script and "\u2028" not in script and "\u2029" not in script
    assert config_of(script)["name"] == name


def test_an_unknown_or_impossible_site_is_a_404_problem(client: Client) -> None:
    for slug in ("no-such-site", "Bad%20Slug", "%00", "a" * 300):
        answer = client.get(f"/v1/sites/{slug}/banner.js")
        assert answer.status_code == 404, slug
        assert answer.headers["content-type"] == "application/problem+json"


def test_the_notice_is_a_page_for_a_browser_and_markdown_for_anyone_else(
    client: Client, settings: Settings
) -> None:
    """The banner links to it: a browser asks for text/html, and the site's words are text."""
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    name = "<b>Shoes</b> & Hats"
    assert client.patch(f"/v1/sites/{site}", json={"controller": name}, headers=admin).is_success
    markdown = client.get(f"/v1/sites/{site}/policy")
    assert markdown.headers["content-type"].startswith("text/markdown")
    browser = client.get(f"/v1/sites/{site}/policy", headers={"Accept": "text/html,*/*;q=0.8"})
    assert browser.headers["content-type"].startswith("text/html")
    assert browser.headers["x-policy-sha256"] == markdown.headers["x-policy-sha256"]
    assert "content-security-policy" in browser.headers
    assert (
        "<b>Shoes</b>" not in browser.text and "&lt;b&gt;Shoes&lt;/b&gt; &amp; Hats" in browser.text
    )
    assert markdown.text.splitlines()[0] in browser.text


def test_a_refused_subject_token_is_readable_by_the_site_s_banner(
    client: Client, settings: Settings
) -> None:
    """The banner tells a dead id (401/403) from a network failure only if the refusal
    carries the site's CORS headers."""
    origin = "https://shop.example"
    site = make_site(settings, origins=(origin,))
    given = client.post(
        f"/v1/sites/{site}/consent",
        json={"purposes": {"analytics": True}},
        headers={"Origin": origin},
    ).json()
    subject, token = given["subject"], given["subject_token"]
    forged = {"Origin": origin, "X-Subject-Token": token[:-4] + "AAAA"}
    for answer in (
        client.get(f"/v1/sites/{site}/consent/{subject}", headers=forged),
        client.delete(f"/v1/sites/{site}/consent/{subject}", headers=forged),
        client.post(
            f"/v1/sites/{site}/consent",
            json={"subject": "someone-else", "purposes": {"analytics": True}},
            headers={"Origin": origin, "X-Subject-Token": token},
        ),
    ):
        assert answer.status_code in (401, 403), answer.text
        assert answer.headers["access-control-allow-origin"] == origin
