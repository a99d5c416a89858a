"""How fast does pixelgate answer its pixel, and does every consented hit land?

    .venv/bin/python bench/pixel.py [--duration 10] [--connections 32] [--rounds 3]
        [--database sqlite|postgresql] [--threads 1] [--subjects 1000000] [--jobs off|on]
        [--profile DIR]

What runs. Four servers on loopback, each with one worker, driven in turn by the same wrk
command (same duration, connections and threads, and bench/wrk_subjects.lua, which asks for
/p/<site>/pixel.gif?p=/bench/page&u=s-<random n> with a desktop Chrome user agent):

- pixelgate itself: `pixelgate serve` (migrations, then granian) on a fresh database (a
  throwaway PostgreSQL database, or a SQLite file), seeded beforehand with four sites under
  the `gdpr-strict` policy, where a hit is recorded only with consent. Consent is
  bulk-inserted, state and ledger rows as consent.store.record writes them (COPY on
  PostgreSQL, then VACUUM ANALYZE; Core inserts on SQLite); one decision per site is then
  checked in-process against the seeded rows. Its scheduled jobs are off unless `--jobs on`:
  they all run at start-up, in the same process, and with a registry this size the
  consent-expiry one can keep PostgreSQL busy for the whole bench (watch pg_stat_activity).
- nginx with `empty_gif` (bench/nginx.conf.template): the ceiling for answering a GIF.
- a bare litestar app on granian with uvloop, as pixelgate runs (bench/bare_app.py): one
  handler, the same GIF and headers; the floor of the framework and server pixelgate is built
  on. (pixelgate answers its pixel before litestar sees the request, in granian's own RSGI
  interface rather than ASGI (app/http/front.py), so it can beat this.)
- granian's floor: an RSGI app on granian with uvloop that answers every request with the
  pixel and does nothing else (bench/floor_app.py): the ceiling for any Python app on the
  server pixelgate runs on, i.e. what handing a request from granian to Python and back
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
import base64
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.base.db import make_engine, make_sessionmaker, migrate, transaction, utcnow
from app.base.keys import KeyRing
from app.base.sites import create_site
from app.base.tables import Event
from consent import store
from consent.decide import Signals, decide
from consent.policy import Policy, load_policies
from consent.tables import ConsentLedger, ConsentState

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
POLICIES = ROOT / "policies"
POLICY = "gdpr-strict"
SECRET = bytes(range(64, 96))  # fixed, so pseudonyms computed here match the server's
PG_HOST = os.environ.get("PIXELGATE_TEST_PG", "postgres@127.0.0.1:5432")
WARMUP_SECONDS = 2
SEED_BATCH = 100_000
DRAIN_SECONDS = 180
CHECK_SITE = "bench-check"  # unknown to pixelgate: a request to it is answered, not recorded
LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
PROFILE_RATE = 200  # py-spy samples per second
# (server name, granian interface, app) of the Python references: bench/bare_app.py, and
# bench/floor_app.py in the interface the pixel is answered in (app/http/front.py)
REFERENCE_APPS = (("bare", "asgi", "bench.bare_app:app"), ("floor", "rsgi", "bench.floor_app:app"))


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


@dataclass(frozen=True)
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int  # answers wrk counted, less non-2xx/3xx ones
    sent: int  # requests the wrk threads wrote
    errors: dict[str, int]
    server_cpu: float = 0.0  # the server's processes, % of one core, while wrk ran
    # CPU time per request wrk counted, in µs: "server" (its whole process tree), "writer"
    # (pixelgate's writer process, part of "server"), "database" (every PostgreSQL process:
    # SQLite's work is the writer's own) and "wrk"; and "busy", the machine's % of one core.
    cpu_us: dict[str, float] = field(default_factory=dict)


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
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True)
class Profile:
    path: Path  # collapsed stacks, one "frame;frame;... count" per line
    seconds: int


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
    profiles: dict[str, Profile]
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


# --- tools and processes -------------------------------------------------------------------


def ensure_tools() -> None:
    """apt-get install nginx and wrk if missing, without letting the package start nginx."""
    if shutil.which("wrk") and nginx_binary():
        return
    print("installing nginx and wrk (apt-get) ...", flush=True)
    guard = Path("/usr/sbin/policy-rc.d")  # exit 101: maintainer scripts may start nothing
    created = not guard.exists()
    if created:
        guard.write_text("#!/bin/sh\nexit 101\n")
        guard.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx", "wrk"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created:
            guard.unlink()


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(name: str, argv: list[str], port: int, workdir: Path, **kwargs: Any) -> Server:
    """Start a server in its own session (Ctrl-C reaches only us; we stop it in order)."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
    return Server(name, port, proc, log)


