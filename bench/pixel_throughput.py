"""How fast does pixelgate answer its pixel, and does every consented hit land?

    .venv/bin/python -m bench.pixel_throughput [--duration 10] [--connections 32]
        [--rounds 3] [--database sqlite|postgresql] [--threads 1] [--subjects 1000000]
        [--jobs off|on] [--profile DIR]

What runs. Four servers on loopback, each with one worker, driven in turn by the same wrk
command (same duration, connections and threads, and bench/lib/wrk_subjects.lua, which asks
for /p/<site>/pixel.gif?p=/bench/page&u=s-<random n> with a desktop Chrome user agent):

- pixelgate itself: `pixelgate serve` (migrations, then granian) on a fresh database (a
  throwaway PostgreSQL database, or a SQLite file), seeded beforehand with four sites under
  the `gdpr-strict` policy, where a hit is recorded only with consent. Consent is
  bulk-inserted, state and ledger rows as consent.store.record writes them (COPY on
  PostgreSQL, then VACUUM ANALYZE; Core inserts on SQLite); one decision per site is then
  checked in-process against the seeded rows. Its scheduled jobs are off unless `--jobs on`:
  they all run at start-up, in the same process, and with a registry this size the
  consent-expiry one can keep PostgreSQL busy for the whole bench (watch pg_stat_activity).
- nginx with `empty_gif` (bench/references/nginx.conf.template): the ceiling for answering
  a GIF.
- a bare litestar app on granian with uvloop, as pixelgate runs (bench/references/bare.py):
  one handler, the same GIF and headers; the floor of the framework and server pixelgate is
  built on. (pixelgate answers its pixel before litestar sees the request, in granian's own
  RSGI interface rather than ASGI, so it can beat this.)
- granian's floor: an RSGI app on granian with uvloop that answers every request with the
  pixel and does nothing else (bench/references/floor.py): the ceiling for any Python app on
  the server pixelgate runs on, i.e. what handing a request from granian to Python and back
  costs by itself.

Scenarios (pixelgate answers once the request is queued; a batch writer in a process of its
own, started by the worker, reads, pseudonymises, decides and inserts behind it: the numbers
include that writer's load on the machine, and its CPU is counted with the server's):

- consented, 1k   a site with 1,000 consented subjects, requests spread over them
- consented, 1M   a site with 1,000,000 consented subjects, requests spread over all of
                  them: most lookups miss the consent cache and go to the database
- no consent      a site with no consent at all, random subjects (nothing recorded)
- anonymous       no `u` at all (nothing recorded under gdpr-strict)
- nginx empty_gif / bare litestar / granian floor: the same requests as `consented, 1k`

Every run is preceded by a 2 s warm-up of the same server with the same requests. All
scenarios run `--rounds` times, interleaved (each round starts one scenario later); after
each pixelgate run the bench waits until pixelgate has written all it queued, so that a
backlog does not spill into the next scenario (the largest backlog seen is reported, with
the time it took to write it: the writer falling behind the pixel shows there).

How to read it. One table per database: the median over the rounds of req/s, p50 and p99
latency, and of the server's CPU use while wrk ran (its processes, in % of one core: a
single worker near or above 100 % is CPU-bound); the slowest and fastest round's req/s show
the noise. `x nginx`, `x bare` and `x floor` are pixelgate's median req/s over theirs. The
targets checked: >= 0.25 x nginx, >= 1.0 x bare litestar, p99 <= 15 ms, and the 1M scenario
within 10 % of the 1k one. wrk shares the machine with the servers and PostgreSQL: on a small
machine nginx's figure is mostly wrk's own ceiling, and it moves with where the scheduler
puts the two. A second table splits the CPU time each request cost among the server (and,
for pixelgate, its writer process), PostgreSQL and wrk: on a machine of few cores, the
writer's and the database's time per hit is taken from the pixel's own, whatever their
priority, so it shows where throughput goes.

Then pixelgate is stopped with SIGTERM (it drains its queue) and the events table is counted
per site: each 200 response wrk counted for a consented site (warm-ups included) should be
a row, and the other sites should have none. wrk stops with requests in flight, which the
server may accept and record without wrk counting the answer: so rows may exceed the 200s,
by at most the requests wrk wrote and saw no answer to; fewer rows than 200s means lost hits.
The total is also compared with pixelgate's own count of recorded hits (/metrics).

--profile DIR: per database, one more run of each consented scenario while py-spy samples
the pixelgate worker and its writer process (only samples holding the GIL, i.e. their Python
work), written to DIR/<database>-<scenario>[-writer].txt as collapsed stacks and summarised:
by function and by package (own time), and by project function (total time).

Needs root for `apt-get install nginx wrk` when they are missing (the package is not allowed
to start the system's nginx), and PostgreSQL at PIXELGATE_TEST_PG (postgres@127.0.0.1:5432 by
default, trust auth). Every process, temp dir and database it made is removed on exit,
Ctrl-C and errors included.
"""

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.base.db import migrate
from bench.lib import cpu, databases, harness, pixelgate, profiling, wrk
from bench.lib.databases import LABELS
from bench.lib.servers import (
    CHECK_SITE,
    Server,
    ensure_tools,
    http_get,
    start_granian,
    start_nginx,
    stop,
)
from bench.lib.wrk import WrkRun

