"""`pixelgate demo`: site `demo` (policy gdpr-exempt) with 30 days of a small shoe shop, as its
visitors' choices and hits would have left them: consents given, refused (no record) and given
with Global Privacy Control on; page views from a few sources, anonymous ones of the people
who refused (counted as the CNIL exemption allows); a weekly newsletter with its sends and
opens, image proxies among them; two influencers' tracked links with their clicks, and the
conversions that followed. Then a read key, printed once with the dashboard's URL.

The choices and hits are drawn from a seeded generator, so every demo has the same shape; the
visitor ids, event ids and link codes are random, as in a real shop."""

import random
import secrets
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.base.keys import KeyRing
from app.base.sites import create_site
from app.base.tables import Campaign, Link, Site
from app.hits.event import EventRow
from app.hits.writer import write_events
from app.http.auth import create_key
from consent import store
from consent.decide import GPC_SEEN
from consent.policy import Policy, jurisdictions
from consent.tables import Audience

SITE = "demo"
POLICY = "gdpr-exempt"
DAYS = 30
VISITORS = 240
PAGES = (["/", "/shoes", "/shoes/trail-runner", "/shoes/city-walker", "/hats", "/cart"],
         [30, 20, 15, 12, 8, 15])  # fmt: skip
SOURCES = ([None, "google", "newsletter", "instagram"], [50, 25, 10, 15])
Agent = tuple[str, str, str]  # device class, browser family, OS family
AGENTS: list[Agent] = [
    ("desktop", "Firefox", "Linux"),
    ("desktop", "Chrome", "Windows"),
    ("mobile", "Safari", "iOS"),
    ("mobile", "Chrome", "Android"),
]
NEWSLETTER = "newsletter-weekly"
INFLUENCERS = {"ana": "spring-ana", "bo": "spring-bo"}  # influencer -> their campaign
PRICES = ["49.00", "79.00", "19.90", "-19.90"]  # the last: a refund


class DemoOut(msgspec.Struct):
    site: str
    read_key: str
    dashboard: str
    shop: str


class DemoExists(Exception):
    """The demo site was made before: nothing is added to it."""


def _proof(rng: random.Random) -> store.Proof:
    """As the banner's request would leave it: a documentation prefix, an agent family."""
    family = rng.choice(["Firefox / Linux", "Safari / iOS", "Chrome / Android"])
    return store.Proof(
        source="banner", ip_prefix="192.0.2.0/24", ua_family=family, jurisdiction="eu"
    )


def _event(
    at: datetime, kind: str, subject: str | None, agent: Agent = AGENTS[0], **fields: object
) -> EventRow:
    device, browser, os = agent
    values: dict[str, object] = {
        "site": SITE, "occurred_at": at, "id": uuid.uuid4(), "kind": kind, "subject": subject,
        "page": None, "campaign": None, "utm_source": None, "utm_medium": None,
        "utm_campaign": None, "utm_content": None, "utm_term": None, "referrer": None,
        "device": device, "browser": browser, "os": os, "jurisdiction": "eu", "value": None,
        "currency": None, "machine": False, "basis": {},
    }  # fmt: skip
    values.update(fields)
    return EventRow(**values)  # type: ignore[arg-type]


