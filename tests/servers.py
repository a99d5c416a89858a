"""Real `pixelgate serve` processes for tests, and a TCP proxy to cut their database."""

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.factories import POLICIES, SECRET, forbidden_strings

START_LIMIT = 120.0  # seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PIXELGATE_DATABASE_URL": database_url,
        "PIXELGATE_SECRET_KEY": base64.b64encode(SECRET).decode(),
        "PIXELGATE_POLICIES_DIR": str(POLICIES),
        **extra,
    }


class Server:
    """`pixelgate serve` in its own process, with its log in the working directory."""

    def __init__(self, database_url: str, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / f"server-{self.port}.log"
        self._env = environment(database_url, PIXELGATE_PORT=str(self.port), **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Server":
        """Returns once /healthz answers; fails as soon as the server has exited instead.
        The time limit is only a backstop: on a busy machine a start-up takes seconds."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"],
                cwd=self.workdir,
                env=self._env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: see kill()
            )
        RUNNING.add(self)
        deadline = time.monotonic() + START_LIMIT
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        exited = self.process.poll()
        self.kill()
        raise AssertionError(f"server did not start (exit status {exited}):\n" + self.log())

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would: the server drains before it exits."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        """The exit status of a server already told to stop: a second SIGTERM while it drains
        would cut the drain short."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=60)
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        """SIGKILL to whatever is left of its process group (the writer process ignores
        SIGTERM), so that no test leaves a server behind, whatever way it ended."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        RUNNING.discard(self)

    def writer_pid(self) -> int:
        """The worker's writer process (app/hits/writer_process.py)."""
        assert self.process is not None
        pending, found = [self.process.pid], []
        while pending:
            pid = pending.pop()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pending += [int(child) for child in children]
            if b"app.hits.writer_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        [writer] = found
        return writer

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def assert_clean_log(self) -> None:
        text = self.log()
        assert "Traceback" not in text, text
        leaked = sorted(s for s in forbidden_strings() if s in text)
        assert not leaked, f"raw identifiers in the server log: {leaked}"


RUNNING: set[Server] = set()  # killed at the end of the session if a test left one


def kill_every_server() -> None:
    for server in list(RUNNING):
        server.kill()


class TcpProxy:
    """Forwards a local port to a target; `cut()` drops every connection and refuses new ones
    (the database "goes away" without touching the shared PostgreSQL), `restore()` heals it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as when a database host dies
        self._writers.clear()

    def restore(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
