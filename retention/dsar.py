"""The dsar job: fulfils access and erasure requests, each in one transaction.

A request is claimed, fulfilled and marked completed inside the same transaction: a crash
rolls all of it back (the request is still pending: never lost), and a request another
process holds is skipped (PostgreSQL: SKIP LOCKED) or found no longer pending (SQLite: one
writer at a time), so it is never fulfilled twice.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.base.db import as_date, day_of
from app.base.event_fields import EventFields
from app.base.tables import DsarExport, DsarRequest, Event, Site, SubjectNumber
from consent import audiences, ledger, store
from consent.audiences import Rule
from consent.ledger import LedgerEntry
from consent.policy import Policy
from consent.tables import Audience
from retention.report_cells import mark_dirty

SCHEMA_VERSION = 2  # 2: about explains the controller, purposes and every field


class ExportedEvent(EventFields, kw_only=True):
    """One of the subject's events, as stored but for the site, row id and pseudonym."""


class LegalBasis(msgspec.Struct):
    jurisdiction: str
    basis: str  # consent | opt_out | legitimate_interest
    explained: str


class ExportedPurpose(msgspec.Struct):
    purpose: str
    description: str
    legal_basis: list[LegalBasis]
    exemption: str | None
    retention_days: int
    retention: str
    consent_ttl_days: int
    sale_or_share: bool
    recipients: list[str]
    profiling: bool


class Controller(msgspec.Struct):
    """Who decides about this processing, as the site declared it (Kantara CR v1.1 fields)."""

    declared: bool
    name: str
    contact_email: str | None
    address: str | None
    phone: str | None
    homepage: str | None


class AboutProcessing(msgspec.Struct):
    """What GDPR Art. 15(1) asks to be told besides the data itself."""

    controller: Controller
    pseudonym: str
    policy: str
    policy_version: str
    policy_sha256: str
    purposes: list[ExportedPurpose]
    source: str = "collected by this site's tracking pixel, links and server-side events"
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
    consent: list[LedgerEntry]
    audience_memberships: list[str]
    about: AboutProcessing
    fields: dict[str, str]


