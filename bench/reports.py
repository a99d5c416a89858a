"""How fast are the reports on a big site? (issue 17)

    .venv/bin/python -m bench.reports [--events 10000000] [--days 400]
        [--database postgresql|sqlite] [--repeat 5] [--keep | --loaded URL]

What runs:

1. A throwaway database (PostgreSQL, or a SQLite file in a temp dir), migrated, with the
   monthly partitions for the span; one site under gdpr-strict with its campaigns named:
   the newsletter (with its sends) and the influencers' campaigns.
2. --events events for that site over the last --days days, oldest first, as a live site
   writes them: mostly page views (a few hundred pages, referrers, devices, campaigns with
   their utm_*), clicks on the campaigns' links, opens of the newsletter (some by image
   proxies), conversions with values; 200,000 subject pseudonyms. COPY on PostgreSQL, then
   VACUUM ANALYZE; big transactions on SQLite. The load time is printed, not measured.
3. The `reports` job's first run over every day (as after migration 0013), timed; then today
   marked dirty again, as the pixel's writes keep it: the reports count today's events raw.
4. Each report, through the functions the API calls (app.reports), on one session:
   - summary over the whole span;
   - breakdown by page over the whole span;
   - timeseries by day over the last 90 days;
   - the newsletter's campaign report over the last 90 days.
   "cold" is the first ask after the load and, on PostgreSQL, a restart of the server with
   the kernel's page cache dropped (when this process may: it needs root); "warm" is the
   median of --repeat more asks.

Targets: each report <= 300 ms warm and <= 2 s cold on PostgreSQL with 10,000,000 events over
400 days. On SQLite, the largest load that keeps the same targets is found by running with
smaller --events.

Needs PostgreSQL at PIXELGATE_TEST_PG (postgres@127.0.0.1:5432 by default, trust auth).
Every temp dir and database it made is removed on exit, Ctrl-C and errors included, unless
--keep prints its URL and keeps it: --loaded URL then measures that database
again without loading or building (the same day only: "today" is the load's).
"""

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from app.base.db import make_engine, make_sessionmaker, migrate, transaction, utcnow
from app.base.keys import KeyRing
from app.base.sites import create_site
from app.base.tables import Campaign
from app.reports import marketing, traffic
from app.reports.cells import Scope
from bench.lib import databases, harness
from bench.lib.events import (
    AGENTS,
    BASIS,
    CAMPAIGNS,
    PAGES,
    REFERRERS,
    ages_in_order,
    load_events,
)
from bench.lib.pixelgate import POLICIES, SECRET
from consent.policy import jurisdictions, load_policies
from retention import jobs, report_cells

SITE = "bench-reports"
SUBJECTS = 200_000
CHUNK = 50_000
NEWSLETTER = "newsletter-weekly"
TARGET_WARM, TARGET_COLD = 0.3, 2.0
# kind, weight: what a shop's hits are made of
KINDS = (["pageview", "click", "open", "conversion"], [80, 8, 9, 3])
NAMED = [  # the campaigns the site registers: id, channel, influencer, sends
    ("spring-sale", "influencer", "creator-ana", None),
    ("creator-ana", "influencer", "creator-ana", None),
    ("black-friday", "ads", None, None),
    (NEWSLETTER, "email", None, 50_000),
]


def event_chunks(count: int, days: int, now: datetime) -> Iterator[list[tuple[Any, ...]]]:
    """`count` events over the `days` before `now`, oldest first, CHUNK at a time."""
    rng = random.Random(20261203)
    keyring = KeyRing(SECRET)
    subjects = [keyring.pseudonym(SITE, f"s-{n}") for n in range(SUBJECTS)]
    for index, ages in enumerate(ages_in_order(rng, count, days * 86_400.0, CHUNK)):
        k = len(ages)
        kinds = rng.choices(KINDS[0], weights=KINDS[1], k=k)
        pages = rng.choices(PAGES[0], cum_weights=PAGES[1], k=k)
        campaigns = rng.choices(CAMPAIGNS[0], cum_weights=CAMPAIGNS[1], k=k)
        referrers = rng.choices(REFERRERS[0], cum_weights=REFERRERS[1], k=k)
        agents = rng.choices(AGENTS[0], cum_weights=AGENTS[1], k=k)
        who = rng.choices(subjects, k=k)
        rows = []
        for n in range(k):
            kind, page, attribution, machine = kinds[n], pages[n], campaigns[n], False
            value = currency = None
            if kind == "open":
                attribution = (NEWSLETTER, "newsletter", "email", "weekly", None, None)
                page, machine = f"newsletter-{index % 60}", rng.random() < 0.3
            elif kind == "click" and attribution[0] is None:
                attribution = (
                    "spring-sale",
                    "creator-ana",
                    "influencer",
                    "spring-sale",
                    None,
                    None,
                )
            elif kind == "conversion":
                value, currency = Decimal(rng.choice(["19.90", "49.00", "-19.90"])), "EUR"
            rows.append(
                (SITE, now - timedelta(seconds=ages[n]), uuid.UUID(int=rng.getrandbits(128)),
                 kind, who[n], page, *attribution, referrers[n], *agents[n], "eu", value,
                 currency, machine, BASIS)
            )  # fmt: skip
        yield rows


