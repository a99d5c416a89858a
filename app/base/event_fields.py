"""What an event is made of, defined once: the hit path, the beacon and events API bodies, the
rollups, the reports and the data subject's export all take their fields from here."""

from datetime import datetime
from decimal import Decimal

import msgspec


class Utm(msgspec.Struct, kw_only=True):
    """The utm parameters a link or page URL carries."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


class Attribution(Utm, kw_only=True):
    """Where a hit came from: its campaign and utm parameters."""

    campaign: str | None = None


UTM_FIELDS: tuple[str, ...] = Utm.__struct_fields__
ATTRIBUTION_FIELDS = ("campaign", *UTM_FIELDS)


class EventFields(Attribution, kw_only=True):
    """An event as stored, but for whose it is (site, row id, pseudonym): what a data
    subject's export shows of each of their events."""

    occurred_at: datetime
    kind: str
    page: str | None
    referrer: str | None  # the referring host
    device: str
    browser: str
    os: str
    jurisdiction: str
    value: Decimal | None
    currency: str | None
    machine: bool  # opened by a mail image proxy, not by the person
    basis: dict[str, str]  # the legal basis it was recorded under, per purpose


# The fields a rollup keeps per day beside the kind (retention.jobs): what reports break down by.
DIMENSIONS = ("page", *ATTRIBUTION_FIELDS, "referrer", "device", "browser", "os", "machine")