PSEUDONYM = (
    "You appear here only under a pseudonym: a keyed hash (HMAC-SHA256, under a key of this "
    "site's own) of the identifier the site gave for you, such as a visitor id or an e-mail "
    "address. The identifier itself is never stored. The same person has a different pseudonym "
    "on each site. Neither you nor anyone else can turn the pseudonym back into the identifier "
    "without the site's secret key; with the identifier, the site computes the same pseudonym "
    "again, which is how it found this data."
)
# SPEC §4.9: audiences (retargeting) are built from the people whose marketing purpose is
# allowed, so that purpose is the one that involves profiling.
PROFILING_PURPOSES = frozenset({"marketing"})
CONTROLLER_AND_PROCESSOR = [
    "the controller named in about.controller",
    "this pixelgate service, which the controller runs or has run for it as its processor: "
    "it stores and counts, and sends your data to nobody",
]
ADVERTISING_PARTNERS = (
    "advertising partners (a sale or sharing under the CCPA): the controller may hand "
    "audiences built for this purpose to advertising platforms; pixelgate itself never does"
)
FIELDS = {
    "schema_version": "the version of this document's layout",
    "generated_at": "when this export was made (UTC)",
    "site": "the site, as pixelgate knows it, that collected the data",
    "subject": "your pseudonym on this site: see about.pseudonym",
    "request_id": "the id of the access request this export answers",
    "regulation": "the law the request was made under: gdpr or ccpa",
    "events": "every hit recorded under your pseudonym, oldest first",
    "events[].occurred_at": "when it happened (UTC)",
    "events[].kind": "what happened: pageview, click (a tracked link), open (an e-mail was "
    "opened), conversion (a purchase or sign-up the site reported), or a kind the site defined",
    "events[].page": "the path of the page, or the e-mail's message id: no domain, no part of "
    "the address's query except campaign parameters, anything that looks like personal data "
    "masked",
    "events[].campaign": "the campaign the site attached to the hit, if any",
    "events[].utm_source": "the campaign's source (utm_source of the link you followed), if any",
    "events[].utm_medium": "the campaign's medium (utm_medium), if any",
    "events[].utm_campaign": "the campaign's name (utm_campaign), if any",
    "events[].utm_content": "the campaign's content label (utm_content), if any",
    "events[].utm_term": "the campaign's term (utm_term), if any",
    "events[].referrer": "the host name of the site you came from, never its full address",
    "events[].device": "the class of device: desktop, mobile, tablet or other",
    "events[].browser": "the browser's family (such as Chrome), never the full user agent",
    "events[].os": "the operating system's family (such as Windows), never its full version",
    "events[].jurisdiction": "the legal region whose rules decided the hit (eu, us-ca, ...): "
    "the one your network's region pointed to, else the site's own; see "
    "about.purposes[].legal_basis",
    "events[].value": "the amount of a conversion, if the site reported one",
    "events[].currency": "the currency of that amount (ISO 4217)",
    "events[].machine": "true when a mail provider's image proxy (Gmail, Yahoo, Apple Mail "
    "Privacy Protection) fetched an e-mail's pixel rather than your own mail program: such a "
    "fetch may happen without a person reading, so it is not counted as a human open",
    "events[].basis": "per purpose, what allowed recording it: consent:<id> is the entry of "
    "consent with that id; default:<policy>@<version> is the policy's default for your "
    "jurisdiction (opt-out or legitimate interest, see about.purposes[].legal_basis); "
    "tcf:cmp=<id>:updated=<date> is a consent string from the site's IAB TCF consent tool",
    "consent": "every consent you gave or withdrew, oldest first: the proof GDPR Art. 7(1) asks "
    "the controller to keep",
    "consent[].id": "the id of this entry, which events' basis consent:<id> refers to",
    "consent[].recorded_at": "when it was recorded (UTC)",
    "consent[].action": "given or withdrawn",
    "consent[].purposes": "per purpose, true for yes and false for no",
    "consent[].policy_version": "the version of the notice you were shown",
    "consent[].policy_sha256": "the SHA-256 of that policy file, which proves its exact text",
    "consent[].source": "how the choice reached pixelgate: the label the site's banner or "
    "server gave (api unless it named one), withdrawal, or opt-out-request",
    "consent[].ip_prefix": "the network of the device that made the choice, kept as proof: "
    "the first three bytes of an IPv4 address or the first 48 bits of an IPv6 one, never more "
    "(null: not recorded)",
    "consent[].ua_family": "the browser and operating system family of that device",
    "consent[].jurisdiction": "the legal region the choice was made under",
    "consent[].expires_at": "when the yes of this entry lapses and you are asked again (null "
    "when it said no to everything, which does not lapse)",
    "audience_memberships": "the names of the site's advertising audiences you belong to now: "
    "those whose rule your recent visits match, while your choices allow marketing",
    "about": "what the GDPR (Art. 13, 15) asks to be told besides the data itself",
    "about.controller": "who decides about this processing and how to reach them",
    "about.controller.declared": "false when the site has not told pixelgate who it is; then "
    "name says so and the contact fields are null",
    "about.controller.name": "the controller's name",
    "about.controller.contact_email": "the e-mail address to write to about your data",
    "about.controller.address": "its postal address",
    "about.controller.phone": "its telephone number",
    "about.controller.homepage": "its web site",
    "about.pseudonym": "how the pseudonym in subject is made",
    "about.policy": "the name of the site's privacy policy",
    "about.policy_version": "its current version",
    "about.policy_sha256": "the SHA-256 of its current file",
    "about.purposes": "each purpose the site collects data for",
    "about.purposes[].purpose": "the purpose's name, as events' basis and consent name it",
    "about.purposes[].description": "what it covers, in the words of the site's notice",
    "about.purposes[].legal_basis": "why the purpose may be pursued, per jurisdiction",
    "about.purposes[].legal_basis[].jurisdiction": "the legal region this entry is for: "
    "the site's own, those its policy treats apart, and those your data was recorded under",
    "about.purposes[].legal_basis[].basis": "consent (only after you said yes), opt_out (until "
    "you opt out) or legitimate_interest (the controller's, until you object)",
    "about.purposes[].legal_basis[].explained": "what that means for you, in words",
    "about.purposes[].exemption": "anonymous counting without consent, where the policy allows "
    "it (null: never); it keeps no pseudonym, so nothing of it is in this export",
    "about.purposes[].retention_days": "how many days raw events of this purpose are kept",
    "about.purposes[].retention": "the same in words: after it, only anonymous daily totals "
    "remain; an event that serves several purposes is kept for the longest of them",
    "about.purposes[].consent_ttl_days": "how many days a consent to it lasts",
    "about.purposes[].sale_or_share": "whether the purpose may be a sale or sharing of "
    "personal information under the CCPA (Global Privacy Control opts you out of it)",
    "about.purposes[].recipients": "who receives data of this purpose",
    "about.purposes[].profiling": "whether the purpose involves profiling: building "
    "advertising audiences from what you did; pixelgate makes no automated decision with legal "
    "or similarly significant effects on you (GDPR Art. 22)",
    "about.source": "where the data comes from",
    "about.rights": "your rights",
    "fields": "this explanation of every field",
}


