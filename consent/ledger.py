"""A ledger entry as the world sees it: in a subject's consent history and in their export."""

import uuid
from datetime import datetime

import msgspec

from consent.tables import ConsentLedger


class LedgerEntry(msgspec.Struct):
    id: uuid.UUID  # what an event's basis "consent:<id>" names
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


def entries(rows: list[ConsentLedger]) -> list[LedgerEntry]:
    return [msgspec.convert(row, LedgerEntry, from_attributes=True) for row in rows]
