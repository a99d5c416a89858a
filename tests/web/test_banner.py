"""The consent banner on a page of the site's own origin, in Chromium: nothing before a choice,
reject, accept, Global Privacy Control, withdrawal, conversions, a strict CSP with a nonce,
the keyboard, German, and axe-core's accessibility rules."""

import gzip
import json
import time
from typing import Any

import httpx
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from app.base.keys import KeyRing
from app.base.settings import Settings
from tests.factories import SECRET, auth, make_key, raw, table_rows
from tests.servers import Server
from tests.web.conftest import (
    LETTERS,
    HostPages,
    OpenPage,
    dialog,
    off_loop,
    run_dsar_job,
    screenshot,
    shop_page,
    stored,
)


def storage_size(page: Page) -> int:
    return int(page.evaluate("localStorage.length + sessionStorage.length"))


def events_of(
    settings: Settings, site: str, count: int, wait: float = 10.0
) -> list[dict[str, Any]]:
    """The site's recorded events, once there are `count` of them (the writer batches)."""
    deadline = time.monotonic() + wait
    while True:
        rows = off_loop(table_rows, settings, "events", site=site)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_the_script_is_small_and_carries_the_policy_s_purposes(live: Server, shop: str) -> None:
    answer = httpx.get(f"{live.url}/v1/sites/{shop}/banner.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert len(gzip.compress(answer.content)) < 15 * 1024
    assert '"name":"marketing"' in answer.text and "pixelgateBanner(" in answer.text
    unknown = httpx.get(f"{live.url}/v1/sites/no-such-site/banner.js")
    assert unknown.status_code == 404


def test_before_any_choice_nothing_is_stored_or_sent(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop))
    expect(dialog(page)).to_be_visible()
    expect(dialog(page).get_by_role("switch")).to_have_count(3)  # gdpr-strict's purposes
    expect(dialog(page).get_by_role("link", name="Privacy notice")).to_have_attribute(
        "href", f"{live.url}/v1/sites/{shop}/policy"
    )
    accept = dialog(page).get_by_role("button", name="Accept all")
    reject = dialog(page).get_by_role("button", name="Reject all")
    accept_box, reject_box = accept.bounding_box(), reject.bounding_box()
    assert accept_box and reject_box
    assert (accept_box["width"], accept_box["height"]) == (
        reject_box["width"],
        reject_box["height"],
    )
    weight = "el => getComputedStyle(el).fontWeight + getComputedStyle(el).backgroundColor"
    assert accept.evaluate(weight) == reject.evaluate(weight)
    assert storage_size(page) == 0
    assert page.context.cookies() == []
    assert watched.sent("/p/") == [] and watched.sent("/consent") == []
    screenshot(page, "banner.png")
    assert watched.errors == []
    assert events_of(settings, shop, 1, wait=0.5) == []


def test_reject_records_nothing_and_is_remembered_without_an_id(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop))
    dialog(page).get_by_role("button", name="Reject all").click()
    expect(dialog(page)).to_be_hidden()
    assert set(stored(page, shop)) == {"refused", "policy", "at"}
    page.reload()
    expect(page.get_by_role("button", name="Privacy choices")).to_be_visible()
    expect(dialog(page)).to_be_hidden()
    assert watched.sent("/p/") == [] and watched.sent("/consent") == []
    assert off_loop(table_rows, settings, "consent_ledger", site=shop) == []
    assert events_of(settings, shop, 1, wait=1.0) == []
    assert watched.errors == []


def test_accept_mints_the_id_then_records_page_views(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop) + "?utm_source=insta&utm_campaign=spring")
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    kept = stored(page, shop)
    raw(kept["subject"])
    assert kept["purposes"] == {"analytics": True, "marketing": True, "email": True}
    [event] = events_of(settings, shop, 1)
    pseudonym = KeyRing(SECRET).pseudonym(shop, kept["subject"])
    path = f"/{shop.translate(LETTERS)}"
    assert (event["kind"], event["subject"], event["page"]) == ("pageview", pseudonym, f"{path}/")
    assert (event["utm_source"], event["utm_campaign"]) == ("insta", "spring")
    page.goto(shop_page(host, live, shop, "/other"))
    expect(page.get_by_role("button", name="Privacy choices")).to_be_visible()
    assert [e["page"] for e in events_of(settings, shop, 2)] == [f"{path}/", f"{path}/other"]
    assert page.evaluate("pixelgate.track('conversion', {value: '19.90', currency: 'EUR'})")
    conversions = [e for e in events_of(settings, shop, 3) if e["kind"] == "conversion"]
    assert [(str(e["value"]), e["currency"]) for e in conversions] in (
        [("19.9000", "EUR")],
        [("19.90", "EUR")],
    )
    assert watched.errors == []


