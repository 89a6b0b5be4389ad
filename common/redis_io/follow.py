"""Following streams without a consumer group: plain XREAD, so any number of readers can watch without disturbing
the groups or their pending lists (``sink.client.subscribe``, ``sink tail``, the web view)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from common.backoff import Backoff
from common.keys import Stage
from common.redis_io.connection import Client
from common.redis_io.errors import Unavailable, translated
from common.redis_io.shards import ShardReads
from common.redis_io.streams import newest, reply_entries, stream_keys
from common.wire import FIELD

log = logging.getLogger(__name__)

BATCH = 100
"""Most entries taken from one stream per read."""


def follow(
    client: Client,
    stage: Stage,
    names: Sequence[str],
    *,
    from_start: bool = False,
    block_ms: int = 1000,
    stop: threading.Event | None = None,
    rescan_s: float = 5.0,
    payload_field: str = FIELD,
) -> Iterator[tuple[str, str, bytes | None]]:
    """(key, id, payload) of the entries of the streams of ``stage`` whose name matches a glob of ``names``, in order
    per stream, until ``stop`` is set.

    Starts with the entries added from now on, or with everything still kept when ``from_start``. The globs are
    re-resolved every ``rescan_s`` seconds; a stream found later is read from its first entry, since all of it is
    new. ``stop`` is checked at least every ``block_ms``. :class:`Unavailable` (connection loss) is logged and
    retried with back-off, never raised; the other errors of the family are."""
    if block_ms < 1:
        raise ValueError(f"block_ms must be at least 1 (got {block_ms}): 0 would block XREAD forever")
    positions: dict[str, str] = {}
    """Key -> id of the last entry read (XREAD returns what follows it)."""
    first_scan = True
    next_scan = 0.0
    backoff = Backoff(0.1, 5.0, jitter=0.0)
    shards = ShardReads(client, "follow")

    def read(target: Any, keys: list[str], block: int | None) -> Any:
        return target.xread({k: positions[k] for k in keys}, count=BATCH, block=block)

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def pause(seconds: float) -> None:
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    try:
        while not stopped():
            try:
                with translated:
                    if time.monotonic() >= next_scan:
                        found = [k for k in stream_keys(client, stage, names) if k not in positions]
                        # '$' cannot be passed to XREAD again and again: each call would skip what arrived in
                        # between. So the ids to start after are fixed now: the last entry at start, or none for
                        # later streams.
                        start = dict.fromkeys(found, "0-0")
                        if first_scan and not from_start:
                            start.update({key: entry_id for key, entry_id, _ in newest(client, found)})
                        positions.update(start)
                        first_scan = False
                        next_scan = time.monotonic() + rescan_s
                    if not positions:
                        pause(min(block_ms / 1000, rescan_s))
                        continue
                    replies = shards.read(list(positions), read, block_ms)
            except Unavailable as exc:
                delay = backoff.next_delay()
                log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
                pause(delay)
                continue
            backoff.reset()
            for reply in replies:
                for key, entry_id, payload, _ in reply_entries(reply, payload_field):
                    positions[key] = entry_id
                    if stopped():
                        return
                    yield key, entry_id, payload
    finally:
        shards.close()
