"""How many of a site's people allow each purpose now: the dashboard's consent rates.

Counted over the consent registry's current state: a person who allowed a purpose and whose
consent has not expired counts as granted; one who refused, withdrew or let it expire, as not.
A refusal made before any id was minted (the banner's first "Reject all") leaves no record,
so it is not counted: the rate is among the people the registry knows."""

from datetime import datetime

import msgspec
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from consent.tables import ConsentState


class PurposeRate(msgspec.Struct):
    purpose: str
    granted: int
    not_granted: int
    rate: float | None  # granted / (granted + not_granted)


class ConsentRates(msgspec.Struct):
    purposes: list[PurposeRate]
    # Fewer people than reports.min_subjects: every count is withheld (0).
    suppressed: bool = False


async def consent_rates(
    session: AsyncSession, site: str, purposes: list[str], now: datetime, min_subjects: int
) -> ConsentRates:
    live = and_(
        ConsentState.granted,
        or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > now),
    )
    counted = await session.execute(
        select(
            ConsentState.purpose,
            func.sum(case((live, 1), else_=0)),
            func.count(),
        )
        .where(ConsentState.site == site)
        .group_by(ConsentState.purpose)
    )
    found = {purpose: (int(granted or 0), int(total)) for purpose, granted, total in counted}
    people = await session.scalar(
        select(func.count(ConsentState.subject.distinct())).where(ConsentState.site == site)
    )
    suppressed = 0 < (people or 0) < min_subjects
    rates = []
    for purpose in purposes:
        granted, total = (0, 0) if suppressed else found.get(purpose, (0, 0))
        rate = round(granted / total, 4) if total else None
        rates.append(PurposeRate(purpose, granted, total - granted, rate))
    return ConsentRates(rates, suppressed)
