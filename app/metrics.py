"""Counters for /metrics (Prometheus text format), one registry per app."""

from collections.abc import Mapping

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Tally(msgspec.Struct, gc=False):
    """What the writer did since it was last asked: it may run in another process, so it
    counts here rather than into the registry below."""

    flushed: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    bad_files: int = 0  # spool files set aside, unreadable
    hits: dict[str, int] = {}  # "recorded", or the reason a hit was denied -> hits

    def add(self, other: "Tally") -> None:
        self.flushed += other.flushed
        self.spilled += other.spilled
        self.replayed += other.replayed
        self.dropped += other.dropped
        self.bad_files += other.bad_files
        self.count_hits(other.hits)

    def count_hits(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            if count:
                self.hits[reason] = self.hits.get(reason, 0) + count


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter(
            "pixelgate_hits", "Hits by outcome and reason", ["outcome", "reason"], registry=r
        )
        self.queued = Counter(
            "pixelgate_events_queued",
            "Hits queued (every pixel request, before it is read)",
            registry=r,
        )
        self.flushed = Counter("pixelgate_events_flushed", "Events written", registry=r)
        self.spilled = Counter(
            "pixelgate_events_spilled", "Events spooled to disk (database unreachable)", registry=r
        )
        self.replayed = Counter(
            "pixelgate_events_replayed", "Spooled events written once it was back", registry=r
        )
        self.dropped = Counter(
            "pixelgate_events_dropped", "Events lost (could not be written nor spooled)", registry=r
        )
        self.bad_files = Counter(
            "pixelgate_spool_bad_files",
            "Spool files that could not be replayed whole, kept aside as *.bad",
            registry=r,
        )
        self.dsar_open = Gauge("pixelgate_dsar_open", "Data subject requests not done", registry=r)
        self.dsar_overdue = Gauge(
            "pixelgate_dsar_overdue", "Data subject requests past their due date", registry=r
        )
        self.queue_depth = Gauge("pixelgate_queue_depth", "Hits waiting to be written", registry=r)
        self.flush_seconds = Histogram(
            "pixelgate_flush_seconds",
            "Time to decide and write one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def count(self, tally: Tally) -> None:
        self.flushed.inc(tally.flushed)
        self.spilled.inc(tally.spilled)
        self.replayed.inc(tally.replayed)
        self.dropped.inc(tally.dropped)
        self.bad_files.inc(tally.bad_files)
        for reason, hits in tally.hits.items():
            outcome = "recorded" if reason == "recorded" else "denied"
            self.hits.labels(outcome, reason).inc(hits)

    def render(self) -> bytes:
        return generate_latest(self.registry)
