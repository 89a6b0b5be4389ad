"""The alert sink's loop: results in, alerts raised onto the alerts stream; each action delivers on its own thread."""

from __future__ import annotations

import logging

from common.keys import Keys
from common.redis_io import connect
from common.service import Context
from sink.alerts import AlertSinkConfig
from sink.alerts.delivery import start_deliveries
from sink.alerts.raising import Raiser
from sink.alerts.rules import RuleBook
from sink.runner import SinkOptions, results_reader

log = logging.getLogger(__name__)


def run(ctx: Context[SinkOptions], sink: AlertSinkConfig) -> int:
    cfg = ctx.config
    keys = Keys(cfg.streams.prefix)
    client = connect(ctx.redis_url, cfg.redis)
    reader = results_reader(ctx, sink, client)
    deliveries = start_deliveries(client, keys, sink, ctx.options.consumer, cfg.streams.dead_maxlen)
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
    client.close()
    return 0
