"""What the steps make of a hit: the row to store (EventRow), the signals seen, and the
pending hit that waits for its consent decision."""

import uuid
from typing import Any

import msgspec

from app.base.event_fields import EventFields
from consent.decide import Signals


class EventRow(EventFields, kw_only=True, gc=False):
    """An event as stored: pseudonymised and reduced."""

    site: str
    id: uuid.UUID
    subject: str | None


class RestrictionSeen(msgspec.Struct, gc=False):
    purpose: int
    type: str  # not_allowed, require_consent, require_li


class VendorSeen(msgspec.Struct, gc=False):
    """What the string says of the vendor the policy names (`[tcf] vendor_id`)."""

    id: int
    consent: bool
    legitimate_interest: bool
    restrictions: list[RestrictionSeen]


class PublisherSeen(msgspec.Struct, gc=False):
    """The Publisher TC segment: what decides for a first party (`vendor_id = 0`)."""

    purposes_consent: list[int]
    purposes_li: list[int]
    custom_consent: list[int]
    custom_li: list[int]


class TCFSeen(msgspec.Struct, gc=False):
    valid: bool
    error: str | None = None
    cmp_id: int | None = None
    purposes_consent: list[int] = []
    purposes_li: list[int] = []
    vendor_consents: int = 0  # how many vendors have consent
    vendor: VendorSeen | None = None  # None in first-party mode
    publisher: PublisherSeen | None = None  # None when the string has no such segment
    # An invalid string: every field read before it failed (all of them when a TCF 2.2 rule
    # refused it), vendor sets as counts.
    read: dict[str, Any] | None = None


class SignalsSeen(msgspec.Struct, gc=False):
    gpc: bool
    dnt: bool
    gdpr_applies: bool
    tcf: TCFSeen | None
    jurisdiction: str


class Pending(msgspec.Struct, gc=False):
    """A hit reduced and pseudonymised, its consent not decided yet. Safe to keep or spool."""

    policy: str
    event: EventRow  # basis still empty
    signals: Signals
    seen: SignalsSeen
    from_link: bool = False  # Hit.from_link