def test_global_privacy_control_is_shown_and_marketing_stays_off(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    watched = open_page(
        extra_http_headers={"Sec-GPC": "1"},
        init_script="Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
        "{get: () => true})",
    )
    page = watched.page
    page.goto(shop_page(host, live, shop))
    expect(dialog(page).get_by_role("status")).to_contain_text("Global Privacy Control")
    marketing = dialog(page).get_by_role("switch", name="Marketing")
    expect(marketing).to_be_disabled()
    expect(marketing).not_to_be_checked()
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    kept = stored(page, shop)
    raw(kept["subject"])
    assert kept["purposes"] == {"analytics": True, "marketing": False, "email": True}
    state = {
        row["purpose"]: row["granted"]
        for row in off_loop(table_rows, settings, "consent_state", site=shop)
    }
    assert state == {"analytics": True, "marketing": False, "email": True}
    screenshot(page, "banner-gpc.png")


def test_withdrawal_through_privacy_choices_stops_recording_and_deletes_the_id(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop))
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    subject = raw(stored(page, shop)["subject"])
    assert len(events_of(settings, shop, 1)) == 1
    page.get_by_role("button", name="Privacy choices").click()
    expect(dialog(page)).to_be_visible()
    expect(dialog(page).get_by_role("switch", name="Analytics")).to_be_checked()
    dialog(page).get_by_role("button", name="Reject all").click()
    expect(dialog(page)).to_be_hidden()
    assert set(stored(page, shop)) == {"refused", "policy", "at"}
    assert subject not in json.dumps(page.evaluate("Object.assign({}, localStorage)"))
    pixels = len(watched.sent("/p/"))
    page.goto(shop_page(host, live, shop, "/other"))
    expect(page.get_by_role("button", name="Privacy choices")).to_be_visible()
    assert not page.evaluate("pixelgate.track('conversion', {value: '5'})")
    assert len(watched.sent("/p/")) == pixels
    state = off_loop(table_rows, settings, "consent_state", site=shop)
    assert state and not any(row["granted"] for row in state)
    assert len(events_of(settings, shop, 2, wait=1.0)) == 1


def test_works_under_a_strict_content_security_policy_with_a_nonce(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    csp = (
        "default-src 'none'; script-src 'nonce-r4nd0m'; style-src 'nonce-r4nd0m'; "
        f"connect-src {live.url}; img-src {live.url} data:"
    )
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop, nonce="r4nd0m", csp=csp))
    accept = dialog(page).get_by_role("button", name="Accept all")
    expect(accept).to_be_visible()
    # The stylesheet applied: the two choices side by side, not stacked.
    box = accept.bounding_box()
    reject = dialog(page).get_by_role("button", name="Reject all").bounding_box()
    assert box and reject and box["y"] == reject["y"]
    accept.click()
    expect(dialog(page)).to_be_hidden()
    raw(stored(page, shop)["subject"])
    assert len(events_of(settings, shop, 1)) == 1
    assert watched.errors == []


def test_keyboard_reaches_every_control_and_escape_closes_without_choosing(
    open_page: OpenPage, host: HostPages, live: Server, shop: str
) -> None:
    watched = open_page()
    page = watched.page
    page.goto(shop_page(host, live, shop))
    expect(dialog(page)).to_be_visible()
    focused = (
        "(() => { let e = document.activeElement;"
        " while (e && e.shadowRoot && e.shadowRoot.activeElement)"
        " e = e.shadowRoot.activeElement;"
        " return [e.tagName, e.textContent || e.id, getComputedStyle(e).outlineStyle]; })()"
    )
    reached = [page.evaluate(focused)]  # the dialog opens with its first control focused
    for _ in range(6):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(focused))
    names = {name for _, name, _ in reached}
    assert {"Reject all", "Accept all", "Save choices", "Privacy notice"} <= names
    assert {"pixelgate-analytics", "pixelgate-marketing", "pixelgate-email"} <= names
    assert all(outline != "none" for _, _, outline in reached), reached
    page.keyboard.press("Escape")
    expect(dialog(page)).to_be_hidden()
    assert storage_size(page) == 0
    reopen = page.get_by_role("button", name="Privacy choices")
    reopen.focus()
    page.keyboard.press("Enter")
    expect(dialog(page)).to_be_visible()
    assert watched.sent("/consent") == []


