"""wrk runs against the pixel: the command, its result, and the CPU it cost.

Every request asks for one site's pixel for a random subject (bench/lib/wrk_subjects.lua),
which prints its result as one JSON line.
"""

import dataclasses
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.lib import cpu
from bench.lib.servers import Server

SCRIPT = Path(__file__).with_name("wrk_subjects.lua")


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


def command(
    port: int,
    site: str,
    subjects: int,
    seconds: float,
    *,
    connections: int,
    threads: int,
    timeout: str,
) -> list[str]:
    """wrk asking for /p/<site>/pixel.gif with u=s-<n>, n uniform in [0, subjects); no u at
    all when subjects is 0. A request unanswered after `timeout` counts as an error."""
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        timeout,
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        site,
        "s-",
        "0",
        str(subjects),
    ]


def parse(output: str) -> WrkRun:
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


def run(argv: list[str], server: Server, writer_pid: int | None = None) -> WrkRun:
    """Run wrk to its end, with the CPU time the server (and its writer process, if given),
    PostgreSQL and wrk spent meanwhile, per request wrk counted."""
    before, started = cpu.sample(server.proc.pid, writer_pid), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    after, elapsed = cpu.sample(server.proc.pid, writer_pid), time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse(done.stdout)
    spent = {part: after[part] - before[part] for part in after}
    per_request = {part: 1e6 * spent[part] / max(result.ok, 1) for part in spent if part != "busy"}
    return dataclasses.replace(
        result,
        server_cpu=100 * spent["server"] / elapsed,
        cpu_us={**per_request, "busy": 100 * spent["busy"] / elapsed},
    )
