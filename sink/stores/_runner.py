"""The store sinks' loop, every store kind's: each batch stored (idempotently, durably) before it is acked;
malformed results are dead-lettered."""

from __future__ import annotations

import logging
from collections import Counter

from common import metrics
from common.backoff import Backoff
from common.redis_io import GroupReader, connect
from common.service import Context
from common.settings import StoreSettings
from common.wire import Result
from sink.runner import SinkOptions, results_reader
from sink.stores import Store, create_store

log = logging.getLogger(__name__)


def run(ctx: Context[SinkOptions], sink: StoreSettings) -> int:
    client = connect(ctx.redis_url, ctx.config.redis)
    reader = results_reader(ctx, sink, client)
    why = store_results(ctx, sink, reader)
    log.info("stopping (%s); %s", why, reader.stats)
    client.close()
    return 0


def store_results(ctx: Context[SinkOptions], sink: StoreSettings, reader: GroupReader) -> str:
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


def write(store: Store, results: list[Result], ctx: Context[SinkOptions]) -> int | None:
    """Store a batch, retrying with back-off while the database is unreachable or locked; None when stopping
    first (the batch stays pending and is stored after the next start)."""
    backoff = Backoff(0.5, 30.0, jitter=0.0)  # 0.5, 1, 2, ... 30 s
    while True:
        try:
            return store.write(results)
        except Exception as exc:  # the store's driver errors vary (sqlite3, psycopg, OSError): all are retried
            delay = backoff.next_delay()
            log.error("storing %d results failed (%s: %s); retrying in %.1f s", len(results), type(exc).__name__,
                      exc, delay)  # fmt: skip
        if backoff.wait(ctx.shutdown, delay):
            return None
