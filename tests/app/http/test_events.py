"""Server-side events (SPEC §4.6) and signed pixel URLs (SPEC §4.3), on both databases."""

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import TestClient

from app.base.keys import KeyRing
from app.base.settings import Settings
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    TEST_EMAIL,
    auth,
    make_key,
    make_site,
    raw,
    settle,
    subject_id,
    table_rows,
)

Client = TestClient[Any]


def consent(client: Client, site: str, key: str, subject: str, **purposes: bool) -> None:
    body = {"subject": subject, "purposes": purposes}
    assert client.post(f"/v1/sites/{site}/consent", json=body, headers=auth(key)).status_code == 201


def test_events_are_decided_like_hits_and_rejected_with_reasons(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin, ingest = make_key(settings, site), make_key(settings, site, "ingest")
    subject = subject_id()
    consent(client, site, admin, subject, analytics=True)
    consent(client, site, admin, TEST_EMAIL, analytics=True)
    events = [
        {"kind": "conversion", "subject": subject, "value": 49.5, "currency": "EUR"},
        {"kind": "conversion", "email": "  ALICE@example.test "},  # normalised, then pseudonymised
        {"kind": "pageview", "subject": subject_id()},  # no consent
        {"kind": "Bad Kind", "subject": subject},
        {"kind": "pageview", "subject": subject, "user_agent": GOOGLEBOT},
        {"kind": "pageview", "subject": subject, "email": TEST_EMAIL},  # two identifiers
        {"kind": "pageview"},  # anonymous under an opt-in policy
        {"kind": "pageview", "subject": subject, "occurred_at": "2999-01-01T00:00:00Z"},
    ]
    response = client.post(
        f"/v1/sites/{site}/events", json={"events": events}, headers=auth(ingest)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 2,
        "rejected": [
            {"index": 2, "reason": "no_consent"},
            {"index": 3, "reason": "invalid"},
            {"index": 4, "reason": "bot"},
            {"index": 5, "reason": "invalid"},
            {"index": 6, "reason": "no_consent"},
            {"index": 7, "reason": "invalid"},
        ],
    }
    rows = sorted(table_rows(settings, "events", site=site), key=lambda r: str(r["value"]))
    keyring = KeyRing(settings.secret_key)
    assert {r["subject"] for r in rows} == {
        keyring.pseudonym(site, subject),
        keyring.pseudonym(site, TEST_EMAIL),
    }


def test_an_event_from_before_the_consent_is_not_recorded(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    admin = make_key(settings, site)
    consent(client, site, admin, subject, analytics=True)
    old = {"kind": "pageview", "subject": subject, "occurred_at": "2020-01-01T00:00:00Z"}
    response = client.post(f"/v1/sites/{site}/events", json={"events": [old]}, headers=auth(admin))
    assert response.json() == {"accepted": 0, "rejected": [{"index": 0, "reason": "no_consent"}]}


def test_too_many_or_malformed_events_are_refused_and_nothing_is_written(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    key = auth(make_key(settings, site, "ingest"))
    url = f"/v1/sites/{site}/events"
    too_many = client.post(url, json={"events": [{"kind": "pageview"}] * 1001}, headers=key)
    assert too_many.status_code == 413
    assert too_many.headers["content-type"].startswith("application/problem+json")
    wrong_shape = client.post(
        url, json={"events": [{"kind": "pageview"}, {"kind": "pageview", "value": {}}]}, headers=key
    )
    assert wrong_shape.status_code == 422
    broken = client.post(
        url, content=b'{"events": [', headers={**key, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert table_rows(settings, "events", site=site) == []
    ok = client.post(url, json={"events": [{"kind": "pageview"}] * 1000}, headers=key)
    assert ok.json()["accepted"] == 1000


def test_posting_events_needs_an_ingest_or_admin_key(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    url, body = f"/v1/sites/{site}/events", {"events": []}
    assert client.post(url, json=body).status_code == 401
    assert (
        client.post(url, json=body, headers=auth(make_key(settings, site, "read"))).status_code
        == 403
    )
    assert client.post(url, json=body, headers=auth(make_key(settings, site))).status_code == 200


def test_signed_pixel_urls_record_their_opens_and_carry_no_identifier(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin, ingest = make_key(settings, site), make_key(settings, site, "ingest")
    recipient, other = subject_id(), subject_id()
    consent(client, site, admin, recipient, email=True)
    response = client.post(
        f"/v1/sites/{site}/pixel-urls",
        json={"kind": "open", "campaign": "jul-newsletter", "subjects": [recipient, other]},
        headers=auth(ingest),
    )
    assert response.status_code == 200, response.text
    urls = response.json()["urls"]
    assert set(urls) == {recipient, other}
    for url in urls.values():
        parts = urlsplit(url)
        assert parts.path == f"/p/{site}/pixel.gif" and recipient not in url
        token = parse_qs(parts.query)["t"][0]
        client.get(f"{parts.path}?t={token}", headers={"User-Agent": CHROME})
    settle(client)
    [event] = table_rows(settings, "events", site=site)
    assert event["subject"] == KeyRing(settings.secret_key).pseudonym(site, recipient)
    assert (event["kind"], event["campaign"]) == ("open", "jul-newsletter")


def test_pixel_urls_refuse_a_bad_kind_and_too_many_subjects(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    key = auth(make_key(settings, site, "ingest"))
    url = f"/v1/sites/{site}/pixel-urls"
    bad = client.post(url, json={"kind": "Open!", "subjects": ["a"]}, headers=key)
    assert bad.status_code == 422
    many = client.post(url, json={"subjects": ["a"] * 10_001}, headers=key)
    assert many.status_code == 413
    empty = client.post(url, json={"subjects": [" "]}, headers=key)
    assert empty.status_code == 422


def test_an_event_with_a_control_character_in_a_field_is_rejected_as_invalid(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    events = [
        {"kind": "pageview", "utm_source": "news\x00letter"},
        {"kind": "pageview", "page": "/a\x00b"},
        {"kind": "pageview", "campaign": "spring\x01"},
        {"kind": "pageview", "event_id": "order-1\x00"},
        {"kind": "pageview", "utm_source": "newsletter"},
    ]
    response = client.post(
        f"/v1/sites/{site}/events",
        json={"events": events},
        headers=auth(make_key(settings, site, "ingest")),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 1,
        "rejected": [{"index": i, "reason": "invalid"} for i in range(4)],
    }
    [row] = table_rows(settings, "events", site=site)
    assert row["utm_source"] == "newsletter"


def test_an_events_utm_fields_are_filled_from_its_page_below_its_own(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    events = [
        {"kind": "pageview", "page": "/landing?utm_source=ig&utm_medium=social&x=1"},
        {
            "kind": "pageview",
            "page": "/sale?utm_source=ig&utm_term=a%40b.example",
            "utm_source": "tv",
        },
    ]
    response = client.post(
        f"/v1/sites/{site}/events",
        json={"events": events},
        headers=auth(make_key(settings, site, "ingest")),
    )
    assert response.json() == {"accepted": 2, "rejected": []}, response.text
    rows = table_rows(settings, "events", site=site)
    stored = sorted((r["page"], r["utm_source"], r["utm_medium"], r["utm_term"]) for r in rows)
    assert stored == [
        ("/landing?utm_source=ig&utm_medium=social", "ig", "social", None),
        ("/sale?utm_source=ig&utm_term=[email]", "tv", None, "[email]"),
    ]


def post(client: Client, site: str, key: str, *events: dict[str, Any]) -> Any:
    response = client.post(
        f"/v1/sites/{site}/events", json={"events": list(events)}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_an_event_id_is_counted_once_and_a_retried_batch_answers_the_same(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    other = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    ingest, other_ingest = make_key(settings, site, "ingest"), make_key(settings, other, "ingest")
    order = raw(f"order-{secrets.token_hex(4)}")  # ids are the sender's: never stored raw
    batch = [
        {"kind": "conversion", "value": 10, "currency": "EUR", "event_id": order},
        {"kind": "pageview", "event_id": "view-1"},
        {"kind": "pageview", "event_id": "view-1"},  # the same id again in the batch
        {"kind": "pageview"},  # no id: every copy counts
        {"kind": "Bad Kind", "event_id": "bad-1"},
    ]
    first = post(client, site, ingest, *batch)
    retried = post(client, site, ingest, *batch)
    expected = {"accepted": 4, "rejected": [{"index": 4, "reason": "invalid"}]}
    assert first == retried == expected
    kinds = sorted(row["kind"] for row in table_rows(settings, "events", site=site))
    assert kinds == ["conversion", "pageview", "pageview", "pageview"]
    assert len(table_rows(settings, "event_ids", site=site)) == 2
    # another site's ids are its own
    assert post(client, other, other_ingest, batch[0]) == {"accepted": 1, "rejected": []}
    assert len(table_rows(settings, "events", site=other)) == 1


def test_a_rejected_event_s_id_is_decided_afresh_when_it_comes_again(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)  # opt-in: no consent, no event
    admin, ingest = make_key(settings, site), make_key(settings, site, "ingest")
    subject = subject_id()
    event = {"kind": "pageview", "subject": subject, "event_id": "view-9"}
    refused = {"accepted": 0, "rejected": [{"index": 0, "reason": "no_consent"}]}
    assert post(client, site, ingest, event) == refused
    consent(client, site, admin, subject, analytics=True)
    assert post(client, site, ingest, event) == {"accepted": 1, "rejected": []}
    assert post(client, site, ingest, event) == {"accepted": 1, "rejected": []}
    assert len(table_rows(settings, "events", site=site)) == 1


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("keyed", [True, False])
def test_json_nested_too_deeply_is_a_400_on_every_json_endpoint(
    client: Client, settings: Settings, depth: int, keyed: bool
) -> None:
    site = make_site(settings)
    headers = {"Content-Type": "application/json"}
    if keyed:
        headers |= auth(make_key(settings, site))
    nested = "[" * depth + "]" * depth
    for method, path, body in [
        ("POST", f"/v1/sites/{site}/events", '{"events": ' + nested + "}"),
        ("POST", f"/v1/sites/{site}/events", nested),
        ("PUT", f"/v1/sites/{site}/campaigns/spring", '{"name": ' + nested + "}"),
        ("POST", f"/v1/sites/{site}/links", nested),
        ("POST", f"/v1/sites/{site}/dsar", nested),
        ("POST", f"/v1/sites/{site}/consent", '{"purposes": ' + nested + "}"),
        ("POST", f"/v1/sites/{site}/pixel-urls", nested),
    ]:
        response = client.request(method, path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "JSON" in response.json()["detail"]
    for table in ("events", "campaigns", "links", "dsar_requests"):
        assert table_rows(settings, table, site=site) == []


def test_a_body_that_is_not_json_is_a_400(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    for body in (b"{", b"\xff\xfe", b'{"events": [}', b'"\\ud800"'):
        response = client.post(
            f"/v1/sites/{site}/events",
            content=body,
            headers={"Content-Type": "application/json", **auth(make_key(settings, site))},
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


def test_the_api_description_says_what_a_repeated_event_id_answers(client: Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    description = schema["paths"]["/v1/sites/{site}/events"]["post"]["description"]
    assert "event_id" in description and "counted in `accepted` but not written" in description
