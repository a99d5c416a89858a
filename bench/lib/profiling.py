"""py-spy samples of pixelgate's worker and writer process during a wrk run, summarised.

Only samples of a thread holding the GIL are kept: the Python work each process does, and
what its one core spends on it.
"""

import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.lib import wrk
from bench.lib.pixelgate import worker_pid, writer_pid
from bench.lib.servers import BIN, Server

RATE = 200  # py-spy samples per second
PROJECT = ("app", "consent")  # the packages whose functions are shown by total time


@dataclass(frozen=True)
class Profile:
    path: Path  # collapsed stacks, one "frame;frame;... count" per line
    seconds: int


def record(
    server: Server, wrk_argv: list[str], seconds: int, out: Path
) -> tuple[wrk.WrkRun, dict[str, Profile]]:
    """Run wrk (`wrk_argv`, lasting `seconds`) while py-spy samples the worker and its
    writer process from 1 s in to 1 s before its end. The worker's stacks go to `out`, the
    writer's to <out>-writer.txt; the profiles are named "worker" and "writer"."""
    pyspy = BIN / "py-spy"
    if not pyspy.exists():
        subprocess.run([str(BIN / "pip"), "install", "-q", "py-spy"], check=True)
    targets = {
        "worker": (worker_pid(server), out),
        "writer": (writer_pid(server), out.with_name(f"{out.stem}-writer{out.suffix}")),
    }
    running = subprocess.Popen(wrk_argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        spies = []
        for pid, path in targets.values():
            argv = [str(pyspy), "record", "--pid", str(pid), "--format", "raw"]
            argv += ["--duration", str(seconds - 2), "--rate", str(RATE)]
            argv += ["--gil", "--threads", "-o", str(path)]
            spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        if any(spy.wait() != 0 for spy in spies):
            raise RuntimeError("py-spy failed")
        output, _ = running.communicate()
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    profiles = {name: Profile(path, seconds - 2) for name, (_, path) in targets.items()}
    return wrk.parse(output), profiles


def summarise(profile: Profile, top: int = 15) -> list[str]:
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
            in_project = any(f"({name}/" in frame for name in PROJECT)
            if in_project and "(app/cli.py)" not in frame:
                project[frame] += n
    if not samples:
        return ["  (no samples)"]

    def share(counter: Counter[str], limit: int) -> list[str]:
        return [f"    {100 * n / samples:5.1f} %  {k}" for k, n in counter.most_common(limit)]

    held = samples / (RATE * profile.seconds)
    by_thread = ", ".join(f"{k} {100 * n / samples:.0f} %" for k, n in threads.most_common())
    return [
        f"  GIL held in {100 * held:.0f} % of the samples ({samples:,}); by thread: {by_thread}",
        "  own time, by function:",
        *share(own, top),
        "  own time, by package or module:",
        *share(packages, 12),
        "  total time, project functions (with what they call):",
        *share(project, top),
    ]


def package_of(frame: str) -> str:
    """ "f (litestar/app.py)" -> "litestar"; "f (app/http/pixel.py)" -> "app/http/pixel.py"."""
    if " (" not in frame:
        return frame
    where = frame.rpartition(" (")[2].rstrip(")")
    top, _, rest = where.partition("/")
    if top in PROJECT or not rest:
        return where
    return top
