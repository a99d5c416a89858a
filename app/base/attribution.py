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

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, and_, case, func, literal, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.base.tables import Campaign, Event, Link

CREDITED_KINDS = ("pageview", "conversion")
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
            click.kind == "click",
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