def stop(server: Server, timeout: float = 30) -> int | None:
    """SIGTERM, wait; then SIGKILL what is left of its process group."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {server.name} did not stop within {timeout:.0f} s: killed", flush=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) in the group it led
    proc.wait()
    return proc.returncode


def http_get(port: int, path: str, timeout: float = 2) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, response.read()


def wait_ready(server: Server, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{tail(server)}")
        with contextlib.suppress(OSError):
            if http_get(server.port, path)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s:\n{tail(server)}")


def tail(server: Server, lines: int = 20) -> str:
    return "\n".join(server.log.read_text(errors="replace").splitlines()[-lines:])


def start_nginx(workdir: Path) -> Server:
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    template = (BENCH / "nginx.conf.template").read_text()
    conf = prefix / "nginx.conf"
    conf.write_text(template.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port)))
    binary = nginx_binary() or "nginx"
    # -e: the error log nginx opens before it has read the config, else /var/log/nginx.
    argv = [binary, "-e", str(prefix / "error.log"), "-c", str(conf), "-p", str(prefix)]
    server = spawn("nginx", argv, port, workdir)
    wait_ready(server, f"/p/{CHECK_SITE}/pixel.gif")
    return server


def start_granian(name: str, interface: str, target: str, workdir: Path) -> Server:
    """A reference app on granian with uvloop and one worker, as `pixelgate serve` runs."""
    port = free_port()
    argv = [str(BIN / "granian"), "--interface", interface, "--loop", "uvloop", target]
    argv += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port), "--no-ws"]
    argv += ["--working-dir", str(ROOT)]
    server = spawn(name, argv, port, workdir, cwd=ROOT)
    wait_ready(server, f"/p/{CHECK_SITE}/pixel.gif")
    return server


def start_pixelgate(workdir: Path, database: str, database_url: str, jobs: str) -> Server:
    port = free_port()
    home = workdir / f"pixelgate-{database}"  # its cwd: data/spool lands here, not in the repo
    home.mkdir()
    env = {
        **os.environ,
        "PIXELGATE_DATABASE_URL": database_url,
        "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
        "PIXELGATE_POLICIES_DIR": str(POLICIES),
        "PIXELGATE_HOST": "127.0.0.1",
        "PIXELGATE_PORT": str(port),
        "PIXELGATE_WORKERS": "1",
        "PIXELGATE_JOBS": jobs,
    }
    argv = [str(BIN / "pixelgate"), "serve"]
    server = spawn(f"pixelgate-{database}", argv, port, workdir, cwd=home, env=env)
    wait_ready(server, "/readyz")
    return server


def worker_pid(server: Server) -> int:
    """granian's worker: the child of the main process that runs the app."""
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    pids = [int(p) for p in children.split()]
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            return pid
    raise RuntimeError(f"no worker process under {server.proc.pid}")


def writer_pid(server: Server) -> int:
    """The worker's writer process (app/hits/writer_process.py)."""
    worker = worker_pid(server)
    for child in Path(f"/proc/{worker}/task/{worker}/children").read_text().split():
        if b"app.hits.writer_process" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise RuntimeError(f"no writer process under {worker}")


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


# --- wrk -----------------------------------------------------------------------------------


def wrk_command(
    server: Server, sc: Scenario, seconds: float, args: argparse.Namespace
) -> list[str]:
    return [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "wrk_subjects.lua"),
        f"http://127.0.0.1:{server.port}",
        "--",
        sc.site,
        "s-",
        "0",
        str(sc.subjects),
    ]


