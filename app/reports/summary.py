"""The summary report (SPEC §4.8). Days whose raw events retention purged are read from the
rollups, the rest from the events themselves, so a purge changes no figure.

`subjects` counts distinct subjects per day, kind and campaign, summed over the period: the
finest figure that anonymous daily rollups can keep, computed the same way from raw events."""

from datetime import UTC, date, datetime, time, timedelta

import msgspec
from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.db import day_of
from app.base.tables import Event, RollupDaily


class Summary(msgspec.Struct):
    hits: int
    subjects: int
    by_kind: dict[str, int]


async def summary_of(
    session: AsyncSession,
    site: str,
    first: date,
    last: date,
    kind: str | None = None,
    campaign: str | None = None,
) -> Summary:
    rolled = select(RollupDaily.kind, RollupDaily.hits, RollupDaily.subjects).where(
        RollupDaily.site == site, RollupDaily.day >= first, RollupDaily.day <= last
    )
    if kind is not None:
        rolled = rolled.where(RollupDaily.kind == kind)
    if campaign is not None:
        rolled = rolled.where(RollupDaily.campaign == campaign)
    day = day_of(session, Event.occurred_at)
    # Raw events of a day already rolled up (a purge under way) are counted there, not here.
    rolled_up = exists().where(
        and_(RollupDaily.site == Event.site, RollupDaily.day == day, RollupDaily.kind == Event.kind)
    )
    raw = (
        select(Event.kind, func.count(), func.count(Event.subject.distinct()))
        .where(
            Event.site == site,
            Event.occurred_at >= datetime.combine(first, time(), tzinfo=UTC),
            Event.occurred_at < datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC),
            ~rolled_up,
        )
        .group_by(day, Event.kind, Event.campaign)
    )
    if kind is not None:
        raw = raw.where(Event.kind == kind)
    if campaign is not None:
        raw = raw.where(Event.campaign == campaign)
    hits, subjects, by_kind = 0, 0, dict[str, int]()
    for row_kind, row_hits, row_subjects in [
        *await session.execute(rolled),
        *await session.execute(raw),
    ]:
        hits += row_hits
        subjects += row_subjects
        by_kind[row_kind] = by_kind.get(row_kind, 0) + row_hits
    return Summary(hits=hits, subjects=subjects, by_kind=dict(sorted(by_kind.items())))
