"""consent.receipts on its own: a receipt is a Kantara Consent Receipt v1.1 signed with the
Ed25519 key of the master secret, and verifies against the published keys, on both databases.
The consent API's tests check the same through HTTP."""

import secrets
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest

from app.base.db import transaction, utcnow
from app.base.keys import KeyRing
from app.base.tables import Site
from consent import receipts, store
from consent.policy import load_policies
from consent.tables import ConsentLedger
from tests.factories import POLICIES

POLICY = load_policies(POLICIES)["gdpr-strict"]
PROOF = store.Proof(source="banner", ip_prefix=None, ua_family=None, jurisdiction="eu")


def site(**controller: str) -> Site:
    return Site(
        slug="receipt-shop", policy="gdpr-strict", origins=[], jurisdiction="eu", **controller
    )


def verify(token: str, published: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in published["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"])
    return claims


async def test_a_receipt_verifies_against_the_published_keys_of_every_secret(
    sessions: Any,
) -> None:
    first, second = (receipts.Signer(KeyRing(secrets.token_bytes(32))) for _ in range(2))
    assert first.kid != second.kid
    now = utcnow()
    async with transaction(sessions) as session:
        await receipts.publish_key(session, first, now)
        await receipts.publish_key(session, first, now)  # once is enough
        await receipts.publish_key(session, second, now + timedelta(seconds=1))
        entry = await store.record(
            session,
            site="receipt-shop",
            subject=f"s-{secrets.token_hex(4)}",
            purposes={"analytics": True},
            policy=POLICY,
            proof=PROOF,
            now=now,
        )
        published = await receipts.jwks(session)
    kids = [key["kid"] for key in published["keys"]]
    assert kids[:2] == [second.kid, first.kid]  # newest first, the older still listed
    assert kids.count(first.kid) == 1

    body = receipts.claims(entry, POLICY, "https://p.example/notice", site())
    claims = verify(first.sign(body), published)
    assert claims == body and "exp" not in claims
    assert claims["version"] == "KI-CR-v1.1.0" and claims["action"] == entry.action
    assert claims["consentExpiresAt"] == int(entry.expires_at.timestamp())  # type: ignore[union-attr]
    assert claims["piiControllers"] == [{"piiController": "receipt-shop"}]
    assert claims["policy"] == {
        "name": POLICY.name,
        "version": POLICY.version,
        "sha256": POLICY.sha256,
    }
    [analytics] = claims["services"][0]["purposes"]
    assert analytics["purpose"] == "analytics" and analytics["state"] == "granted"
    ttl = POLICY.file.purposes["analytics"].consent_ttl_days
    assert analytics["termination"] == f"{ttl} days or withdrawal"

    tampered = second.sign(body)
    head, _, signature = tampered.split(".")
    forged = first.sign({**body, "sub": "someone else"}).split(".")[1]
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{head}.{forged}.{signature}", published)


def test_a_withdrawal_receipt_has_no_expiry_and_states_purposes_since_dropped() -> None:
    entry = ConsentLedger(
        site="receipt-shop",
        id=uuid.uuid4(),
        subject="s-1",
        recorded_at=utcnow(),
        action="withdrawn",
        purposes={"analytics": False, "retired": False},
        policy_version=POLICY.version,
        policy_sha256=POLICY.sha256,
        source="api",
        jurisdiction="eu",
        expires_at=None,
    )
    body = receipts.claims(entry, POLICY, "https://p.example/notice", site())
    assert "consentExpiresAt" not in body and body["action"] == "withdrawn"
    # A purpose the policy no longer declares is stated as withdrawn, nothing invented.
    retired = body["services"][0]["purposes"][1]
    assert retired["purpose"] == "retired" and retired["state"] == "denied"
    assert retired["termination"] == "withdrawn" and retired["thirdPartyDisclosure"] is False


def test_the_controller_is_named_with_every_field_known_and_none_made_up() -> None:
    full = site(
        controller="Example Shop GmbH",
        contact_email="privacy@shop.example",
        address="Hauptstraße 1, Berlin",
        phone="+49 30 1234567",
        homepage="https://shop.example/",
    )
    assert receipts.pii_controller(full) == {
        "piiController": "Example Shop GmbH",
        "contact": "privacy@shop.example",
        "address": {"streetAddress": "Hauptstraße 1, Berlin"},
        "email": "privacy@shop.example",
        "phone": "+49 30 1234567",
        "piiControllerUrl": "https://shop.example/",
    }
    assert receipts.pii_controller(site(phone="+1 555 0100")) == {
        "piiController": "receipt-shop",
        "phone": "+1 555 0100",
    }
