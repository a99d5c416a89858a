"""The debug endpoint (SPEC §4.2): explains each purpose's decision and records nothing."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from app.base.keys import KeyRing
from app.base.settings import Settings
from app.main import create_app
from tests.factories import (
    CHROME,
    auth,
    make_key,
    make_site,
    settings_for,
    subject_id,
    table_rows,
)
from tests.tcf_strings import REFERENCE, Bits, core, publisher

Client = TestClient[Any]


def test_debug_explains_a_recordable_hit_and_records_nothing(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings, policy="ccpa"), subject_id()
    key = auth(make_key(settings, site, "read"))
    response = client.get(
        f"/v1/sites/{site}/debug",
        params={"u": subject, "k": "conversion", "p": "/checkout?card=4111111111111111"},
        headers={**key, "User-Agent": CHROME, "Sec-GPC": "1"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["would_record"] is False and body["reason"] == "no_consent"
    purposes = {p["purpose"]: p for p in body["decision"]["purposes"]}
    assert purposes["analytics"]["allowed"] is True
    assert purposes["analytics"]["reason"] == "default_granted"
    assert purposes["marketing"] == {
        "purpose": "marketing",
        "allowed": False,
        "reason": "gpc",
        "basis": None,
    }
    assert body["signals"]["gpc"] is True and body["signals"]["tcf"] is None
    event = body["event"]
    assert event["subject"] == KeyRing(settings.secret_key).pseudonym(site, subject)
    assert event["page"] == "/checkout"
    assert subject not in response.text and CHROME not in response.text
    assert table_rows(settings, "events", site=site) == []


def test_debug_shows_the_decoded_tcf_signal_and_why_a_string_was_refused(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    key = auth(make_key(settings, site, "admin"))
    good = core(purposes=[1, 8], vendor_consents=Bits().bitfield([3], 10)).encode()
    seen = client.get(
        f"/v1/sites/{site}/debug", params={"gdpr": "1", "gdpr_consent": good}, headers=key
    ).json()
    assert seen["signals"]["tcf"]["valid"] is True
    assert seen["signals"]["tcf"]["purposes_consent"] == [1, 8]
    assert seen["signals"]["tcf"]["publisher"] is None  # so TCF does not speak here
    old = core(purposes=[1, 8], policy=3).encode()
    refused = client.get(
        f"/v1/sites/{site}/debug", params={"gdpr": "1", "gdpr_consent": old}, headers=key
    ).json()
    assert refused["signals"]["tcf"]["valid"] is False
    assert "policy" in refused["signals"]["tcf"]["error"].lower()


def test_debug_names_the_drop_reason_for_bots(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    key = auth(make_key(settings, site, "read"))
    body = client.get(f"/v1/sites/{site}/debug", headers={**key, "User-Agent": "curl/8.0"}).json()
    assert body["would_record"] is False and body["reason"] == "bot"
    assert body["decision"] is None and body["event"] is None


DROPS = [
    # what makes the hit drop before the decision, and the reason /debug names
    pytest.param({"User-Agent": "curl/8.0"}, {}, "bot", id="bot"),
    pytest.param({}, {"k": "open"}, "unsigned", id="unsigned"),  # gdpr-strict signs opens
    pytest.param({}, {"v": "not-a-number"}, "invalid", id="invalid value"),
    pytest.param({}, {"t": "forged"}, "invalid", id="forged token"),
]


@pytest.mark.parametrize(("headers", "params", "reason"), DROPS)
def test_a_hit_dropped_before_the_decision_still_shows_the_signals_it_sent(
    client: Client,
    settings: Settings,
    headers: dict[str, str],
    params: dict[str, str],
    reason: str,
) -> None:
    site = make_site(settings)
    key = auth(make_key(settings, site, "read"))
    sent = {"gdpr": "1", "gdpr_consent": REFERENCE["both_agree"], **params}
    body = client.get(
        f"/v1/sites/{site}/debug",
        params=sent,
        headers={**key, "User-Agent": CHROME, "Sec-GPC": "1", "DNT": "1", **headers},
    ).json()
    assert (body["would_record"], body["reason"], body["decision"]) == (False, reason, None)
    signals = body["signals"]
    assert (signals["gpc"], signals["dnt"], signals["gdpr_applies"]) == (True, True, True)
    assert signals["jurisdiction"] == "eu"
    assert signals["tcf"]["valid"] is True
    assert signals["tcf"]["publisher"]["purposes_consent"] == [1, 7, 8]


def test_debug_shows_the_publisher_segment_that_decides_for_a_first_party(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)  # gdpr-strict: [tcf] vendor_id = 0
    key = auth(make_key(settings, site, "read"))
    body = client.get(
        f"/v1/sites/{site}/debug",
        params={"u": subject_id(), "gdpr": "1", "gdpr_consent": REFERENCE["publisher_only"]},
        headers={**key, "User-Agent": CHROME},
    ).json()
    tcf = body["signals"]["tcf"]
    assert tcf["purposes_consent"] == [] and tcf["vendor"] is None
    assert tcf["publisher"] == {
        "purposes_consent": [1, 7, 8],
        "purposes_li": [],
        "custom_consent": [],
        "custom_li": [],
    }
    assert body["would_record"] is True
    [analytics] = body["decision"]["purposes"]
    assert (analytics["purpose"], analytics["reason"]) == ("analytics", "tcf_granted")


@pytest.fixture
def vendor_client(database_url: str, policies_copy: Path) -> Iterator[tuple[Client, Settings]]:
    """gdpr-strict with `[tcf] vendor_id = 755`: the pixel of a vendor, not the site's own."""
    strict = policies_copy / "gdpr-strict.toml"
    strict.write_text(strict.read_text().replace("vendor_id = 0", "vendor_id = 755"))
    vendor_settings = settings_for(database_url, policies_dir=policies_copy)
    with TestClient(create_app(vendor_settings)) as test_client:
        yield test_client, vendor_settings