async def seed_demo(
    session: AsyncSession, keyring: KeyRing, policies: dict[str, Policy], now: datetime, base: str
) -> DemoOut:
    """Makes the demo site and its month; raises DemoExists if it is there already."""
    if await session.get(Site, SITE) is not None:
        raise DemoExists(f"site {SITE!r} exists already: its dashboard is {base}/dashboard/{SITE}")
    policy = policies[POLICY]
    rng = random.Random(20261203)
    start = now - timedelta(days=DAYS)
    # Its shop is served by pixelgate itself, opened as 127.0.0.1 or as localhost alike.
    origins = sorted({base, base.replace("//127.0.0.1:", "//localhost:")})
    await create_site(
        session, slug=SITE, policy=POLICY, policies=jurisdictions(policies), origins=origins,
        jurisdiction="eu", controller={"controller": "Demo Shoe Shop"}, now=start,
    )  # fmt: skip
    session.add(Campaign(site=SITE, id=NEWSLETTER, name="Weekly newsletter", channel="email",
                         influencer=None, sends=4 * VISITORS // 2, updated_at=start))  # fmt: skip
    for influencer, campaign in INFLUENCERS.items():
        session.add(Campaign(site=SITE, id=campaign, name=f"Spring with {influencer}",
                             channel="influencer", influencer=influencer, sends=None,
                             updated_at=start))  # fmt: skip
        session.add(Link(site=SITE, code=secrets.token_urlsafe(6), destination=f"{base}/demo",
                         campaign=campaign, influencer=influencer, created_at=start))  # fmt: skip
    rule = {"kinds": ["pageview"], "page_prefix": "/shoes", "within_days": 30, "min_hits": 2}
    session.add(Audience(site=SITE, id=secrets.token_hex(8), name="Shoe browsers", rule=rule,
                         created_at=start))  # fmt: skip
    events: list[EventRow] = []
    for _ in range(VISITORS):
        arrived = start + timedelta(seconds=rng.uniform(0, DAYS * 86_400 - 3_600))
        choice = rng.choices(["all", "analytics", "refused", "gpc"], [55, 20, 15, 10])[0]
        agent = rng.choices(AGENTS, [20, 30, 30, 20])[0]
        subject: str | None = None
        basis = {"analytics": f"anonymous_counting:{policy.name}@{policy.version}"}
        if choice != "refused":
            subject = keyring.pseudonym(SITE, secrets.token_urlsafe(16))
            purposes = {
                "analytics": True,
                "marketing": choice == "all",
                "email": choice != "analytics",
            }
            entry = await store.record(
                session, site=SITE, subject=subject, purposes=purposes, policy=policy,
                proof=_proof(rng), now=arrived,
            )  # fmt: skip
            basis = {p: f"consent:{entry.id}" for p, ok in purposes.items() if ok}
            if choice == "gpc":
                basis[GPC_SEEN] = "1"
        came_from: str | None = rng.choice([None, None, "ana", "bo"])
        moment = arrived
        if came_from and subject:
            campaign = INFLUENCERS[came_from]
            events.append(_event(moment, "click", subject, agent=agent, campaign=campaign,
                                 utm_source=came_from, utm_medium="influencer",
                                 utm_campaign=campaign, basis=basis))  # fmt: skip
        source = rng.choices(SOURCES[0], SOURCES[1])[0] if subject else None
        for visit in range(rng.randint(1, 8)):
            moment += timedelta(minutes=rng.uniform(1, 60 * 24 * (visit > 0)))
            if moment >= now:
                break
            page = rng.choices(PAGES[0], PAGES[1])[0]
            utm = {"utm_source": source, "utm_medium": "referral"} if source and not visit else {}
            events.append(_event(moment, "pageview", subject, agent=agent, page=page,
                                 basis=basis, **utm))  # fmt: skip
            if subject and page == "/cart" and rng.random() < 0.5:
                price = Decimal(rng.choice(PRICES))
                events.append(_event(moment + timedelta(minutes=2), "conversion", subject,
                                     agent=agent, page="/checkout", value=price,
                                     currency="EUR", basis=basis))  # fmt: skip
        if subject and choice != "analytics":
            for week in range(DAYS // 7):
                sent = start + timedelta(days=7 * week + 1, hours=8)
                if sent > arrived and rng.random() < 0.45:
                    machine = rng.random() < 0.3
                    opened = sent + timedelta(minutes=rng.uniform(5, 600))
                    events.append(_event(opened, "open", subject, page=f"newsletter-{week + 1}",
                                         campaign=NEWSLETTER, machine=machine,
                                         basis={"email": basis.get("email", "")}))  # fmt: skip
    events = sorted((e for e in events if e.occurred_at < now), key=lambda e: e.occurred_at)
    await write_events(session, events, window=policy.file.reports.attribution_window_days)
    key = await create_key(session, keyring, SITE, "read", now)
    return DemoOut(SITE, key.key, f"{base}/dashboard/{SITE}", f"{base}/demo")
