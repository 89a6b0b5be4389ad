"""The detector process: one replica (consumer) of one pool (consumer group)."""

from __future__ import annotations

import logging
import socket

from common.keys import Keys
from common.redis_io import connect, group_reader
from common.service import Context
from common.wire import encode
from detector.engines import create_engine
from detector.model import ModelSpec
from detector.pipeline import Pipeline

log = logging.getLogger(__name__)


def default_replica() -> str:
    """Stable across restarts on one host (a container's hostname), so a restarted replica finds its pending."""
    return socket.gethostname()


def run(ctx: Context) -> int:
    cfg = ctx.config
    pool = cfg.pool(ctx.args.pool)
    replica = ctx.args.replica or default_replica()
    keys = Keys(cfg.streams.prefix)
    client = connect(ctx.redis_url, cfg.redis)
    spec = ModelSpec.from_config(pool.model)
    pipeline = Pipeline(spec, create_engine(pool.engine, spec), pool, replica)
    reader = group_reader(
        client, keys, "frames", keys.detector_group(pool.name), replica, pool, pool.max_batch, cfg.streams.dead_maxlen
    )
    log.info("pool %s replica %s: reading %s", pool.name, replica, pool.streams)
    ctx.bounds.restart()
    while (why := ctx.stop_reason()) is None:
        entries = reader.read()
        for start in range(0, len(entries), pool.max_batch):
            chunk = entries[start : start + pool.max_batch]
            outcome = pipeline.process(chunk)
            for entry, reason in outcome.failed:
                reader.dead_letter(entry, reason)
            reader.publish_and_ack(
                [(keys.results(r.stream), encode(r), cfg.streams.results_maxlen) for _, r in outcome.published],
                [e for e, _ in outcome.published],
            )
            ctx.bounds.count(len(chunk))
    log.info("stopping (%s); %s", why, reader.stats)
    client.close()
    return 0
