"""The campaign and influencer reports (SPEC §4.8), made of the cells of cells.py.

A campaign's opens are its e-mail opens by people; mail image proxies' opens are apart. Open
rate: unique human opens per send. Click-to-open rate: unique clicks per unique human open.
An influencer's visits and conversions are the ones credited to them (app/base/attribution)."""

from collections import defaultdict

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.attribution import influencers
from app.base.tables import Campaign
from app.reports.cells import Cell, Scope, cells, dimensions, distinct
from app.reports.traffic import revenue_of


class CampaignReport(msgspec.Struct):
    campaign: str
    sends: int | None  # as the campaign was last registered
    opens: int
    unique_opens: int
    open_rate: float | None
    machine_opens: int
    opens_by_hour: list[int]  # human opens by hour of the day, UTC
    clicks: int
    unique_clicks: int
    click_to_open_rate: float | None
    conversions: int
    revenue: dict[str, str]
    subjects_estimated: bool  # whether unique opens or clicks are estimates (purged days)
    # Fewer subjects than reports.min_subjects: every figure but sends is withheld.
    suppressed: bool = False


class InfluencerRow(msgspec.Struct):
    influencer: str
    clicks: int
    visits: int
    conversions: int
    revenue: dict[str, str]
    visit_rate: float | None  # visits per click
    conversion_rate: float | None  # conversions per click


class InfluencerReport(msgspec.Struct):
    rows: list[InfluencerRow]
    other: InfluencerRow | None  # influencers of fewer subjects than reports.min_subjects


def rate(part: int, whole: int | None) -> float | None:
    return round(part / whole, 4) if whole else None


async def campaign_report(session: AsyncSession, scope: Scope, campaign: str) -> CampaignReport:
    of = msgspec.structs.replace(scope, campaign=campaign)
    sends = await session.scalar(
        select(Campaign.sends).where(Campaign.site == scope.site, Campaign.id == campaign)
    )
    opens = await cells(session, msgspec.structs.replace(of, kind="open"), dimensions("machine"))
    clicks = await cells(session, msgspec.structs.replace(of, kind="click"), dimensions("kind"))
    sold = await cells(
        session, msgspec.structs.replace(of, kind="conversion"), dimensions("currency")
    )
    # The subjects of every figure shown, together (these cells' dimensions are split by
    # campaign, so each carries its subjects' numbers: their union is exact).
    shown = [*opens.by_key.values(), *clicks.by_key.values(), *sold.by_key.values()]
    if 0 < distinct(shown) < scope.min_subjects:
        withheld = [0] * 24
        return CampaignReport(
            campaign, sends, 0, 0, None, 0, withheld, 0, 0, None, 0, {}, False, suppressed=True
        )
    human = msgspec.structs.replace(of, kind="open", machine=False)
    by_hour = await cells(session, human, dimensions("hour"))
    unique_opens, unique_clicks = opens.get(False).subjects(), clicks.get("click").subjects()
    return CampaignReport(
        campaign=campaign,
        sends=sends,
        opens=opens.get(False).hits,
        unique_opens=unique_opens,
        open_rate=rate(unique_opens, sends),
        machine_opens=opens.get(True).hits,
        opens_by_hour=[by_hour.get(hour).hits for hour in range(24)],
        clicks=clicks.get("click").hits,
        unique_clicks=unique_clicks,
        click_to_open_rate=rate(unique_clicks, unique_opens),
        conversions=sum(cell.hits for cell in sold.by_key.values()),
        revenue=revenue_of(sold.by_key),
        subjects_estimated=opens.get(False).estimated or clicks.get("click").estimated,
    )


def _row(
    influencer: str, by_kind: dict[str, Cell], revenue: dict[str | None, Cell]
) -> InfluencerRow:
    clicks, visits = by_kind["click"].hits, by_kind["pageview"].hits
    conversions = by_kind["conversion"].hits
    return InfluencerRow(
        influencer=influencer,
        clicks=clicks,
        visits=visits,
        conversions=conversions,
        revenue=revenue_of(revenue),
        visit_rate=rate(visits, clicks),
        conversion_rate=rate(conversions, clicks),
    )


async def influencer_report(session: AsyncSession, scope: Scope) -> InfluencerReport:
    """Every influencer the site named, busy in the period or not, by clicks."""
    found = await cells(session, scope, dimensions("influencer", "kind"))
    by_kind: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for (influencer, kind), cell in found.by_key.items():
        if influencer is not None:
            by_kind[influencer][kind] = cell
    sold = msgspec.structs.replace(scope, kind="conversion")
    revenue: dict[str, dict[str | None, Cell]] = defaultdict(dict)
    for (influencer, currency), cell in (
        await cells(session, sold, dimensions("influencer", "currency"))
    ).by_key.items():
        if influencer is not None:
            revenue[influencer][currency] = cell
    subjects = await cells(session, scope, dimensions("influencer"))
    rows: list[InfluencerRow] = []
    other_kinds: dict[str, Cell] = defaultdict(Cell)
    other_revenue: dict[str | None, Cell] = defaultdict(Cell)
    for influencer in sorted(await influencers(session, scope.site) | set(by_kind)):
        if subjects.get(influencer).folded(scope.min_subjects):
            for kind, cell in by_kind[influencer].items():
                other_kinds[kind].add(cell)
            for currency, cell in revenue[influencer].items():
                other_revenue[currency].add(cell)
            continue
        rows.append(_row(influencer, by_kind[influencer], revenue[influencer]))
    rows.sort(key=lambda row: (-row.clicks, row.influencer))
    other = _row("(other)", other_kinds, other_revenue) if other_kinds else None
    return InfluencerReport(rows=rows, other=other)
