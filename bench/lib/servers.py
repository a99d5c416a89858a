"""Servers on loopback, each in a session of its own: started, waited for, stopped in order.

nginx and the granian reference apps (bench/references/) are the yardsticks pixelgate is
compared with; pixelgate itself starts through bench.lib.pixelgate.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository
BIN = Path(sys.executable).parent  # the virtualenv's scripts: granian, pixelgate, pip
REFERENCES = ROOT / "bench" / "references"
CHECK_SITE = "bench-check"  # unknown to pixelgate: a request to it is answered, not recorded


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


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
    """nginx answering the pixel path with its built-in GIF (references/nginx.conf.template)."""
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    template = (REFERENCES / "nginx.conf.template").read_text()
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


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux: from /proc)."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in found.split()]


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()
