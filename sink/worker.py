"""The sink process: one sink, one consumer group over the result streams it subscribes to.

A store sink writes each batch (idempotently, durably) before acking it; an alert sink raises alerts from the
results and delivers them through its actions (``sink.alerting``).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter

from common import metrics
from common.config import AlertSinkConfig, StoreSinkConfig, WebSinkConfig
from common.keys import Keys
from common.redis_io import GroupReader, connect, group_reader
from common.service import Context
from common.wire import Result
from sink.alerting import Raiser, start_deliveries
from sink.rules import RuleBook
from sink.store import Store, create_store

log = logging.getLogger(__name__)


def run(ctx: Context) -> int:
    cfg = ctx.config
    sink = cfg.sink(ctx.args.sink)
    if isinstance(sink, WebSinkConfig):  # no consumer group: it follows the streams like `sink tail`
        from sink.web import serve  # here, so that the other sinks need no web server's imports

        return serve(ctx, sink)
    keys = Keys(cfg.streams.prefix)
    client = connect(ctx.redis_url, cfg.redis)
    consumer = ctx.args.consumer or socket.gethostname()
    reader = group_reader(
        client, keys, "results", keys.sink_group(sink.name), consumer, sink, sink.batch, cfg.streams.dead_maxlen
    )
    metrics.register(metrics.GroupCollector(reader, keys.stream_of))
    log.info("sink %s (%s): reading %s", sink.name, sink.kind, sink.streams)
    if isinstance(sink, AlertSinkConfig):
        deliveries = start_deliveries(client, keys, sink, consumer, cfg.streams.dead_maxlen)
        raiser = Raiser(RuleBook(sink), reader, keys, sink)
        while (why := ctx.stop_reason()) is None:
            entries = reader.read()
            if entries:
                raiser.handle(entries)
            ctx.bounds.count(len(entries))
        for delivery in deliveries:  # what was raised is delivered before stopping, within the drain time
            delivery.close(ctx.shutdown.drain_s / len(deliveries))
        log.info("stopping (%s); %s; delivered %s; %s", why, raiser.counts,
                 {d.action.name: d.delivered for d in deliveries}, reader.stats)  # fmt: skip
    else:
        why = store_results(ctx, sink, reader)
        log.info("stopping (%s); %s", why, reader.stats)
    client.close()
    return 0


def store_results(ctx: Context, sink: StoreSinkConfig, reader: GroupReader) -> str:
    """Each batch stored (idempotently, durably) before it is acked; malformed results dead-lettered."""
    store = create_store(sink)
    stored = 0
    try:
        while (why := ctx.stop_reason()) is None:
            entries = reader.read()
            good = reader.messages(entries, Result)
            if good and (n := write(store, [r for _, r in good], ctx)) is not None:
                stored += n
                reader.ack([e for e, _ in good])
                for stream, count in Counter(r.stream for _, r in good).items():
                    metrics.STORED.labels(sink.name, stream).inc(count)
            ctx.bounds.count(len(entries))
    finally:
        store.close()
    log.info("stored %d new results", stored)
    return why


def write(store: Store, results: list[Result], ctx: Context) -> int | None:
    """Store a batch, retrying with back-off while the database is unreachable or locked; None when stopping
    first (the batch stays pending and is stored after the next start)."""
    delay = 0.5
    while True:
        try:
            return store.write(results)
        except Exception as exc:  # the store's driver errors vary (sqlite3, psycopg, OSError): all are retried
            log.error("storing %d results failed (%s: %s); retrying in %.1f s", len(results), type(exc).__name__,
                      exc, delay)  # fmt: skip
        if ctx.shutdown.wait(delay):
            return None
        delay = min(delay * 2, 30.0)
