"""python -m sink.stores query: the events a store kept, as JSON lines (one event a line, oldest first).

    python -m sink.stores query --config stack.yaml [--sink NAME] --label person --zone door \\
        --since 2024-05-01T08:00 --until 2024-05-01T09:00
    python -m sink.stores query --db results.db --stream door-1 --event start

The store is a sqlite or postgres sink of the config that keeps a tracker's events (``events_of``), or a database
given directly (``--db``: an SQLite file or a ``postgresql://`` URL). Times are UNIX seconds or ISO 8601 (without a
UTC offset: local time).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import get_args

from common.config import ConfigError, load_config
from common.service import EXIT_CONFIG, UsageError, choose
from common.settings import StoreSettings
from common.wire import Change, EventType
from sink.stores import StoreError, events, open_store

EXIT_STORE = 1


def timestamp(text: str) -> float:
    """UNIX seconds from seconds or an ISO 8601 time (local time when it has no offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither UNIX seconds nor an ISO 8601 time (such as 2024-05-01T08:00:00+00:00)"
        ) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sink.stores", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    q = commands.add_parser("query", help="print the events a store kept, as JSON lines")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="stack config (YAML): query one of its stores")
    where.add_argument("--db", help="an SQLite file or a postgresql:// URL to query instead")
    q.add_argument("--sink", help="the store sink (default: the only one keeping events)")
    q.add_argument("--label", help="events of this label")
    q.add_argument("--zone", help="events about this zone (entered, left, loitered in) or of objects in it")
    q.add_argument("--stream", help="events of this camera")
    q.add_argument("--event", choices=get_args(EventType), help="events of this kind")
    q.add_argument("--change", choices=get_args(Change), help="updates of this change")
    q.add_argument("--since", type=timestamp, help="captured at or after this time")
    q.add_argument("--until", type=timestamp, help="captured before this time")
    q.add_argument("--limit", type=int, default=1000, help="most events printed (1000)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.limit < 0:
        p.error(f"--limit must be 0 or more, got {args.limit}")
    if args.db is not None and args.sink is not None:
        p.error("--sink names a sink of --config; with --db there is none to name")
    where: str | StoreSettings = args.db
    if args.config is not None:
        try:
            where = _store_sink(args.config, args.sink)
        except ConfigError as exc:
            for line in exc.problems:
                print(f"config error: {line}", file=sys.stderr)
            return EXIT_CONFIG
        except UsageError as exc:
            for line in exc.problems:
                print(f"config error: {args.config}: {line}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        store = open_store(where)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE
    try:
        found = events(store, args.label, args.zone, args.since, args.until, args.stream, args.event, args.change,
                       args.limit)  # fmt: skip
    finally:
        store.close()
    for event in found:
        print(json.dumps(event.model_dump(mode="json"), separators=(",", ":")))
    return 0


def _store_sink(config: Path, chosen: str | None) -> StoreSettings:
    """The store sink of the config that keeps events, named by --sink or the only one."""
    stack = load_config(config)
    keeping = [s for s in stack.sinks if isinstance(s, StoreSettings) and s.events_of is not None]
    if chosen is not None:
        other = next((s for s in stack.sinks if s.name == chosen), None)
        if other is not None and other not in keeping:
            raise UsageError([f"--sink {chosen}: a {other.kind} sink that keeps no events (a store with events_of)"])
    name = choose([s.name for s in keeping], chosen, "the stores keeping events (events_of)", "--sink")
    return next(s for s in keeping if s.name == name)


if __name__ == "__main__":
    sys.exit(main())
