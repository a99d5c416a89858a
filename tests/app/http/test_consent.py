"""The consent registry over HTTP (SPEC §4.4), on SQLite and PostgreSQL."""

import asyncio
import base64
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar.testing import TestClient

from app.base.db import make_engine, make_sessionmaker, transaction, utcnow
from app.base.keys import KeyRing
from app.base.settings import Settings
from app.base.sites import update_site
from app.http.auth import subject_token
from app.main import create_app
from tests.factories import (
    CHROME,
    IPHONE,
    TEST_EMAIL,
    TEST_IP,
    TEST_IPV6,
    auth,
    make_key,
    make_site,
    raw,
    settings_for,
    subject_id,
    table_rows,
)

Client = TestClient[Any]
URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
ADMIN_KEYS: dict[tuple[str, str], dict[str, str]] = {}


def admin_of(client: Client, site: str) -> dict[str, str]:
    """An admin key of the site, made once: site-assigned ids are posted with one."""
    settings = client.app.state.ctx.settings
    found = ADMIN_KEYS.get((settings.database_url, site))
    if found is None:
        found = ADMIN_KEYS[(settings.database_url, site)] = auth(make_key(settings, site))
    return found


def give(client: Client, site: str, subject: str, **purposes: bool) -> Any:
    """The site's server records consent for an id it assigned (with its admin key)."""
    return client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject, "purposes": purposes, "source": "banner"},
        headers={**admin_of(client, site), "User-Agent": CHROME},
    )


def visit(
    client: Client, site: str, headers: dict[str, str] | None = None, **purposes: bool
) -> Any:
    """A banner's first post: no key, no subject; the server mints the visitor's id."""
    response = client.post(
        f"/v1/sites/{site}/consent",
        json={"purposes": purposes, "source": "banner"},
        headers={"User-Agent": CHROME, **(headers or {})},
    )
    if response.status_code == 201:
        raw(response.json()["subject"])  # the end-of-session scan looks for it too
    return response


def post_as(client: Client, site: str, subject: str, token: str | None, **purposes: bool) -> Any:
    """A keyless post naming a subject, with that token (if any)."""
    return client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject, "purposes": purposes},
        headers={"X-Subject-Token": token} if token else {},
    )


