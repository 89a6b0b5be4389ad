"""The sink process: one sink of the config, run by the runner its kind registered (``common.plugins.SINKS``)."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from common import metrics
from common.config import StackConfig
from common.plugins import SINKS
from common.redis_io import Client, GroupReader, group_reader
from common.service import Context, choose
from common.settings import ConsumerSinkSettings, SinkSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkOptions:
    sink: str
    """The sink run (--sink)."""
    consumer: str
    """Consumer name in the sink's group: stable across restarts, so a restarted sink finds its pending results."""


def options(config: StackConfig, args: argparse.Namespace) -> SinkOptions:
    name = choose([s.name for s in config.sinks], args.sink, "sinks", "--sink")
    return SinkOptions(sink=name, consumer=args.consumer or socket.gethostname())


def run(ctx: Context[SinkOptions]) -> int:
    sink = ctx.config.sink(ctx.options.sink)
    runner: Callable[[Context[SinkOptions], SinkSettings], int] = SINKS.factory(sink)
    return runner(ctx, sink)


def results_reader(ctx: Context[SinkOptions], sink: ConsumerSinkSettings, client: Client) -> GroupReader:
    """The sink's consumer group over the result streams it subscribes to, its lag exported as metrics."""
    return _reader(ctx, sink, client, "results", "")


def events_reader(ctx: Context[SinkOptions], sink: ConsumerSinkSettings, client: Client, tracker: str) -> GroupReader:
    """The sink's consumer group over the events streams of the tracker sink ``tracker`` (the cameras it subscribes
    to), its lag exported as metrics."""
    return _reader(ctx, sink, client, "events", tracker)


def _reader(
    ctx: Context[SinkOptions],
    sink: ConsumerSinkSettings,
    client: Client,
    stage: Literal["results", "events"],
    tracker: str,
) -> GroupReader:
    cfg = ctx.config
    keys = cfg.keys
    group = keys.sink_group(sink.name)
    reader = group_reader(
        client, keys, stage, group, ctx.options.consumer, sink, sink.batch, cfg.streams.dead_maxlen, tracker
    )
    metrics.register(metrics.GroupCollector(reader, keys.stream_of))
    what = f"the events of tracker {tracker}" if stage == "events" else "the results"
    log.info("sink %s (%s): reading %s of %s", sink.name, sink.kind, what, sink.streams)
    return reader
