"""Counters for /metrics (Prometheus text format, or OpenMetrics), one registry per app."""

from collections.abc import Mapping

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics

TEXT_FORMAT = "text/plain; version=0.0.4"
OPENMETRICS = "application/openmetrics-text"


class Tally(msgspec.Struct, gc=False):
    """What the writer did since it was last asked: it may run in another process, so it
    counts here rather than into the registry below."""

    flushed: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    bad_files: int = 0  # spool files set aside, unreadable
    # site -> "recorded", or the reason a hit was denied -> hits; the site is "" for a hit
    # to a site that does not exist (its slug came from anyone, and would be a label each).
    hits: dict[str, dict[str, int]] = {}

    def add(self, other: "Tally") -> None:
        self.flushed += other.flushed
        self.spilled += other.spilled
        self.replayed += other.replayed
        self.dropped += other.dropped
        self.bad_files += other.bad_files
        for site, reasons in other.hits.items():
            self.count_hits({(site, reason): count for reason, count in reasons.items()})

    def count_hits(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add hits counted by (site, reason), as a batch counts them."""
        for (site, reason), count in counts.items():
            if count:
                reasons = self.hits.setdefault(site, {})
                reasons[reason] = reasons.get(reason, 0) + count


class Metrics:
    def __init__(self) -> None:
        # A `*_created` gauge beside each counter and histogram is a second series for one
        # fact, which the text format cannot mark as such: none, process-wide (the library's
        # switch is global, read when a registry is rendered).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter(
            "pixelgate_hits",
            "Hits by site, outcome and reason",
            ["site", "outcome", "reason"],
            registry=r,
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
        for site, reasons in tally.hits.items():
            for reason, hits in reasons.items():
                outcome = "recorded" if reason == "recorded" else "denied"
                self.hits.labels(site, outcome, reason).inc(hits)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics and their content type: OpenMetrics when the request's Accept header
        prefers it, else the text format 0.0.4."""
        if wants_openmetrics(accept):
            body: bytes = openmetrics.generate_latest(self.registry)  # type: ignore[no-untyped-call]
            return body, openmetrics.CONTENT_TYPE_LATEST
        return generate_latest(self.registry), TEXT_FORMAT


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header takes OpenMetrics at least as gladly as the text format."""
    quality: dict[str, float] = {}
    for media_range in accept.lower().split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[kind] = max(q, quality.get(kind, 0.0))
    text = next((quality[k] for k in ("text/plain", "text/*", "*/*") if k in quality), 0.0)
    return quality.get(OPENMETRICS, 0.0) > 0 and quality[OPENMETRICS] >= text
