"""Prometheus metrics: every metric the services export, in one place, and the HTTP endpoint that serves them.

Each service serves its own metrics on ``--metrics-port`` (env ``STREAMYOLO_METRICS_PORT``; 0: none). Counters
are per stream, so Prometheus' ``rate()`` gives frames per second in and out; consumer lag and pending are read
from Redis (XINFO GROUPS) when the endpoint is scraped, so they are never stale and cost nothing in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from common.redis_io import GroupReader

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# detector
FRAMES_OUT = Counter("streamyolo_frames_out", "Frames answered with a result (the stream's fps out).",
                     ["pool", "stream"])  # fmt: skip
STALE = Counter("streamyolo_frames_stale", "Frames acked uninferred: older than the pool's max_age_ms.",
                ["pool", "stream"])  # fmt: skip
DEAD = Counter("streamyolo_dead_letters", "Messages moved to the dead-letter stream.", ["group", "origin"])
BATCH_SIZE = Histogram("streamyolo_batch_size", "Frames per inference batch.", ["pool"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))  # fmt: skip
INFERENCE = Histogram("streamyolo_inference_seconds", "Engine time of one batch.", ["pool"],
                      buckets=_LATENCY_BUCKETS)  # fmt: skip
END_TO_END = Histogram("streamyolo_end_to_end_seconds", "Capture until the result was published.", ["pool"],
                       buckets=_LATENCY_BUCKETS)  # fmt: skip
GPU_MEMORY = Gauge("streamyolo_gpu_memory_bytes", "GPU memory the engine holds (reserved).", ["pool", "device"])
# sinks
STORED = Counter("streamyolo_results_stored", "Results a store sink wrote.", ["sink", "stream"])
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


class GroupCollector(Collector):
    """``streamyolo_consumer_lag`` and ``streamyolo_consumer_pending`` of a reader's consumer group, per stream it
    reads, from Redis (XINFO GROUPS) at each scrape."""

    def __init__(self, reader: GroupReader, stream_of: Callable[[str], str]) -> None:
        self.reader, self.stream_of = reader, stream_of

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily("streamyolo_consumer_lag", "Entries not yet read by the group.", labels=["group",
                                "stream"])  # fmt: skip
        pending = GaugeMetricFamily(
            "streamyolo_consumer_pending", "Entries read, not yet acked.", labels=["group", "stream"]
        )
        try:
            for key in self.reader.keys:
                info = self.reader.group_info(key)
                if info is not None:
                    stream = self.stream_of(key)
                    if info["lag"] is not None:
                        lag.add_metric([self.reader.group, stream], info["lag"])
                    pending.add_metric([self.reader.group, stream], info["pending"])
        except redis.RedisError as exc:  # a scrape during an outage shows the gauges missing, not an error page
            log.debug("metrics: cannot read consumer groups: %s", exc)
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