GDPR_LAWS = {"eu": "GDPR", "gb": "UK GDPR"}


def _us_law(jurisdiction: str) -> str | None:
    if jurisdiction == "us-ca":
        return "CCPA"
    return "US state privacy law" if jurisdiction.split("-")[0] == "us" else None


def _basis(policy: Policy, purpose: str, jurisdiction: str) -> LegalBasis:
    """What the policy's default for a jurisdiction means in that jurisdiction's law; where
    pixelgate knows no law for the jurisdiction, it names none."""
    gdpr = GDPR_LAWS.get(jurisdiction)
    if policy.default_for(purpose, jurisdiction) == "denied":
        article = f" ({gdpr} Art. 6(1)(a))" if gdpr else ""
        why = "nothing is recorded for it until you say yes; you may withdraw at any time"
        return LegalBasis(jurisdiction, "consent", f"your consent{article}: {why}")
    if gdpr:
        why = (
            f"the controller's legitimate interest ({gdpr} Art. 6(1)(f)): recorded without "
            "asking until you object (Art. 21), which withdrawing this purpose does"
        )
        return LegalBasis(jurisdiction, "legitimate_interest", why)
    law = _us_law(jurisdiction)
    named = f" ({law})" if law else ""
    why = f"permitted until you opt out{named}: recorded without asking until you say no"
    if purpose in policy.gpc_denies():
        why += "; a browser sending Global Privacy Control is opted out at once"
    return LegalBasis(jurisdiction, "opt_out", why)


def _purpose(policy: Policy, name: str, jurisdictions: list[str]) -> ExportedPurpose:
    purpose = policy.file.purposes[name]
    exemption = None
    if policy.file.anonymous_counting:
        exemption = (
            "audience-measurement exemption (CNIL): a hit with no identifier that this purpose "
            "does not allow is only counted, with no pseudonym"
        )
    days = purpose.retention_days
    recipients = list(CONTROLLER_AND_PROCESSOR)
    if purpose.sale_or_share:
        recipients.append(ADVERTISING_PARTNERS)
    return ExportedPurpose(
        purpose=name,
        description=purpose.description or "not described by the policy: see its notice",
        legal_basis=[_basis(policy, name, j) for j in jurisdictions],
        exemption=exemption,
        retention_days=days,
        retention=f"raw events {days} days, then anonymous daily totals",
        consent_ttl_days=purpose.consent_ttl_days,
        sale_or_share=purpose.sale_or_share,
        recipients=recipients,
        profiling=name in PROFILING_PURPOSES,
    )


def _controller(site: Site) -> Controller:
    if not site.controller:
        # Nothing invented: the site is named by its slug, and the gap is said out loud.
        name = (
            f"not declared: the controller of the site {site.slug!r} has not told pixelgate "
            "who it is; ask the site that collected the data"
        )
        return Controller(False, name, None, None, None, None)
    return Controller(
        True, site.controller, site.contact_email, site.address, site.phone, site.homepage
    )


class JobCounts(msgspec.Struct):
    access: int = 0
    erasure: int = 0


def _attributes(rows: Any, type_: Any) -> list[Any]:
    return [msgspec.convert(row, type_, from_attributes=True) for row in rows]


