"""The store sinks' loop, every store kind's: each batch stored (idempotently, durably) before it is acked;
malformed messages are dead-lettered. A store sink keeps the results, or with ``events_of`` a tracker's events."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from common import metrics
from common.backoff import Backoff
from common.redis_io import GroupReader, connect
from common.service import Context
from common.settings import StoreSettings
from common.wire import Event, Result
from sink.runner import SinkOptions, events_reader, results_reader
from sink.stores import Store, create_event_store, create_store

log = logging.getLogger(__name__)

Stored = TypeVar("Stored", Result, Event)


def run(ctx: Context[SinkOptions], sink: StoreSettings) -> int:
    client = connect(ctx.redis_url, ctx.config.redis)
    if sink.events_of is None:
        reader = results_reader(ctx, sink, client)
        why = store_results(ctx, sink, reader)
    else:
        reader = events_reader(ctx, sink, client, sink.events_of)
        why = store_events(ctx, sink, reader)
    log.info("stopping (%s); %s", why, reader.stats)
    reader.close()
    client.close()
    return 0


def store_results(ctx: Context[SinkOptions], sink: StoreSettings, reader: GroupReader) -> str:
    """Each batch of results stored (idempotently, durably) before it is acked; malformed results dead-lettered."""
    store = create_store(sink)
    try:
        return _store_each_batch(ctx, sink, reader, Result, lambda batch: write(store, batch, ctx), "results")
    finally:
        store.close()


def store_events(ctx: Context[SinkOptions], sink: StoreSettings, reader: GroupReader) -> str:
    """Each batch of events stored (idempotently on event_id, durably) before it is acked; malformed events
    dead-lettered."""
    store = create_event_store(sink)
    try:
        write_events = store.write_events
        return _store_each_batch(
            ctx, sink, reader, Event, lambda batch: retrying(lambda: write_events(batch), f"{len(batch)} events", ctx),
            "events",
        )  # fmt: skip
    finally:
        store.close()


def _store_each_batch(
    ctx: Context[SinkOptions],
    sink: StoreSettings,
    reader: GroupReader,
    kind: type[Stored],
    store: Callable[[list[Stored]], int | None],
    what: str,
) -> str:
    stored = 0
    while (why := ctx.stop_reason()) is None:
        entries = reader.read()
        good = reader.messages(entries, kind)
        if good and (n := store([m for _, m in good])) is not None:
            stored += n
            reader.ack([e for e, _ in good])
            for stream, count in Counter(m.stream for _, m in good).items():
                metrics.STORED.labels(sink.name, stream).inc(count)
        ctx.bounds.count(len(entries))
    log.info("stored %d new %s", stored, what)
    return why


def write(store: Store, results: Sequence[Result], ctx: Context[SinkOptions]) -> int | None:
    """Store a batch, retrying with back-off while the database is unreachable or locked; None when stopping
    first (the batch stays pending and is stored after the next start)."""
    return retrying(lambda: store.write(results), f"{len(results)} results", ctx)


def retrying(attempt: Callable[[], int], what: str, ctx: Context[SinkOptions]) -> int | None:
    """``attempt`` (storing ``what``) until it succeeds, with back-off; None when stopping first."""
    backoff = Backoff(0.5, 30.0, jitter=0.0)  # 0.5, 1, 2, ... 30 s
    while True:
        try:
            return attempt()
        except Exception as exc:  # the store's driver errors vary (sqlite3, psycopg, OSError): all are retried
            delay = backoff.next_delay()
            log.error("storing %s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
        if backoff.wait(ctx.shutdown, delay):
            return None
