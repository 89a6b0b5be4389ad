"""python -m sink tail [STREAM ...] [--json] [--from-start] [--count N] [--config stack.yaml] [--redis-url URL]

Prints a stack's results as they are published: one readable line each, or one JSON object per line with --json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import sys
import threading
import zlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.text import Text

from common.config import ConfigError, StreamsConfig, load_config
from common.embedded import answers, default_socket_path
from common.keys import Keys
from common.redis_io import Client, RedisIOError, connect, ping
from common.redis_io.settings import RedisConfig
from common.service import EXIT_CONFIG
from common.wire import Result
from sink.client.subscribe import subscribe

_LABEL_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sink tail", description="Print detection results live.")
    p.add_argument("streams", nargs="*", default=["*"], metavar="STREAM", help="stream names or globs (default: *)")
    p.add_argument("--json", action="store_true", help="one JSON object per line (the result's fields)")
    p.add_argument("--from-start", action="store_true", help="begin with the results still kept, not only new ones")
    p.add_argument("--count", type=_positive, metavar="N", help="exit after N results")
    p.add_argument("--config", type=Path, help="stack config (YAML): its Redis, key prefix and cluster layout")
    p.add_argument("--redis-url", help="Redis URL (default: the config's, else REDIS_URL)")
    p.add_argument("--prefix", help=f"key prefix (default: the config's, else {StreamsConfig().prefix!r})")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"), help="DEBUG, INFO, WARNING...")
    return p


def _target(args: argparse.Namespace) -> tuple[str, Keys, RedisConfig]:
    """(URL, key names, client settings) from the flags, the config (REDIS_URL applied there) and the environment;
    a cluster's key layout (its shards) comes from the config.

    Raises ConfigError naming what to set."""
    redis_cfg, stack_prefix, shards = RedisConfig(), args.prefix or StreamsConfig().prefix, None
    if args.config is not None:
        config = load_config(args.config)
        redis_cfg, stack_prefix, shards = config.redis, config.streams.prefix, config.keys.shards
    prefix = Keys(args.prefix or stack_prefix, shards)
    url = args.redis_url or redis_cfg.url or os.environ.get("REDIS_URL")
    if url:
        return url, prefix, redis_cfg
    # A local stack without a URL shares an embedded server on a socket named after its prefix: use it if it runs.
    socket_path = default_socket_path(stack_prefix, redis_cfg.embedded)
    if answers(socket_path):
        return f"unix://{socket_path}", prefix, redis_cfg
    where = f"{args.config} sets no redis.url" if args.config is not None else "no --config given"
    raise ConfigError(
        [
            f"no Redis to read: {where}, REDIS_URL is unset, and no embedded server answers on {socket_path} "
            "(a stack's embedded server runs only while the stack does, on its host). Give the server's URL with "
            "--redis-url URL or REDIS_URL=URL, or set redis.url in the stack config."
        ]
    )


def _colour(label: str) -> str:
    # crc32, not hash(): a label keeps its colour from one run to the next.
    return _LABEL_COLOURS[zlib.crc32(label.encode()) % len(_LABEL_COLOURS)]


def readable(result: Result) -> Text:
    """One line: capture time, stream, seq, end-to-end latency, then each detection's label, score and box."""
    captured = datetime.fromtimestamp(result.capture_ts).strftime("%H:%M:%S.%f")[:-3]
    line = Text(f"{captured} ", style="dim")
    line.append(result.stream, style="bold")
    line.append(f" #{result.seq} {result.timings.end_to_end_ms:.0f} ms")
    if not result.detections:
        line.append("  -", style="dim")
    for d in result.detections:
        line.append("  ")
        line.append(d.label, style=_colour(d.label))
        line.append(f" {d.score:.2f} [{', '.join(str(round(v)) for v in d.box)}]")
    return line


def _print(results: Iterable[Result], as_json: bool) -> None:
    console = Console(highlight=False)
    for result in results:
        if as_json:
            sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
            sys.stdout.flush()  # a script reading the pipe gets each result as it comes
        else:
            console.print(readable(result), soft_wrap=True)  # soft_wrap: a long line is never broken when piped


def main(argv: list[str] | None = None) -> int:
    """Run the tail; 0 on Ctrl-C or after --count results, 1 when Redis cannot be reached, 2 on config errors."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s tail %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        url, prefix, redis_cfg = _target(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    # Ctrl-C and SIGTERM end the tail between two reads: a KeyboardInterrupt raised inside redis-py could leave its
    # connection pool's lock held, and the close below would then wait for it forever.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    client: Client | None = None
    try:
        client = connect(url, redis_cfg)  # a cluster's client asks the nodes for the slot map here
        ping(client)  # a wrong URL fails here, at once, rather than being retried forever while tailing
        results = subscribe(client, prefix, args.streams, from_start=args.from_start, stop=stop)
        _print(results if args.count is None else itertools.islice(results, args.count), args.json)
    except RedisIOError as exc:
        print(f"cannot read from Redis ({exc}): check --redis-url, REDIS_URL or redis.url", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): quit quietly, and keep Python from complaining again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if client is not None:
            client.close()
    return 0