def test_giving_consent_returns_a_receipt_that_verifies_against_the_jwks(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    response = give(client, site, subject, analytics=True, marketing=False)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["purposes"] == {"analytics": True, "marketing": False}
    assert body["expires_at"]

    header = jwt.get_unverified_header(body["receipt"])
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    public_key = jwt.PyJWK(jwk).key
    claims = jwt.decode(body["receipt"], public_key, algorithms=["EdDSA"])
    assert claims["version"] == "KI-CR-v1.1.0"
    assert claims["piiControllers"][0]["piiController"] == site
    assert claims["policy"]["version"] == "2025-07-07"
    assert len(claims["policy"]["sha256"]) == 64
    purposes = {p["purpose"]: p["state"] for p in claims["services"][0]["purposes"]}
    assert purposes == {"analytics": "granted", "marketing": "denied"}
    assert all(subject not in str(value) for value in claims.values())
    assert claims["consentExpiresAt"] > claims["iat"]
    assert "exp" not in claims  # a receipt stays verifiable as proof after consent expires


def test_a_tampered_receipt_does_not_verify(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    receipt = give(client, site, subject_id(), analytics=True).json()["receipt"]
    head, payload, signature = receipt.split(".")
    forged = f"{head}.{payload[:-2]}AA.{signature}"
    jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(forged, jwt.PyJWK(jwk).key, algorithms=["EdDSA"])


def test_current_state_and_history_follow_grant_withdraw_grant(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    admin = auth(make_key(settings, site, "admin"))
    give(client, site, subject, analytics=True)
    withdrawn = client.delete(f"/v1/sites/{site}/consent/{subject}", headers=admin)
    assert withdrawn.status_code == 200
    assert withdrawn.json()["purposes"] == {"analytics": False, "marketing": False, "email": False}
    give(client, site, subject, analytics=True)

    state = client.get(f"/v1/sites/{site}/consent/{subject}", headers=admin).json()
    assert state["purposes"]["analytics"]["allowed"] is True
    assert state["purposes"]["marketing"] == {
        "allowed": False,
        "reason": "consent_withdrawn",
        "updated_at": state["purposes"]["marketing"]["updated_at"],
        "expires_at": None,
    }
    assert state["purposes"]["email"]["reason"] == "consent_withdrawn"

    history = client.get(f"/v1/sites/{site}/consent/{subject}/history", headers=admin).json()
    actions = [e["action"] for e in history["entries"]]
    assert actions == ["given", "withdrawn", "given"]
    first = history["entries"][0]
    assert first["policy_version"] == "2025-07-07"
    assert first["source"] == "banner"
    # Posted by the site's server with its key: its agent and address are not the person's.
    assert first["ua_family"] is None and first["ip_prefix"] is None


def test_a_withdrawal_appends_to_the_ledger_and_leaves_earlier_entries_as_they_were(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    admin = auth(make_key(settings, site))
    give(client, site, subject, analytics=True)
    before = table_rows(settings, "consent_ledger", site=site)
    client.delete(f"/v1/sites/{site}/consent/{subject}", headers=admin)
    after = table_rows(settings, "consent_ledger", site=site)
    assert len(after) == 2
    assert before[0] in after


def test_a_subject_token_reads_and_withdraws_only_its_own_consent(
    client: Client, settings: Settings
) -> None:
    site, other_site = make_site(settings), make_site(settings)
    subject, someone_else = subject_id(), subject_id()
    token = give(client, site, subject, analytics=True).json()["subject_token"]
    give(client, other_site, subject, analytics=True)
    mine = {"X-Subject-Token": token}

    assert client.get(f"/v1/sites/{site}/consent/{subject}", headers=mine).status_code == 200
    assert client.get(f"/v1/sites/{site}/consent/{someone_else}", headers=mine).status_code == 403
    assert client.get(f"/v1/sites/{other_site}/consent/{subject}", headers=mine).status_code == 403
    bad = {"X-Subject-Token": token[:-3] + "xyz"}
    assert client.get(f"/v1/sites/{site}/consent/{subject}", headers=bad).status_code == 401
    assert client.delete(f"/v1/sites/{site}/consent/{subject}", headers=mine).status_code == 200


def test_email_addresses_are_pseudonymised_case_insensitively(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    admin = auth(make_key(settings, site))
    first, second = (
        client.post(
            f"/v1/sites/{site}/consent",
            json={"subject": address, "purposes": {"email": True}},
            headers=admin,
        ).json()
        for address in (TEST_EMAIL, TEST_EMAIL.upper())
    )
    claims = [
        jwt.decode(r["receipt"], options={"verify_signature": False}) for r in (first, second)
    ]
    assert claims[0]["sub"] == claims[1]["sub"]


def test_the_same_person_has_different_pseudonyms_on_different_sites(
    client: Client, settings: Settings
) -> None:
    subject = subject_id()
    subs = {
        jwt.decode(
            give(client, make_site(settings), subject, analytics=True).json()["receipt"],
            options={"verify_signature": False},
        )["sub"]
        for _ in range(2)
    }
    assert len(subs) == 2


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"subject": "x", "purposes": {"astrology": True}}, 422, "unknown purposes"),
        ({"subject": "x", "purposes": {}}, 422, "purposes: Expected `object` of length >= 1"),
        ({"subject": "", "purposes": {"analytics": True}}, 422, "subject"),
        ({"subject": "   ", "purposes": {"analytics": True}}, 422, "subject"),
        ({"subject": "x", "purposes": {"analytics": True}, "source": "b" * 65}, 422, "source"),
        ({"subject": "x", "purposes": {"analytics": True}, "source": "a@b.c"}, 422, "source"),
        ({"subject": "x", "purposes": {"analytics": "yes"}}, 422, "Expected `bool`"),
        ({"subject": "x", "purposes": {"analytics": True}, "colour": 1}, 422, "unknown field"),
        (
            {"subject": "x", "purposes": {"analytics": True}, "policy_version": "2020-01-01"},
            409,
            "not current",
        ),
    ],
)
def test_a_bad_consent_body_is_a_problem_and_records_nothing(
    client: Client, settings: Settings, body: dict[str, Any], status: int, detail: str
) -> None:
    site = make_site(settings)
    response = client.post(f"/v1/sites/{site}/consent", json=body, headers=admin_of(client, site))
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    assert detail in problem["detail"]
    assert table_rows(settings, "consent_ledger", site=site) == []
    assert table_rows(settings, "consent_state", site=site) == []


def test_malformed_json_is_a_400_problem(client: Client, settings: Settings) -> None:
    site = make_site(settings)
    response = client.post(
        f"/v1/sites/{site}/consent",
        content=b'{"subject": "x", "purposes": {',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "truncated" in response.json()["detail"]


def test_an_unknown_site_is_a_404_problem(client: Client) -> None:
    response = client.post(
        "/v1/sites/no-such-site/consent", json={"subject": "x", "purposes": {"analytics": True}}
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown site 'no-such-site'"


def test_reading_consent_needs_a_key_of_the_site_with_admin_scope(
    client: Client, settings: Settings
) -> None:
    site, other = make_site(settings), make_site(settings)
    subject = subject_id()
    url = f"/v1/sites/{site}/consent/{subject}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth("pg_not-a-key")).status_code == 401
    assert client.get(url, headers=auth(make_key(settings, other))).status_code == 403
    assert client.get(url, headers=auth(make_key(settings, site, "read"))).status_code == 403
    assert client.get(url, headers=auth(make_key(settings, site, "admin"))).status_code == 200


def test_cors_allows_only_the_sites_origins(client: Client, settings: Settings) -> None:
    site = make_site(settings, origins=("https://shop.example",))
    body = {"purposes": {"analytics": True}}
    url = f"/v1/sites/{site}/consent"

    preflight = client.options(url, headers={"Origin": "https://shop.example"})
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    withdrawal = client.options(f"{url}/someone", headers={"Origin": "https://shop.example"})
    assert "DELETE" in withdrawal.headers["access-control-allow-methods"]
    assert "X-Subject-Token" in withdrawal.headers["access-control-allow-headers"]
    stranger = client.options(url, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers

    ok = client.post(url, json=body, headers={"Origin": "https://shop.example"})
    assert ok.status_code == 201
    raw(ok.json()["subject"])
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    refused = client.post(url, json=body, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert len(table_rows(settings, "consent_ledger", site=site)) == 1


SHOP = {"Origin": "https://shop.example"}
NOON = 1_800_000_030.0  # half a minute into a rate-limit window


def freeze_limiter(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter's window stays put, so no request falls into the next one by chance."""
    monkeypatch.setattr(client.app.state.ctx.consent_limiter, "clock", lambda: NOON)


def test_the_public_consent_post_is_rate_limited_per_client(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url, consent_rate_limit=3)
    site = make_site(settings, origins=("https://shop.example",))
    with TestClient(create_app(settings)) as client:
        freeze_limiter(client, monkeypatch)
        statuses = [visit(client, site, SHOP, analytics=True).status_code for _ in range(5)]
        assert statuses == [201, 201, 201, 429, 429]
        limited = visit(client, site, SHOP, analytics=True)
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["status"] == 429
        assert limited.headers["retry-after"] == "30"
        assert limited.headers["access-control-allow-origin"] == "https://shop.example"
        assert len(table_rows(settings, "consent_ledger", site=site)) == 3
        # an admin key is not limited
        assert give(client, site, subject_id(), analytics=True).status_code == 201


def test_requests_with_a_subject_token_are_limited_per_token(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url, consent_rate_limit=3)
    site = make_site(settings, origins=("https://shop.example",))
    with TestClient(create_app(settings)) as client:
        freeze_limiter(client, monkeypatch)
        mine, theirs = (visit(client, site, SHOP, analytics=True).json() for _ in range(2))
        url = f"/v1/sites/{site}/consent/{mine['subject']}"
        with_token = {**SHOP, "X-Subject-Token": mine["subject_token"]}
        reads = [client.get(url, headers=with_token).status_code for _ in range(3)]
        limited = client.get(url, headers=with_token)
        assert reads == [200, 200, 200] and limited.status_code == 429
        assert limited.headers["retry-after"] == "30"
        assert limited.headers["access-control-allow-origin"] == "https://shop.example"
        assert client.get(f"{url}/history", headers=with_token).status_code == 429
        assert client.delete(url, headers=with_token).status_code == 429
        again = post_as(client, site, mine["subject"], mine["subject_token"], analytics=False)
        assert again.status_code == 429
        # Another token from the same client, and the client's keyless quota, are untouched.
        other = {"X-Subject-Token": theirs["subject_token"]}
        assert client.get(f"/v1/sites/{site}/consent/{theirs['subject']}", headers=other).is_success
        assert visit(client, site, SHOP, analytics=True).status_code == 201
    assert len(table_rows(settings, "consent_ledger", site=site)) == 3


def test_the_policy_notice_and_gpc_statement_are_published(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    notice = client.get(f"/v1/sites/{site}/policy")
    assert notice.status_code == 200
    assert "gdpr-strict" in notice.text and notice.headers["x-policy-version"] == "2025-07-07"
    gpc = client.get("/.well-known/gpc.json")
    assert gpc.headers["content-type"].startswith("application/json")
    assert gpc.json()["gpc"] is True and len(gpc.json()["lastUpdate"]) == 10


def test_a_visitor_without_an_id_is_given_a_random_one_with_its_token(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    bodies = [visit(client, site, analytics=True).json() for _ in range(3)]
    minted = [body["subject"] for body in bodies]
    assert len(set(minted)) == 3
    assert all(URL_SAFE.match(m) and len(m) * 6 >= 128 for m in minted)
    first = bodies[0]
    mine = {"X-Subject-Token": first["subject_token"]}
    state = client.get(f"/v1/sites/{site}/consent/{first['subject']}", headers=mine)
    assert state.status_code == 200
    assert state.json()["purposes"]["analytics"]["allowed"] is True
    # The minted id is the subject of what was recorded (stored only as its pseudonym).
    pseudonym = KeyRing(settings.secret_key).pseudonym(site, first["subject"])
    assert table_rows(settings, "consent_state", site=site, subject=pseudonym)
    # Only a minted id is ever echoed back.
    assert "subject" not in give(client, site, subject_id(), analytics=True).json()


@pytest.mark.parametrize("credential", ["none", "invalid", "someone else's"])
def test_a_keyless_post_naming_a_subject_needs_that_subjects_token(
    client: Client, settings: Settings, credential: str
) -> None:
    site = make_site(settings)
    known, unseen = subject_id(), subject_id()
    given = give(client, site, known, analytics=False).json()
    stranger = visit(client, site, analytics=True).json()
    token = {
        "none": None,
        "invalid": given["subject_token"][:-4] + "AAAA",
        "someone else's": stranger["subject_token"],
    }[credential]
    before = table_rows(settings, "consent_ledger", site=site)

    answers = [post_as(client, site, s, token, analytics=True) for s in (known, unseen)]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
    assert answers[0].headers["content-type"].startswith("application/problem+json")
    assert table_rows(settings, "consent_ledger", site=site) == before

    own = post_as(client, site, known, given["subject_token"], analytics=True)
    assert own.status_code == 201
    assert own.json()["subject_token"] and "subject" not in own.json()
    fresh = {"X-Subject-Token": own.json()["subject_token"]}
    assert client.get(f"/v1/sites/{site}/consent/{known}", headers=fresh).status_code == 200


def test_a_subject_token_without_its_subject_in_the_body_is_refused(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    token = visit(client, site, analytics=True).json()["subject_token"]
    before = table_rows(settings, "consent_ledger", site=site)
    refused = visit(client, site, {"X-Subject-Token": token}, analytics=False)
    assert refused.status_code == 422 and "subject" in refused.json()["detail"]
    assert table_rows(settings, "consent_ledger", site=site) == before


def test_nobody_claims_a_customers_token_on_a_site_that_records_without_consent(
    client: Client, settings: Settings
) -> None:
    """The issue's attack: on a ccpa (opt-out) site a customer number with no consent history
    was enough to be handed that customer's token, and with it their data."""
    site = make_site(settings, policy="ccpa", jurisdiction="us-ca")
    customer = raw(f"customer-{subject_id()}")
    attack = post_as(client, site, customer, None, marketing=True)
    assert attack.status_code == 403
    assert "subject_token" not in attack.text
    assert table_rows(settings, "consent_ledger", site=site) == []
    assert table_rows(settings, "consent_state", site=site) == []


def test_no_grant_is_posted_over_a_refusal_without_the_subjects_token(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    refusal = visit(client, site, analytics=False, marketing=False).json()
    subject, mine = refusal["subject"], {"X-Subject-Token": refusal["subject_token"]}
    assert post_as(client, site, subject, None, analytics=True).status_code == 403
    state = client.get(f"/v1/sites/{site}/consent/{subject}", headers=mine).json()
    assert state["purposes"]["analytics"]["allowed"] is False
    history = client.get(f"/v1/sites/{site}/consent/{subject}/history", headers=mine).json()
    assert len(history["entries"]) == 1


def test_with_an_admin_key_any_site_assigned_id_gets_consent_and_a_token(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    for subject in (raw(f"customer-{subject_id()}"), TEST_EMAIL):
        given = give(client, site, subject, email=True)
        assert given.status_code == 201
        mine = {"X-Subject-Token": given.json()["subject_token"]}
        state = client.get(f"/v1/sites/{site}/consent/{subject}", headers=mine)
        assert state.status_code == 200 and state.json()["purposes"]["email"]["allowed"] is True
        # The signed-in user can then post with the token the site handed them.
        assert post_as(client, site, subject, mine["X-Subject-Token"], email=False).is_success


@pytest.mark.parametrize(
    ("age", "status"), [(timedelta(days=399), 200), (timedelta(days=401), 401)]
)
def test_a_subject_token_expires_after_subject_token_days(
    client: Client, settings: Settings, age: timedelta, status: int
) -> None:
    site, subject = make_site(settings), subject_id()
    give(client, site, subject, analytics=True)
    keyring = KeyRing(settings.secret_key)
    issued = utcnow() - age
    token = subject_token(keyring, site, keyring.pseudonym(site, subject), issued)
    url = f"/v1/sites/{site}/consent/{subject}"
    assert client.get(url, headers={"X-Subject-Token": token}).status_code == status
    assert post_as(client, site, subject, token, analytics=False).status_code == (
        201 if status == 200 else 403
    )


def test_the_token_lifetime_follows_the_setting(database_url: str) -> None:
    settings = settings_for(database_url, subject_token_days=1)
    site, subject = make_site(settings), subject_id()
    keyring = KeyRing(settings.secret_key)
    day_old = subject_token(
        keyring, site, keyring.pseudonym(site, subject), utcnow() - timedelta(hours=25)
    )
    with TestClient(create_app(settings)) as client:
        give(client, site, subject, analytics=True)
        url = f"/v1/sites/{site}/consent/{subject}"
        assert client.get(url, headers={"X-Subject-Token": day_old}).status_code == 401


def _sloppy_spellings(token: str) -> list[str]:
    """The same bytes spelt another way, which a lenient base64 decoder would accept."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head, mac = token.split(".")
    # The MAC's last character carries four unused bits: flipping one changes no byte.
    last = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(last + "==") == base64.urlsafe_b64decode(mac + "==")
    return [
        f"{head}.{mac[:8]}!!!!{mac[8:]}",
        f"{head[:12]}!!!!{head[12:]}.{mac}",
        f"{head}.{last}",
        f"{head}.{mac}==",
    ]


def test_a_subject_token_has_exactly_one_spelling(client: Client, settings: Settings) -> None:
    site, subject = make_site(settings), subject_id()
    given = give(client, site, subject, analytics=True).json()
    url = f"/v1/sites/{site}/consent/{subject}"
    assert client.get(url, headers={"X-Subject-Token": given["subject_token"]}).status_code == 200
    for spelling in _sloppy_spellings(given["subject_token"]):
        assert client.get(url, headers={"X-Subject-Token": spelling}).status_code == 401, spelling


def test_withdrawal_covers_purposes_a_newer_policy_no_longer_names(
    client: Client, settings: Settings, policies_copy: Path
) -> None:
    site, subject = make_site(settings), subject_id()
    give(client, site, subject, marketing=True)
    (policies_copy / "gdpr-strict.toml").write_text(
        'name = "gdpr-strict"\nversion = "2025-07-07"\n'
        '[purposes.analytics]\ndefault = "denied"\n[kinds]\n"*" = ["analytics"]\n'
    )
    with TestClient(
        create_app(settings_for(settings.database_url, policies_dir=policies_copy))
    ) as c:
        admin = auth(make_key(settings, site))
        withdrawn = c.delete(f"/v1/sites/{site}/consent/{subject}", headers=admin).json()
    assert withdrawn["purposes"]["marketing"] is False
    [state] = table_rows(settings, "consent_state", site=site, purpose="marketing")
    assert state["granted"] is False


def test_the_openapi_document_says_who_may_call_each_consent_and_dsar_operation(
    client: Client,
) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    give_it = paths["/v1/sites/{site}/consent"]["post"]["description"]
    assert "mints a random visitor id" in give_it and "admin key" in give_it
    assert "X-Subject-Token" in give_it and "403" in give_it
    operations = [
        paths["/v1/sites/{site}/consent/{subject}"]["get"],
        paths["/v1/sites/{site}/consent/{subject}"]["delete"],
        paths["/v1/sites/{site}/consent/{subject}/history"]["get"],
        paths["/v1/sites/{site}/dsar"]["post"],
        paths["/v1/sites/{site}/dsar/{request_id}"]["get"],
        paths["/v1/sites/{site}/dsar/{request_id}/export"]["get"],
    ]
    for operation in operations:
        assert "admin key" in operation["description"]
        assert "X-Subject-Token" in operation["description"]
    assert "public" in paths["/v1/sites/{site}/dsar"]["post"]["description"]


CONTROLLER = {
    "controller": "Example Shop GmbH",
    "contact_email": "privacy@shop.example",
    "address": "Hauptstraße 1, 10115 Berlin, Germany",
    "phone": "+49 30 1234567",
    "homepage": "https://shop.example/",
}


def set_controller(client: Client, site: str, fields: dict[str, str]) -> None:
    patched = client.patch(f"/v1/sites/{site}", json=fields, headers=admin_of(client, site))
    assert patched.status_code == 200, patched.text


def verified(client: Client, receipt: str) -> dict[str, Any]:
    kid = jwt.get_unverified_header(receipt)["kid"]
    jwk = next(k for k in client.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(receipt, jwt.PyJWK(jwk).key, algorithms=["EdDSA"])
    return claims


def test_receipts_name_the_sites_controller_and_verify_against_the_jwks(
    client: Client, settings: Settings
) -> None:
    site, subject = make_site(settings), subject_id()
    set_controller(client, site, CONTROLLER)

    given = verified(client, give(client, site, subject, analytics=True).json()["receipt"])
    withdrawn = client.delete(f"/v1/sites/{site}/consent/{subject}", headers=admin_of(client, site))
    for claims in (given, verified(client, withdrawn.json()["receipt"])):
        assert claims["piiControllers"] == [
            {
                "piiController": "Example Shop GmbH",
                "contact": "privacy@shop.example",
                "address": {"streetAddress": "Hauptstraße 1, 10115 Berlin, Germany"},
                "email": "privacy@shop.example",
                "phone": "+49 30 1234567",
                "piiControllerUrl": "https://shop.example/",
            }
        ]
        assert claims["policyUrl"] == f"{settings.base_url}/v1/sites/{site}/policy"


def test_a_receipt_of_a_site_without_a_controller_names_its_slug_and_only_what_is_known(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    bare = verified(client, give(client, site, subject_id(), analytics=True).json()["receipt"])
    assert bare["piiControllers"] == [{"piiController": site}]
    assert bare["policyUrl"] == f"{settings.base_url}/v1/sites/{site}/policy"

    homepage = {"homepage": "https://shop.example/"}
    set_controller(client, site, homepage)
    later = verified(client, give(client, site, subject_id(), analytics=True).json()["receipt"])
    assert later["piiControllers"] == [
        {"piiController": site, "piiControllerUrl": "https://shop.example/"}
    ]


def test_the_notice_names_the_controller_once_it_is_known(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    before = client.get(f"/v1/sites/{site}/policy")
    assert "Who is responsible" not in before.text
    # Known only by an e-mail: the operator of the site is named by its slug.
    email = {"contact_email": "privacy@shop.example"}
    set_controller(client, site, email)
    partial = client.get(f"/v1/sites/{site}/policy").text
    assert f"The operator of site {site} is responsible" in partial
    assert "- E-mail: privacy@shop.example" in partial and "Phone" not in partial

    set_controller(client, site, CONTROLLER)
    after = client.get(f"/v1/sites/{site}/policy")
    assert after.text.startswith(before.text)  # the versioned notice, then who is responsible
    assert after.headers["x-policy-sha256"] == before.headers["x-policy-sha256"]
    section = after.text[len(before.text) :]
    assert "## Who is responsible" in section
    assert "Example Shop GmbH is responsible for this processing." in section
    for label, field in [
        ("E-mail", "contact_email"),
        ("Postal address", "address"),
        ("Phone", "phone"),
        ("Website", "homepage"),
    ]:
        assert f"- {label}: {CONTROLLER[field]}" in section


def test_head_of_the_jwks_answers_like_get_without_a_body(client: Client) -> None:
    got = client.get("/.well-known/jwks.json")
    headed = client.head("/.well-known/jwks.json")
    assert headed.status_code == got.status_code == 200
    assert headed.content == b""
    assert headed.headers["content-type"] == got.headers["content-type"]
    assert headed.headers["content-length"] == str(len(got.content))
    same = {k: v for k, v in got.headers.items() if k not in ("content-length", "date")}
    assert {k: headed.headers.get(k) for k in same} == same


def ledger(settings: Settings, site: str) -> list[dict[str, Any]]:
    rows = table_rows(settings, "consent_ledger", site=site)
    return sorted(rows, key=lambda row: row["recorded_at"])


def test_consent_posted_with_a_key_keeps_no_network_proof_of_the_server(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    response = client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject_id(), "purposes": {"analytics": True}},
        headers={**admin_of(client, site), "User-Agent": CHROME, "X-Forwarded-For": TEST_IP},
    )
    assert response.status_code == 201, response.text
    [entry] = ledger(settings, site)
    assert entry["source"] == "api"
    assert entry["ip_prefix"] is None and entry["ua_family"] is None
    assert verified(client, response.json()["receipt"])["collectionMethod"] == "api"


@pytest.mark.parametrize(
    ("proof", "prefix", "family"),
    [
        ({"ip": TEST_IP, "user_agent": IPHONE}, "203.0.113.0", "Mobile Safari / iOS"),
        ({"ip": TEST_IPV6}, "2001:db8:abcd::", None),
        ({"user_agent": CHROME}, None, "Chrome / Windows"),
    ],
)
def test_the_persons_own_proof_passed_with_a_key_is_kept_reduced(
    client: Client, settings: Settings, proof: dict[str, str], prefix: str, family: str
) -> None:
    site = make_site(settings)
    response = client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject_id(), "purposes": {"analytics": True}, "proof": proof},
        headers=admin_of(client, site),
    )
    assert response.status_code == 201, response.text
    [entry] = ledger(settings, site)
    assert entry["ip_prefix"] == prefix and entry["ua_family"] == family


@pytest.mark.parametrize(
    ("proof", "field"),
    [
        ({"ip": "not-an-address"}, "proof.ip"),
        ({"ip": "203.0.113.300"}, "proof.ip"),
        ({"user_agent": "Mozilla/5.0\x00"}, "proof.user_agent"),
        ({"user_agent": "x" * 513}, "proof.user_agent"),
        ({"ip": TEST_IP, "cookie": "abc"}, "cookie"),
    ],
)
def test_a_bad_proof_is_a_problem_naming_the_field_and_records_nothing(
    client: Client, settings: Settings, proof: dict[str, str], field: str
) -> None:
    site = make_site(settings)
    response = client.post(
        f"/v1/sites/{site}/consent",
        json={"subject": subject_id(), "purposes": {"analytics": True}, "proof": proof},
        headers=admin_of(client, site),
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert TEST_IP not in response.text  # the person's values are not echoed
    assert ledger(settings, site) == []


def test_without_a_key_the_request_is_the_proof_and_a_proof_in_the_body_is_refused(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    vouched = client.post(
        f"/v1/sites/{site}/consent",
        json={"purposes": {"analytics": True}, "proof": {"ip": TEST_IP, "user_agent": IPHONE}},
        headers={"User-Agent": CHROME},
    )
    assert vouched.status_code == 422
    assert vouched.json()["detail"].startswith("proof:")
    assert ledger(settings, site) == []

    own = visit(client, site, {"User-Agent": IPHONE}, analytics=True)
    assert own.status_code == 201
    # The person's own token withdraws: their request is the proof again.
    token = {"X-Subject-Token": own.json()["subject_token"], "User-Agent": CHROME}
    subject = own.json()["subject"]
    assert client.delete(f"/v1/sites/{site}/consent/{subject}", headers=token).is_success
    by_key = client.delete(
        f"/v1/sites/{site}/consent/{subject}",
        headers={**admin_of(client, site), "User-Agent": CHROME},
    )
    assert by_key.is_success
    given, withdrawn, withdrawn_by_key = ledger(settings, site)
    assert given["ua_family"] == "Mobile Safari / iOS"
    assert withdrawn["ua_family"] == "Chrome / Windows"
    assert withdrawn_by_key["ua_family"] is None and withdrawn_by_key["ip_prefix"] is None
    # The test client has no IP address; test_serve and test_public_url check a real one.
    assert given["ip_prefix"] is None


def test_a_controller_changed_by_another_process_is_named_at_once(
    client: Client, settings: Settings
) -> None:
    site = make_site(settings)
    client.get(f"/p/{site}/pixel.gif", headers={"User-Agent": CHROME})  # the site is cached now

    async def update() -> None:  # in a process of its own, as `pixelgate sites update` does
        engine = make_engine(settings.database_url)
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                await update_site(session, site, {"controller": "Renamed Ltd"})
        finally:
            await engine.dispose()

    asyncio.run(update())
    receipt = verified(client, give(client, site, subject_id(), analytics=True).json()["receipt"])
    assert receipt["piiControllers"] == [{"piiController": "Renamed Ltd"}]
    assert "Renamed Ltd is responsible" in client.get(f"/v1/sites/{site}/policy").text
