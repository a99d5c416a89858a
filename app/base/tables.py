"""Tables owned by tracking: sites, API keys, events; and what text any column can hold."""

import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import text

from app.base.db import Base, UTCDateTime

# PostgreSQL refuses NUL in text, UTF-8 has no lone surrogates, and no other C0 control but
# tab belongs in a label or a path.
_UNSTORABLE = re.compile("[\x00-\x08\x0a-\x1f\ud800-\udfff]")


def is_storable(text: str) -> bool:
    """Whether text can be stored as it is, in any column, on both databases."""
    return _UNSTORABLE.search(text) is None


class Site(Base):
    __tablename__ = "sites"

    slug: Mapped[str] = mapped_column(String(63), primary_key=True)
    policy: Mapped[str] = mapped_column(String(64))
    origins: Mapped[list[str]] = mapped_column(JSON)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The controller of the processing on this site (Kantara Consent Receipt v1.1 fields).
    controller: Mapped[str | None] = mapped_column(String(200), nullable=True)
    contact_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(50), nullable=True)
    homepage: Mapped[str | None] = mapped_column(String(2048), nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    # HMAC of the key under a derived key: the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Event(Base):
    """One recorded hit. Never a raw identifier: subject is a pseudonym, the rest is reduced."""

    __tablename__ = "events"
    __table_args__ = (
        # access and erasure requests find a subject's events by it (migration 0006)
        Index("ix_events_subject", "subject", postgresql_using="hash"),
        # what retention and reports select by: one site's kind, before or within a time
        Index("ix_events_site_kind_time", "site", "kind", "occurred_at"),
        # a subject's last click, which reports credit their visits to (migration 0011)
        Index(
            "ix_events_clicks_by_subject",
            "site",
            "subject",
            "occurred_at",
            postgresql_where=text("kind = 'click'"),
            sqlite_where=text("kind = 'click'"),
        ),
    )

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    # occurred_at in the key so that PostgreSQL can partition events by month.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    page: Mapped[str | None] = mapped_column(String(512), nullable=True)
    campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_term: Mapped[str | None] = mapped_column(String(128), nullable=True)
    referrer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device: Mapped[str] = mapped_column(String(16))
    browser: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(64))
    jurisdiction: Mapped[str] = mapped_column(String(16))
    value: Mapped[Decimal | None] = mapped_column(Numeric(18, 4), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    machine: Mapped[bool] = mapped_column(Boolean)
    # per purpose: what allowed it, e.g. {"analytics": "consent:<ledger id>"}
    basis: Mapped[dict[str, Any]] = mapped_column(JSON)


class Campaign(Base):
    __tablename__ = "campaigns"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    influencer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sends: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Link(Base):
    """A tracked link: /l/{code} records a click and redirects to the stored destination only."""

    __tablename__ = "links"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(2048))
    campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    influencer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("uq_links_code", "code", unique=True),)


class DsarRequest(Base):
    """A data subject request and, once done, its audit record: the pseudonym is kept only
    while the request is open; after that only a separately keyed hash of it remains."""

    __tablename__ = "dsar_requests"
    __table_args__ = (
        Index("ix_dsar_requests_status", "status", "received_at"),
        Index("ix_dsar_requests_subject_hash", "site", "subject_hash"),
    )

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))  # access | erasure | opt_out
    regulation: Mapped[str] = mapped_column(String(8))  # gdpr | ccpa
    status: Mapped[str] = mapped_column(String(16))  # pending | in_progress | completed | rejected
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    export_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DsarExport(Base):
    """An access request's export document, kept until it expires (or the subject is erased)."""

    __tablename__ = "dsar_exports"
    __table_args__ = (Index("ix_dsar_exports_subject_hash", "site", "subject_hash"),)

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subject_hash: Mapped[str] = mapped_column(String(64))
    document: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RollupDaily(Base):
    """Anonymous daily totals of purged events, per kind and campaign ("" for none): what the
    reports read for days whose raw events retention has removed."""

    __tablename__ = "rollup_daily"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(128), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger)
    subjects: Mapped[int] = mapped_column(BigInteger)  # distinct, within this row


