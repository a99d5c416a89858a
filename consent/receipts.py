"""Consent receipts: compact JWS (EdDSA, Ed25519) with Kantara Consent Receipt claims; JWKS."""

import hashlib
import json
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import dialect_insert
from app.base.keys import KeyRing, b64url
from app.base.tables import Site
from consent.policy import Policy
from consent.tables import ConsentLedger, ReceiptKey


class Signer:
    """The receipt key, derived from the master secret: a new secret means a new kid."""

    def __init__(self, keyring: KeyRing) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(keyring.key("receipts", "ed25519"))
        x = b64url(self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        # RFC 7638 thumbprint: members in lexical order, no whitespace.
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        self.kid = b64url(hashlib.sha256(canonical.encode()).digest())
        self.public_jwk = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private, algorithm="EdDSA", headers={"kid": self.kid})


async def publish_key(session: AsyncSession, signer: Signer, now: datetime) -> None:
    """List the current public key for good; keys of earlier secrets stay listed."""
    await session.execute(
        dialect_insert(session)(ReceiptKey)
        .values(kid=signer.kid, public_jwk=signer.public_jwk, created_at=now)
        .on_conflict_do_nothing(index_elements=["kid"])
    )


async def jwks(session: AsyncSession) -> dict[str, list[dict[str, Any]]]:
    rows = await session.scalars(select(ReceiptKey).order_by(ReceiptKey.created_at.desc()))
    return {"keys": [row.public_jwk for row in rows]}


def pii_controller(site: Site) -> dict[str, Any]:
    """The site's controller as a Kantara CR v1.1 `piiControllers` entry. pixelgate keeps no
    contact person, so `contact` is the contact e-mail; the postal address is one text, given
    as the schema.org `streetAddress` of the `address` object. A site not yet given its
    controller (`pixelgate sites update`) is named by its slug, and a field not known is left
    out rather than made up."""
    entry: dict[str, Any] = {"piiController": site.controller or site.slug}
    if site.contact_email:
        entry["contact"] = site.contact_email
    if site.address:
        entry["address"] = {"streetAddress": site.address}
    if site.contact_email:
        entry["email"] = site.contact_email
    if site.phone:
        entry["phone"] = site.phone
    if site.homepage:
        entry["piiControllerUrl"] = site.homepage
    return entry


def claims(entry: ConsentLedger, policy: Policy, policy_url: str, site: Site) -> dict[str, Any]:
    """Kantara Consent Receipt v1.1 fields, plus the JWT registered claims."""
    issued = int(entry.recorded_at.timestamp())
    purposes = []
    for name, granted in sorted(entry.purposes.items()):
        declared = policy.file.purposes.get(name)  # None: a purpose the policy has since dropped
        purposes.append(
            {
                "purpose": name,
                "purposeCategory": [name],
                "consentType": "EXPLICIT",
                "piiCategory": ["pseudonymous identifier", "usage data"],
                "primaryPurpose": False,
                "termination": (
                    f"{declared.consent_ttl_days} days or withdrawal" if declared else "withdrawn"
                ),
                "thirdPartyDisclosure": declared.sale_or_share if declared else False,
                "state": "granted" if granted else "denied",
            }
        )
    body: dict[str, Any] = {
        "iss": "pixelgate",
        "sub": entry.subject,
        "iat": issued,
        "jti": str(entry.id),
        "version": "KI-CR-v1.1.0",
        "jurisdiction": entry.jurisdiction,
        "consentTimestamp": issued,
        "collectionMethod": entry.source,
        "consentReceiptID": str(entry.id),
        "language": "en",
        "piiPrincipalId": entry.subject,
        "piiControllers": [pii_controller(site)],
        "policyUrl": policy_url,
        "policy": {"name": policy.name, "version": policy.version, "sha256": policy.sha256},
        "action": entry.action,
        "services": [{"service": entry.site, "purposes": purposes}],
        "sensitive": False,
        "spiCat": [],
    }
    # Not the JWT `exp`: a receipt is proof for as long as it is kept, not only while the
    # consent lasts, and JOSE libraries refuse to verify a token past its `exp`.
    if entry.expires_at is not None:
        body["consentExpiresAt"] = int(entry.expires_at.timestamp())
    return body
