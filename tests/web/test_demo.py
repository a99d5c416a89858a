"""`pixelgate demo` on a database of its own, then the server's start page, the demo shop with
its banner and the demo's dashboard, in Chromium."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from litestar.testing import TestClient
from playwright.sync_api import Page, expect, sync_playwright

from app.base.settings import Settings
from tests.factories import settings_for, table_rows
from tests.servers import Server, environment
from tests.web.conftest import dialog, screenshot


def pixelgate(server: Server, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, writing the URLs of `server` (the demo site's origin is the server's own)."""
    server.workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=environment(database_url, PIXELGATE_PUBLIC_URL=server.url),
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def no_serious_violation(page: Page) -> None:
    found = Axe().run(page).response["violations"]
    assert [v["id"] for v in found if v["impact"] in ("serious", "critical")] == []


def test_the_demo_makes_a_month_of_a_shop_and_its_pages_show_it(
    empty_database_url: str, tmp_path: Path, chromium: Path
) -> None:
    server = Server(empty_database_url, tmp_path / "server", PIXELGATE_JOBS="off")
    made = pixelgate(server, empty_database_url, "demo")
    assert made.returncode == 0, made.stderr
    demo = json.loads(made.stdout)
    assert demo["site"] == "demo" and demo["read_key"].startswith("pg_")
    again = pixelgate(server, empty_database_url, "demo")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr

    settings: Settings = settings_for(empty_database_url)
    events = table_rows(settings, "events", site="demo")
    kinds = {event["kind"] for event in events}
    assert kinds == {"pageview", "click", "open", "conversion"}
    assert any(event["machine"] for event in events if event["kind"] == "open")
    anonymous = [event for event in events if event["subject"] is None]
    assert anonymous and all(event["utm_source"] is None for event in anonymous)
    assert any("signal:gpc" in event["basis"] for event in events)
    assert any(event["value"] is not None and event["value"] < 0 for event in events)
    assert len(table_rows(settings, "links", site="demo")) == 2
    [site] = table_rows(settings, "sites", slug="demo")
    local = server.url.replace("127.0.0.1", "localhost")
    assert sorted(site["origins"]) == sorted([server.url, local])  # its shop, either way
    assert table_rows(settings, "consent_ledger", site="demo")

    server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{server.url}/")
            expect(page.get_by_role("heading", name="pixelgate")).to_be_visible()
            expect(page.get_by_text("Demo Shoe Shop")).to_be_visible()
            no_serious_violation(page)
            screenshot(page, "front-door.png")

            page.get_by_role("link", name="The demo shop").click()
            expect(dialog(page)).to_be_visible()
            dialog(page).get_by_role("button", name="Accept all").click()
            expect(dialog(page)).to_be_hidden()
            page.get_by_role("button", name="Buy the Trail Runner").click()
            expect(
                page.get_by_role("button", name="Bought: the conversion is counted")
            ).to_be_visible()

            page.goto(f"{server.url}/dashboard/demo")
            page.get_by_label("Read key").fill(demo["read_key"])
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#pages tbody tr")).not_to_have_count(0)
            expect(page.locator("#influencers tbody")).to_contain_text("ana")
            expect(page.locator("#influencers tbody")).to_contain_text("bo")
            expect(page.locator("#audiences tbody")).to_contain_text("Shoe browsers")
            page.get_by_label("Choose a campaign").select_option("newsletter-weekly")
            sends = page.locator("#campaign-table tr").filter(has_text="sends")
            expect(sends).to_contain_text("480")  # the newsletter's, as the demo made it
            expect(page.locator("#opens-chart canvas")).to_have_count(1)
            screenshot(page, "demo-dashboard.png")
            assert errors == []
            browser.close()
    finally:
        server.stop()
        server.assert_clean_log()


def test_without_the_demo_its_shop_is_a_404(client: TestClient[Any]) -> None:
    answer = client.get("/demo")
    assert answer.status_code == 404
    assert "pixelgate demo" in answer.json()["detail"]
