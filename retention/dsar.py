"""The dsar job: fulfils access and erasure requests, each in one transaction.

A request is claimed, fulfilled and marked completed inside the same transaction: a crash
rolls all of it back (the request is still pending: never lost), and a request another
process holds is skipped (PostgreSQL: SKIP LOCKED) or found no longer pending (SQLite: one
writer at a time), so it is never fulfilled twice.
"""

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import DsarExport, DsarRequest, Event, Site
from app.pseudonym import KeyRing
from consent import store
from consent.models import ConsentChange, ConsentLedger, ConsentState
from consent.policy import Policy

SCHEMA_VERSION = 1


def audit_hash(keyring: KeyRing, pseudonym: str) -> str:
    """Keyed apart from the pseudonym itself: the audit trail cannot be joined back to data."""
    return keyring.mac(pseudonym.encode(), "dsar-audit").hex()


async def erased_at(session: AsyncSession, site: str, hashes: Iterable[str]) -> dict[str, datetime]:
    """When each of these subjects (by audit_hash) was last erased, for those ever erased.

    What an erasure leaves behind is its audit record: a token issued, or a hit that arrived,
    before that moment belongs to data that no longer exists."""
    wanted = sorted(set(hashes))
    found: dict[str, datetime] = {}
    for start in range(0, len(wanted), 500):
        rows = await session.execute(
            select(DsarRequest.subject_hash, func.max(DsarRequest.completed_at))
            .where(
                DsarRequest.site == site,
                DsarRequest.subject_hash.in_(wanted[start : start + 500]),
                DsarRequest.type == "erasure",
                DsarRequest.status == "completed",
            )
            .group_by(DsarRequest.subject_hash)
        )
        found.update((subject_hash, at) for subject_hash, at in rows if at is not None)
    return found


class ExportedEvent(msgspec.Struct):
    occurred_at: datetime
    kind: str
    page: str | None
    campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_content: str | None
    utm_term: str | None
    referrer: str | None
    device: str
    browser: str
    os: str
    jurisdiction: str
    value: Decimal | None
    currency: str | None
    machine: bool
    basis: dict[str, str]


class ExportedConsent(msgspec.Struct):
    recorded_at: datetime
    action: str
    purposes: dict[str, bool]
    policy_version: str
    policy_sha256: str
    source: str
    ip_prefix: str | None
    ua_family: str | None
    jurisdiction: str
    expires_at: datetime | None


class ExportedPurpose(msgspec.Struct):
    purpose: str
    retention_days: int
    consent_ttl_days: int
    sale_or_share: bool


class AboutProcessing(msgspec.Struct):
    """What GDPR Art. 15(1) asks to be told besides the data itself."""

    controller: str
    policy: str
    policy_version: str
    policy_sha256: str
    purposes: list[ExportedPurpose]
    source: str = "collected by this site's tracking pixel, links and server-side events"
    recipients: list[str] = []
    rights: str = (
        "access, rectification, erasure, restriction, objection, portability and withdrawal "
        "of consent; you may complain to your data protection authority"
    )


class Export(msgspec.Struct):
    """The access export: an allowlist of fields, with a schema version (GDPR Art. 15, 20)."""

    schema_version: int
    generated_at: datetime
    site: str
    subject: str  # the pseudonym: pixelgate never held the identifier itself
    request_id: uuid.UUID
    regulation: str
    events: list[ExportedEvent]
    consent: list[ExportedConsent]
    audience_memberships: list[str]
    about: AboutProcessing


class JobCounts(msgspec.Struct):
    access: int = 0
    erasure: int = 0


def _attributes(rows: Any, type_: Any) -> list[Any]:
    return [msgspec.convert(row, type_, from_attributes=True) for row in rows]


async def _export(
    session: AsyncSession, request: DsarRequest, subject: str, policy: Policy, now: datetime
) -> tuple[bytes, dict[str, int]]:
    events = await session.scalars(
        select(Event)
        .where(Event.site == request.site, Event.subject == subject)
        .order_by(Event.occurred_at)
    )
    ledger = await store.history(session, request.site, subject)
    document = Export(
        schema_version=SCHEMA_VERSION,
        generated_at=now,
        site=request.site,
        subject=subject,
        request_id=request.id,
        regulation=request.regulation,
        events=_attributes(events, ExportedEvent),
        consent=_attributes(ledger, ExportedConsent),
        audience_memberships=[],  # audiences are not built yet: nobody is a member of any
        about=AboutProcessing(
            controller=request.site,
            policy=policy.name,
            policy_version=policy.version,
            policy_sha256=policy.sha256,
            purposes=[
                ExportedPurpose(name, p.retention_days, p.consent_ttl_days, p.sale_or_share)
                for name, p in sorted(policy.file.purposes.items())
            ],
        ),
    )
    counts = {"events": len(document.events), "consent_ledger": len(document.consent)}
    return msgspec.json.encode(document), counts