def test_debug_shows_the_configured_vendors_consent_and_its_restrictions(
    vendor_client: tuple[Client, Settings],
) -> None:
    client, settings = vendor_client
    site = make_site(settings)
    key = auth(make_key(settings, site, "read"))
    body = client.get(
        f"/v1/sites/{site}/debug",
        params={"u": subject_id(), "gdpr": "1", "gdpr_consent": REFERENCE["not_allowed_p1_755"]},
        headers={**key, "User-Agent": CHROME},
    ).json()
    tcf = body["signals"]["tcf"]
    assert tcf["purposes_consent"] == [1, 7, 8]
    assert tcf["vendor"] == {
        "id": 755,
        "consent": True,
        "legitimate_interest": False,
        "restrictions": [{"purpose": 1, "type": "not_allowed"}],
    }
    assert tcf["publisher"]["purposes_consent"] == [1, 7, 8]
    assert body["would_record"] is False
    [analytics] = body["decision"]["purposes"]
    assert (analytics["allowed"], analytics["reason"]) == (False, "tcf_denied")
    other = client.get(
        f"/v1/sites/{site}/debug",
        params={"gdpr": "1", "gdpr_consent": REFERENCE["require_li_p8_other"]},
        headers={**key, "User-Agent": CHROME},
    ).json()
    assert other["signals"]["tcf"]["vendor"]["restrictions"] == []  # vendor 42's only
    assert other["signals"]["tcf"]["vendor"]["legitimate_interest"] is True


def test_debug_names_the_error_of_an_invalid_string_and_keeps_what_it_read(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    key = auth(make_key(settings, site, "read"))
    whole = core(purposes=[1, 8], vendor_consents=Bits().bitfield([1, 600], 600)).encode()

    def tcf_of(text: str) -> Any:
        params = {"gdpr": "1", "gdpr_consent": text}
        return client.get(f"/v1/sites/{site}/debug", params=params, headers=key).json()["signals"][
            "tcf"
        ]

    truncated = tcf_of(whole[:60])
    assert truncated["valid"] is False
    assert "truncated: VendorConsents" in truncated["error"]
    assert truncated["read"]["cmp_id"] == 300
    assert truncated["read"]["purposes_consent"] == [1, 8]
    assert truncated["read"]["last_updated"].startswith("2025-06-03")
    assert "vendor_consents" not in truncated["read"]
    global_scope = tcf_of(f"{core(purposes=[1], service_specific=0).encode()}.{publisher([7])}")
    assert "IsServiceSpecific" in global_scope["error"]
    assert global_scope["read"]["publisher"]["purposes_consent"] == [7]
    assert global_scope["read"]["vendor_consents"] == 0
    assert tcf_of("not-a-tc-string")["read"] == {"version": 39}  # "n" is 39
    assert tcf_of("CQ!bk4")["read"] == {}
    too_long = client.get(
        f"/v1/sites/{site}/debug",
        params={"gdpr": "1", "gdpr_consent": "C" * 5000},
        headers={**key, "User-Agent": CHROME},
    ).json()
    assert too_long["reason"] == "invalid"
    assert too_long["signals"]["tcf"]["error"] == "TC string longer than 4096 characters"


def test_debug_needs_a_read_key_of_that_site(client: Client, settings: Settings) -> None:
    site, other = make_site(settings), make_site(settings)
    url = f"/v1/sites/{site}/debug"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth(make_key(settings, site, "ingest"))).status_code == 403
    assert client.get(url, headers=auth(make_key(settings, other, "read"))).status_code == 403
    missing = client.get("/v1/sites/nowhere/debug", headers=auth(make_key(settings, site)))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