class RollupDetail(Base):
    """Anonymous daily aggregates by every reported dimension; `n` numbers the rows of one
    (site, day, kind), which is rolled up exactly once."""

    __tablename__ = "rollup_detail"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    page: Mapped[str | None] = mapped_column(String(512), nullable=True)
    campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(128), nullable=True)
    utm_term: Mapped[str | None] = mapped_column(String(128), nullable=True)
    referrer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device: Mapped[str] = mapped_column(String(16))
    browser: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(64))
    machine: Mapped[bool] = mapped_column(Boolean)
    hits: Mapped[int] = mapped_column(BigInteger)
    subjects: Mapped[int] = mapped_column(BigInteger)
    # Since migration 0010 (null in rows rolled up before it):
    hour: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)  # 0-23, UTC
    jurisdiction: Mapped[str | None] = mapped_column(String(16), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    anonymous_hits: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    value: Mapped[Decimal | None] = mapped_column(Numeric(24, 4), nullable=True)  # the sum
    sketch: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # app/base/sketches
    # Since migration 0011: `campaign` is the campaign credited (app/reports/cells.py), and
    # this the influencer credited, when the row was rolled up.
    influencer: Mapped[str | None] = mapped_column(String(128), nullable=True)


class EventId(Base):
    """The event_id of a server-side event written in the last days (SPEC §4.6): the same id
    again within them is counted once. Retention forgets an id after a week (EVENT_ID_DAYS)."""

    __tablename__ = "event_ids"
    __table_args__ = (Index("ix_event_ids_seen_at", "seen_at"),)

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    # a keyed hash of the sender's id (app/http/events.py), never the id itself
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReportCell(Base):
    """Hits, values and the subjects (a bitmap of their numbers) of one day's or one whole
    month's events, grouped by one dimension: the aggregates reports read for days that no
    write has touched since they were built (retention/cells.py keeps them)."""

    __tablename__ = "report_cells"
    __table_args__ = (Index("ix_report_cells_read", "site", "dimension", "grain", "period"),)

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    grain: Mapped[str] = mapped_column(String(1), primary_key=True)  # "d"ay or "m"onth
    period: Mapped[date] = mapped_column(Date, primary_key=True)  # the day or the month's first
    n: Mapped[int] = mapped_column(Integer, primary_key=True)  # numbers the period's rows
    dimension: Mapped[str] = mapped_column(String(16))  # "" for none, "page", "hour"...
    key: Mapped[str | None] = mapped_column(String(512), nullable=True)  # its value
    kind: Mapped[str] = mapped_column(String(32))
    # Credited campaign and influencer, and machine opens: only in the rows of the dimensions
    # that reports filter by them (retention/cells.py SPLIT); null in the others.
    campaign: Mapped[str | None] = mapped_column(String(128), nullable=True)
    influencer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    machine: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    hits: Mapped[int] = mapped_column(BigInteger)
    anonymous_hits: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[Decimal | None] = mapped_column(Numeric(24, 4), nullable=True)  # the sum
    members: Mapped[bytes] = mapped_column(LargeBinary)  # a serialized Roaring bitmap


class ReportDirty(Base):
    """A day of a site whose events changed since its report cells were built: reports count
    it from raw events until it is built again. Every write sets a new random `mark`, so a
    build removes the row only if no write came while it ran."""

    __tablename__ = "report_dirty"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mark: Mapped[int] = mapped_column(BigInteger)


class SubjectNumber(Base):
    """A small number per pseudonym, for the report cells' bitmaps. Deleted with an erasure,
    and by retention once no raw event of the subject is left: the bitmaps' numbers are then
    nobody's."""

    __tablename__ = "subject_numbers"
    __table_args__ = (Index("ux_subject_numbers_number", "site", "number", unique=True),)

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
