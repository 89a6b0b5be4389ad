"""The detector process: one replica (consumer) of one pool (consumer group)."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

from common.keys import Keys
from common.redis_io import GroupReader, connect, group_reader
from common.service import Context
from common.wire import encode
from detector.batcher import Batcher, Feeder
from detector.engines import create_engine
from detector.model import ModelSpec
from detector.pipeline import Pipeline, Prepared
from detector.watchdog import Watchdog

log = logging.getLogger(__name__)

STATS_EVERY_S = 30.0


def default_replica() -> str:
    """Stable across restarts on one host (a container's hostname), so a restarted replica finds its pending."""
    return socket.gethostname()


@dataclass
class Publishing:
    """Turns a prepared batch into published results, dead letters and acks; keeps the counters."""

    pipeline: Pipeline
    reader: GroupReader
    keys: Keys
    results_maxlen: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("results", "stale", "dead", "batches"), 0))

    def finish(self, prepared: Prepared) -> int:
        outcome = self.pipeline.infer(prepared)
        for entry, reason in outcome.failed:
            self.reader.dead_letter(entry, reason)
        self.reader.ack(prepared.stale)  # too old to be worth a result: acked and counted, not inferred
        self.reader.publish_and_ack(
            [(self.keys.results(r.stream), encode(r), self.results_maxlen) for _, r in outcome.published],
            [e for e, _ in outcome.published],
        )
        self.counts["results"] += len(outcome.published)
        self.counts["stale"] += len(prepared.stale)
        self.counts["dead"] += len(outcome.failed)
        self.counts["batches"] += 1
        return len(outcome.published) + len(outcome.failed) + len(prepared.stale)


def run(ctx: Context) -> int:
    cfg = ctx.config
    pool = cfg.pool(ctx.args.pool)
    replica = ctx.args.replica or default_replica()
    keys = Keys(cfg.streams.prefix)
    client = connect(ctx.redis_url, cfg.redis)
    spec = ModelSpec.from_config(pool.model)
    engine = Watchdog(lambda: create_engine(pool.engine, spec), pool.inference_timeout_s)
    pipeline = Pipeline(spec, engine, pool, replica)
    group = keys.detector_group(pool.name)
    reader = group_reader(client, keys, "frames", group, replica, pool, pool.max_batch, cfg.streams.dead_maxlen)
    publishing = Publishing(pipeline, reader, keys, cfg.streams.results_maxlen)
    feeder = Feeder(Batcher(reader, pool.max_batch, pool.max_wait_ms), pipeline, pool.decode_threads)
    log.info("pool %s replica %s on %s: reading %s", pool.name, replica, engine.device, pool.streams)
    ctx.bounds.restart()
    next_stats = time.monotonic() + STATS_EVERY_S
    while (why := ctx.stop_reason()) is None:
        prepared = feeder.get()
        ctx.bounds.count(publishing.finish(prepared) if prepared is not None else 0)
        if time.monotonic() >= next_stats:
            next_stats += STATS_EVERY_S
            log.info("%s; engine restarts %d; %s", publishing.counts, engine.restarts, reader.stats)
    for prepared in feeder.close(ctx.shutdown.drain_s / 2):  # read already: finish rather than leave pending
        publishing.finish(prepared)
    log.info("stopping (%s); %s; engine restarts %d; %s", why, publishing.counts, engine.restarts, reader.stats)
    engine.close()
    client.close()
    return 0
