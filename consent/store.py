"""The consent registry: record, read, withdraw, erase. Functions taking the session first.

Every change is announced once its transaction commits: to other processes by NOTIFY
(PostgreSQL) or a consent_changes row (SQLite), and in this process to whatever asked
hear_changes() of the sessionmaker (the consent cache). Nothing else changes a registry, so
no caller has a cache to empty."""

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from app.base.db import dialect_insert, driver_connection
from app.base.tables import DsarRequest
from consent.decide import Record
from consent.policy import Policy
from consent.tables import ConsentChange, ConsentLedger, ConsentState

CHANNEL = "pixelgate_consent"  # NOTIFY payload: "site:pseudonym" of a changed registry
# In a sessionmaker's info (so in each of its sessions'): told of each committed change.
HEARERS = "pixelgate.consent.hearers"
# In a session's info: the (site, pseudonym) its open transaction changed.
CHANGED = "pixelgate.consent.changed"
Hearer = Callable[[str, str], None]  # (site, pseudonym)
# The writer's lookups, a Record's columns. The database writes record_id as the text a
# Record keeps, for less than Python would (SQLite stores it as 32 hex digits).
REGISTRIES_SQL = (
    "SELECT subject, purpose, granted, policy_version, record_id::text, expires_at, updated_at"
    " FROM consent_state WHERE site = $1 AND subject = ANY($2::text[])"
)
SQLITE_REGISTRIES_SQL = (
    "SELECT subject, purpose, granted, policy_version, substr(record_id, 1, 8) || '-' ||"
    " substr(record_id, 9, 4) || '-' || substr(record_id, 13, 4) || '-' ||"
    " substr(record_id, 17, 4) || '-' || substr(record_id, 21), expires_at, updated_at"
    " FROM consent_state WHERE site = ? AND subject IN ({})"
)