async def prepare(url: str, events: int, days: int) -> float:
    """The site, its campaigns, the partitions and the events; returns the load's seconds."""
    policies = load_policies(POLICIES)
    engine = make_engine(url)
    now = utcnow()
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await create_site(
                session, slug=SITE, policy="gdpr-strict", policies=jurisdictions(policies),
                origins=[], jurisdiction="eu", now=now,
            )  # fmt: skip
            for campaign, channel, influencer, sends in NAMED:
                named = {"name": campaign, "channel": channel, "influencer": influencer}
                session.add(Campaign(site=SITE, id=campaign, sends=sends, updated_at=now, **named))
        for moment in (now - timedelta(days=days), now):
            await jobs.ensure_partitions(engine, policies, moment)
        started = time.monotonic()
        await load_events(url, engine, event_chunks(events, days, now), now)
        return time.monotonic() - started
    finally:
        await engine.dispose()


async def build(url: str, days: int) -> float:
    """The `reports` job's first run over the loaded days (COPY marked none of them, as the
    migration does for the days it finds); then today marked again, as the pixel's writes keep
    marking it: the reports count today from raw events. Returns the job's seconds."""
    engine = make_engine(url)
    now = utcnow()
    try:
        sessions = make_sessionmaker(engine)
        async with transaction(sessions) as session:
            await report_cells.mark_dirty(
                session, [(SITE, now.date() - timedelta(days=n)) for n in range(days + 1)]
            )
        started = time.monotonic()
        counts = await report_cells.build_cells(sessions, load_policies(POLICIES), now)
        took = time.monotonic() - started
        print(f"  report cells: {msgspec.json.encode(counts).decode()}", flush=True)
        async with transaction(sessions) as session:
            await report_cells.mark_dirty(session, [(SITE, now.date())])
        if engine.dialect.name == "postgresql":  # as autovacuum would soon after
            raw = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                await raw.execute("VACUUM ANALYZE report_cells, subject_numbers, report_dirty")
            finally:
                await raw.close()
        return took
    finally:
        await engine.dispose()


def drop_caches() -> str:
    """Restart PostgreSQL and drop the kernel's page cache: a cold start, where allowed."""
    try:
        versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "PostgreSQL restarted, page cache dropped"
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return f"not cold ({exc!r}): first ask after the load"


Report = Callable[[Any], Awaitable[Any]]


def reports(days: int) -> dict[str, Report]:
    today = utcnow().date()
    whole = Scope(SITE, today - timedelta(days=days), today)
    recent = Scope(SITE, today - timedelta(days=90), today)
    return {
        f"summary, {days} days": lambda s: traffic.summary(s, whole),
        f"breakdown by page, {days} days": lambda s: traffic.breakdown(s, whole, "page", 10),
        "timeseries by day, 90 days": lambda s: traffic.timeseries(s, recent, "day"),
        "campaign report, 90 days": lambda s: marketing.campaign_report(s, recent, NEWSLETTER),
    }


async def measure(url: str, days: int, repeat: int, cold: bool) -> list[tuple[str, float, float]]:
    """(report, cold seconds, warm median seconds) per report."""
    found = []
    for name, ask in reports(days).items():
        if cold and url.startswith("postgresql"):
            print(f"  {name}: {drop_caches()}", flush=True)
        engine = make_engine(url)
        try:
            times = []
            for _ in range(repeat + 1):
                async with make_sessionmaker(engine)() as session:
                    started = time.monotonic()
                    await ask(session)
                    times.append(time.monotonic() - started)
            found.append((name, times[0], statistics.median(times[1:])))
            print(f"  {name}: cold {times[0]:.3f} s, warm {found[-1][2]:.3f} s", flush=True)
        finally:
            await engine.dispose()
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--database", choices=databases.NAMES, default="postgresql")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="do not restart PostgreSQL")
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    kept.add_argument("--loaded", metavar="URL", help="measure a database kept by --keep")
    return parser.parse_args(argv)


def load_and_build(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> str:
    """A new database with the events loaded and the report cells built; returns its URL."""
    workdir = harness.temp_dir(cleanup, "pixelgate-reports-")
    url = databases.create(args.database, workdir / "pixelgate.db", cleanup)
    print(f"{databases.LABELS[args.database]}: loading {args.events:,} events over "
          f"{args.days} days", flush=True)  # fmt: skip
    migrate(url)  # alembic runs its own event loop
    loaded = asyncio.run(prepare(url, args.events, args.days))
    print(f"  loaded in {loaded:.0f} s", flush=True)
    print(f"  report cells built in {asyncio.run(build(url, args.days)):.0f} s", flush=True)
    return url


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        if args.loaded:
            url = args.loaded
        else:
            url = load_and_build(args, cleanup)
            if args.keep:
                cleanup.pop_all()
                print(f"  kept: --loaded {url}", flush=True)
        found = asyncio.run(measure(url, args.days, args.repeat, not args.no_cold))
    print()
    print(f"{'report':<34} {'cold s':>8} {'warm s':>8}  target (cold <= 2 s, warm <= 0.3 s)")
    missed = 0
    for name, cold, warm in found:
        ok = cold <= TARGET_COLD and warm <= TARGET_WARM
        missed += not ok
        print(f"{name:<34} {cold:>8.3f} {warm:>8.3f}  {'met' if ok else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    harness.run(main)
