"""Retargeting audiences (SPEC §4.9): a site's rule over its recent hits, and the members: the
subjects the rule finds whose marketing purpose is allowed right now (live consent, or the
policy's default where it allows; not after a Global Privacy Control denial or an opt-out).

Nothing is stored per member: membership is decided when asked, so a withdrawal or an opt-out
removes a member at once and an erasure removes them from every audience."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.attribution import credited_campaign, credited_influencer, influencers
from app.base.tables import Event, is_storable
from consent.decide import GPC_SEEN, Signals, decide_purpose
from consent.policy import KIND_NAME, Policy
from consent.store import as_record
from consent.tables import ConsentLedger, ConsentState

MARKETING = "marketing"
OPT_OUT_SOURCE = "opt-out-request"  # what a CCPA opt-out request records (app/http/dsar.py)
GPC_SOURCE = "gpc"  # what a banner records when the browser sent Global Privacy Control
CHUNK = 5000  # subjects per IN list: far below either database's parameter limit

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
UtmField = Literal["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"]


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Subjects with at least `min_hits` hits in the last `within_days` days that match every
    condition given: one of the kinds, the page prefix, the (credited) campaign and
    influencer, the utm values."""

    kinds: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=KIND_NAME.pattern)]], msgspec.Meta(max_length=50)
    ] = msgspec.field(default_factory=list)
    page_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None
    campaign: Text | None = None
    influencer: Text | None = None
    utm: dict[UtmField, Text] = msgspec.field(default_factory=dict)
    within_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 30
    min_hits: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1

    def unstorable(self) -> str | None:
        """The first field holding text no column can, if any."""
        texts = {"page_prefix": self.page_prefix, "campaign": self.campaign}
        texts |= {"influencer": self.influencer, **{f"utm.{k}": v for k, v in self.utm.items()}}
        for name, value in texts.items():
            if value is not None and not is_storable(value):
                return name
        return None


class Excluded(msgspec.Struct):
    no_consent: int = 0
    gpc: int = 0
    opt_out: int = 0


class Members(msgspec.Struct):
    members: list[str]  # pseudonyms
    excluded: Excluded


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def found_by_rule(
    session: AsyncSession,
    site: str,
    rule: Rule,
    attribution_days: int,
    now: datetime,
    subjects: list[str] | None = None,
) -> list[str]:
    """The subjects (of `subjects`, if given) the rule finds, consent aside."""
    where: list[Any] = [
        Event.site == site,
        Event.subject.is_not(None),
        Event.occurred_at >= now - timedelta(days=rule.within_days),
        Event.occurred_at <= now,
    ]
    if rule.kinds:
        where.append(Event.kind.in_(rule.kinds))
    if rule.page_prefix is not None:
        where.append(Event.page.like(_like_prefix(rule.page_prefix), escape="\\"))
    known = await influencers(session, site)
    if rule.campaign is not None:
        where.append(credited_campaign(session, attribution_days, known) == rule.campaign)
    if rule.influencer is not None:
        where.append(credited_influencer(session, attribution_days, known) == rule.influencer)
    for name, value in rule.utm.items():
        where.append(getattr(Event, name) == value)
    query = select(Event.subject).where(*where).group_by(Event.subject)
    query = query.having(func.count() >= rule.min_hits)
    if subjects is None:
        return sorted(await session.scalars(query))
    found: list[str] = []
    for start in range(0, len(subjects), CHUNK):
        chunk = subjects[start : start + CHUNK]
        found += await session.scalars(query.where(Event.subject.in_(chunk)))
    return sorted(found)


async def _marketing_states(
    session: AsyncSession, site: str, subjects: list[str]
) -> dict[str, tuple[ConsentState, str]]:
    """Each subject's marketing state with the source of the choice that set it."""
    found: dict[str, tuple[ConsentState, str]] = {}
    for start in range(0, len(subjects), CHUNK):
        rows = await session.execute(
            select(ConsentState, ConsentLedger.source)
            .join(
                ConsentLedger,
                (ConsentLedger.site == ConsentState.site)
                & (ConsentLedger.id == ConsentState.record_id),
            )
            .where(
                ConsentState.site == site,
                ConsentState.purpose == MARKETING,
                ConsentState.subject.in_(subjects[start : start + CHUNK]),
            )
        )
        for state, source in rows:
            found[state.subject] = (state, source)
    return found


async def _as_last_seen(
    session: AsyncSession, site: str, subjects: list[str], since: datetime
) -> dict[str, tuple[str, bool]]:
    """Each subject's jurisdiction as of their last hit since `since`, and whether any of
    those hits came with Global Privacy Control."""
    gpc = func.max(case((Event.basis[GPC_SEEN].as_string().is_not(None), 1), else_=0))
    rows: list[Any] = []
    for start in range(0, len(subjects), CHUNK):
        rows += await session.execute(
            select(Event.subject, Event.jurisdiction, func.max(Event.occurred_at), gpc)
            .where(
                Event.site == site,
                Event.subject.in_(subjects[start : start + CHUNK]),
                Event.occurred_at >= since,
            )
            .group_by(Event.subject, Event.jurisdiction)
        )
    found: dict[str, tuple[str, bool]] = {}
    for subject, jurisdiction, _, sent_gpc in sorted(rows, key=lambda row: row[2]):
        found[subject] = (jurisdiction, bool(sent_gpc) or found.get(subject, ("", False))[1])
    return found


async def members(
    session: AsyncSession,
    site: str,
    rule: Rule,
    policy: Policy,
    jurisdiction: str,
    now: datetime,
    subjects: list[str] | None = None,
) -> Members:
    """The rule's subjects whose marketing purpose is allowed now, and why the rest are not.

    Each is decided in the jurisdiction of their last hit (`jurisdiction`, the site's, if it
    has none), and left out if any of their hits in the rule's window came with Global
    Privacy Control: a browser's GPC is an opt-out of the sale or sharing of its data."""
    attribution_days = policy.file.reports.attribution_window_days
    candidates = await found_by_rule(session, site, rule, attribution_days, now, subjects)
    states = await _marketing_states(session, site, candidates)
    seen = await _as_last_seen(session, site, candidates, now - timedelta(days=rule.within_days))
    found, excluded = [], Excluded()
    for subject in candidates:
        state, source = states.get(subject, (None, ""))
        where, sent_gpc = seen.get(subject, (jurisdiction, False))
        if MARKETING not in policy.file.purposes:
            allowed = False
        else:
            record = as_record(state) if state is not None else None
            decision = decide_purpose(policy, MARKETING, record, Signals(gpc=sent_gpc), where, now)
            allowed = decision.allowed
        if allowed:
            found.append(subject)
        elif source == OPT_OUT_SOURCE:
            excluded.opt_out += 1
        elif source == GPC_SOURCE or sent_gpc:
            excluded.gpc += 1
        else:
            excluded.no_consent += 1
    return Members(members=found, excluded=excluded)