def _sqlite_time(value: str | None) -> datetime | None:
    """A timestamp as SQLAlchemy stores it on SQLite (UTC, without the zone), as UTCDateTime
    reads it."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class Proof(msgspec.Struct, frozen=True):
    """How a consent was collected; the IP is already truncated, the UA already a family."""

    source: str
    ip_prefix: str | None
    ua_family: str | None
    jurisdiction: str


async def _upsert_state(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    statement = dialect_insert(session)(ConsentState).values(rows)
    keys = ("site", "subject", "purpose")
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=keys,
            set_={c: statement.excluded[c] for c in rows[0] if c not in keys},
        )
    )


async def record(
    session: AsyncSession,
    *,
    site: str,
    subject: str,
    purposes: dict[str, bool],
    policy: Policy,
    proof: Proof,
    now: datetime,
    action: str | None = None,
) -> ConsentLedger:
    """Append to the ledger and make it the current state of each purpose named."""
    granted_ttls = [policy.file.purposes[p].consent_ttl_days for p, ok in purposes.items() if ok]
    await _announce(session, site, subject)
    entry = ConsentLedger(
        site=site,
        id=uuid.uuid4(),
        subject=subject,
        recorded_at=now,
        action=action or ("given" if any(purposes.values()) else "refused"),
        purposes=purposes,
        policy_version=policy.version,
        policy_sha256=policy.sha256,
        source=proof.source,
        ip_prefix=proof.ip_prefix,
        ua_family=proof.ua_family,
        jurisdiction=proof.jurisdiction,
        expires_at=now + timedelta(days=max(granted_ttls)) if granted_ttls else None,
    )
    session.add(entry)
    await session.flush()
    await _upsert_state(
        session,
        [
            {
                "site": site,
                "subject": subject,
                "purpose": purpose,
                "granted": granted,
                "policy_version": policy.version,
                "record_id": entry.id,
                "updated_at": now,
                "expires_at": (
                    now + timedelta(days=policy.file.purposes[purpose].consent_ttl_days)
                    if granted
                    else None
                ),
            }
            for purpose, granted in purposes.items()
        ],
    )
    return entry


async def withdraw(
    session: AsyncSession, *, site: str, subject: str, policy: Policy, proof: Proof, now: datetime
) -> ConsentLedger:
    """Withdraw every purpose at once, as easy as giving consent: the policy's, and any the
    subject still holds from an earlier version of it."""
    held = {row.purpose for row in await current(session, site, subject)}
    return await record(
        session,
        site=site,
        subject=subject,
        purposes=dict.fromkeys(sorted(set(policy.file.purposes) | held), False),
        policy=policy,
        proof=proof,
        now=now,
        action="withdrawn",
    )


async def current(session: AsyncSession, site: str, subject: str) -> list[ConsentState]:
    rows = await session.scalars(
        select(ConsentState)
        .where(ConsentState.site == site, ConsentState.subject == subject)
        .order_by(ConsentState.purpose)
    )
    return list(rows)


def as_record(row: ConsentState) -> Record:
    return Record(
        granted=row.granted,
        policy_version=row.policy_version,
        record_id=str(row.record_id),
        expires_at=row.expires_at,
        updated_at=row.updated_at,
    )


async def registry(session: AsyncSession, site: str, subject: str) -> dict[str, Record]:
    """What the decision needs, per purpose."""
    return (await registries(session, [(site, subject)])).get((site, subject), {})


async def registries(
    session: AsyncSession, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Record]]:
    """The registries of many (site, subject) pairs: one query per site, by its key's index
    (a row-value `IN` of pairs makes SQLite scan the table and PostgreSQL plan for long)."""
    found: dict[tuple[str, str], dict[str, Record]] = {}
    by_site: dict[str, list[str]] = {}
    for site, subject in keys:
        by_site.setdefault(site, []).append(subject)
    postgres = session.get_bind().dialect.name == "postgresql"
    for site, subjects in by_site.items():
        # The driver's own statements: SQLAlchemy's per-value processing of thousands of
        # parameters and rows costs more than the query.
        rows: Iterable[Sequence[Any]]
        if postgres:
            # asyncpg, with one array parameter: a thousand-entry IN list costs more to plan.
            driver = await driver_connection(session)
            rows = await driver.fetch(REGISTRIES_SQL, site, subjects)
        else:
            connection = await session.connection()
            statement = SQLITE_REGISTRIES_SQL.format(", ".join("?" * len(subjects)))
            rows = await connection.exec_driver_sql(statement, (site, *subjects))
        for subject, purpose, granted, version, record_id, expires_at, updated_at in rows:
            if not postgres:  # SQLite gives 0/1 and text
                granted = bool(granted)
                expires_at, updated_at = _sqlite_time(expires_at), _sqlite_time(updated_at)
            found.setdefault((site, subject), {})[purpose] = Record(
                granted, version, record_id, expires_at, updated_at
            )
    return found


async def erase(session: AsyncSession, site: str, subject: str) -> dict[str, int]:
    """Delete everything of consent kept under the pseudonym (its state, its ledger, and the
    announcements of its earlier changes, which name it) and announce the erasure. Returns
    how many rows of state and of ledger went."""
    counts = {}
    for name, table in (("consent_state", ConsentState), ("consent_ledger", ConsentLedger)):
        result = await session.execute(
            delete(table).where(table.site == site, table.subject == subject)
        )
        counts[name] = int(getattr(result, "rowcount", 0))
    await session.execute(
        delete(ConsentChange).where(ConsentChange.site == site, ConsentChange.subject == subject)
    )
    await _announce(session, site, subject, erasure=True)
    return counts


def hear_changes(sessions: async_sessionmaker[AsyncSession], hearer: Hearer) -> None:
    """Have `hearer(site, pseudonym)` called when a session of `sessions` commits a change
    to that subject's consent (a record, a withdrawal, an erasure); never for one rolled
    back. The hearers live in the sessionmaker's info, which each session it opens copies."""
    info = sessions.kw.setdefault("info", {})
    info.setdefault(HEARERS, []).append(hearer)


