"""How long does the retention purge take on a big events table, and does the pixel keep up?

    .venv/bin/python -m bench.retention_purge [--events 1000000]
        [--database sqlite|postgresql|both] [--duration SECONDS] [--connections 32]
        [--subjects 10000]

What runs, per database (a SQLite file in a temp dir, or a throwaway PostgreSQL database):

1. Migrate, create one site under `gdpr-strict` with --subjects consented subjects (the
   pixel throughput bench's seeding, bench.lib.databases.seed), and on PostgreSQL create the
   monthly partitions of `events` for the whole span of the data (ensure_partitions at
   now - 395 days and at now).
2. Load --events pageviews, occurred_at uniform over the last 790 days, in time order as a
   live site writes them: pageviews are kept 395 days, so about half are expired. A few
   hundred pages (a few popular, many rare), a few campaigns with their utm_*, some
   referrers, a handful of device/browser/OS mixes, 50,000 subject pseudonyms. COPY on
   PostgreSQL (then VACUUM ANALYZE, as autovacuum would have by then), executemany in big
   transactions on SQLite (synchronous=OFF for the load only, then a WAL checkpoint). The
   load time is printed but is not the measured figure.
3. purge_events(...) once, timed: roll-up of the expired rows into rollup_daily and
   rollup_detail, DROP of whole expired months (PostgreSQL), batched DELETE of the rest.
   Checked: rows left = events - expired, sum(hits) in rollup_daily (and rollup_detail)
   = expired. A second purge must find nothing.
4. The pixel: a real `pixelgate serve` (1 worker, PIXELGATE_JOBS=off) on that database,
   driven by wrk (bench/lib/wrk_subjects.lua: a random consented subject per request), twice
   for the same time: once alone, and once while the bench process runs purge_events again
   against the same database, started 0.5 s after wrk. Before those runs the expired half
   is loaded again (same rows) and the roll-ups of step 3 are removed, so that this purge
   does the same work as the first. Both wrk runs see the same data. wrk runs --duration
   seconds, or by default 1.5 x the first purge's time + 5 s (10 s at least): a purge that
   outlasts wrk would be measured only in its first phases, which on SQLite do not write.

How to read it. At the end, one table:

- purge s            wall time of the first purge (alone: no pixel load)
- rows/s             events the purge deleted (rows dropped with their partition included)
                     per second of that time
- parts dropped      monthly partitions it dropped (PostgreSQL)
- req/s alone        wrk's requests/s without a purge
- req/s purge        wrk's requests/s with the purge running; "covered" is the share of
                     wrk's window the purge ran for: when it is well under 100 %, the ratio
                     understates the effect, so the hits/s counted by pixelgate itself
                     (/metrics, sampled every 0.1 s) over the purge's own span are compared
                     too, in the targets
- ratio              req/s purge / req/s alone

Targets: the purge of 500,000 expired events in <= 10 s on PostgreSQL and <= 60 s on SQLite
(scaled in proportion when --events gives a different number of expired rows), and the pixel
during the purge at >= 0.7 x its rate without one.

Above the table, per database and purge: where the purge spent its time, by phase (the
retention.jobs functions, wrapped by this bench: _expired_groups, _roll_up,
_drop_expired_partitions, _delete_expired) and by SQL statement (time from sending each
statement to having its rows, measured on the engine; COMMIT of each session), the rest
being Python and waiting (SQLAlchemy, Python-side roll-up if any, pauses between batches).
wrk, pixelgate, PostgreSQL and this process share the machine: on a small one, part of the
pixel's loss during the purge is only CPU taken by the purge, which the pixelgate CPU % lines
show; the events written/s lines show its writer waiting for the database.

Needs wrk (Debian's `apt-get install wrk`) and PostgreSQL at PIXELGATE_TEST_PG
(postgres@127.0.0.1:5432 by default, trust auth). Every process, temp dir and database it
made is removed on exit, Ctrl-C and errors included.
"""

import argparse
import asyncio
import contextlib
import math
import os
import random
import resource
import shutil
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.base.db import make_engine, make_sessionmaker, migrate, utcnow
from app.base.keys import KeyRing
from app.base.tables import Event, RollupDaily, RollupDetail
from bench.lib import cpu, databases, harness, pixelgate, wrk
from bench.lib.databases import LABELS
from bench.lib.events import (
    AGENTS,
    BASIS,
    CAMPAIGNS,
    PAGES,
    REFERRERS,
    ages_in_order,
    load_events,
)
from bench.lib.pixelgate import POLICIES, POLICY, SECRET
from bench.lib.servers import Server, stop
from consent.policy import load_policies
from retention import jobs

