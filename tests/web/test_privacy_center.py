"""The privacy center, opened from the banner's "Your data" link: consent with its dates, the
history, withdrawal, an access request's export and an erasure, end to end in Chromium."""

import json
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from app.base.settings import Settings
from tests.factories import raw, table_rows
from tests.servers import Server
from tests.web.conftest import (
    HostPages,
    OpenPage,
    dialog,
    off_loop,
    run_dsar_job,
    screenshot,
    shop_page,
    stored,
)


def consented_privacy_page(open_page: OpenPage, host: HostPages, live: Server, site: str) -> Page:
    """A visitor accepts on the shop's page, then opens "Your data" from Privacy choices."""
    page = open_page(accept_downloads=True).page
    page.goto(shop_page(host, live, site))
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    raw(stored(page, site)["subject"])
    page.get_by_role("button", name="Privacy choices").click()
    with page.context.expect_page() as opened:
        dialog(page).get_by_role("link", name="Your data").click()
    center = opened.value
    expect(center.get_by_role("heading", name="Your consent")).to_be_visible()
    return center


def test_it_shows_consent_and_history_and_keeps_the_token_out_of_the_url(
    open_page: OpenPage, host: HostPages, live: Server, shop: str
) -> None:
    center = consented_privacy_page(open_page, host, live, shop)
    assert center.url == f"{live.url}/privacy/{shop}"  # the fragment is cut at once
    rows = center.locator("#purposes tr")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="analytics")).to_contain_text("allowed")
    expect(center.locator("#history tr")).to_have_count(1)
    expect(center.locator("#history")).to_contain_text("banner")
    screenshot(center, "privacy-center.png")
    serious = [
        v["id"]
        for v in Axe().run(center).response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []


def test_withdraw_then_download_then_erase(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    center = consented_privacy_page(open_page, host, live, shop)
    center.get_by_role("button", name="Withdraw all consent").click()
    expect(center.get_by_role("status")).to_contain_text("withdrawn")
    expect(center.locator("#purposes tr").filter(has_text="not allowed")).to_have_count(3)
    expect(center.locator("#history tr")).to_have_count(2)

    save = center.get_by_role("link", name="Save my data (JSON)")
    expect(save).to_be_hidden()
    center.get_by_role("button", name="Download my data").click()
    expect(center.get_by_role("status")).to_contain_text("filed")
    run_dsar_job(settings)
    expect(save).to_be_visible(timeout=15_000)
    with center.expect_download() as downloading:
        save.click()
    export = json.loads(Path(downloading.value.path()).read_text())
    assert export["site"] == shop
    assert [event["kind"] for event in export["events"]] == ["pageview"]
    assert [entry["action"] for entry in export["consent"]] == ["given", "withdrawn"]

    center.get_by_role("button", name="Erase my data").click()
    confirm = center.get_by_role("dialog")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Erase my data").click()
    expect(center.get_by_role("status")).to_contain_text("Erasure requested")
    run_dsar_job(settings)
    expect(center.get_by_role("status")).to_contain_text("erased", timeout=15_000)
    assert off_loop(table_rows, settings, "events", site=shop) == []
    assert off_loop(table_rows, settings, "consent_state", site=shop) == []
    assert center.evaluate("sessionStorage.length") == 0


def test_without_a_token_it_says_where_to_open_it(
    open_page: OpenPage, live: Server, shop: str
) -> None:
    page = open_page().page
    page.goto(f"{live.url}/privacy/{shop}")
    expect(page.get_by_text("Open it from the site's")).to_be_visible()
    expect(page.get_by_role("button", name="Download my data")).to_be_hidden()