async def _announce(
    session: AsyncSession, site: str, subject: str, *, erasure: bool = False
) -> None:
    """Tell every process (at commit) to forget this subject's cached consent: others by
    NOTIFY on PostgreSQL or a consent_changes row on SQLite, this one through its hearers.
    The row of an `erasure` names the site only: nothing under the pseudonym may outlive it."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{site}:{subject}"},
        )
    else:
        await session.execute(
            insert(ConsentChange).values(
                site=site, subject=None if erasure else subject, changed_at=datetime.now(UTC)
            )
        )
    if not session.info.get(HEARERS):
        return  # nobody in this process listens (`pixelgate jobs run`, a test)
    sync_session = session.sync_session
    if not event.contains(sync_session, "after_commit", _committed):
        event.listen(sync_session, "after_commit", _committed)
        event.listen(sync_session, "after_transaction_end", _ended)
    session.info.setdefault(CHANGED, []).append((site, subject))


def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: nothing is out before the transaction commits
    for site, subject in session.info.pop(CHANGED, ()):
        for hearer in session.info[HEARERS]:
            hearer(site, subject)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    """Forget what a transaction changed once it is over, committed (and told) or not. A
    savepoint rolled back leaves its changes listed: at worst a cache reloads a subject."""
    if transaction.parent is None:
        session.info.pop(CHANGED, None)


async def changes_after(
    session: AsyncSession, last: int | None
) -> tuple[int, list[tuple[str, str | None]]]:
    """The (site, subject) of each consent_changes row after row `last`, in order, and the
    id of the latest row; for `last` None, only that id (where a reader starts)."""
    if last is None:
        return await session.scalar(select(func.max(ConsentChange.id))) or 0, []
    rows = (
        await session.execute(
            select(ConsentChange.id, ConsentChange.site, ConsentChange.subject)
            .where(ConsentChange.id > last)
            .order_by(ConsentChange.id)
        )
    ).all()
    return (rows[-1].id if rows else last), [(row.site, row.subject) for row in rows]


Moment = tuple[str, str, datetime]  # (site, pseudonym, when)


async def registries_at(
    session: AsyncSession, moments: Iterable[Moment]
) -> dict[Moment, dict[str, Record]]:
    """The registries as they were at these moments, rebuilt from the ledger: for each
    purpose, the latest entry recorded at or before the moment that names it, as record()
    made it the current state then. One query per site (and 500 subjects)."""
    wanted: dict[str, dict[str, list[datetime]]] = {}
    for site, subject, at in moments:
        wanted.setdefault(site, {}).setdefault(subject, []).append(at)
    found: dict[Moment, dict[str, Record]] = {}
    for site, by_subject in wanted.items():
        subjects = sorted(by_subject)
        latest = max(at for times in by_subject.values() for at in times)
        entries: dict[str, list[ConsentLedger]] = {}
        for start in range(0, len(subjects), 500):
            rows = await session.scalars(
                select(ConsentLedger)
                .where(
                    ConsentLedger.site == site,
                    ConsentLedger.subject.in_(subjects[start : start + 500]),
                    ConsentLedger.recorded_at <= latest,
                )
                .order_by(ConsentLedger.recorded_at, ConsentLedger.id)
            )
            for entry in rows:
                entries.setdefault(entry.subject, []).append(entry)
        for subject, times in by_subject.items():
            for at in times:
                registry: dict[str, Record] = {}
                for entry in entries.get(subject, []):
                    if entry.recorded_at > at:
                        break
                    registry.update(_as_recorded(entry))
                found[(site, subject, at)] = registry
    return found


def _as_recorded(entry: ConsentLedger) -> dict[str, Record]:
    """The current state record() made of a ledger entry. A grant is given the entry's
    expiry: decide() shortens it to the purpose's own lifetime, as record() did."""
    return {
        purpose: Record(
            granted=bool(granted),
            policy_version=entry.policy_version,
            record_id=str(entry.id),
            expires_at=entry.expires_at if granted else None,
            updated_at=entry.recorded_at,
        )
        for purpose, granted in entry.purposes.items()
    }


async def history(session: AsyncSession, site: str, subject: str) -> list[ConsentLedger]:
    rows = await session.scalars(
        select(ConsentLedger)
        .where(ConsentLedger.site == site, ConsentLedger.subject == subject)
        .order_by(ConsentLedger.recorded_at, ConsentLedger.id)
    )
    return list(rows)


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