async def _erase(session: AsyncSession, request: DsarRequest, subject: str) -> dict[str, int]:
    """Everything under the pseudonym, in this one transaction."""
    site = request.site
    counts = {}
    for name, statement in (
        ("events", delete(Event).where(Event.site == site, Event.subject == subject)),
        (
            "consent_state",
            delete(ConsentState).where(ConsentState.site == site, ConsentState.subject == subject),
        ),
        (
            "consent_ledger",
            delete(ConsentLedger).where(
                ConsentLedger.site == site, ConsentLedger.subject == subject
            ),
        ),
        (
            "exports",
            delete(DsarExport).where(
                DsarExport.site == site, DsarExport.subject_hash == request.subject_hash
            ),
        ),
    ):
        result = await session.execute(statement)
        counts[name] = int(getattr(result, "rowcount", 0))
    counts["audience_memberships"] = 0  # no audiences yet
    # Announcements of this person's earlier changes (SQLite) name the pseudonym too; the
    # erasure's own names only the site.
    await session.execute(
        delete(ConsentChange).where(ConsentChange.site == site, ConsentChange.subject == subject)
    )
    # Other requests of the same person keep their audit record, without the pseudonym.
    await session.execute(
        update(DsarRequest)
        .where(DsarRequest.site == site, DsarRequest.subject_hash == request.subject_hash)
        .values(subject=None)
    )
    await store.notify_change(session, site, subject, erasure=True)
    return counts


async def _claim(session: AsyncSession) -> DsarRequest | None:
    candidate = await session.scalar(
        select(DsarRequest)
        .where(DsarRequest.status == "pending")
        .order_by(DsarRequest.received_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if candidate is None:
        return None
    claimed = await session.execute(
        update(DsarRequest)
        .where(
            DsarRequest.site == candidate.site,
            DsarRequest.id == candidate.id,
            DsarRequest.status == "pending",
        )
        .values(status="in_progress")
    )
    return candidate if getattr(claimed, "rowcount", 0) == 1 else None


async def fulfil_one(
    session: AsyncSession, policies: dict[str, Policy], now: datetime
) -> tuple[DsarRequest, str] | None:
    """Claim the oldest pending request and fulfil it; the caller's transaction commits.
    Returns the request and the pseudonym it was about (no longer stored with it)."""
    request = await _claim(session)
    if request is None:
        return None
    subject = request.subject or ""
    site = await session.get(Site, request.site)
    policy = policies.get(site.policy) if site is not None else None
    if policy is None:
        request.status, request.counts = "rejected", {"reason": "site or policy gone"}
    elif request.type == "access":
        document, request.counts = await _export(session, request, subject, policy, now)
        expires = now + timedelta(days=policy.file.dsar.export_ttl_days)
        session.add(
            DsarExport(
                site=request.site,
                request_id=request.id,
                subject_hash=request.subject_hash,
                document=document,
                expires_at=expires,
            )
        )
        request.export_expires_at = expires
        request.status = "completed"
    else:
        request.counts = await _erase(session, request, subject)
        request.status = "completed"
    request.completed_at = now
    request.subject = None  # the audit record keeps only the keyed hash
    return request, subject


async def run_dsar(
    sessions: async_sessionmaker[AsyncSession],
    policies: dict[str, Policy],
    now: datetime,
    *,
    dry_run: bool = False,
    forget: Callable[[str, str], None] | None = None,
) -> JobCounts:
    """Fulfil every pending request, one transaction each."""
    counts = JobCounts()
    if dry_run:
        async with sessions() as session:
            pending = await session.scalars(
                select(DsarRequest.type).where(DsarRequest.status == "pending")
            )
            for kind in pending:
                setattr(counts, kind, getattr(counts, kind) + 1)
        return counts
    while True:
        async with sessions() as session, session.begin():
            done = await fulfil_one(session, policies, now)
        if done is None:
            return counts
        request, subject = done
        if request.type == "erasure" and forget is not None:
            forget(request.site, subject)  # after the commit: no cache may reload the old rows
        setattr(counts, request.type, getattr(counts, request.type) + 1)
