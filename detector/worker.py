"""The detector process: one replica (consumer) of one pool (consumer group)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from common import metrics
from common.redis_io import connect, group_reader
from common.service import Context
from detector.batcher import Batcher, Feeder
from detector.beacon import Beacon, replica_info
from detector.engines import create_engine
from detector.model import ModelSpec
from detector.pipeline import Pipeline
from detector.publishing import Publisher, Publishing
from detector.watchdog import Watchdog

log = logging.getLogger(__name__)

STATS_EVERY_S = 30.0


def default_replica() -> str:
    """Stable across restarts on one host (a container's hostname), so a restarted replica finds its pending."""
    return socket.gethostname()


@dataclass(frozen=True)
class DetectorOptions:
    pool: str
    """The pool served (its consumer group)."""
    replica: str
    """This replica's consumer name: stable across restarts, so a restarted replica finds its pending frames."""


def run(ctx: Context[DetectorOptions]) -> int:
    cfg = ctx.config
    pool = cfg.pool(ctx.options.pool)
    replica = ctx.options.replica
    keys = cfg.keys
    client = connect(ctx.redis_url, cfg.redis)
    spec = ModelSpec.from_config(pool.model)
    engine = Watchdog(lambda: create_engine(pool.engine, spec, pool.max_batch), pool.inference_timeout_s)
    pipeline = Pipeline(spec, engine, pool, replica)
    group = keys.detector_group(pool.name)
    reader = group_reader(client, keys, "frames", group, replica, pool, pool.max_batch, cfg.streams.dead_maxlen)
    batcher = Batcher(reader, keys, pool.max_batch, pool.max_wait_ms, pool.max_age_ms, pool.shed_behind)
    feeder = Feeder(batcher, pipeline, pool.decode_threads)
    publisher = Publisher(Publishing(pipeline, reader, keys, cfg.streams.results_maxlen))
    metrics.register(metrics.GroupCollector(reader, keys.stream_of))
    beacon = Beacon(
        client, keys.replicas(group), replica, lambda: replica_info(pool.name, engine, publisher.counts)
    ).start()
    log.info("pool %s replica %s on %s: reading %s", pool.name, replica, engine.device, pool.streams)
    ctx.bounds.restart()
    next_stats = time.monotonic() + STATS_EVERY_S
    while (why := ctx.stop_reason()) is None:
        prepared = feeder.get()
        if prepared is not None:  # the publisher finishes it while the engine runs the next
            publisher.put(pipeline.predict(prepared))
        ctx.bounds.count(prepared.size if prepared is not None else 0)
        if time.monotonic() >= next_stats:
            next_stats += STATS_EVERY_S
            log.info("%s; engine restarts %d; %s", publisher.counts, engine.restarts, reader.stats)
    drain_until = time.monotonic() + ctx.shutdown.drain_s
    for prepared in feeder.close(ctx.shutdown.drain_s / 2):  # read already: finish rather than leave pending
        publisher.put(pipeline.predict(prepared))
    if not publisher.close(max(0.0, drain_until - time.monotonic())):
        log.warning("results of the last batch not published within the drain time: they stay pending")
    log.info("stopping (%s); %s; engine restarts %d; %s", why, publisher.counts, engine.restarts, reader.stats)
    beacon.close()
    engine.close()
    reader.close()
    client.close()
    return 0
