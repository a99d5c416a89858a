"""Last-touch attribution (SPEC §4.8), as SQL over events: what the reports group and filter
by, and what retention keeps in a rollup row.

- A hit's influencer is its `utm_source` when the site named that influencer on a campaign
  or link (a tracked link's redirect, and its click, carry it there).
- A subject's visit or conversion that carries neither a campaign nor an influencer of its own
  is credited to the campaign and influencer of their last click within the policy's
  attribution window (last touch). Other hits, and hits without a subject, count what they
  carry themselves.

Only raw clicks can be found: once retention purged the click, a later visit still raw counts
what it carries, before and after its own day is rolled up."""

import uuid
from bisect import bisect_right, insort
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Interval, and_, case, func, literal, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.base.tables import Campaign, Event, Link

CLICK = "click"  # the kind a tracked link records, which visits are credited to
CREDITED_KINDS = ("pageview", "conversion")
MAX_ID = uuid.UUID(int=(1 << 128) - 1)
Influencers = frozenset[str]


async def influencers(session: AsyncSession, site: str) -> Influencers:
    """The influencers the site named on its campaigns and links."""
    named = union(
        select(Campaign.influencer).where(Campaign.site == site),
        select(Link.influencer).where(Link.site == site),
    )
    return frozenset(value for value in await session.scalars(named) if value)


def influencer_of(utm_source: Any, known: Influencers) -> Any:
    """In Python for a value, in SQL for a column or expression."""
    if utm_source is None or isinstance(utm_source, str):
        return utm_source if utm_source in known else None
    return case((utm_source.in_(sorted(known)), utm_source), else_=None)


def _days_before(session: AsyncSession, moment: Any, days: int) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return moment - literal(timedelta(days=days), Interval())
    return func.strftime("%Y-%m-%d %H:%M:%f", moment, f"-{days} days")


def _last_click(session: AsyncSession, column: str, days: int) -> Any:
    """The column of the hit's subject's last click within `days` before it."""
    click = aliased(Event, name="last_click")
    return (
        select(getattr(click, column))
        .where(
            click.site == Event.site,
            click.kind == CLICK,
            click.subject == Event.subject,
            click.occurred_at <= Event.occurred_at,
            click.occurred_at >= _days_before(session, Event.occurred_at, days),
        )
        .order_by(click.occurred_at.desc(), click.id.desc())  # one answer for a tie
        .limit(1)
        .correlate(Event)
        .scalar_subquery()
    )


def _credited(known: Influencers) -> Any:
    """A subject's visit or conversion that carries neither a campaign nor an influencer of
    its own: its own would be a later touch than any click."""
    return and_(
        Event.campaign.is_(None),
        influencer_of(Event.utm_source, known).is_(None),
        Event.subject.is_not(None),
        Event.kind.in_(CREDITED_KINDS),
    )


def credited_campaign(session: AsyncSession, days: int, known: Influencers) -> ColumnElement[Any]:
    last = _last_click(session, "campaign", days)
    return case((_credited(known), last), else_=Event.campaign)


def credited_influencer(session: AsyncSession, days: int, known: Influencers) -> ColumnElement[Any]:
    last = influencer_of(_last_click(session, "utm_source", days), known)
    return case((_credited(known), last), else_=influencer_of(Event.utm_source, known))


class Click(NamedTuple):
    occurred_at: datetime
    id: uuid.UUID
    campaign: str | None
    utm_source: str | None


class LastClicks:
    """The same last touch in Python, for a pass over a site's events in time order: each
    day's clicks are added before its hits are credited (`add`, then `credited`)."""

    def __init__(self, known: Influencers, days: int) -> None:
        self.known, self.window = known, timedelta(days=days)
        self._by_subject: dict[str, list[Click]] = defaultdict(list)

    def add(self, subject: str, click: Click) -> None:
        insort(self._by_subject[subject], click)

    def credited(
        self, kind: str, subject: str | None, at: datetime, campaign: str | None, source: str | None
    ) -> tuple[str | None, str | None]:
        """The hit's (campaign, influencer)."""
        influencer = influencer_of(source, self.known)
        if campaign is not None or influencer is not None or subject is None:
            return campaign, influencer
        if kind not in CREDITED_KINDS:
            return None, None
        clicks = self._by_subject.get(subject, [])
        # The last click at or before `at` (ties by id, as the SQL orders them).
        index = bisect_right(clicks, (at, MAX_ID)) - 1
        if index < 0 or clicks[index].occurred_at < at - self.window:
            return None, None
        last = clicks[index]
        return last.campaign, influencer_of(last.utm_source, self.known)
