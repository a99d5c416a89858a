"""What a browser is sent: the API docs from assets the package ships, and the headers every
page carries (SPEC §4.10)."""

import re
from html.parser import HTMLParser
from typing import Any

import httpx
from litestar.testing import TestClient

Client = TestClient[Any]
JS_TYPES = ("text/javascript", "application/javascript")


class References(HTMLParser):
    """Every URL a page makes the browser load, and the bodies of its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def references(page: str) -> References:
    parsed = References()
    parsed.feed(page)
    return parsed


def assert_page_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, nothing from elsewhere
    assert directives["frame-ancestors"] == "'none'"
    assert "://" not in policy and "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_docs_page_loads_only_assets_this_server_serves(client: Client) -> None:
    page = client.get("/schema")
    assert page.status_code == 200
    assert_page_headers(page)
    assert "://" not in page.text  # no URL of another origin, not even in a comment
    found = references(page.text)
    assert found.inline_scripts == []
    assets = [url for url in found.urls if not url.startswith("data:")]
    assert assets, page.text
    kinds = {}
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff"
        kinds[url.rsplit(".", 1)[-1]] = asset.headers["content-type"].split(";")[0]
        if url.endswith(".js"):
            assert "://cdn" not in asset.text and "unpkg" not in asset.text
    assert kinds["css"] == "text/css"
    assert kinds["js"] in JS_TYPES


def test_the_docs_start_from_the_openapi_document_of_this_server(client: Client) -> None:
    page = client.get("/schema").text
    spec = re.search(r'data-spec-url="([^"]+)"', page)
    assert spec is not None and spec.group(1) == "/schema/openapi.json"
    assert "/p/{site}/collect" in client.get(spec.group(1)).json()["paths"]
    starter = [url for url in references(page).urls if url.endswith("docs.js")]
    assert len(starter) == 1
    script = client.get(starter[0]).text
    assert "validatorUrl: null" in script  # the default sends the document to swagger.io


def test_the_shipped_renderer_keeps_its_licence_beside_it(client: Client) -> None:
    notice = client.get("/schema/static/swagger-ui/LICENSE")
    assert notice.status_code == 200 and "Apache License" in notice.text


def test_every_html_answer_carries_the_page_headers_and_json_ones_nosniff(
    client: Client,
) -> None:
    missing = client.get("/schema/no-such-page")  # litestar's own HTML 404
    assert missing.status_code == 404
    assert_page_headers(missing)
    for path in ("/healthz", "/schema/openapi.json", "/v1/no-such-thing"):
        answer = client.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in answer.headers  # not a page


def test_the_pixel_keeps_its_own_headers(client: Client) -> None:
    """The pixel's answer is the same under both fronts; the page headers are not added to it."""
    got = client.get("/p/no-such-site/pixel.gif")
    assert sorted(got.headers) == ["cache-control", "content-length", "content-type"]


def test_a_static_path_no_file_can_have_is_a_404(client: Client) -> None:
    for path in ("/schema/static/docs.js%00", "/schema/static/%00", "/schema/static/x%00.css"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
