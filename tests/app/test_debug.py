"""The debug endpoint (SPEC §4.2): explains each purpose's decision and records nothing."""

from typing import Any

from litestar.testing import TestClient

from app.pseudonym import KeyRing
from app.settings import Settings
from tests.factories import CHROME, auth, make_key, make_site, subject_id, table_rows
from tests.tcf_strings import Bits, core

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
    assert body == {
        "would_record": False,
        "reason": "bot",
        "decision": None,
        "signals": None,
        "event": None,
    }


def test_debug_needs_a_read_key_of_that_site(client: Client, settings: Settings) -> None:
    site, other = make_site(settings), make_site(settings)
    url = f"/v1/sites/{site}/debug"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth(make_key(settings, site, "ingest"))).status_code == 403
    assert client.get(url, headers=auth(make_key(settings, other, "read"))).status_code == 403
    missing = client.get("/v1/sites/nowhere/debug", headers=auth(make_key(settings, site)))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
