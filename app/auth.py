"""API keys (only their HMAC is stored), scopes, and subject self-service tokens."""

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey
from app.pseudonym import KeyRing
from app.tokens import b64url, seal, unseal

AnyRequest = Request[Any, Any, Any]
SCOPES = ("admin", "read", "ingest")
# admin ⊃ read and ingest; read and ingest are separate.
GRANTS = {"admin": {"admin", "read", "ingest"}, "read": {"read"}, "ingest": {"ingest"}}


class KeyCreated(msgspec.Struct):
    id: str
    site: str
    scope: str
    key: str


def hash_key(keyring: KeyRing, key: str) -> str:
    return keyring.mac(key.encode(), "api-key").hex()


async def create_key(
    session: AsyncSession, keyring: KeyRing, site: str, scope: str, now: datetime
) -> KeyCreated:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key_id = "key_" + secrets.token_hex(8)
    key = "pg_" + b64url(secrets.token_bytes(32))
    session.add(
        ApiKey(site=site, id=key_id, scope=scope, key_hash=hash_key(keyring, key), created_at=now)
    )
    return KeyCreated(id=key_id, site=site, scope=scope, key=key)


async def revoke_key(session: AsyncSession, key_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


def bearer(request: AnyRequest) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def find_key(session: AsyncSession, keyring: KeyRing, key: str) -> ApiKey | None:
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(keyring, key)))
    return row if row is not None and row.revoked_at is None else None


async def require_key(
    request: AnyRequest,
    session: AsyncSession,
    keyring: KeyRing,
    site: str,
    scope: str,
) -> ApiKey:
    """401 without a valid key; 403 for a key of another site or a narrower scope."""
    key = bearer(request)
    row = await find_key(session, keyring, key) if key else None
    if row is None:
        raise NotAuthorizedException("a valid API key is required (Authorization: Bearer …)")
    if row.site != site or scope not in GRANTS[row.scope]:
        raise PermissionDeniedException(f"this key does not grant {scope} on site {site}")
    return row


class SubjectClaim(msgspec.Struct, array_like=True):
    site: str
    subject: str  # the pseudonym, never the raw identifier


def subject_token(keyring: KeyRing, site: str, pseudonym: str) -> str:
    payload = msgspec.json.encode(SubjectClaim(site=site, subject=pseudonym))
    return seal(keyring, payload, "subject-token")


def read_subject_token(keyring: KeyRing, token: str) -> SubjectClaim | None:
    payload = unseal(keyring, token, "subject-token")
    if payload is None:
        return None
    try:
        return msgspec.json.decode(payload, type=SubjectClaim)
    except msgspec.DecodeError:
        return None


async def require_admin_or_subject(
    request: AnyRequest,
    session: AsyncSession,
    keyring: KeyRing,
    site: str,
    owns: Callable[[str], bool],
) -> None:
    """An admin key of the site, or a subject token of this site for a pseudonym `owns` accepts
    (401 for a token that is not ours, 403 for one of another subject or site)."""
    token = request.headers.get("x-subject-token")
    if token is None:
        await require_key(request, session, keyring, site, "admin")
        return
    claim = read_subject_token(keyring, token)
    if claim is None:
        raise NotAuthorizedException("the subject token is not valid")
    if claim.site != site or not owns(claim.subject):
        raise PermissionDeniedException("this subject token is for another subject or site")
