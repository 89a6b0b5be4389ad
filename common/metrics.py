"""Prometheus metrics: every metric the services export, in one place, and the HTTP endpoint that serves them.

Each service serves its own metrics on ``--metrics-port`` (env ``STREAMYOLO_METRICS_PORT``; 0: none). Counters
are per stream, so Prometheus' ``rate()`` gives frames per second in and out; consumer lag and pending are read
from Redis (XINFO GROUPS) when the endpoint is scraped, so they are never stale and cost nothing in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# detector
FRAMES_OUT = Counter("streamyolo_frames_out", "Frames answered with a result (the stream's fps out).",
                     ["pool", "stream"])  # fmt: skip
STALE = Counter("streamyolo_frames_stale", "Frames acked uninferred: older than the pool's max_age_ms.",
                ["pool", "stream"])  # fmt: skip
SHED = Counter("streamyolo_frames_shed", "Live frames shed uninferred because newer frames of their stream waited "
               "(the pool's shed_behind), by reason.", ["pool", "stream", "reason"])  # fmt: skip
DEAD = Counter("streamyolo_dead_letters", "Messages moved to the dead-letter stream.", ["group", "origin"])
UNREPLICATED = Counter(
    "streamyolo_writes_unreplicated",
    "Entries written with redis.wait_replicas whose replicas did not all confirm them in time (on the primary only).",
    ["node"],
)
BATCH_SIZE = Histogram("streamyolo_batch_size", "Frames per inference batch.", ["pool"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))  # fmt: skip
INFERENCE = Histogram("streamyolo_inference_seconds", "Engine time of one batch.", ["pool"],
                      buckets=_LATENCY_BUCKETS)  # fmt: skip
END_TO_END = Histogram("streamyolo_end_to_end_seconds", "Capture until the result was published.", ["pool"],
                       buckets=_LATENCY_BUCKETS)  # fmt: skip
GPU_MEMORY = Gauge("streamyolo_gpu_memory_bytes", "GPU memory the engine holds (reserved).", ["pool", "device"])
# sinks
STORED = Counter(
    "streamyolo_results_stored",
    "Results (or, for a store reading a tracker's events, events) a store sink wrote.",
    ["sink", "stream"],
)
ALERTS = Counter("streamyolo_alerts", "Alerts raised.", ["sink", "rule"])
DELIVERIES = Counter("streamyolo_deliveries", "Alert deliveries by action and outcome.", ["action", "outcome"])


class IngestCollector(Collector):
    """Ingest's per-stream counters (read, pushed = fps in, dropped, skipped, source reconnects), as they are at
    each scrape."""

    FIELDS: ClassVar[dict[str, str]] = {
        "read": "Frames read from the source.",
        "published": "Frames pushed to Redis (the stream's fps in).",
        "dropped": "Frames dropped: Redis refused them or the queue overflowed.",
        "skipped": "Frames that could not be decoded or encoded.",
        "reconnects": "Times the source was reopened.",
    }

    def __init__(self, counters: Callable[[], dict[str, Any]]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        snapshot = self.counters()
        for name, doc in self.FIELDS.items():
            family = CounterMetricFamily(f"streamyolo_ingest_{name}", doc, labels=["stream"])
            for stream, counts in snapshot.items():
                family.add_metric([stream], getattr(counts, name))
            yield family


class Position(Protocol):
    """A consumer group's place on one stream (``common.redis_io.GroupState``)."""

    @property
    def unread(self) -> int: ...
    @property
    def pending(self) -> int: ...


class Positions(Protocol):
    """A reader of one consumer group (``common.redis_io.GroupReader``): typed here, so that this module imports
    nothing of the Redis door, which imports it (to count dead letters)."""

    @property
    def group(self) -> str: ...
    def positions(self) -> Mapping[str, Position] | None:
        """Stream key -> the group's place on it; None when Redis cannot tell now."""


class GroupCollector(Collector):
    """``streamyolo_consumer_lag`` and ``streamyolo_consumer_pending`` of a reader's consumer group, per stream it
    reads, from Redis (XINFO GROUPS) at each scrape."""

    def __init__(self, reader: Positions, stream_of: Callable[[str], str]) -> None:
        self.reader, self.stream_of = reader, stream_of

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily("streamyolo_consumer_lag", "Entries not yet read by the group.", labels=["group",
                                "stream"])  # fmt: skip
        pending = GaugeMetricFamily(
            "streamyolo_consumer_pending", "Entries read, not yet acked.", labels=["group", "stream"]
        )
        # None during an outage: the gauges go missing from this scrape, rather than it failing.
        for key, position in (self.reader.positions() or {}).items():
            stream = self.stream_of(key)
            lag.add_metric([self.reader.group, stream], position.unread)
            pending.add_metric([self.reader.group, stream], position.pending)
        yield lag
        yield pending


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on host:port from a background thread (nothing when port is 0)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)


def register(collector: Collector) -> None:
    """Add a collector to what /metrics serves (once per process: a worker runs once)."""
    REGISTRY.register(collector)
