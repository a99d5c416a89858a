"""The pixel end to end (SPEC §4.1), on SQLite and PostgreSQL: what is recorded, and that the
response never tells."""

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.settings import Settings
from app.hits.signed_pixels import PixelClaim, sign_pixel
from app.main import create_app
from consent import store
from consent.policy import load_policies
from tests.factories import (
    CHROME,
    GMAIL_PROXY,
    GOOGLEBOT,
    IPHONE,
    TEST_EMAIL,
    auth,
    make_key,
    make_site,
    run,
    settings_for,
    settle,
    subject_id,
    table_rows,
)
from tests.tcf_strings import REFERENCE, Bits, core, publisher

Client = TestClient[Any]
BROWSER = {"User-Agent": CHROME}


def hit(client: Client, site: str, headers: dict[str, str] | None = None, **params: str) -> Any:
    return client.get(f"/p/{site}/pixel.gif", params=params, headers=headers or BROWSER)


def consent(client: Client, site: str, subject: str, **purposes: bool) -> None:
    """Recorded by the site's server, which names its own ids with an admin key."""
    admin = auth(make_key(client.app.state.ctx.settings, site))
    body = {"subject": subject, "purposes": purposes}
    assert client.post(f"/v1/sites/{site}/consent", json=body, headers=admin).status_code == 201


def events(client: Client, settings: Settings, site: str) -> list[dict[str, Any]]:
    if hasattr(client, "blocking_portal"):  # still running; else it drained on shutdown
        settle(client)
    return table_rows(settings, "events", site=site)


