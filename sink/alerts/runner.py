"""The alert sink's loop: results (or a tracker's events) in, alerts raised onto the alerts stream; each action
delivers on its own thread."""

from __future__ import annotations

import logging

from common.redis_io import connect
from common.service import Context
from common.wire import Event, Result
from sink.alerts import AlertSinkConfig
from sink.alerts.delivery import start_deliveries
from sink.alerts.raising import Raiser
from sink.alerts.rules import EventRules, RuleBook
from sink.runner import SinkOptions, events_reader, results_reader

log = logging.getLogger(__name__)


def run(ctx: Context[SinkOptions], sink: AlertSinkConfig) -> int:
    cfg = ctx.config
    keys = cfg.keys
    client = connect(ctx.redis_url, cfg.redis)
    deliveries = start_deliveries(client, keys, sink, ctx.options.consumer, cfg.streams.dead_maxlen)
    raiser: Raiser[Result] | Raiser[Event]
    if sink.events_of is None:
        reader = results_reader(ctx, sink, client)
        raiser = Raiser(RuleBook(sink), reader, keys, sink)
    else:
        reader = events_reader(ctx, sink, client, sink.events_of)
        raiser = Raiser(EventRules(sink), reader, keys, sink)
    while (why := ctx.stop_reason()) is None:
        entries = reader.read()
        if entries:
            raiser.handle(entries)
        ctx.bounds.count(len(entries))
    for delivery in deliveries:  # what was raised is delivered before stopping, within the drain time
        delivery.close(ctx.shutdown.drain_s / len(deliveries))
    log.info("stopping (%s); %s; delivered %s; %s", why, raiser.counts,
             {d.action.name: d.delivered for d in deliveries}, reader.stats)  # fmt: skip
    reader.close()
    client.close()
    return 0
