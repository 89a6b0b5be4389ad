"""``python -m common.stack.status --config stack.yaml``: a live table of the stack, read from Redis alone.

Per stream: fps in (frames pushed) and out (results published), both from the streams' own entry counters between
two looks; each detector pool's lag (frames not yet read), pending (read, not answered), stale and shed drops; each
sink's lag. Per detector replica: its device, engine, GPU memory and answered frames, from the beacon every replica
refreshes (a replica silent for 15 s is shown as such). ``--once`` prints one table (two looks ``--interval``
apart) and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from common.config import ConfigError, SinkConfig, StackConfig, load_config
from common.redact import redact
from common.redis_io import (
    COUNT_LIMIT,
    Client,
    GroupState,
    RedisIOError,
    connect,
    entries_added,
    fields,
    group_state,
    stream_keys,
)
from common.settings import events_of

SILENT_AFTER_S = 15.0


@dataclass
class Look:
    """What Redis said at one moment."""

    at: float
    added: dict[str, tuple[int, int]] = field(default_factory=dict)
    """stream -> (frames entries added, results entries added)"""
    groups: dict[tuple[str, str], GroupState] = field(default_factory=dict)
    """(group, stream) -> that group on the stream (frames for pools, results for sinks)"""
    stale: dict[tuple[str, str], int] = field(default_factory=dict)
    shed: dict[tuple[str, str], int] = field(default_factory=dict)
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    """"pool/replica" -> the replica's beacon"""


def look(client: Client, cfg: StackConfig) -> Look:
    keys = cfg.keys
    out = Look(time.time())
    for key in stream_keys(client, keys.stage("frames"), ["*"]):
        stream = keys.stream_of(key)
        out.added[stream] = (entries_added(client, key), entries_added(client, keys.results(stream)))
        for pool in cfg.detector.pools:
            group = keys.detector_group(pool.name)
            if (info := group_state(client, key, group)) is not None:
                out.groups[(pool.name, stream)] = info
        for sink in grouped_sinks(cfg):
            tracker = events_of(sink)
            read = keys.results(stream) if tracker is None else keys.events(tracker, stream)
            if (info := group_state(client, read, keys.sink_group(sink.name))) is not None:
                out.groups[(sink.name, stream)] = info
    for pool in cfg.detector.pools:
        group = keys.detector_group(pool.name)
        for tally in keys.tallies("stale", group):  # one per shard on a cluster
            out.stale.update({(pool.name, s): int(n) for s, n in fields(client, tally).items()})
        for tally in keys.tallies("shed", group):
            out.shed.update({(pool.name, s): int(n) for s, n in fields(client, tally).items()})
        beacons = fields(client, keys.replicas(group))
        out.replicas.update({f"{pool.name}/{r}": json.loads(v) for r, v in beacons.items()})
    return out


def grouped_sinks(cfg: StackConfig) -> list[SinkConfig]:
    """The sinks that read through a consumer group (a web view follows the streams without one)."""
    return [s for s in cfg.sinks if s.kind != "web"]


def tables(cfg: StackConfig, before: Look, now: Look) -> Group:
    """The streams table and the replicas table, rates from the two looks."""
    span = max(now.at - before.at, 1e-6)
    streams = Table(title="streams", title_justify="left")
    for column in ("stream", "fps in", "fps out"):
        streams.add_column(column, justify="left" if column == "stream" else "right")
    for pool in cfg.detector.pools:
        streams.add_column(f"{pool.name}: lag / pending / stale / shed", justify="right")
    for sink in grouped_sinks(cfg):
        streams.add_column(f"{sink.name}: lag", justify="right")
    for stream, (frames, results) in sorted(now.added.items()):
        old_frames, old_results = before.added.get(stream, (frames, results))
        row = [stream, f"{(frames - old_frames) / span:.1f}", f"{(results - old_results) / span:.1f}"]
        for pool in cfg.detector.pools:
            g = now.groups.get((pool.name, stream))
            stale, shed = now.stale.get((pool.name, stream), 0), now.shed.get((pool.name, stream), 0)
            row.append("-" if g is None else f"{_lag(g)} / {g.pending} / {stale} / {shed}")
        for sink in grouped_sinks(cfg):
            g = now.groups.get((sink.name, stream))
            row.append("-" if g is None else _lag(g))
        streams.add_row(*row)
    replicas = Table(title="detector replicas", title_justify="left")
    for column in ("pool/replica", "device", "engine", "GPU MB", "answered", "stale", "shed", "seen"):
        replicas.add_column(column, justify="left" if column in ("pool/replica", "device", "engine") else "right")
    for name, info in sorted(now.replicas.items()):
        age = now.at - float(info.get("ts", 0))
        seen = f"{age:.0f} s ago" if age < SILENT_AFTER_S else f"[red]silent {age:.0f} s[/red]"
        gpu = info.get("gpu_memory_mb")
        replicas.add_row(name, str(info.get("device", "?")), str(info.get("engine", "?")),
                         "-" if gpu is None else str(gpu), str(info.get("results", 0)), str(info.get("stale", 0)),
                         str(info.get("shed", 0)), seen)  # fmt: skip
    return Group(streams, replicas)


def _lag(g: GroupState) -> str:
    """Entries the group has not been given yet; "N+" when Redis could not tell and counting stopped at N."""
    return f"{g.unread}+" if not g.lag_known and g.unread >= COUNT_LIMIT else str(g.unread)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.stack.status", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True, help="stack config (YAML)")
    ap.add_argument("--redis-url", help="default: REDIS_URL, then the config's redis.url")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between looks (2)")
    ap.add_argument("--once", action="store_true", help="print one table and exit")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    url = args.redis_url or cfg.redis.url
    if url is None:
        print("no Redis to look at: set REDIS_URL, --redis-url or redis.url", file=sys.stderr)
        return 2
    console = Console()
    stop = threading.Event()  # Ctrl-C ends it between two looks, never inside redis-py
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    client: Client | None = None
    try:
        client = connect(url, cfg.redis)  # a cluster's client asks the nodes for the slot map here
        before = look(client, cfg)
        if args.once:
            stop.wait(args.interval)
            console.print(tables(cfg, before, look(client, cfg)))
            return 0
        with Live(console=console, auto_refresh=False) as live:
            while not stop.wait(args.interval):
                now = look(client, cfg)
                live.update(tables(cfg, before, now), refresh=True)
                before = now
        return 0
    except RedisIOError as exc:
        print(f"redis at {redact(url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