async def _export(
    session: AsyncSession,
    request: DsarRequest,
    subject: str,
    site: Site,
    policy: Policy,
    now: datetime,
) -> tuple[bytes, dict[str, int]]:
    events = _attributes(
        await session.scalars(
            select(Event)
            .where(Event.site == request.site, Event.subject == subject)
            .order_by(Event.occurred_at)
        ),
        ExportedEvent,
    )
    consent = ledger.entries(await store.history(session, request.site, subject))
    # The site's own rules, those the policy sets apart, and any this person was under.
    jurisdictions = sorted(
        {site.jurisdiction, *policy.file.jurisdictions}
        | {e.jurisdiction for e in events}
        | {c.jurisdiction for c in consent}
    )
    document = Export(
        schema_version=SCHEMA_VERSION,
        generated_at=now,
        site=request.site,
        subject=subject,
        request_id=request.id,
        regulation=request.regulation,
        events=events,
        consent=consent,
        audience_memberships=await memberships(session, site, policy, subject, now),
        about=AboutProcessing(
            controller=_controller(site),
            pseudonym=PSEUDONYM,
            policy=policy.name,
            policy_version=policy.version,
            policy_sha256=policy.sha256,
            purposes=[
                _purpose(policy, name, jurisdictions) for name in sorted(policy.file.purposes)
            ],
        ),
        fields=FIELDS,
    )
    counts = {"events": len(document.events), "consent_ledger": len(document.consent)}
    counts["audience_memberships"] = len(document.audience_memberships)
    return msgspec.json.encode(document), counts


async def memberships(
    session: AsyncSession, site: Site, policy: Policy, subject: str, now: datetime
) -> list[str]:
    """The names of the site's audiences the subject is a member of now."""
    found = []
    rows = await session.scalars(
        select(Audience).where(Audience.site == site.slug).order_by(Audience.name)
    )
    for row in rows:
        rule = msgspec.convert(row.rule, Rule)
        one = await audiences.members(
            session, site.slug, rule, policy, site.jurisdiction, now, [subject]
        )
        if one.members:
            found.append(row.name)
    return found


async def _erase(
    session: AsyncSession, request: DsarRequest, subject: str, in_audiences: int
) -> dict[str, int]:
    """Everything under the pseudonym, in this one transaction; its consent through the
    registry, which announces the erasure once this commits. Audience memberships are never
    stored: with the events and the consent gone, the subject is in none."""
    site = request.site
    # The report cells of the subject's days are built again without them, and the number
    # their bitmaps knew the subject by is forgotten now.
    day = day_of(session, Event.occurred_at)
    days = await session.scalars(
        select(day).where(Event.site == site, Event.subject == subject).distinct()
    )
    await mark_dirty(session, [(site, as_date(value)) for value in days])
    await session.execute(
        delete(SubjectNumber).where(SubjectNumber.site == site, SubjectNumber.subject == subject)
    )
    events = await session.execute(
        delete(Event).where(Event.site == site, Event.subject == subject)
    )
    counts = {"events": int(getattr(events, "rowcount", 0))}
    counts.update(await store.erase(session, site, subject))
    exports = await session.execute(
        delete(DsarExport).where(
            DsarExport.site == site, DsarExport.subject_hash == request.subject_hash
        )
    )
    counts["exports"] = int(getattr(exports, "rowcount", 0))
    counts["audience_memberships"] = in_audiences
    # Other requests of the same person keep their audit record, without the pseudonym.
    await session.execute(
        update(DsarRequest)
        .where(DsarRequest.site == site, DsarRequest.subject_hash == request.subject_hash)
        .values(subject=None)
    )
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
) -> DsarRequest | None:
    """Claim the oldest pending request and fulfil it; the caller's transaction commits."""
    request = await _claim(session)
    if request is None:
        return None
    subject = request.subject or ""
    site = await session.get(Site, request.site)
    policy = policies.get(site.policy) if site is not None else None
    if site is None or policy is None:
        request.status, request.counts = "rejected", {"reason": "site or policy gone"}
    elif request.type == "access":
        document, request.counts = await _export(session, request, subject, site, policy, now)
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
        in_audiences = len(await memberships(session, site, policy, subject, now))
        request.counts = await _erase(session, request, subject, in_audiences)
        request.status = "completed"
    request.completed_at = now
    request.subject = None  # the audit record keeps only the keyed hash
    return request


async def run_dsar(
    sessions: async_sessionmaker[AsyncSession],
    policies: dict[str, Policy],
    now: datetime,
    *,
    dry_run: bool = False,
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
            request = await fulfil_one(session, policies, now)
        if request is None:
            return counts
        setattr(counts, request.type, getattr(counts, request.type) + 1)
