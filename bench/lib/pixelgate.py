"""pixelgate under test: `pixelgate serve` with one worker, and what it says about itself.

Its secret is fixed, so that the pseudonyms bench.lib.databases seeds consent under are the
ones the server computes for the same subjects.
"""

import base64
import os
import re
import time
from collections import Counter
from pathlib import Path

from bench.lib.servers import (
    BIN,
    ROOT,
    Server,
    children,
    cmdline,
    free_port,
    http_get,
    spawn,
    wait_ready,
)

POLICIES = ROOT / "policies"
POLICY = "gdpr-strict"  # a hit is recorded only with consent
SECRET = bytes(range(64, 96))


def start(workdir: Path, database: str, database_url: str, jobs: str) -> Server:
    """`pixelgate serve` (migrations, then granian) on one worker, its scheduled jobs on or
    off; its cwd is a dir of its own in `workdir`, so that data/spool lands there."""
    port = free_port()
    home = workdir / f"pixelgate-{database}"
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
    for pid in children(server.proc.pid):
        if b"resource_tracker" not in cmdline(pid):
            return pid
    raise RuntimeError(f"no worker process under {server.proc.pid}")


def writer_pid(server: Server) -> int:
    """The worker's writer process (the module named writer_process)."""
    worker = worker_pid(server)
    for child in children(worker):
        if b"writer_process" in cmdline(child):
            return child
    raise RuntimeError(f"no writer process under {worker}")


METRIC_LINE = re.compile(r"^(pixelgate_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def read_metrics(server: Server) -> dict[str, float]:
    """/metrics as {name{labels}: value}; empty when the server does not answer."""
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
    last: dict[str, float] = {}
    still_since = time.monotonic()
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
