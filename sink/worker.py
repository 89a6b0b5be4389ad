"""The sink process: one sink, one consumer group over the result streams it subscribes to."""

from __future__ import annotations

import logging
import socket

from common.config import SinkConfig
from common.keys import Keys
from common.redis_io import connect, group_reader
from common.service import Context
from common.wire import Result, WireError, decode
from sink.jsonl import JsonlStore

log = logging.getLogger(__name__)


def create_store(cfg: SinkConfig) -> JsonlStore:
    return JsonlStore(cfg)


def run(ctx: Context) -> int:
    cfg = ctx.config
    sink = cfg.sink(ctx.args.sink)
    keys = Keys(cfg.streams.prefix)
    client = connect(ctx.redis_url, cfg.redis)
    consumer = ctx.args.consumer or socket.gethostname()
    reader = group_reader(
        client, keys, "results", keys.sink_group(sink.name), consumer, sink, sink.batch, cfg.streams.dead_maxlen
    )
    store = create_store(sink)
    log.info("sink %s (%s): reading %s", sink.name, sink.kind, sink.streams)
    while (why := ctx.stop_reason()) is None:
        entries = reader.read()
        good = []
        for entry in entries:
            try:
                good.append((entry, decode(entry.payload, Result)))
            except WireError as exc:
                reader.dead_letter(entry, f"WireError: {exc}")
        if good:
            store.write([r for _, r in good])
            reader.ack([e for e, _ in good])
        ctx.bounds.count(len(entries))
    log.info("stopping (%s); %s", why, reader.stats)
    store.close()
    client.close()
    return 0
