"""The queue between the pixel and the writer: hits are queued in memory as they came and
handed to the writer a batch at a time.

The pixel answers once its hit is queued. The writer (app/hits/writer.py) reads, pseudonymises,
decides and writes each batch: in this process, or, under `pixelgate serve`, in a process
of its own (app/hits/writer_process.py) so that its work does not hold up the pixel. On shutdown
the queue is drained.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Protocol

from app.base.metrics import Metrics, Tally
from app.hits.arrival import Arrival

log = logging.getLogger("pixelgate.ingest")


class BatchWriter(Protocol):
    """The Writer (writer.py), or the WriterProcess (writer_process.py) in front of one."""

    async def start(self) -> None: ...

    async def write(self, arrivals: list[Arrival]) -> None: ...

    def take_tally(self) -> Tally: ...

    def problem(self) -> str | None: ...

    async def close(self) -> None: ...


class Ingest:
    """Batches of up to 5,000 hits or 50 ms: a batch's fixed costs (a transaction, a COPY, a
    consent lookup, a trip to the writer process) spread over more hits, and the writer takes
    less of the machine the pixel shares with it (bench/README.md); the wait is still far
    below what a person could notice."""

    def __init__(
        self,
        writer: BatchWriter,
        metrics: Metrics,
        *,
        batch_rows: int = 5000,
        batch_seconds: float = 0.05,
        capacity: int = 100_000,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._capacity = capacity
        # A plain deque and three events rather than an asyncio.Queue: the pixel's side is
        # one append, and the writer takes a whole batch at once.
        self._arrivals: deque[Arrival] = deque()
        self._arrived = asyncio.Event()  # the deque is no longer empty (or we are closing)
        self._full = asyncio.Event()  # a whole batch is waiting (or we are closing)
        self._room = asyncio.Event()  # the writer took a batch: a full deque has room again
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._drained = False  # the queue is written out and closed: a hit now has no writer
        self._submitted = 0  # counted into the `queued` counter a batch at a time
        self._published = 0
        self._task: asyncio.Task[None] | None = None

    async def submit(self, arrival: Arrival) -> None:
        """Queue a hit; only when the queue is full does the caller wait (back-pressure)."""
        while not self.offer(arrival):
            self._room.clear()
            await self._room.wait()

    def offer(self, arrival: Arrival) -> bool:
        """submit() without the wait, for the pixel (a coroutine a hit costs the thread it
        answers on more): False, and nothing done, when the queue is full."""
        if self._drained:
            # A request the server let in after the drain (or held back by a full queue until
            # then): no writer is left for it. Counted, never silently kept.
            log.error("a hit came after the queue was drained: lost")
            self._metrics.dropped.inc()
            return True
        arrivals = self._arrivals
        if len(arrivals) >= self._capacity:
            return False
        arrivals.append(arrival)
        self._submitted += 1
        if len(arrivals) == 1:
            self._arrived.set()
            self._idle.clear()
        elif len(arrivals) == self._batch_rows:
            self._full.set()
        return True

    def publish(self) -> None:
        """Bring the queue's and the writer's counters in /metrics up to date."""
        self._metrics.queued.inc(self._submitted - self._published)
        self._published = self._submitted
        self._metrics.queue_depth.set(len(self._arrivals))
        self._metrics.count(self._writer.take_tally())

    def problem(self) -> str | None:
        """Why the writer cannot make progress, if it cannot (for /readyz)."""
        return self._writer.problem()

    async def start(self) -> None:
        await self._writer.start()
        self._task = asyncio.create_task(self._run(), name="pixelgate-ingest")

    async def close(self) -> None:
        """Drain: everything queued is written (or spooled) before this returns."""
        if self._task is not None:
            self._closing = True
            self._arrived.set()
            self._full.set()
            await self._task
            self._task = None
        self._drained = True  # also when the queue never started
        self._room.set()  # a pixel still waiting for room learns there will be none
        await self._writer.close()
        self.publish()

    async def settled(self) -> None:
        """Wait until everything submitted so far has been written or spooled."""
        await self._idle.wait()  # cleared by the first hit queued, set when all are written

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                started = time.perf_counter()
                await self._writer.write(batch)
                self._metrics.flush_seconds.observe(time.perf_counter() - started)
            if not self._arrivals:
                self._idle.set()
            self.publish()
            if self._closing and not self._arrivals:
                self._drained = True  # in the same step as the look: no hit slips in between
                return

    async def _next_batch(self) -> list[Arrival]:
        """Up to batch_rows hits, or what came within batch_seconds of the first."""
        if not self._arrivals and not self._closing:
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._arrivals) < self._batch_rows and not self._closing:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._batch_seconds)
        arrivals = self._arrivals
        batch = [arrivals.popleft() for _ in range(min(len(arrivals), self._batch_rows))]
        self._room.set()
        return batch
