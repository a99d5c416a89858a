"""The web pages as HTTP answers: a stranger's path never makes a 500, every page carries the
strict CSP, and the start page names the sites without anything of their data."""

from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.settings import Settings
from tests.factories import make_site

Client = TestClient[Any]


@pytest.mark.parametrize("page", ["dashboard", "privacy"])
@pytest.mark.parametrize("slug", ["no-such-site", "Bad%20Slug", "%00", "a" * 300, "%2e%2e"])
def test_a_page_of_an_unknown_or_impossible_site_is_a_404_problem(
    client: Client, page: str, slug: str
) -> None:
    answer = client.get(f"/{page}/{slug}")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/static/../main.py", "/static/%2e%2e/main.py", "/static/%00", "/static/nope.js"]
)
def test_static_files_are_only_the_package_s_own(client: Client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_pages_carry_the_strict_content_security_policy(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    for path in ("/", f"/dashboard/{site}", f"/privacy/{site}"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy, path
        assert "<script>" not in answer.text and " style=" not in answer.text, path


def test_the_start_page_links_each_site_s_dashboard_and_notice(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    text = client.get("/").text
    assert f'href="/dashboard/{site}"' in text
    assert f'href="/v1/sites/{site}/policy"' in text
    assert 'href="/schema"' in text and "pixelgate 0." in text


def test_the_dashboard_s_key_field_could_never_be_sent_in_a_url(
    client: Client, settings: Settings
) -> None:
    """Should its script fail, a native submit posts, and a field without a name sends
    nothing: the key is never in a URL, a history entry or a server log."""
    text = client.get(f"/dashboard/{make_site(settings)}").text
    assert '<form id="sign-in" method="post"' in text
    assert '<input id="key" type="password"' in text and 'name="key"' not in text
