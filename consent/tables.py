"""Consent tables: the append-only ledger (proof), the current state (fast lookup), signing keys."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, PrimaryKeyConstraint, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.base.db import Base, UTCDateTime


class ConsentLedger(Base):
    """Every consent given or withdrawn, never updated: the proof of consent (GDPR Art. 7(1))."""

    __tablename__ = "consent_ledger"
    __table_args__ = (Index("ix_consent_ledger_site_subject", "site", "subject", "recorded_at"),)

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(16))  # "given" | "withdrawn"
    purposes: Mapped[dict[str, Any]] = mapped_column(JSON)  # {purpose: granted}
    policy_version: Mapped[str] = mapped_column(String(64))
    policy_sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ua_family: Mapped[str | None] = mapped_column(String(128), nullable=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# What the pixel's consent lookup reads besides the key (consent.store.REGISTRIES_SQL).
HOT_PATH_READS = ["granted", "policy_version", "record_id", "expires_at", "updated_at"]


class ConsentState(Base):
    """The latest decision per (site, subject, purpose); the pixel reads only this."""

    __tablename__ = "consent_state"
    __table_args__ = (
        # On PostgreSQL the key's index also holds what the hot path reads (migration 0005):
        # a lookup is answered from the index alone.
        PrimaryKeyConstraint(
            "site",
            "subject",
            "purpose",
            name="pk_consent_state",
            postgresql_include=HOT_PATH_READS,
        ),
    )

    site: Mapped[str] = mapped_column(String(63))
    subject: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    policy_version: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set by the retention job once a grant has lapsed (the pixel goes by expires_at anyway).
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConsentChange(Base):
    """A consent change, announced to every process on SQLite, which has no LISTEN/NOTIFY
    (PostgreSQL leaves this empty): a writer reads the rows after the last one it saw before
    each batch and forgets those subjects (consent.cache). Purged after a day.

    The only table whose key is not the site's: readers follow one sequence, in commit
    order. AUTOINCREMENT, so that an id is never reused once the purge has emptied it."""

    __tablename__ = "consent_changes"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(63))
    # None: an erasure, which the row names by its site alone (the pseudonym must not
    # outlive it); readers then forget every subject of the site.
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReceiptKey(Base):
    """Public halves of every receipt-signing key ever used, so old receipts keep verifying."""

    __tablename__ = "receipt_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Audience(Base):
    """A retargeting audience: a rule over a site's recent hits (consent.audiences). Its
    members are found when asked, never stored: a withdrawal removes one at once."""

    __tablename__ = "audiences"

    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