SITE = "bench-retention"
KIND = "pageview"
SPAN_DAYS = 790
SUBJECT_POOL = 50_000
CHUNK = 50_000  # rows generated, and loaded, at a time
PURGE_DELAY = 0.5  # seconds after wrk starts
SAMPLE_SECONDS = 0.1  # pixelgate's /metrics, while wrk runs
MIN_WINDOW = 0.5  # seconds: a shorter purge is too short for pixelgate's own count
WARMUP_SECONDS = 2
MIN_WRK_SECONDS, MAX_WRK_SECONDS = 10, 600
WRK_TIMEOUT = "2s"  # a pixel slower than that is as good as lost: wrk counts a timeout
TARGET_EXPIRED = 500_000
TARGET_SECONDS = {"postgresql": 10.0, "sqlite": 60.0}
TARGET_RATIO = 0.7
PHASES = ("ensure_partitions", "_expired_groups", "_roll_up", "_drop_expired_partitions",
          "_delete_expired")  # fmt: skip
POLICY_SET = load_policies(POLICIES)


def event_chunks(count: int, now: datetime, subjects: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    """`count` pageviews over the SPAN_DAYS before `now`, oldest first, CHUNK at a time; the
    same rows (ids included) on every call."""
    rng = random.Random(20261129)  # fixed: a reload makes the same rows
    for ages in ages_in_order(rng, count, SPAN_DAYS * 86_400.0, CHUNK):
        k = len(ages)
        pages = rng.choices(PAGES[0], cum_weights=PAGES[1], k=k)
        campaigns = rng.choices(CAMPAIGNS[0], cum_weights=CAMPAIGNS[1], k=k)
        referrers = rng.choices(REFERRERS[0], cum_weights=REFERRERS[1], k=k)
        agents = rng.choices(AGENTS[0], cum_weights=AGENTS[1], k=k)
        who = rng.choices(subjects, k=k)
        rows = []
        for n in range(k):
            machine = rng.random() < 0.005  # mail image proxies and the like
            rows.append(
                (SITE, now - timedelta(seconds=ages[n]), uuid.UUID(int=rng.getrandbits(128)),
                 KIND, who[n], pages[n], *campaigns[n], referrers[n], *agents[n], "eu", None,
                 None, machine, BASIS)
            )  # fmt: skip
        yield rows


def bench_subjects() -> list[str]:
    """Pseudonyms of s-0 .. s-49999 under the bench's secret: the first --subjects of them are
    the consented subjects the pixel is driven with."""
    keyring = KeyRing(SECRET)
    return [keyring.pseudonym(SITE, f"s-{n}") for n in range(SUBJECT_POOL)]


# --- databases -----------------------------------------------------------------------------


async def make_partitions(engine: AsyncEngine, now: datetime) -> int:
    """Monthly partitions over the span of the data, as a live site running the jobs every
    day has them. ensure_partitions(t) makes the months from t - 395 days (the longest
    retention) to t + 2 months: t = now - 395 days and t = now cover the 790 days. (Called
    at now - 800 days instead, it would add 13 empty months before the data, and leave the
    11 months between it and now - 395 days to events_default.)"""
    longest = max(
        p.retention_days for policy in POLICY_SET.values() for p in policy.file.purposes.values()
    )
    created = 0
    for moment in (now - timedelta(days=SPAN_DAYS - longest), now):
        created += await jobs.ensure_partitions(engine, POLICY_SET, moment)
    return created


async def count_events(
    sessions: async_sessionmaker[AsyncSession], before: datetime
) -> tuple[int, int]:
    """(events of the bench site, those older than `before`)."""
    async with sessions() as session:
        total = await session.scalar(select(func.count()).where(Event.site == SITE))
        expired = await session.scalar(
            select(func.count()).where(Event.site == SITE, Event.occurred_at < before)
        )
    return int(total or 0), int(expired or 0)


async def rollup_hits(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    """sum(hits) in rollup_daily and in rollup_detail, for the bench site."""
    async with sessions() as session:
        daily = await session.scalar(
            select(func.sum(RollupDaily.hits)).where(RollupDaily.site == SITE)
        )
        detail = await session.scalar(
            select(func.sum(RollupDetail.hits)).where(RollupDetail.site == SITE)
        )
    return int(daily or 0), int(detail or 0)


async def clear_rollups(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(RollupDaily).where(RollupDaily.site == SITE))
        await session.execute(delete(RollupDetail).where(RollupDetail.site == SITE))


async def default_partition_rows(engine: AsyncEngine) -> int:
    if engine.dialect.name != "postgresql":
        return 0
    async with engine.connect() as connection:
        rows = await connection.scalar(select(func.count()).select_from(text("events_default")))
    return int(rows or 0)


# --- timing the purge ----------------------------------------------------------------------


def statement_label(statement: str) -> str:
    sql = " ".join(statement.split()).lower()
    for table in ("rollup_detail", "rollup_daily"):
        if sql.startswith(f"insert into {table}"):
            return (
                f"INSERT {table} ... SELECT (roll-up)" if " select " in sql else f"INSERT {table}"
            )
    if sql.startswith("delete from events"):
        return "DELETE events (one batch)"
    if sql.startswith("drop table"):
        return "DROP TABLE partition"
    if sql.startswith("select count(*) from events_"):
        return "count(*) of a partition to drop"
    if sql.startswith("create table"):
        return "CREATE TABLE partition"
    if sql.startswith("select distinct events.site"):
        return "SELECT DISTINCT site, kind FROM events"
    if "count(distinct" in sql and "group by" not in sql:
        return "count of expired days and events"
    if "count(distinct" in sql and "coalesce" in sql:
        return "roll-up query: daily (by day, campaign)"
    if "count(distinct" in sql:
        return "roll-up query: detail (by day, 12 dimensions)"
    if "from rollup_daily" in sql:
        return "SELECT days already rolled up"
    return "other (" + " ".join(sql.split()[:3]) + " ...)"


class StatementTimer:
    """Time from sending each statement to having its rows, by kind of statement, and of each
    session's COMMIT (on SQLite, where a transaction's pages are written), while on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.on = False
        self.spent: dict[str, list[float]] = {}
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)
        event.listen(Session, "before_commit", self._before_commit)
        event.listen(Session, "after_commit", self._after_commit)

    def _before_commit(self, session: Session) -> None:
        session.info[self] = time.perf_counter()  # keyed by timer: one per database is listening

    def _after_commit(self, session: Session) -> None:
        started = session.info.pop(self, None)
        if self.on and started is not None:
            self.spent.setdefault("COMMIT", []).append(time.perf_counter() - started)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.on:
            seconds = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
            self.spent.setdefault(statement_label(statement), []).append(seconds)

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, list[float]]]:
        self.spent, self.on = {}, True
        try:
            yield self.spent
        finally:
            self.on = False


@contextlib.contextmanager
def timed_phases() -> Iterator[list[tuple[str, float, float]]]:
    """Wrap the phases of retention.jobs.purge_events (module attributes it calls by name)
    to note when each call ran: (name, start, end); restored on exit."""
    spans: list[tuple[str, float, float]] = []
    originals = {name: getattr(jobs, name) for name in PHASES}

    def wrap(name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                spans.append((name, started, time.perf_counter()))

        return timed

    for name, function in originals.items():
        setattr(jobs, name, wrap(name, function))
    try:
        yield spans
    finally:
        for name, function in originals.items():
            setattr(jobs, name, function)


@dataclass
class PurgeRun:
    counts: jobs.EventCounts
    seconds: float
    cpu_seconds: float  # this process: the purge's client side
    spans: list[tuple[str, float, float]]  # phase, perf_counter at start and end
    statements: dict[str, list[float]]
    started: float = 0.0  # perf_counter
    finished: float = 0.0

    def phases(self, start: float = -math.inf, end: float = math.inf) -> dict[str, float]:
        """Seconds of each phase, within [start, end]."""
        spent: defaultdict[str, float] = defaultdict(float)
        for name, began, ended in self.spans:
            spent[name] += max(0.0, min(end, ended) - max(start, began))
        return spent


async def timed_purge(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    timer: StatementTimer,
    now: datetime,
) -> PurgeRun:
    with timed_phases() as spans, timer.recording() as statements:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        counts = await jobs.purge_events(engine, sessions, POLICY_SET, now)
        finished = time.perf_counter()
        after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return PurgeRun(counts, finished - started, used, spans, statements, started, finished)


def describe_purge(run: PurgeRun) -> list[str]:
    c = run.counts
    lines = [
        f"    {run.seconds:.2f} s (this process's CPU {run.cpu_seconds:.1f} s): "
        f"rolled up {c.events_rolled_up:,} events over {c.days_rolled_up} days; deleted "
        f"{c.events_deleted:,}; partitions dropped {c.partitions_dropped}, created "
        f"{c.partitions_created}",
        "    by phase:",
    ]
    phases = run.phases()
    for name in PHASES:
        if name in phases:
            lines.append(f"      {name:<26} {phases[name]:7.2f} s")
    rest = run.seconds - sum(phases.values())
    lines.append(f"      {'(rest: roll-up COMMIT, ...)':<26} {rest:7.2f} s")
    lines.append("    by statement (count, total, slowest one):")
    by_total = sorted(run.statements.items(), key=lambda item: -sum(item[1]))
    for label, times in by_total:
        lines.append(
            f"      {label:<46} {len(times):>6,} x {sum(times):7.2f} s  max {max(times):6.3f} s"
        )
    in_sql = sum(sum(times) for times in run.statements.values())
    lines.append(
        f"      {'(Python and waiting outside statements)':<46} {'':>8} "
        f"{run.seconds - in_sql:7.2f} s"
    )
    return lines


# --- the pixel -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    taken: float  # hits/s pixelgate took (queued for its writer)
    written: float  # events/s its writer wrote to the database
    cpu: float  # pixelgate's processes, % of one core


class Sampler(threading.Thread):
    """Every SAMPLE_SECONDS, pixelgate's counts of hits taken and events written (/metrics)
    and its CPU time, from a thread of its own: the bench's event loop runs the purge."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, float, float, float]] = []  # time, taken, written, CPU
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            metrics = pixelgate.read_metrics(self.server)
            if "pixelgate_events_queued_total" in metrics:
                taken = metrics["pixelgate_events_queued_total"]
                written = metrics.get("pixelgate_events_flushed_total", 0.0)
                spent = cpu.seconds(self.server.proc.pid)
                self.samples.append((time.perf_counter(), taken, written, spent))
            self.done.wait(SAMPLE_SECONDS)

    def rates(self, start: float, end: float) -> Rates:
        """Between the first and last samples within [start, end] (NaN if too short)."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < MIN_WINDOW:
            return Rates(math.nan, math.nan, math.nan)
        first, last = inside[0], inside[-1]
        span = last[0] - first[0]
        taken, written, cpu = ((last[i] - first[i]) / span for i in (1, 2, 3))
        return Rates(taken, written, 100 * cpu)


@dataclass
class PixelRun:
    wrk: wrk.WrkRun
    started: float  # perf_counter when wrk was started
    seconds: int
    sampler: Sampler
    whole: Rates  # over wrk's window
    window: Rates  # over the purge's part of it, or from PURGE_DELAY on without a purge
    backlog: int = 0  # queue depth when wrk stopped
    drain_seconds: float = 0.0

    @property
    def end(self) -> float:
        return self.started + self.seconds


async def drive_pixel(
    server: Server,
    seconds: int,
    args: argparse.Namespace,
    during: Callable[[], Awaitable[PurgeRun]] | None = None,
) -> tuple[PixelRun, PurgeRun | None]:
    """wrk for `seconds`; `during` (the purge) starts PURGE_DELAY s in. pixelgate's own count
    is taken over the part of wrk's window the purge ran in, or from PURGE_DELAY on without
    one."""
    argv = wrk.command(
        server.port,
        SITE,
        args.subjects,
        seconds,
        connections=args.connections,
        threads=1,
        timeout=WRK_TIMEOUT,
    )
    sampler = Sampler(server)
    sampler.start()
    started = time.perf_counter()
    running = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    purge = None
    try:
        await asyncio.sleep(PURGE_DELAY)
        if during is not None:
            purge = await during()
        out, err = await running.communicate()
    finally:
        sampler.done.set()
        if running.returncode is None:
            running.kill()
            await running.wait()
    sampler.join()
    if running.returncode != 0:
        raise RuntimeError(f"wrk failed ({running.returncode}): {err.decode() or out.decode()}")
    end = started + seconds
    window = (started + PURGE_DELAY, end)
    if purge is not None:
        window = (max(window[0], purge.started), min(end, purge.finished))
    whole = sampler.rates(started, end)
    run = PixelRun(
        wrk.parse(out.decode()), started, seconds, sampler, whole, sampler.rates(*window)
    )
    run.backlog, run.drain_seconds = pixelgate.wait_for_writer(server)
    return run, purge


def wrk_seconds(first: PurgeRun) -> int:
    """Long enough for the purge under load, which takes longer than alone, to end within
    wrk's window (the share of it wrk saw is printed), MIN_WRK_SECONDS at least."""
    return max(MIN_WRK_SECONDS, min(MAX_WRK_SECONDS, math.ceil(1.5 * first.seconds + 5)))


def coverage(pixel: PixelRun, purge: PurgeRun) -> float:
    """The share of wrk's window the purge ran for."""
    overlap = min(pixel.end, purge.finished) - max(pixel.started, purge.started)
    return max(0.0, overlap) / pixel.seconds


def describe_pixel(name: str, run: PixelRun) -> str:
    errors = {k: v for k, v in run.wrk.errors.items() if v}
    return (
        f"    {name:<13} {run.wrk.rps:>8,.0f} req/s  p50 {run.wrk.p50_ms:6.2f} ms  p99 "
        f"{run.wrk.p99_ms:7.2f} ms  pixelgate CPU {run.whole.cpu:3.0f} %  backlog "
        f"{run.backlog:,} (written in {run.drain_seconds:.1f} s)"
        + (f"  wrk errors {errors}" if errors else "")
    )


def window_ratio(report: "Report") -> str:
    """pixelgate's own count during the purge over without one, with its verdict."""
    assert report.alone is not None and report.during is not None
    ratio = report.during.window.taken / report.alone.window.taken
    if math.isnan(ratio):
        return f"n/a: the purge ran for less than {MIN_WINDOW} s of wrk's window"
    return f"{ratio:.3f} x: {'ok' if ratio >= TARGET_RATIO else 'MISSED'}"


def describe_pixel_runs(report: "Report") -> list[str]:
    alone, during, purge = report.alone, report.during, report.loaded
    assert alone is not None and during is not None and purge is not None
    overlapped = purge.phases(during.started, during.end)
    seen = sum(overlapped.values()) / purge.seconds
    lines = [
        describe_pixel("no purge", alone),
        describe_pixel("during purge", during),
        f"    the purge ran for {purge.seconds:.1f} s, {100 * coverage(during, purge):.0f} % "
        f"of wrk's window; wrk's window saw {100 * seen:.0f} % of the purge",
        "    pixelgate's own counts (/metrics): hits taken/s, events written/s, CPU %",
    ]

    def line(name: str, rates: Rates, extra: str = "") -> str:
        return (
            f"      {name:<34} {rates.taken:>7,.0f} {rates.written:>9,.0f} {rates.cpu:>6.0f} %"
            + extra
        )

    lines.append(line(f"no purge (from {PURGE_DELAY} s on)", alone.window))
    lines.append(line("during the purge", during.window, f"   ({window_ratio(report)})"))
    for name, began, ended in purge.spans:
        start, end = max(began, during.started), min(ended, during.end)
        if end - start >= MIN_WINDOW:
            lines.append(line(f"  in {name}", during.sampler.rates(start, end)))
    return lines


# --- one database --------------------------------------------------------------------------


@dataclass
class Report:
    database: str
    events: int = 0
    expired: int = 0
    first: PurgeRun | None = None
    second: PurgeRun | None = None
    loaded: PurgeRun | None = None
    alone: PixelRun | None = None
    during: PixelRun | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def say(database: str, message: str) -> None:
    print(f"[{LABELS[database]}] {message}", flush=True)


def check(report: Report, ok: bool, what: str) -> None:
    line = f"{'ok' if ok else 'FAILED'}: {what}"
    say(report.database, "  " + line)
    if not ok:
        report.problems.append(line)


async def run_database(
    database: str,
    url: str,
    args: argparse.Namespace,
    workdir: Path,
    cleanup: contextlib.ExitStack,
) -> Report:
    report = Report(database)
    now = utcnow()
    before = jobs.cutoff(now, POLICY_SET[POLICY].retention_days(KIND))
    say(database, f"seeding the site and {args.subjects:,} consented subjects ...")
    await databases.seed(url, {SITE: args.subjects})
    subjects = bench_subjects()
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    timer = StatementTimer(engine)
    try:
        if database == "postgresql":
            created = await make_partitions(engine, now)
            say(database, f"{created} monthly partitions created")

        started = time.perf_counter()
        written, expired_made = await load_events(
            url, engine, event_chunks(args.events, now, subjects), before
        )
        load_seconds = time.perf_counter() - started
        say(database, f"loaded {written:,} events in {load_seconds:.1f} s (not measured)")
        in_default = await default_partition_rows(engine)
        if database == "postgresql":
            check(report, in_default == 0, f"{in_default:,} rows in events_default")
        report.events, report.expired = await count_events(sessions, before)
        say(
            database,
            f"{report.expired:,} of {report.events:,} events are past the cutoff "
            f"({before:%Y-%m-%d})",
        )
        check(
            report,
            report.expired == expired_made,
            f"expired counted in the database = generated ({expired_made:,})",
        )

        say(database, "purge #1 (no pixel load) ...")
        report.first = first = await timed_purge(engine, sessions, timer, now)
        print("\n".join(describe_purge(first)), flush=True)
        left, _ = await count_events(sessions, before)
        daily, detail = await rollup_hits(sessions)
        n, x = report.events, report.expired
        check(report, left == n - x, f"rows left {left:,} = events - expired {n - x:,}")
        check(report, daily == x, f"sum(hits) in rollup_daily {daily:,} = expired {x:,}")
        check(report, detail == x, f"sum(hits) in rollup_detail {detail:,} = expired {x:,}")
        check(
            report,
            first.counts.events_deleted == x,
            f"purge reported {first.counts.events_deleted:,} deleted",
        )

        report.second = second = await timed_purge(engine, sessions, timer, now)
        c = second.counts
        check(
            report,
            c.events_deleted == 0 and c.events_rolled_up == 0,
            f"purge #2 ({second.seconds:.2f} s) deleted {c.events_deleted}, "
            f"rolled up {c.events_rolled_up}",
        )

        say(database, "loading the expired events again, without their roll-ups ...")
        await clear_rollups(sessions)
        if database == "postgresql":
            await make_partitions(engine, now)
        started = time.perf_counter()
        expired_rows = (
            [r for r in chunk if r[1] < before]
            for chunk in event_chunks(args.events, now, subjects)
        )
        await load_events(url, engine, expired_rows, before)
        total, expired_again = await count_events(sessions, before)
        say(database, f"reloaded {expired_again:,} in {time.perf_counter() - started:.1f} s")
        check(report, (total, expired_again) == (n, x), f"back to {n:,} events, {x:,} expired")

        say(database, "starting pixelgate ...")
        server = pixelgate.start(workdir, database, url, jobs="off")  # the only purge is ours
        cleanup.callback(stop, server)
        await drive_pixel(server, WARMUP_SECONDS, args)
        seconds = args.duration or wrk_seconds(first)
        say(database, f"wrk {seconds} s, no purge ...")
        report.alone, _ = await drive_pixel(server, seconds, args)
        say(database, f"wrk {seconds} s, purge #3 starting {PURGE_DELAY} s in ...")
        report.during, loaded = await drive_pixel(
            server, seconds, args, lambda: timed_purge(engine, sessions, timer, now)
        )
        assert loaded is not None
        report.loaded = loaded
        print("\n".join(describe_purge(loaded)), flush=True)
        print("\n".join(describe_pixel_runs(report)), flush=True)

        metrics = pixelgate.read_metrics(server)
        say(database, "stopping pixelgate (SIGTERM: it drains its queue) ...")
        exit_code = stop(server)
        _, expired_left = await count_events(sessions, before)
        daily, _ = await rollup_hits(sessions)
        check(report, expired_left == 0, f"purge #3: {expired_left:,} expired rows left")
        check(report, daily == x, f"purge #3: sum(hits) in rollup_daily {daily:,} = {x:,}")
        check(
            report,
            loaded.counts.events_deleted == x,
            f"purge #3 reported {loaded.counts.events_deleted:,} deleted",
        )
        check(report, exit_code == 0, f"pixelgate exit code {exit_code}")
        lost = {k: metrics.get(f"pixelgate_events_{k}_total", 0) for k in ("spilled", "dropped")}
        check(
            report,
            not any(lost.values()),
            f"pixelgate spilled {lost['spilled']:.0f}, dropped {lost['dropped']:.0f} events",
        )
        for count, line in pixelgate.log_problems(server):
            report.notes.append(f"pixelgate log: {count} x {line[:160]}")
    finally:
        await engine.dispose()
    return report


def bench_database(
    database: str, args: argparse.Namespace, workdir: Path, cleanup: contextlib.ExitStack
) -> Report:
    url = databases.create(database, workdir / "retention.db", cleanup)
    say(database, "migrating ...")
    migrate(url)
    return asyncio.run(run_database(database, url, args, workdir, cleanup))


# --- the report ----------------------------------------------------------------------------


def table(reports: list[Report], args: argparse.Namespace) -> list[str]:
    head = (
        f"{'database':<11} {'events':>10} {'expired':>9} {'purge s':>8} {'rows/s':>9} "
        f"{'parts dropped':>13} {'req/s alone':>11} {'req/s purge':>11} {'ratio':>6} "
        f"{'covered':>8}"
    )
    out = [head, "-" * len(head)]
    for r in reports:
        if r.first is None or r.alone is None or r.during is None or r.loaded is None:
            continue
        rate = r.first.counts.events_deleted / r.first.seconds
        ratio = r.during.wrk.rps / r.alone.wrk.rps
        out.append(
            f"{LABELS[r.database]:<11} {r.events:>10,} {r.expired:>9,} {r.first.seconds:>8.2f} "
            f"{rate:>9,.0f} {r.first.counts.partitions_dropped:>13} {r.alone.wrk.rps:>11,.0f} "
            f"{r.during.wrk.rps:>11,.0f} {ratio:>6.2f} {100 * coverage(r.during, r.loaded):>7.0f}%"
        )
    out += [
        "",
        "wrk: "
        + ", ".join(f"{r.alone.seconds} s ({LABELS[r.database]})" for r in reports if r.alone)
        + " per run, "
        f"{args.connections} connections, 1 thread, "
        f"{args.subjects:,} consented subjects; {os.cpu_count()} CPUs shared by wrk, "
        "pixelgate, the database and the purge",
        "",
        "targets:",
    ]
    for r in reports:
        if r.first is None or r.alone is None or r.during is None:
            out.append(f"  {LABELS[r.database]}: not measured (an error came first)")
            continue
        limit = TARGET_SECONDS[r.database] * r.expired / TARGET_EXPIRED
        scaled = (
            ""
            if r.expired == TARGET_EXPIRED
            else (f", scaled from {TARGET_SECONDS[r.database]:.0f} s per {TARGET_EXPIRED:,}")
        )
        ratio = r.during.wrk.rps / r.alone.wrk.rps
        out.append(
            f"  {LABELS[r.database]:<11} purge of {r.expired:,} expired in {r.first.seconds:.2f} s "
            f"(<= {limit:.1f} s{scaled}: {'ok' if r.first.seconds <= limit else 'MISSED'}); "
            f"pixel during purge {ratio:.3f} x (>= {TARGET_RATIO}: "
            f"{'ok' if ratio >= TARGET_RATIO else 'MISSED'}; pixelgate's own count over the "
            f"purge's span {window_ratio(r)})"
        )
    problems = [(r, p) for r in reports for p in r.problems + r.notes]
    out += ["", "checks failed and log lines that look like trouble:"]
    out += [f"  {LABELS[r.database]}: {p}" for r, p in problems] or ["  none"]
    return out


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", choices=[*databases.NAMES, "both"], default="both")
    parser.add_argument(
        "--duration", type=int, help="seconds per wrk run (default: long enough for the purge)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=10_000, help="consented, for the pixel")
    args = parser.parse_args(argv)
    if not 0 < args.subjects <= SUBJECT_POOL:
        parser.error(f"--subjects must be within 1..{SUBJECT_POOL}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    names = list(databases.NAMES) if args.database == "both" else [args.database]
    reports = []
    with contextlib.ExitStack() as cleanup:
        workdir = harness.temp_dir(cleanup, "pixelgate-retention-")
        for database in names:
            try:
                with contextlib.ExitStack() as per_database:  # its server and database
                    reports.append(bench_database(database, args, workdir, per_database))
            except Exception as exc:  # report it, go on with the next database
                traceback.print_exc()
                reports.append(Report(database, problems=[f"error: {exc!r}"]))
    print()
    print("\n".join(table(reports, args)))
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    harness.run(main)
