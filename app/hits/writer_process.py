"""The writer in a process of its own, fed through a pipe.

Under `pixelgate serve` every worker starts one: its Python work (reading, pseudonymising,
deciding and writing) would otherwise share the worker's one thread with the pixel, and the
pixel would answer at about half the rate (bench/README.md). The worker sends each batch down the
child's stdin and waits for its report on stdout before sending the next, so nothing queues
anywhere but in app/hits/queue.py's bounded queue, and a drained queue means written hits.

What crosses the pipe is raw (the hits as they came, like the queue holds them): it stays in
the memory of the two processes. The child also hears of every consent change its worker
hears of (`Forget`), so its consent cache is emptied as promptly as the worker's own.

The child ignores SIGINT and SIGTERM: it ends when its stdin does, after writing all it was
sent, so a Ctrl-C or a SIGTERM sent to the whole process group loses nothing.
"""

import asyncio
import contextlib
import gc
import logging
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from app.base.db import make_engine, make_sessionmaker
from app.base.metrics import Tally
from app.base.settings import Settings
from app.base.sites import SiteDirectory
from app.hits.arrival import Arrival
from app.hits.writer import UNREACHABLE, Writer, writer_for
from consent.cache import ConsentCache, Key

log = logging.getLogger("pixelgate.writer")
HEADER = struct.Struct(">I")
# Each hit inserts into the events' subject index at a place of its own: with SQLite's
# default 2 MiB page cache most of those pages are read again from the file at every batch;
# 64 MiB keeps them (bench/README.md has the figures).
WRITER_SQLITE_CACHE_MIB = 64


class Batch(msgspec.Struct, tag="batch", gc=False):
    arrivals: list[Arrival]


class Forget(msgspec.Struct, tag="forget"):
    key: Key | None  # None: everyone (the worker lost its notification channel)


class Report(msgspec.Struct):
    tally: Tally
    written: bool  # the batch sent last is written (or spooled); at first: ready
    problem: str | None = None  # Writer.problem(): why it cannot make progress, if it cannot


def _path_out(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(type(value))


def _path_in(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind)


ENCODER = msgspec.msgpack.Encoder(enc_hook=_path_out)
SETTINGS = msgspec.msgpack.Decoder(Settings, dec_hook=_path_in)
MESSAGE = msgspec.msgpack.Decoder(Batch | Forget)
REPORT = msgspec.msgpack.Decoder(Report)


def frame(message: object) -> bytes:
    payload = ENCODER.encode(message)
    return HEADER.pack(len(payload)) + payload


async def read_frame(stream: asyncio.StreamReader) -> bytes | None:
    """The next frame, or None once the other side has closed the pipe."""
    try:
        (size,) = HEADER.unpack(await stream.readexactly(HEADER.size))
        return await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


class WriterGone(Exception):
    pass


class WriterProcess:
    """The worker's side: what app/hits/queue.py's queue hands batches to."""

    def __init__(self, settings: Settings, consent: ConsentCache) -> None:
        self._settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._reports: asyncio.Task[None] | None = None
        self._written: asyncio.Future[None] | None = None
        self._tally = Tally()
        self._problem: str | None = None
        consent.followers.append(self._forget)

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.hits.writer_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        # Its first report says it is ready: hits sent before that would meet a writer that
        # has not looked up its sites yet.
        self._written = asyncio.get_running_loop().create_future()
        self._process.stdin.write(frame(self._settings))
        self._reports = asyncio.create_task(self._read_reports(self._process.stdout))
        await self._written

    async def write(self, arrivals: list[Arrival]) -> None:
        """Send a batch and wait until it is written; if the child died, start another."""
        try:
            if self._reports is None or self._reports.done():
                log.error("the writer process is gone; starting another")
                await self.start()
            assert self._process is not None and self._process.stdin is not None
            # No await between the check above and this: a child that exits from here on
            # fails this future, so the wait below cannot outlive it.
            self._written = asyncio.get_running_loop().create_future()
            self._process.stdin.write(frame(Batch(arrivals)))
            await self._process.stdin.drain()
            await self._written
        except (WriterGone, ConnectionError) as exc:
            log.error("%d hits lost: the writer process exited (%s)", len(arrivals), exc)
            self._tally.dropped += len(arrivals)

    def take_tally(self) -> Tally:
        tally, self._tally = self._tally, Tally()
        return tally

    def problem(self) -> str | None:
        """What the child said last of its progress."""
        return self._problem

    async def close(self) -> None:
        """Close the child's stdin; it writes what it has and exits."""
        if self._process is None or self._process.stdin is None:
            return
        self._process.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self._process.stdin.wait_closed()
        if self._reports is not None:
            await self._reports
        await self._process.wait()

    def _forget(self, key: Key | None) -> None:
        process = self._process
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.write(frame(Forget(key)))

    async def _read_reports(self, stdout: asyncio.StreamReader) -> None:
        while (data := await read_frame(stdout)) is not None:
            report = REPORT.decode(data)
            self._tally.add(report.tally)
            self._problem = report.problem
            if report.written and self._written is not None and not self._written.done():
                self._written.set_result(None)
        if self._written is not None and not self._written.done():
            code = await self._process.wait() if self._process is not None else None
            self._written.set_exception(WriterGone(f"exit status {code}"))


async def run_child(stdin: asyncio.StreamReader, report: Callable[[Report], None]) -> None:
    """The child's side: build a writer from the worker's settings and feed it."""
    first = await read_frame(stdin)
    if first is None:
        return
    settings = SETTINGS.decode(first)
    engine = make_engine(settings.database_url, sqlite_cache_mib=WRITER_SQLITE_CACHE_MIB)
    sessions = make_sessionmaker(engine)
    consent = ConsentCache(sessions)
    sites = SiteDirectory(sessions)
    writer = writer_for(settings, engine, sessions, sites, consent)
    try:
        await sites.load()
    except UNREACHABLE as exc:
        log.warning("sites not loaded (%s): looked up as their hits come", type(exc).__name__)
    gc.freeze()  # what start-up built lives as long as the process: out of every collection
    report(Report(Tally(), written=True))
    await writer.start()
    reporter = asyncio.create_task(_report_between_batches(writer, report))
    try:
        while (data := await read_frame(stdin)) is not None:
            message = MESSAGE.decode(data)
            if isinstance(message, Forget):
                if message.key is None:
                    consent.clear()
                else:
                    consent.invalidate(*message.key)
                continue
            # Garbage is collected between batches, not during them: everything a batch makes
            # lives until the batch is written, and collections in the middle of one walked
            # tens of thousands of objects each to free nothing (up to a sixth of the
            # writer's time with a registry too big for the consent cache).
            gc.disable()
            try:
                await writer.write(message.arrivals)
            finally:
                gc.enable()
            report(Report(writer.take_tally(), written=True, problem=writer.problem()))
    finally:
        reporter.cancel()
        await writer.close()
        report(Report(writer.take_tally(), written=False))
        await engine.dispose()


async def _report_between_batches(writer: Writer, report: Callable[[Report], None]) -> None:
    """The writer replays its spool on a timer of its own: those counts, and whether it is
    making progress, need no batch to reach the worker's /metrics and /readyz."""
    problem = None
    while True:
        await asyncio.sleep(0.5)
        tally = writer.take_tally()
        if tally != Tally() or writer.problem() != problem:
            problem = writer.problem()
            report(Report(tally, written=False, problem=problem))


async def _child_main() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the reports

    def report(message: Report) -> None:
        os.write(out, frame(message))  # small, and the worker always reads: no need to wait

    await run_child(stdin, report)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.run(_child_main())


if __name__ == "__main__":
    main()
