"""How many of a site's people allow each purpose now: the dashboard's consent rates.

Counted over the consent registry's current state: a person whose consent to a purpose is live
counts as granted; one who refused, withdrew, let it expire or gave it under a voided policy
version, as not.
A refusal made before any id was minted (the banner's first "Reject all") leaves no record,
so it is not counted: the rate is among the people the registry knows."""

from datetime import datetime, timedelta

import msgspec
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from consent.policy import Policy
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
    session: AsyncSession, site: str, policy: Policy, now: datetime
) -> ConsentRates:
    """Live as the pixel's decision judges it (consent.decide): granted, not expired (by the
    record's expiry or the policy's consent_ttl_days, whichever ends first), and given under
    the current version where a new version voids earlier ones."""
    rates = []
    people = await session.scalar(
        select(func.count(ConsentState.subject.distinct())).where(ConsentState.site == site)
    )
    suppressed = 0 < (people or 0) < policy.file.reports.min_subjects
    for purpose, rules in policy.file.purposes.items():
        live = and_(
            ConsentState.granted,
            or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > now),
            or_(
                ConsentState.updated_at.is_(None),
                ConsentState.updated_at > now - timedelta(days=rules.consent_ttl_days),
            ),
        )
        if policy.file.reconsent_on_change:
            live = and_(live, ConsentState.policy_version == policy.version)
        granted, total = (
            await session.execute(
                select(func.sum(case((live, 1), else_=0)), func.count()).where(
                    ConsentState.site == site, ConsentState.purpose == purpose
                )
            )
        ).one()
        granted, total = (0, 0) if suppressed else (int(granted or 0), int(total))
        rate = round(granted / total, 4) if total else None
        rates.append(PurposeRate(purpose, granted, total - granted, rate))
    return ConsentRates(rates, suppressed)
