"""API keys (only their HMAC is stored), scopes, and subject self-service tokens."""

import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import utcnow
from app.base.keys import KeyRing, audit_hash, b64url, seal, unseal
from app.base.tables import ApiKey
from app.http.context import Context
from app.http.problems import Problem
from consent.store import erased_at

# A request or the connection a guard is given: only its headers are read.
AnyRequest = ASGIConnection[Any, Any, Any, Any]
SCOPES = ("admin", "read", "ingest")
# admin ⊃ read and ingest; read and ingest are separate.
GRANTS = {"admin": {"admin", "read", "ingest"}, "read": {"read"}, "ingest": {"ingest"}}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


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
    issued: int  # microseconds since the epoch: exact, to compare with an erasure's time

    @property
    def issued_at(self) -> datetime:
        return EPOCH + self.issued * MICROSECOND


def subject_token(keyring: KeyRing, site: str, pseudonym: str, now: datetime) -> str:
    claim = SubjectClaim(site=site, subject=pseudonym, issued=(now - EPOCH) // MICROSECOND)
    return seal(keyring, msgspec.json.encode(claim), "subject-token")


def read_subject_token(keyring: KeyRing, token: str) -> SubjectClaim | None:
    """The claim of a token we sealed (of any age); None for anything else."""
    payload = unseal(keyring, token, "subject-token")
    if payload is None:
        return None
    try:
        return msgspec.json.decode(payload, type=SubjectClaim)
    except msgspec.DecodeError:
        return None


async def live_subject_claim(
    session: AsyncSession, ctx: Context, token: str, cors: Mapping[str, str]
) -> SubjectClaim | None:
    """The one decision whether a subject token opens anything now: sealed by us, younger than
    subject_token_days, and issued after its subject's latest erasure (it belonged to data that
    no longer exists). Every use of a good token counts against a limit per token (429)."""
    claim = read_subject_token(ctx.keyring, token)
    if claim is None:
        return None
    # Checked after the seal, so that only real tokens take up room in the limiter.
    ctx.consent_limiter.check("subject-token", token, cors)
    if utcnow() - claim.issued_at > timedelta(days=ctx.settings.subject_token_days):
        return None
    subject = audit_hash(ctx.keyring, claim.subject)
    erased = (await erased_at(session, claim.site, [subject])).get(subject)
    if erased is not None and claim.issued_at <= erased:
        return None
    return claim


async def require_admin_or_subject(
    request: AnyRequest,
    session: AsyncSession,
    ctx: Context,
    site: str,
    owns: Callable[[str], bool],
    cors: Mapping[str, str],
) -> None:
    """An admin key of the site, or a live subject token of this site for a pseudonym `owns`
    accepts (401 for a token that is not ours or no longer good, 403 for one of another subject
    or site). `cors` goes on every refusal, so that a banner on the site's page can read it
    (a token refused once its subject is erased: the banner then forgets the id)."""
    token = request.headers.get("x-subject-token")
    if token is None:
        await require_key(request, session, ctx.keyring, site, "admin")
        return
    claim = await live_subject_claim(session, ctx, token, cors)
    if claim is None:
        raise Problem(401, "the subject token is not valid, has expired or was erased", dict(cors))
    if claim.site != site or not owns(claim.subject):
        raise Problem(403, "this subject token is for another subject or site", dict(cors))