def test_german_browsers_get_the_german_texts(
    open_page: OpenPage, host: HostPages, live: Server, shop: str
) -> None:
    page = open_page(locale="de-DE").page
    page.goto(shop_page(host, live, shop))
    expect(dialog(page).get_by_role("button", name="Alle ablehnen")).to_be_visible()
    expect(dialog(page).get_by_role("button", name="Alle akzeptieren")).to_be_visible()
    expect(dialog(page).get_by_role("switch", name="Statistik")).to_be_visible()


def test_axe_finds_no_serious_violation_in_the_banner(
    open_page: OpenPage, host: HostPages, live: Server, shop: str
) -> None:
    page = open_page().page
    page.goto(shop_page(host, live, shop))
    expect(dialog(page)).to_be_visible()
    results = Axe().run(page)
    serious = [
        violation["id"]
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert serious == [], results.generate_report()


def test_after_an_erasure_the_banner_forgets_the_id_and_can_ask_again(
    open_page: OpenPage, host: HostPages, live: Server, shop: str, settings: Settings
) -> None:
    """The erasure (filed from the privacy center, another origin) kills the token: the
    banner's daily check forgets the id, and a new grant mints a new one."""
    page = open_page().page
    page.goto(shop_page(host, live, shop))
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    first = raw(stored(page, shop)["subject"])
    admin = auth(off_loop(make_key, settings, shop))
    erasure = {"type": "erasure", "subject": first}
    assert httpx.post(f"{live.url}/v1/sites/{shop}/dsar", json=erasure, headers=admin).is_success
    run_dsar_job(settings)
    # Within the day, a new grant through Privacy choices is refused for the dead id: a new
    # id is minted instead of the choice failing.
    page.get_by_role("button", name="Privacy choices").click()
    dialog(page).get_by_role("button", name="Accept all").click()
    expect(dialog(page)).to_be_hidden()
    second = raw(stored(page, shop)["subject"])
    assert second != first
    # A day later, a page load asks the server, and forgets an id it no longer knows.
    erasure = {"type": "erasure", "subject": second}
    assert httpx.post(f"{live.url}/v1/sites/{shop}/dsar", json=erasure, headers=admin).is_success
    run_dsar_job(settings)
    page.evaluate(
        f"(() => {{ const k = 'pixelgate:{shop}'; const v = JSON.parse(localStorage.getItem(k));"
        " v.checked = new Date(Date.now() - 2 * 86400000).toISOString();"
        " localStorage.setItem(k, JSON.stringify(v)); })()"
    )
    page.reload()
    expect(dialog(page)).to_be_visible()
    assert stored(page, shop) is None
    # Reject all with nothing to withdraw leaves a refusal and no error.
    dialog(page).get_by_role("button", name="Reject all").click()
    expect(dialog(page)).to_be_hidden()
    assert set(stored(page, shop)) == {"refused", "policy", "at"}


def test_a_choice_under_an_earlier_policy_version_is_asked_again(
    open_page: OpenPage, host: HostPages, live: Server, shop: str
) -> None:
    """gdpr-strict voids consents of earlier versions (reconsent_on_change)."""
    page = open_page().page
    page.goto(shop_page(host, live, shop))
    dialog(page).get_by_role("button", name="Reject all").click()
    expect(dialog(page)).to_be_hidden()
    page.evaluate(
        f"(() => {{ const k = 'pixelgate:{shop}'; const v = JSON.parse(localStorage.getItem(k));"
        " v.policy = '2001-01-01'; localStorage.setItem(k, JSON.stringify(v)); })()"
    )
    page.reload()
    expect(dialog(page)).to_be_visible()
