"""CPU accounting from /proc: what a server, PostgreSQL, wrk and the machine spent.

On a machine of few cores every process the bench starts takes CPU from the others, so a
throughput figure is read beside where the CPU went.
"""

import contextlib
import os
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

# What sample() counts: a server's whole process tree, its writer process (part of the
# tree), every PostgreSQL process, this process's finished children (wrk), and "busy", the
# machine as a whole.
PARTS = ("server", "writer", "database", "wrk", "busy")


def seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time of a process (and all its descendants), from /proc."""
    total = 0.0
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(stat[11]) + int(stat[12])) / TICK
        for children in Path(f"/proc/{pid}/task").glob("*/children") if descendants else ():
            total += sum(seconds(int(child)) for child in children.read_text().split())
    return total


def sample(server_pid: int, writer_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of each of PARTS (the machine: all but idle and iowait)."""
    postgres = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True)
    finished = os.times()
    machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {
        "server": seconds(server_pid),
        "writer": seconds(writer_pid) if writer_pid else 0.0,
        "database": sum(seconds(int(pid), False) for pid in postgres.stdout.split()),
        "wrk": finished.children_user + finished.children_system,
        "busy": (sum(machine) - machine[3] - machine[4]) / TICK,
    }