def parse_wrk(output: str) -> WrkRun:
    line = next((x for x in output.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["errors"]
    latency = data["latency_us"]
    return WrkRun(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        ok=data["requests"] - errors["status"],
        sent=data["sent"],
        errors=errors,
    )


def run_wrk(server: Server, sc: Scenario, seconds: float, args: argparse.Namespace) -> WrkRun:
    command = wrk_command(server, sc, seconds, args)
    writer = writer_pid(server) if server.name.startswith("pixelgate") else None
    before, started = cpu_sample(server, writer), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after, elapsed = cpu_sample(server, writer), time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    run = parse_wrk(done.stdout)
    spent = {part: after[part] - before[part] for part in after}
    per_request = {part: 1e6 * spent[part] / max(run.ok, 1) for part in spent if part != "busy"}
    return dataclasses.replace(
        run,
        server_cpu=100 * spent["server"] / elapsed,
        cpu_us={**per_request, "busy": 100 * spent["busy"] / elapsed},
    )


def cpu_sample(server: Server, writer: int | None) -> dict[str, float]:
    """CPU seconds so far: the server's tree, its writer, PostgreSQL, finished children (wrk)
    and the whole machine (all but idle and iowait, from /proc/stat)."""
    postgres = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True)
    children = os.times()
    machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {
        "server": cpu_seconds(server.proc.pid),
        "writer": cpu_seconds(writer) if writer else 0.0,
        "database": sum(cpu_seconds(int(pid), False) for pid in postgres.stdout.split()),
        "wrk": children.children_user + children.children_system,
        "busy": (sum(machine) - machine[3] - machine[4]) / os.sysconf("SC_CLK_TCK"),
    }


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time of a process (and all its descendants), from /proc."""
    total = 0.0
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        for children in Path(f"/proc/{pid}/task").glob("*/children") if descendants else ():
            total += sum(cpu_seconds(int(child)) for child in children.read_text().split())
    return total


# --- pixelgate's database ------------------------------------------------------------------


def pg_dsn(database: str) -> str:
    return f"postgresql://{PG_HOST}/{database}"


async def pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(pg_dsn("test"), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


LEDGER_COLUMNS = (
    "site", "id", "subject", "recorded_at", "action", "purposes", "policy_version",
    "policy_sha256", "source", "ip_prefix", "ua_family", "jurisdiction", "expires_at",
)  # fmt: skip
STATE_COLUMNS = (
    "site", "subject", "purpose", "granted", "policy_version", "record_id", "updated_at",
    "expires_at",
)  # fmt: skip

PURPOSES = {"analytics": True}
PURPOSES_JSON = json.dumps(PURPOSES)


def consent_rows(
    policy: Policy, site: str, subjects: list[str], now: datetime, purposes: object
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ledger and state rows consent.store.record writes for `analytics: true`, in the
    order of LEDGER_COLUMNS and STATE_COLUMNS. `purposes` is that JSON value as the driver
    takes it: a dict for SQLAlchemy, text for COPY."""
    expires = now + timedelta(days=policy.file.purposes["analytics"].consent_ttl_days)
    version, sha256 = policy.version, policy.sha256
    ledger, state = [], []
    for subject in subjects:
        record_id = uuid.uuid4()
        ledger.append(
            (site, record_id, subject, now, "given", purposes, version, sha256, "bench",
             None, None, "eu", expires)
        )  # fmt: skip
        state.append((site, subject, "analytics", True, version, record_id, now, expires))
    return ledger, state


async def seed(database_url: str, sites: dict[str, int]) -> None:
    """Create the sites with the library, bulk-insert consent, check one decision per site."""
    policies = load_policies(POLICIES)
    policy = policies[POLICY]
    keyring = KeyRing(SECRET)
    now = utcnow()
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    pg = database_url.startswith("postgresql")
    raw = await asyncpg.connect(database_url.replace("+asyncpg", "")) if pg else None
    try:
        async with transaction(sessions) as session:
            for slug in sites:
                await create_site(
                    session, slug=slug, policy=POLICY, policies=policies, origins=[],
                    jurisdiction="eu", now=now,
                )  # fmt: skip
        for slug, count in sites.items():
            # In key order, the indexes grow at their end: several times faster to load.
            subjects = sorted(keyring.pseudonym(slug, f"s-{n}") for n in range(count))
            for start in range(0, count, SEED_BATCH):
                batch = subjects[start : start + SEED_BATCH]
                if raw is not None:
                    await copy_consent(raw, *consent_rows(policy, slug, batch, now, PURPOSES_JSON))
                else:
                    await insert_consent(engine, *consent_rows(policy, slug, batch, now, PURPOSES))
        if raw is not None:
            # As autovacuum would have by now on a live database (and so that it does not
            # start on these tables in the middle of a measurement).
            await raw.execute("VACUUM ANALYZE")
        async with sessions() as session:
            for slug, count in sites.items():
                registry = await store.registry(session, slug, keyring.pseudonym(slug, "s-0"))
                decision = decide(policy, "pageview", registry, Signals(), "eu", utcnow())
                if decision.record != (count > 0):
                    raise RuntimeError(f"seeding {slug}: s-0 decided {decision}")
    finally:
        if raw is not None:
            await raw.close()
        await engine.dispose()


async def copy_consent(raw: Any, ledger: list[Any], state: list[Any]) -> None:
    """PostgreSQL: COPY, one transaction per batch."""
    async with raw.transaction():
        await raw.copy_records_to_table("consent_ledger", records=ledger, columns=LEDGER_COLUMNS)
        await raw.copy_records_to_table("consent_state", records=state, columns=STATE_COLUMNS)


async def insert_consent(engine: AsyncEngine, ledger: list[Any], state: list[Any]) -> None:
    """SQLite: a Core executemany (SQLAlchemy converts the values), one transaction per batch."""
    async with engine.begin() as connection:
        rows = [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in ledger]
        await connection.execute(insert(ConsentLedger), rows)
        rows = [dict(zip(STATE_COLUMNS, row, strict=True)) for row in state]
        await connection.execute(insert(ConsentState), rows)


async def count_events(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(Event.site, func.count()).group_by(Event.site))
            return {site: int(n) for site, n in result}
    finally:
        await engine.dispose()


# --- pixelgate's own view ------------------------------------------------------------------

METRIC_LINE = re.compile(r"^(pixelgate_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def read_metrics(server: Server) -> dict[str, float]:
    try:
        body = http_get(server.port, "/metrics", timeout=10)[2].decode()
    except OSError:
        return {}
    found = {}
    for line in body.splitlines():
        match = METRIC_LINE.match(line)
        if match and not match.group(1).endswith("_created"):
            found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


def hits_of(m: dict[str, float], outcome: str, reason: str) -> float:
    """pixelgate_hits_total of one outcome and reason, summed over its sites."""
    labels = f'{{outcome="{outcome}",reason="{reason}",'
    return sum(v for k, v in m.items() if k.startswith(f"pixelgate_hits_total{labels}"))


def wait_for_writer(server: Server, timeout: float = 120) -> tuple[int, float]:
    """Wait until pixelgate has decided and written every hit it queued: the queue is empty
    and its counters add up (queued = written + decided against + spooled + lost), or, should
    they never add up, until they stop moving for 2 s. Returns the backlog (the queue depth
    first seen once wrk has stopped) and how long it took to write it."""
    started = time.monotonic()
    backlog = int(read_metrics(server).get("pixelgate_queue_depth", 0))
    time.sleep(0.2)  # the requests wrk left in flight
    last, still_since = {}, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = read_metrics(server)
        depth = int(m.get("pixelgate_queue_depth", 0))
        settled = hits_of(m, "denied", "no_consent") + sum(
            m.get(f"pixelgate_events_{k}_total", 0) for k in ("flushed", "spilled", "dropped")
        )
        if depth == 0 and settled >= m.get("pixelgate_events_queued_total", 0):
            break
        if m != last:
            last, still_since = m, time.monotonic()
        elif time.monotonic() - still_since >= 2:
            break
        time.sleep(0.1)
    return backlog, time.monotonic() - started


LOG_PROBLEM = re.compile(r"error|exception|traceback|warn|critical|fatal", re.IGNORECASE)


def log_problems(server: Server) -> list[tuple[int, str]]:
    """Lines of the log that look like trouble, each once with how often it came."""
    seen: Counter[str] = Counter()
    for line in server.log.read_text(errors="replace").splitlines():
        if LOG_PROBLEM.search(line):
            seen[re.sub(r"^\[[^\]]*\]\s*", "", line.strip())] += 1
    return [(n, line) for line, n in seen.most_common(15)]


# --- profiling -----------------------------------------------------------------------------


def profile_run(
    server: Server, sc: Scenario, args: argparse.Namespace, out: Path
) -> tuple[WrkRun, dict[str, Profile]]:
    """One wrk run while py-spy samples the worker and its writer process for most of it,
    keeping only samples of a thread holding the GIL: the Python work each process does, and
    what its one core spends. The writer's stacks go to <out>-writer.txt."""
    pyspy = BIN / "py-spy"
    if not pyspy.exists():
        subprocess.run([str(BIN / "pip"), "install", "-q", "py-spy"], check=True)
    seconds = max(4, args.duration)
    targets = {
        "worker": (worker_pid(server), out),
        "writer": (writer_pid(server), out.with_name(f"{out.stem}-writer{out.suffix}")),
    }
    wrk = subprocess.Popen(
        wrk_command(server, sc, seconds, args), stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1)
        spies = []
        for pid, path in targets.values():
            record = [str(pyspy), "record", "--pid", str(pid), "--format", "raw"]
            record += ["--duration", str(seconds - 2), "--rate", str(PROFILE_RATE)]
            record += ["--gil", "--threads", "-o", str(path)]
            spies.append(subprocess.Popen(record, stdout=subprocess.DEVNULL))
        if any(spy.wait() != 0 for spy in spies):
            raise RuntimeError("py-spy failed")
        output, _ = wrk.communicate()
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    profiles = {name: Profile(path, seconds - 2) for name, (_, path) in targets.items()}
    return parse_wrk(output), profiles


def summarise_profile(profile: Profile, top: int = 15) -> list[str]:
    """Shares of the GIL-holding samples: per function and per package (own time), and per
    project function (total time). SQLAlchemy's async layer runs in greenlets, whose stacks
    py-spy shows without their callers: totals only count what is visible."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in profile.path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":-?\d+\)$", ")", f.strip()) for f in stack.split(";") if f.strip()]
        if frames and frames[0].startswith("thread ("):
            threads[frames.pop(0).removeprefix("thread ")] += n
        if not frames:
            frames = ["(no Python frame)"]
        own[frames[-1]] += n
        packages[package_of(frames[-1])] += n
        for frame in set(frames):
            if ("(app/" in frame or "(consent/" in frame) and "(app/cli.py)" not in frame:
                project[frame] += n
    if not samples:
        return ["  (no samples)"]

    def share(counter: Counter[str], limit: int) -> list[str]:
        return [f"    {100 * n / samples:5.1f} %  {k}" for k, n in counter.most_common(limit)]

    held = samples / (PROFILE_RATE * profile.seconds)
    by_thread = ", ".join(f"{k} {100 * n / samples:.0f} %" for k, n in threads.most_common())
    lines = [
        f"  GIL held in {100 * held:.0f} % of the samples ({samples:,}); by thread: {by_thread}",
        "  own time, by function:",
        *share(own, top),
        "  own time, by package or module:",
        *share(packages, 12),
        "  total time, project functions (with what they call):",
        *share(project, top),
    ]
    return lines


def package_of(frame: str) -> str:
    """ "f (litestar/app.py)" -> "litestar"; "f (app/http/pixel.py)" -> "app/http/pixel.py"."""
    if " (" not in frame:
        return frame
    where = frame.rpartition(" (")[2].rstrip(")")
    top, _, rest = where.partition("/")
    if top in ("app", "consent") or not rest:
        return where
    return top


# --- one database --------------------------------------------------------------------------


def bench_database(
    database: str,
    refs: dict[str, Server],
    workdir: Path,
    args: argparse.Namespace,
    cleanup: contextlib.ExitStack,
) -> DatabaseReport:
    label = LABELS[database]
    if database == "postgresql":
        name = f"pixelgate_bench_{secrets.token_hex(4)}"
        asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
        cleanup.callback(
            lambda: asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        )
        url = f"postgresql+asyncpg://{PG_HOST}/{name}"
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'pixelgate.db'}"

    started = time.perf_counter()
    print(f"[{label}] migrating and seeding {args.subjects + 1_000:,} consented subjects ...")
    migrate(url)
    asyncio.run(seed(url, seeded_sites(args.subjects)))
    seed_seconds = time.perf_counter() - started
    print(f"[{label}] seeded in {seed_seconds:.1f} s; starting pixelgate", flush=True)

    pixelgate = start_pixelgate(workdir, database, url, args.jobs)
    cleanup.callback(stop, pixelgate)
    servers = {"pixelgate": pixelgate, **refs}
    check_same_pixel(servers)

    plan = scenarios(args.subjects)
    runs: dict[str, list[WrkRun]] = {sc.name: [] for sc in plan}
    tallies = {sc.site: Tally() for sc in plan if sc.pixelgate}

    def measured(sc: Scenario, seconds: float) -> WrkRun:
        run = run_wrk(servers[sc.server], sc, seconds, args)
        if sc.pixelgate:
            tallies[sc.site].add(run)
            backlog, seconds = wait_for_writer(pixelgate)
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
        for sc in plan:
            if sc.consented:
                slug = sc.name.replace(", ", "-").replace(" ", "-")
                out = args.profile / f"{database}-{slug}.txt"
                print(f"[{label}] profiling {sc.name} with py-spy -> {out}", flush=True)
                run, found = profile_run(pixelgate, sc, args, out)
                profiles.update({f"{sc.name}, {name}": p for name, p in found.items()})
                tallies[sc.site].add(run)
                wait_for_writer(pixelgate)

    metrics = read_metrics(pixelgate)
    print(f"[{label}] stopping pixelgate with SIGTERM (it drains its queue) ...", flush=True)
    drain_started = time.perf_counter()
    exit_code = stop(pixelgate, timeout=DRAIN_SECONDS)
    drain_seconds = time.perf_counter() - drain_started
    rows = asyncio.run(count_events(url))
    return DatabaseReport(
        database=database,
        runs=runs,
        tallies=tallies,
        rows=rows,
        exit_code=exit_code,
        drain_seconds=drain_seconds,
        metrics=metrics,
        log_problems=log_problems(pixelgate),
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
        cpu = {part: median(rep.runs[sc.name], lambda r, p=part: r.cpu_us[p]) for part in PARTS}
        writer = f"({cpu['writer']:5.1f})" if sc.pixelgate else " " * 7
        total = cpu["server"] + cpu["database"] + cpu["wrk"]
        out.append(
            f"  {sc.name:<18} {cpu['server']:6.1f} {writer} {cpu['database']:6.1f}"
            f" {cpu['wrk']:6.1f}  = {total:6.1f}   busy {cpu['busy']:3.0f} %"
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
    recorded = int(hits_of(m, "recorded", "recorded"))
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
        out += summarise_profile(profile)
    return out


PARTS = ("server", "writer", "database", "wrk", "busy")


def verdict(value: str, ok: bool, target: str) -> str:
    return f"{value} ({target}: {'ok' if ok else 'MISSED'})"


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], action="append")
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
    # Ctrl-C (even when started in the background, which ignores it) and SIGTERM unwind
    # through the cleanup below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()
    reports = []
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="pixelgate-bench-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (everything started was stopped and removed)", file=sys.stderr)
        sys.exit(130)