WARMUP_SECONDS = 2
DRAIN_SECONDS = 180
WRK_TIMEOUT = "10s"
# (server name, granian interface, app) of the Python references: the bare litestar app,
# and the floor in the interface pixelgate answers its pixel in (RSGI)
REFERENCE_APPS = (
    ("bare", "asgi", "bench.references.bare:app"),
    ("floor", "rsgi", "bench.references.floor:app"),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "pixelgate", "nginx", "bare" or "floor"
    site: str
    subjects: int  # u is "s-<n>", n uniform in [0, subjects); 0 sends no u
    consented: bool = False  # pixelgate: every 200 should become a row

    @property
    def pixelgate(self) -> bool:
        return self.server == "pixelgate"


@dataclass
class Tally:
    """Per pixelgate site, over warm-ups and measured runs alike."""

    ok: int = 0
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    max_backlog: int = 0  # queue depth when wrk stopped, the largest seen
    drain_seconds: float = 0.0  # how long that backlog took to be written

    def add(self, run: WrkRun) -> None:
        self.ok += run.ok
        self.sent += run.sent
        self.errors.update({k: v for k, v in run.errors.items() if v})


@dataclass
class DatabaseReport:
    database: str
    runs: dict[str, list[WrkRun]]
    tallies: dict[str, Tally]
    rows: dict[str, int]
    exit_code: int | None
    drain_seconds: float
    metrics: dict[str, float]
    log_problems: list[tuple[int, str]]
    profiles: dict[str, profiling.Profile]
    seed_seconds: float


def scenarios(subjects: int) -> list[Scenario]:
    big = "1M" if subjects == 1_000_000 else f"{subjects:,}"
    return [
        Scenario("consented, 1k", "pixelgate", "bench-1k", 1_000, consented=True),
        Scenario(f"consented, {big}", "pixelgate", "bench-1m", subjects, consented=True),
        Scenario("no consent", "pixelgate", "bench-none", subjects),
        Scenario("anonymous", "pixelgate", "bench-anon", 0),
        Scenario("nginx empty_gif", "nginx", "bench-1k", 1_000),
        Scenario("bare litestar", "bare", "bench-1k", 1_000),
        Scenario("granian floor", "floor", "bench-1k", 1_000),
    ]


def seeded_sites(subjects: int) -> dict[str, int]:
    """Site slug -> consented subjects s-0 .. s-<n-1> to seed."""
    return {"bench-1k": 1_000, "bench-1m": subjects, "bench-none": 0, "bench-anon": 0}


def check_same_pixel(servers: dict[str, Server]) -> None:
    """All servers answer a 1x1 GIF with the same Cache-Control; pixelgate and bare litestar
    the very same bytes (42 of them: nginx's empty_gif has 43)."""
    answers = {name: http_get(s.port, f"/p/{CHECK_SITE}/pixel.gif") for name, s in servers.items()}
    for name, (status, headers, body) in answers.items():
        if status != 200 or len(body) > 64 or not body.startswith(b"GIF89a\x01\x00\x01\x00"):
            raise RuntimeError(f"{name} answered {status} with {len(body)} bytes")
        if headers.get("cache-control") != answers["pixelgate"][1].get("cache-control"):
            raise RuntimeError(f"{name}: Cache-Control {headers.get('cache-control')!r}")
    for name in ("bare", "floor"):
        if answers[name][2] != answers["pixelgate"][2]:
            raise RuntimeError(f"{name} does not answer pixelgate's GIF")


def wrk_command(
    server: Server, sc: Scenario, seconds: float, args: argparse.Namespace
) -> list[str]:
    return wrk.command(
        server.port,
        sc.site,
        sc.subjects,
        seconds,
        connections=args.connections,
        threads=args.threads,
        timeout=WRK_TIMEOUT,
    )


# --- one database --------------------------------------------------------------------------


def bench_database(
    database: str,
    refs: dict[str, Server],
    workdir: Path,
    args: argparse.Namespace,
    cleanup: contextlib.ExitStack,
) -> DatabaseReport:
    label = LABELS[database]
    url = databases.create(database, workdir / "pixelgate.db", cleanup)

    started = time.perf_counter()
    print(f"[{label}] migrating and seeding {args.subjects + 1_000:,} consented subjects ...")
    migrate(url)
    asyncio.run(databases.seed(url, seeded_sites(args.subjects)))
    seed_seconds = time.perf_counter() - started
    print(f"[{label}] seeded in {seed_seconds:.1f} s; starting pixelgate", flush=True)

    server = pixelgate.start(workdir, database, url, args.jobs)
    cleanup.callback(stop, server)
    servers = {"pixelgate": server, **refs}
    check_same_pixel(servers)

    plan = scenarios(args.subjects)
    runs: dict[str, list[WrkRun]] = {sc.name: [] for sc in plan}
    tallies = {sc.site: Tally() for sc in plan if sc.pixelgate}

    def measured(sc: Scenario, seconds: float) -> WrkRun:
        target = servers[sc.server]
        writer = pixelgate.writer_pid(target) if sc.pixelgate else None
        run = wrk.run(wrk_command(target, sc, seconds, args), target, writer)
        if sc.pixelgate:
            tallies[sc.site].add(run)
            backlog, seconds = pixelgate.wait_for_writer(server)
            tally = tallies[sc.site]
            if backlog >= tally.max_backlog:
                tally.max_backlog, tally.drain_seconds = backlog, seconds
        return run

    for round_ in range(args.rounds):
        order = plan[round_ % len(plan) :] + plan[: round_ % len(plan)]
        for sc in order:
            measured(sc, WARMUP_SECONDS)
            run = measured(sc, args.duration)
            runs[sc.name].append(run)
            errors = sum(run.errors.values())
            print(
                f"[{label}] round {round_ + 1}/{args.rounds}  {sc.name:<18} "
                f"{run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms"
                f"  server CPU {run.server_cpu:3.0f} %" + (f"  errors {errors}" if errors else ""),
                flush=True,
            )

    profiles = {}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        seconds = max(4, args.duration)
        for sc in plan:
            if sc.consented:
                slug = sc.name.replace(", ", "-").replace(" ", "-")
                out = args.profile / f"{database}-{slug}.txt"
                print(f"[{label}] profiling {sc.name} with py-spy -> {out}", flush=True)
                argv = wrk_command(server, sc, seconds, args)
                run, found = profiling.record(server, argv, seconds, out)
                profiles.update({f"{sc.name}, {name}": p for name, p in found.items()})
                tallies[sc.site].add(run)
                pixelgate.wait_for_writer(server)

    metrics = pixelgate.read_metrics(server)
    print(f"[{label}] stopping pixelgate with SIGTERM (it drains its queue) ...", flush=True)
    drain_started = time.perf_counter()
    exit_code = stop(server, timeout=DRAIN_SECONDS)
    drain_seconds = time.perf_counter() - drain_started
    rows = asyncio.run(databases.events_per_site(url))
    return DatabaseReport(
        database=database,
        runs=runs,
        tallies=tallies,
        rows=rows,
        exit_code=exit_code,
        drain_seconds=drain_seconds,
        metrics=metrics,
        log_problems=pixelgate.log_problems(server),
        profiles=profiles,
        seed_seconds=seed_seconds,
    )


# --- the report ----------------------------------------------------------------------------


def median(runs: list[WrkRun], value: Callable[[WrkRun], float]) -> float:
    return statistics.median(value(r) for r in runs)


def report(rep: DatabaseReport, args: argparse.Namespace) -> list[str]:
    plan = scenarios(args.subjects)
    rps = {name: median(runs, lambda r: r.rps) for name, runs in rep.runs.items()}
    nginx, bare, floor = rps["nginx empty_gif"], rps["bare litestar"], rps["granian floor"]
    out = [
        f"== {LABELS[rep.database]}: median of {args.rounds} round(s), {args.duration} s each, "
        f"{args.connections} connections, {args.threads} wrk thread(s), jobs {args.jobs} ==",
        "",
        f"{'scenario':<18} {'req/s':>9} {'(slowest - fastest)':>21} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU %':>6} {'x nginx':>8} {'x bare':>7} {'x floor':>8}",
    ]
    for sc in plan:
        runs = rep.runs[sc.name]
        low, high = min(r.rps for r in runs), max(r.rps for r in runs)
        ratios = ""
        if sc.pixelgate:
            mine = rps[sc.name]
            ratios = f"{mine / nginx:>8.2f} {mine / bare:>7.2f} {mine / floor:>8.2f}"
        out.append(
            f"{sc.name:<18} {rps[sc.name]:>9,.0f} {f'({low:,.0f} - {high:,.0f})':>21}"
            f" {median(runs, lambda r: r.p50_ms):>7.2f} {median(runs, lambda r: r.p99_ms):>7.2f}"
            f" {median(runs, lambda r: r.server_cpu):>6.0f} {ratios}".rstrip()
        )

    out += [
        "",
        "CPU time per request (µs, median): the server (of which its writer process),"
        " PostgreSQL, wrk; and how busy the machine was (% of one core):",
    ]
    for sc in plan:
        runs = rep.runs[sc.name]
        spent = {part: statistics.median(r.cpu_us[part] for r in runs) for part in cpu.PARTS}
        writer = f"({spent['writer']:5.1f})" if sc.pixelgate else " " * 7
        total = spent["server"] + spent["database"] + spent["wrk"]
        out.append(
            f"  {sc.name:<18} {spent['server']:6.1f} {writer} {spent['database']:6.1f}"
            f" {spent['wrk']:6.1f}  = {total:6.1f}   busy {spent['busy']:3.0f} %"
        )

    out += ["", "targets:"]
    consented = [sc for sc in plan if sc.consented]
    for sc in consented:
        p99 = median(rep.runs[sc.name], lambda r: r.p99_ms)
        checks = [
            verdict(f"{rps[sc.name] / nginx:.2f} x nginx", rps[sc.name] >= 0.25 * nginx, ">= 0.25"),
            verdict(f"{rps[sc.name] / bare:.2f} x bare", rps[sc.name] >= bare, ">= 1.0"),
            verdict(f"p99 {p99:.1f} ms", p99 <= 15, "<= 15 ms"),
        ]
        out.append(f"  {sc.name:<18} " + "; ".join(checks))
    small, big = consented[0].name, consented[1].name
    change = rps[big] / rps[small] - 1
    out.append(f"  {big} vs 1k: " + verdict(f"{100 * change:+.1f} %", abs(change) <= 0.10, "±10 %"))

    out += [
        "",
        f"rows landed / hits sent (hits: 200 responses wrk counted, warm-ups included), "
        f"after SIGTERM: exit {rep.exit_code}, drained in {rep.drain_seconds:.1f} s:",
    ]
    for sc in plan:
        if not sc.pixelgate:
            continue
        tally, rows = rep.tallies[sc.site], rep.rows.get(sc.site, 0)
        unanswered = tally.sent - tally.ok
        expected = tally.ok if sc.consented else 0
        if rows == expected:
            state = "equal"
        elif sc.consented and expected < rows <= expected + unanswered:
            state = f"+{rows - expected} (within the {unanswered} requests wrk left unanswered)"
        elif rows < expected:
            state = f"MISSING {expected - rows:,}"
        else:
            state = f"UNEXPECTED +{rows - expected:,}"
        what = f"{rows:,} / {tally.ok:,}" if sc.consented else f"{rows:,} (expected 0)"
        extra = f"; backlog when wrk stopped up to {tally.max_backlog:,}"
        if tally.max_backlog:
            extra += f" (written in {tally.drain_seconds:.1f} s)"
        if tally.errors:
            extra += f"; wrk errors {dict(tally.errors)}"
        out.append(f"  {sc.name:<18} {what:<24} {state}{extra}")

    m = rep.metrics
    hits = {k.split("{", 1)[1].rstrip("}"): int(v) for k, v in m.items() if "hits_total{" in k}
    recorded = int(pixelgate.hits_of(m, "recorded", "recorded"))
    all_rows = sum(rep.rows.values())
    out.append(
        f"  all sites: {all_rows:,} rows, pixelgate counted {recorded:,} hits as recorded"
        f" ({'equal' if all_rows == recorded else 'DIFFERENT'})"
    )
    out += [
        "",
        "pixelgate /metrics before shutdown: "
        + ", ".join(
            f"{k} {int(m.get(f'pixelgate_events_{k}_total', 0)):,}"
            for k in ("queued", "flushed", "spilled", "replayed", "dropped")
        ),
        "  hits: " + ", ".join(f"{k.replace(chr(34), '')} {v:,}" for k, v in sorted(hits.items())),
    ]
    flushes = m.get("pixelgate_flush_seconds_count", 0)
    if flushes:
        mean = 1000 * m.get("pixelgate_flush_seconds_sum", 0) / flushes
        out.append(f"  batches written: {int(flushes):,}, mean {mean:.1f} ms per batch")
    out.append(f"  seeding took {rep.seed_seconds:.1f} s")
    out += ["", "pixelgate log, lines that look like trouble:"]
    out += [f"  {n:>6} x {line[:160]}" for n, line in rep.log_problems] or ["  none"]
    for name, profile in rep.profiles.items():
        out += ["", f"py-spy profile of '{name}' ({profile.path}):"]
        out += profiling.summarise(profile)
    return out


def verdict(value: str, ok: bool, target: str) -> str:
    return f"{value} ({target}: {'ok' if ok else 'MISSED'})"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=databases.NAMES, action="append")
    parser.add_argument("--subjects", type=int, default=1_000_000, help="the big registry")
    parser.add_argument("--profile", type=Path, help="py-spy the consented runs into DIR")
    parser.add_argument(
        "--jobs", choices=["on", "off"], default="off", help="pixelgate's scheduled jobs"
    )
    args = parser.parse_args(argv)
    args.database = args.database or ["postgresql", "sqlite"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools()
    reports = []
    with contextlib.ExitStack() as cleanup:
        workdir = harness.temp_dir(cleanup, "pixelgate-bench-")
        refs = {"nginx": start_nginx(workdir)}
        cleanup.callback(stop, refs["nginx"])
        for name, interface, target in REFERENCE_APPS:
            refs[name] = start_granian(name, interface, target, workdir)
            cleanup.callback(stop, refs[name])
        for database in args.database:
            reports.append(bench_database(database, refs, workdir, args, cleanup))
        print()
        for rep in reports:
            print("\n".join(report(rep, args)))
            print()
    return 0


if __name__ == "__main__":
    harness.run(main)
