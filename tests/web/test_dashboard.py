"""The dashboard in Chromium: a wrong key refused, every table and chart of a site with data,
CSV downloads, the admin's open requests, the key kept out of every URL, and axe-core."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from app.base.settings import Settings
from tests.factories import auth, make_key, make_site, subject_id
from tests.servers import Server
from tests.web.conftest import OpenPage, off_loop, screenshot

PEOPLE = 6


def seed(live: Server, site: str, admin: str, ingest: str) -> None:
    """A week of a shop under ccpa: page views from three sources, a newsletter's opens, an
    influencer's clicks and conversions, consents, an audience and an access request."""
    people = [subject_id() for _ in range(PEOPLE)]
    with httpx.Client(base_url=live.url, headers=auth(admin)) as api:
        for campaign, body in {
            "letter": {"name": "Letter", "channel": "email", "sends": 20},
            "spring": {"name": "Spring", "channel": "influencer", "influencer": "ana"},
        }.items():
            assert api.put(f"/v1/sites/{site}/campaigns/{campaign}", json=body).is_success
        for n, person in enumerate(people):
            purposes = {"analytics": True, "marketing": n % 2 == 0, "email": True}
            body = {"subject": person, "purposes": purposes}
            assert api.post(f"/v1/sites/{site}/consent", json=body).status_code == 201
        rule = {"name": "Shoe lovers", "rule": {"kinds": ["pageview"], "page_prefix": "/shoes"}}
        assert api.post(f"/v1/sites/{site}/audiences", json=rule).status_code == 201
        request = {"type": "access", "subject": people[0]}
        assert api.post(f"/v1/sites/{site}/dsar", json=request).status_code == 202
        now = datetime.now(UTC)
        events: list[dict[str, Any]] = []
        for day in range(7):
            at = (now - timedelta(days=day, minutes=5)).isoformat()
            for n, person in enumerate(people):
                source = {"utm_source": ["insta", "news"][n % 3]} if n % 3 < 2 else {}
                page = f"/shoes/{n % 2}"
                events.append({"kind": "pageview", "subject": person, "page": page, **source})
                events[-1]["occurred_at"] = at
            click = {"subject": people[day % PEOPLE], "occurred_at": at}
            events.append({"kind": "click", "campaign": "spring", "utm_source": "ana", **click})
            events.append({"kind": "conversion", "value": "20", "currency": "EUR", **click})
        # Opens need the e-mail purpose, given just now: they are today's.
        for person in people:
            opened = {"campaign": "letter", "page": "letter-1", "occurred_at": now.isoformat()}
            events.append({"kind": "open", "subject": person, **opened})
        posted = api.post(f"/v1/sites/{site}/events", json={"events": events}, headers=auth(ingest))
        assert posted.json()["accepted"] == len(events), posted.text


@pytest.fixture
def shop(settings: Settings, live: Server) -> tuple[str, str, str]:
    """A site with a week of data: its slug, a read key and an admin key."""
    site = off_loop(make_site, settings, policy="ccpa", jurisdiction="us-ca")
    admin = off_loop(make_key, settings, site)
    seed(live, site, admin, off_loop(make_key, settings, site, "ingest"))
    return site, off_loop(make_key, settings, site, "read"), admin


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("Read key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_a_wrong_key_is_refused_and_nothing_is_kept(
    open_page: OpenPage, live: Server, shop: tuple[str, str, str], settings: Settings
) -> None:
    site, _, _ = shop
    other = off_loop(make_site, settings)
    watched = open_page()
    page = watched.page
    page.goto(f"{live.url}/dashboard/{site}")
    for wrong in ("not-a-key", off_loop(make_key, settings, other, "read")):
        sign_in(page, wrong)
        expect(page.get_by_role("alert")).to_contain_text("does not open the reports")
    expect(page.locator("#reports")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_every_table_and_chart_of_a_week_of_data(
    open_page: OpenPage, live: Server, shop: tuple[str, str, str]
) -> None:
    site, read, _ = shop
    watched = open_page(accept_downloads=True)
    page = watched.page
    page.goto(f"{live.url}/dashboard/{site}")
    sign_in(page, read)
    expect(page.locator("#summary")).to_contain_text("Hits")
    hits = 7 * (PEOPLE + 2) + PEOPLE
    expect(page.locator("#summary")).to_contain_text(str(hits))
    pages = page.locator("#pages tbody tr")
    expect(pages.filter(has_text="/shoes/0")).to_contain_text(str(7 * PEOPLE // 2))
    expect(page.locator("#sources tbody")).to_contain_text("insta")
    expect(page.locator("#campaigns tbody")).to_contain_text("letter")
    expect(page.locator("#influencers tbody")).to_contain_text("ana")
    expect(page.locator("#devices tbody tr")).not_to_have_count(0)
    expect(page.locator("#audiences tbody")).to_contain_text("Shoe lovers")
    expect(page.locator("#consent tbody tr").filter(has_text="marketing")).to_contain_text("50.0 %")
    page.get_by_label("Choose a campaign").select_option("letter")
    expect(page.locator("#campaign-table")).to_contain_text("open rate")
    for chart in ("#timeseries-chart", "#opens-chart"):
        expect(page.locator(f"{chart} canvas")).to_have_count(1)
    expect(page.locator("#requests-section")).to_be_hidden()  # a read key
    with page.expect_download() as downloading:
        page.locator("#pages + button").click()
    assert downloading.value.suggested_filename == "pages.csv"
    assert "page,hits,subjects" in Path(downloading.value.path()).read_text()
    assert read not in page.url and all(read not in r.url for r in watched.requests)
    assert page.evaluate(f"sessionStorage.getItem('pixelgate-dashboard:{site}')") == read
    screenshot(page, "dashboard.png")
    serious = [
        v["id"]
        for v in Axe().run(page).response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    assert watched.errors == []


def test_an_admin_key_also_sees_the_open_requests_with_their_due_dates(
    open_page: OpenPage, live: Server, shop: tuple[str, str, str]
) -> None:
    site, _, admin = shop
    page = open_page().page
    page.goto(f"{live.url}/dashboard/{site}")
    sign_in(page, admin)
    requests = page.locator("#requests tbody tr")
    expect(requests).to_have_count(1)
    expect(requests).to_contain_text("access")
    page.reload()  # the key stays for the tab
    expect(page.locator("#requests tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Read key")).to_be_visible()


def test_the_keyboard_reaches_every_control_with_its_focus_shown(
    open_page: OpenPage, live: Server, shop: tuple[str, str, str]
) -> None:
    site, read, _ = shop
    page = open_page().page
    page.goto(f"{live.url}/dashboard/{site}")
    page.keyboard.press("Tab")  # the header's link to the start page
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key"
    page.keyboard.type(read)
    page.keyboard.press("Enter")
    expect(page.locator("#influencers tbody tr")).not_to_have_count(0)
    controls = page.evaluate(
        "[...document.querySelectorAll('#reports button, #reports input, #reports select')]"
        ".filter(e => !e.closest('[hidden]')).map(e => e.id || e.dataset.file)"
    )
    page.locator("header a").focus()
    reached = []
    for _ in range(len(controls) + 12):  # a date field takes a Tab per part
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "[document.activeElement.id || document.activeElement.dataset.file,"
                " getComputedStyle(document.activeElement).outlineStyle]"
            )
        )
    assert set(controls) <= {r[0] for r in reached}
    # A date field's focused part is highlighted by Chromium itself, inside the field.
    dates = ("from", "to")
    unmarked = [r for r in reached if r[0] in controls and r[0] not in dates and r[1] == "none"]
    assert unmarked == []
