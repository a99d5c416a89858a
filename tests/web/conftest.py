"""Web pages in a real browser: Playwright driving Debian's Chromium (installed from Debian's
packages when missing; no browser is ever downloaded), against a live `pixelgate serve`, with
the site's own pages served from a second origin as a site would serve them."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    expect,
    sync_playwright,
)

from app.base.settings import Settings
from tests.factories import make_site
from tests.servers import Server, environment, free_port

CHROMIUM = Path("/usr/bin/chromium")
# A page's answers wait behind the rest of the suite on a loaded machine: assertions that
# wait for a page to change wait longer than Playwright's 5 s.
expect.set_options(timeout=20_000)
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _install_chromium() -> None:
    """Debian's package, as CI installs what it needs; refreshed lists only if the first try
    finds none."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        assert shutil.which("apt-get"), "Debian's chromium is needed and apt-get is not here"
        _install_chromium()
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path, database_url: str) -> Iterator[Browser]:
    """One per module and database: the database is made first, as its fixture runs an event
    loop of its own, which it may not while Playwright's runs."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def live(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """pixelgate itself, without its scheduler: a test runs a job when it means to."""
    server = Server(database_url, tmp_path_factory.mktemp("live"), PIXELGATE_JOBS="off")
    server.start()
    yield server
    server.stop()
    server.assert_clean_log()


@dataclass
class HostPages:
    """A site's own web server on another origin: `page(path)` is the URL of an HTML page
    whose body is `pages[path]`, sent with the Content-Security-Policy in `csp[path]`."""

    origin: str
    pages: dict[str, str] = field(default_factory=dict)
    csp: dict[str, str] = field(default_factory=dict)

    def page(self, path: str, body: str, csp: str | None = None) -> str:
        self.pages[path] = body
        if csp is not None:
            self.csp[path] = csp
        return f"{self.origin}{path}"


@pytest.fixture(scope="module")
def host() -> Iterator[HostPages]:
    port = free_port()
    pages = HostPages(origin=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            body = pages.pages.get(path)
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if path in pages.csp:
                self.send_header("Content-Security-Policy", pages.csp[path])
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield pages
    server.shutdown()
    server.server_close()


@dataclass
class Watched:
    """A page and what it did: every request it sent, and the console's errors."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sent(self, part: str) -> list[str]:
        return [request.url for request in self.requests if part in request.url]


OpenPage = Callable[..., Watched]  # open_page: a new browser context's page, watched


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """A new browser context (its own storage) per call, with options such as locale or
    extra headers; closed after the test."""
    contexts: list[BrowserContext] = []

    def opened(**options: Any) -> Watched:
        init_script = options.pop("init_script", None)
        # Headless Chromium names itself HeadlessChrome, which the pixel counts as a bot.
        agent = browser.new_browser_cdp_session().send("Browser.getVersion")["userAgent"]
        options.setdefault("user_agent", agent.replace("HeadlessChrome", "Chrome"))
        context = browser.new_context(**options)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        watched = Watched(page)
        page.on("request", lambda request: watched.requests.append(request))
        page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watched.errors.append(str(e)))
        return watched

    yield opened
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


T = TypeVar("T")
LETTERS = str.maketrans("0123456789", "ghijklmnop")


def off_loop(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs `work` (a test factory that runs its own event loop) in a thread of its own:
    Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args, **kwargs).result()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def shop(settings: Settings, host: HostPages) -> str:
    return off_loop(make_site, settings, policy="gdpr-strict", origins=(host.origin,))


def shop_page(
    host: HostPages, live: Server, site: str, path: str = "/", nonce: str = "", csp: str = ""
) -> str:
    """A page of the shop, on its own origin, with the banner's one script tag."""
    extra = f" nonce='{nonce}'" if nonce else ""
    body = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Shop</title>"
        "<link rel='icon' href='data:,'>"
        f"<script src='{live.url}/v1/sites/{site}/banner.js' async{extra}></script></head>"
        "<body><main><h1>Shoes</h1><p>Good shoes.</p>"
        "<a href='/other'>Other page</a></main></body></html>"
    )
    # The page's path holds the slug without digits: the pixel scrubs long digit runs.
    return host.page(f"/{site.translate(LETTERS)}{path}", body, csp or None)


def stored(page: Page, site: str) -> Any:
    return json.loads(page.evaluate(f"localStorage.getItem('pixelgate:{site}') || 'null'"))


def dialog(page: Page) -> Locator:
    return page.get_by_role("dialog")


def run_dsar_job(settings: Settings) -> None:
    """What the server's scheduler does within a minute, at once."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "jobs", "run", "--only", "dsar"],
        env=environment(settings.database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