def signature(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


def test_a_hit_without_consent_records_nothing(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    response = hit(client, site, u=subject_id(), p="/pricing")
    assert response.status_code == 200
    assert events(client, settings, site) == []


def test_a_hit_with_consent_records_one_reduced_event(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    hit(
        client,
        site,
        headers={"User-Agent": IPHONE, "Referer": "https://News.Example:8443/a?b=c"},
        u=subject,
        p=f"https://shop.example/orders/12345678?email={TEST_EMAIL}&utm_source=nl&x=1",
        c="summer",
        utm_source="nl",
        v="19.90",
        cur="EUR",
    )
    [event] = events(client, settings, site)
    assert event["kind"] == "pageview"
    assert event["subject"] == KeyRing(settings.secret_key).pseudonym(site, subject)
    assert event["page"] == "/orders/[num]?utm_source=nl"
    assert event["referrer"] == "news.example"
    assert (event["device"], event["browser"], event["os"]) == ("mobile", "Mobile Safari", "iOS")
    assert event["campaign"] == "summer" and event["utm_source"] == "nl"
    assert str(event["value"]).startswith("19.9") and event["currency"] == "EUR"
    assert event["machine"] is False and event["jurisdiction"] == "eu"
    [ledger] = table_rows(settings, "consent_ledger", site=site)
    assert event["basis"] == {"analytics": f"consent:{uuid.UUID(str(ledger['id']))}"}


def test_the_next_hit_after_withdrawal_records_nothing(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    hit(client, site, u=subject)
    # Hits are decided a few milliseconds after the pixel answered; a withdrawal within those
    # milliseconds would stop this one too (the privacy-safe side), so let it be decided first.
    settle(client)
    admin = auth(make_key(settings, site))
    assert client.delete(f"/v1/sites/{site}/consent/{subject}", headers=admin).status_code == 200
    hit(client, site, u=subject)
    assert len(events(client, settings, site)) == 1


def test_gpc_denies_kinds_that_need_the_sale_or_share_purpose(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings, policy="ccpa", jurisdiction="us-ca"), subject_id()
    gpc = {**BROWSER, "Sec-GPC": "1"}
    hit(client, site, headers=gpc, u=subject, k="conversion", v="10", cur="USD")
    hit(client, site, headers=gpc, u=subject, k="pageview")
    hit(client, site, headers={**BROWSER, "Sec-GPC": "0"}, u=subject, k="conversion")
    kinds = sorted(e["kind"] for e in events(client, settings, site))
    assert kinds == ["conversion", "pageview"]  # GPC left analytics alone; "0" is no signal


def test_gpc_overrides_a_granted_marketing_consent(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings, policy="ccpa"), subject_id()
    consent(client, site, subject, analytics=True, marketing=True)
    response = client.get(
        f"/p/{site}/pixel.gif",
        params={"u": subject, "k": "conversion"},
        headers=[("User-Agent", CHROME), ("Sec-GPC", "0"), ("Sec-GPC", "1")],
    )
    assert response.status_code == 200
    assert events(client, settings, site) == []


def _consent_in_the_past(settings: Settings, site: str, subject: str, days_ago: int) -> None:
    async def work() -> None:
        engine = make_engine(settings.database_url)
        async with transaction(make_sessionmaker(engine)) as session:
            await store.record(
                session,
                site=site,
                subject=KeyRing(settings.secret_key).pseudonym(site, subject),
                purposes={"analytics": True},
                policy=load_policies(settings.policies_dir)["gdpr-strict"],
                proof=store.Proof(source="test", ip_prefix=None, ua_family=None, jurisdiction="eu"),
                now=utcnow() - timedelta(days=days_ago),
            )
        await engine.dispose()

    run(work())


def test_expired_consent_records_nothing(client: Client, settings: Settings) -> None:
    site, fresh, expired = make_site(settings), subject_id(), subject_id()
    _consent_in_the_past(settings, site, fresh, days_ago=394)
    _consent_in_the_past(settings, site, expired, days_ago=396)  # the policy's TTL is 395 days
    hit(client, site, u=fresh)
    hit(client, site, u=expired)
    [event] = events(client, settings, site)
    assert event["subject"] == KeyRing(settings.secret_key).pseudonym(site, fresh)


def test_consent_under_a_voided_policy_version_records_nothing(
    client: Client, settings: Settings, policies_copy: Path
) -> None:
    strict, ccpa = make_site(settings), make_site(settings, policy="ccpa")
    subject = subject_id()
    consent(client, strict, subject, analytics=True)
    consent(client, ccpa, subject, email=True)
    for name in ("gdpr-strict", "ccpa"):
        path = policies_copy / f"{name}.toml"
        path.write_text(
            path.read_text().replace('version = "2025-07-07"', 'version = "2026-01-01"')
        )
    changed = settings_for(settings.database_url, policies_dir=policies_copy)
    with TestClient(create_app(changed)) as after_change:
        hit(after_change, strict, u=subject)  # reconsent_on_change = true: voided
        hit(after_change, ccpa, u=subject, k="open")  # reconsent_on_change = false: still valid
        debug = after_change.get(
            f"/v1/sites/{strict}/debug",
            params={"u": subject},
            headers={**BROWSER, **auth(make_key(settings, strict, "read"))},
        ).json()
    assert events(client, settings, strict) == []
    assert [e["kind"] for e in events(client, settings, ccpa)] == ["open"]
    assert debug["decision"]["purposes"][0]["reason"] == "consent_voided"


def test_the_response_is_identical_whatever_was_decided(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    responses = [
        hit(client, site, u=subject),  # recorded
        hit(client, site, u=subject_id()),  # no consent
        hit(client, site),  # anonymous, opt-in policy: not recorded
        hit(client, site, headers={"User-Agent": GOOGLEBOT}, u=subject),  # bot
        hit(client, site, u=subject, k="Not A Kind!"),  # invalid
        hit(client, site, u=subject, k="open"),  # unsigned where the policy wants signed
        hit(client, site, u=subject, t="forged.token"),  # bad token
        hit(client, "no-such-site", u=subject),  # unknown site
        hit(client, "Not a slug at all", u=subject),  # not even a slug
        hit(client, site, headers={**BROWSER, "Sec-GPC": "1"}, u=subject),  # recorded: GPC
        # denies marketing, and a pageview needs only analytics
    ]
    assert len(events(client, settings, site)) == 2
    first = signature(responses[0])
    assert all(signature(r) == first for r in responses)
    status, headers, body = first
    assert status == 200 and body[:6] == b"GIF89a" and body[6:10] == b"\x01\x00\x01\x00"  # 1x1
    names = {name for name, _ in headers}
    assert "set-cookie" not in names
    assert dict(headers)["cache-control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert dict(headers)["content-type"] == "image/gif"


def test_bots_are_not_recorded_but_mail_proxy_opens_are_machine_opens(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings, policy="ccpa"), subject_id()
    consent(client, site, subject, email=True)
    for agent in (GOOGLEBOT, "curl/8.0", "python-requests/2.31.0", ""):
        hit(client, site, headers={"User-Agent": agent}, u=subject, k="open")
    hit(client, site, headers={"User-Agent": GMAIL_PROXY}, u=subject, k="open")
    hit(client, site, headers={"User-Agent": "Mozilla/5.0"}, u=subject, k="open")  # Apple MPP
    hit(client, site, u=subject, k="open")
    machine = sorted(e["machine"] for e in events(client, settings, site))
    assert machine == [False, True, True]


def test_signed_pixels_record_opens_and_forged_ones_do_not(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, email=True)
    keyring = KeyRing(settings.secret_key)
    claim = PixelClaim(site, keyring.pseudonym(site, subject), "open", "jul-newsletter", "nl-7")
    token = sign_pixel(keyring, claim)
    elsewhere = msgspec.structs.replace(claim, site=make_site(settings))
    other_site_token = sign_pixel(keyring, elsewhere)
    hit(client, site, u=subject, k="open")  # unsigned: refused by require_signed_pixels
    hit(client, site, t=token)
    hit(client, site, t=token[:-4] + "AAAA")  # altered signature
    hit(client, site, t=other_site_token)  # signed for another site
    [event] = events(client, settings, site)
    assert (event["kind"], event["campaign"], event["page"]) == ("open", "jul-newsletter", "nl-7")


def test_anonymous_hits_are_recorded_only_where_the_policy_allows_it(
    client: Client, settings: Settings
) -> None:
    strict, ccpa = make_site(settings), make_site(settings, policy="ccpa", jurisdiction="us-ca")
    hit(client, strict, p="/")
    hit(client, ccpa, p="/")
    assert events(client, settings, strict) == []
    [event] = events(client, settings, ccpa)
    assert event["subject"] is None
    assert event["basis"] == {"analytics": "default:ccpa@2025-07-07"}


def test_a_region_header_picks_the_jurisdiction_override(database_url: str) -> None:
    settings = settings_for(database_url, region_header="CF-IPCountry")
    site = make_site(settings)
    with TestClient(create_app(settings)) as client:
        hit(client, site, headers={**BROWSER, "CF-IPCountry": "US-CA"})
        hit(client, site, headers={**BROWSER, "CF-IPCountry": "DE"})
    [event] = events(client, settings, site)
    assert event["jurisdiction"] == "us-ca"


def tc_string(purposes: list[int], vendors: list[int] | None = None) -> str:
    """`purposes` in the core and in a Publisher TC segment: they speak in either mode."""
    text = core(purposes=purposes, vendor_consents=Bits().bitfield(vendors or [], 50)).encode()
    return f"{text}.{publisher(purposes)}"


def test_a_tcf_string_decides_where_the_registry_is_silent(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=tc_string([1, 8]))
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=tc_string([1]))  # no purpose 8
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent="not-a-tc-string")
    old_policy = core(purposes=[1, 8], policy=2).encode() + "." + publisher([1, 8])
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=old_policy)
    not_specific = core(purposes=[1, 8], service_specific=0).encode() + "." + publisher([1, 8])
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=not_specific)
    [event] = events(client, settings, site)
    assert event["basis"]["analytics"].startswith("tcf:")


def test_a_first_party_reads_the_publisher_tc_segment_not_the_vendor_purposes(
    client: Client, settings: Settings
) -> None:
    """SPEC 4.1 step 2 with `vendor_id = 0` (gdpr-strict, where analytics is opt-in)."""
    site = make_site(settings)
    granted, refused, silent = subject_id(), subject_id(), subject_id()
    # No core purposes, the publisher's consent for 1, 7, 8: recorded on the TCF basis.
    hit(client, site, u=granted, gdpr="1", gdpr_consent=REFERENCE["publisher_only"])
    # Core 1, 7, 8 and an empty Publisher TC segment: denied by TCF.
    hit(client, site, u=refused, gdpr="1", gdpr_consent=REFERENCE["publisher_empty"])
    # Core 1, 7, 8 and no Publisher TC segment: TCF does not speak; the registry does.
    consent(client, site, silent, analytics=True)
    hit(client, site, u=silent, gdpr="1", gdpr_consent=REFERENCE["core_only"])
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=REFERENCE["core_only"])  # default
    keyring = KeyRing(settings.secret_key)
    recorded = {e["subject"]: e["basis"]["analytics"] for e in events(client, settings, site)}
    assert set(recorded) == {keyring.pseudonym(site, s) for s in (granted, silent)}
    assert recorded[keyring.pseudonym(site, granted)] == "tcf:cmp=300:updated=2025-06-03"
    assert recorded[keyring.pseudonym(site, silent)].startswith("consent:")


@pytest.fixture
def vendor_client(database_url: str, policies_copy: Path) -> Iterator[tuple[Client, Settings]]:
    """gdpr-strict with `[tcf] vendor_id = 755`."""
    strict = policies_copy / "gdpr-strict.toml"
    strict.write_text(strict.read_text().replace("vendor_id = 0", "vendor_id = 755"))
    vendor_settings = settings_for(database_url, policies_dir=policies_copy)
    with TestClient(create_app(vendor_settings)) as test_client:
        yield test_client, vendor_settings


VENDOR_HITS = [
    # reference string, whether analytics (TCF 1 + 8) is allowed for vendor 755
    pytest.param("both_agree", True, id="consent, no restriction"),
    pytest.param("not_allowed_p1_755", False, id="purpose 1 not allowed for 755"),
    pytest.param("not_allowed_p8_range", False, id="purpose 8 not allowed for 750-760"),
    pytest.param("not_allowed_p1_other", True, id="purpose 1 not allowed for 42 only"),
    pytest.param("require_consent_p8_given", True, id="consent required and given"),
    pytest.param("require_consent_p8_li_only", False, id="consent required, LI only"),
    pytest.param("require_li_p8_given", True, id="LI required and set"),
    pytest.param("require_li_p8_no_li", False, id="LI required, consent only"),
    pytest.param("require_li_p1", False, id="LI required for purpose 1"),
    pytest.param("publisher_only", False, id="publisher segment only"),
]


@pytest.mark.parametrize(("name", "recorded"), VENDOR_HITS)
def test_a_vendor_pixel_obeys_the_publisher_restrictions_on_its_vendor(
    vendor_client: tuple[Client, Settings], name: str, recorded: bool
) -> None:
    client, settings = vendor_client
    site = make_site(settings)
    hit(client, site, u=subject_id(), gdpr="1", gdpr_consent=REFERENCE[name])
    assert len(events(client, settings, site)) == int(recorded)


def test_a_registry_refusal_beats_a_tcf_grant(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=False)
    hit(client, site, u=subject, gdpr="1", gdpr_consent=tc_string([1, 8]))
    assert events(client, settings, site) == []


def test_collect_takes_the_same_fields_as_json(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    ok = client.post(
        f"/p/{site}/collect", json={"u": subject, "p": "/a", "k": "click"}, headers=BROWSER
    )
    bad = client.post(f"/p/{site}/collect", content=b"{not json", headers=BROWSER)
    unknown = client.post("/p/nope/collect", json={"u": subject}, headers=BROWSER)
    assert ok.status_code == bad.status_code == unknown.status_code == 204
    assert "set-cookie" not in ok.headers
    [event] = events(client, settings, site)
    assert (event["kind"], event["page"]) == ("click", "/a")


SHOP = "https://shop.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


def test_a_json_beacon_from_the_sites_own_origin_passes_its_preflight(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings, origins=(SHOP,)), subject_id()
    consent(client, site, subject, analytics=True)
    asked = client.options(f"/p/{site}/collect", headers={"Origin": SHOP, **PREFLIGHT})
    assert asked.status_code == 204 and asked.content == b""
    assert asked.headers["access-control-allow-origin"] == SHOP
    assert asked.headers["access-control-allow-credentials"] == "true"  # sendBeacon sends them
    assert asked.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert asked.headers["access-control-allow-headers"] == "Content-Type"
    assert int(asked.headers["access-control-max-age"]) > 0
    assert asked.headers["vary"] == "Origin"
    sent = client.post(
        f"/p/{site}/collect", json={"u": subject, "p": "/b"}, headers={**BROWSER, "Origin": SHOP}
    )
    assert sent.status_code == 204
    assert sent.headers["access-control-allow-origin"] == SHOP  # so fetch() resolves
    assert [e["page"] for e in events(client, settings, site)] == ["/b"]


def test_a_foreign_origin_and_an_unknown_site_get_the_same_preflight_without_a_grant(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, origins=(SHOP,))
    foreign = client.options(
        f"/p/{site}/collect", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    unknown = client.options("/p/no-such-site/collect", headers={"Origin": SHOP, **PREFLIGHT})
    bare = client.options(f"/p/{site}/collect", headers=PREFLIGHT)
    assert signature(foreign) == signature(unknown) == signature(bare)
    assert foreign.status_code == 204
    assert not any(name.startswith("access-control-") for name in foreign.headers)
    posted = client.post(f"/p/{site}/collect", json={}, headers={"Origin": "https://evil.example"})
    assert posted.status_code == 204
    assert "access-control-allow-origin" not in posted.headers


def test_the_pixel_answers_no_cors_and_no_other_method(client: Client, settings: Settings) -> None:
    site = make_site(settings, origins=(SHOP,))
    got = client.get(f"/p/{site}/pixel.gif", headers={"Origin": SHOP})
    assert not any(name.startswith("access-control-") for name in got.headers)
    assert client.options(f"/p/{site}/pixel.gif", headers={"Origin": SHOP}).status_code == 404


def test_e_mail_addresses_in_campaign_and_utm_fields_are_masked(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    hit(client, site, u=subject, c=TEST_EMAIL, utm_term=TEST_EMAIL, utm_content="id 12345678")
    [event] = events(client, settings, site)
    assert (event["campaign"], event["utm_term"]) == ("[email]", "[email]")
    assert event["utm_content"] == "id [num]"


UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")


def attribution(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["page"], *(event[name] for name in UTM)


def test_utm_values_in_the_page_fill_the_hits_utm_fields_and_stay_in_the_page(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    hit(client, site, u=subject, p="/landing?utm_source=ig&utm_medium=social&x=1")
    [event] = events(client, settings, site)
    page = "/landing?utm_source=ig&utm_medium=social"
    assert attribution(event) == (page, "ig", "social", None, None, None)


def test_the_hits_own_utm_parameters_win_over_those_of_its_page(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    page = "https://shop.example/landing?utm_source=ig&utm_campaign=spring#top"
    hit(client, site, u=subject, p=page, utm_source="news", utm_term="shoes")
    [event] = events(client, settings, site)
    page = "/landing?utm_source=ig&utm_campaign=spring"
    assert attribution(event) == (page, "news", None, "spring", None, "shoes")


def test_a_beacon_takes_utm_values_from_its_page_below_its_own(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    body = {"u": subject, "p": "/landing?utm_source=ig&utm_medium=social", "utm_medium": "paid"}
    assert client.post(f"/p/{site}/collect", json=body, headers=BROWSER).status_code == 204
    [event] = events(client, settings, site)
    page = "/landing?utm_source=ig&utm_medium=social"
    assert attribution(event) == (page, "ig", "paid", None, None, None)


def test_e_mail_addresses_in_the_pages_utm_values_are_masked(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    page = f"/landing?utm_content={quote(TEST_EMAIL)}&utm_term=id+12345678&email={TEST_EMAIL}"
    hit(client, site, u=subject, p=page)
    [event] = events(client, settings, site)
    page = "/landing?utm_content=[email]&utm_term=id%20[num]"
    assert attribution(event) == (page, None, None, None, "[email]", "id [num]")


def test_a_hit_counted_anonymously_keeps_no_utm_value_of_its_page(
    settings: Settings, policies_copy: Path
) -> None:
    strict = policies_copy / "gdpr-strict.toml"
    strict.write_text(
        strict.read_text().replace("anonymous_counting = false", "anonymous_counting = true")
    )
    counting = settings_for(settings.database_url, policies_dir=policies_copy)
    site = make_site(counting)
    with TestClient(create_app(counting)) as client:
        hit(client, site, p="/landing?utm_source=ig&utm_medium=social", utm_term="shoes", c="x")
        [event] = events(client, counting, site)
    assert attribution(event) == ("/landing", None, None, None, None, None)
    assert event["subject"] is None and event["campaign"] is None
    assert event["basis"] == {"analytics": "anonymous_counting:gdpr-strict@2025-07-07"}


def test_a_head_request_gets_the_same_headers_and_records_nothing(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    consent(client, site, subject, analytics=True)
    head = client.head(f"/p/{site}/pixel.gif", params={"u": subject}, headers=BROWSER)
    get = hit(client, site, u=subject)
    assert head.status_code == 200 and head.content == b""
    assert sorted(head.headers.items()) == sorted(get.headers.items())
    assert len(events(client, settings, site)) == 1
