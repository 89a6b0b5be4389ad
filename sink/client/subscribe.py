"""Iterate a stack's detection results as they are published: ``for result in subscribe(client, "yolo"): ...``.

A subscriber reads with plain XREAD, not a consumer group, so any number of readers can watch without disturbing
the sinks' groups or their pending lists. It never dead-letters: a malformed entry is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from common.keys import Keys
from common.redis_io import TRANSIENT_ERRORS, reply_entries, stream_keys, text
from common.wire import Result, WireError, decode

log = logging.getLogger(__name__)

_BATCH = 100
"""Most entries taken from one stream per read."""


def subscribe(
    client: redis.Redis,
    prefix: str,
    streams: Sequence[str] = ("*",),
    *,
    from_start: bool = False,
    block_ms: int = 1000,
    stop: threading.Event | None = None,
    rescan_s: float = 5.0,
) -> Iterator[Result]:
    """Results of the streams whose names match the glob ``streams``, in order per stream, until ``stop`` is set.

    Starts with the results published from now on, or with everything still kept when ``from_start``. The patterns
    are re-resolved every ``rescan_s`` seconds; a stream found later is read from its first entry, since all of
    it is new. ``stop`` is checked at least every ``block_ms``. The client must not decode responses (msgpack is
    binary). Connection loss is logged and retried, never raised.
    """
    if block_ms < 1:
        raise ValueError(f"block_ms must be at least 1 (got {block_ms}): 0 would block XREAD forever")
    if isinstance(streams, str):
        streams = [streams]  # one name, not its characters
    keys = Keys(prefix)
    pattern, head = keys.stage("results")
    positions: dict[str, str] = {}
    """Key -> id of the last entry read (XREAD returns what follows it)."""
    first_scan = True
    next_scan = 0.0
    backoff_s = 0.0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def pause(seconds: float) -> None:
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    while not stopped():
        try:
            if time.monotonic() >= next_scan:
                found = [k for k in stream_keys(client, pattern, head, streams) if k not in positions]
                # '$' cannot be passed to XREAD again and again: each call would skip what arrived in between.
                # So the ids to start after are fixed now: the last entry at start, or none for later streams.
                start = _last_ids(client, found) if first_scan and not from_start else dict.fromkeys(found, "0-0")
                positions.update(start)
                first_scan = False
                next_scan = time.monotonic() + rescan_s
            if not positions:
                pause(min(block_ms / 1000, rescan_s))
                continue
            reply: Any = client.xread(positions, count=_BATCH, block=block_ms)  # type: ignore[arg-type]
        except TRANSIENT_ERRORS as exc:
            backoff_s = min(max(backoff_s * 2, 0.1), 5.0)
            log.warning("redis unavailable (%s); retrying in %.1f s", exc, backoff_s)
            pause(backoff_s)
            continue
        backoff_s = 0.0
        for key, entry_id, payload, _ in reply_entries(reply):
            positions[key] = entry_id
            try:
                result = decode(payload, Result)
            except WireError as exc:
                log.warning("skipping malformed result %s %s: %s", key, entry_id, exc)
                continue
            if stopped():
                return
            yield result


def _last_ids(client: redis.Redis, keys: list[str]) -> dict[str, str]:
    """The id of each stream's newest entry ('0-0' for an empty or missing stream), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xrevrange(key, count=1)
    return {key: text(newest[0][0]) if newest else "0-0" for key, newest in zip(keys, pipe.execute(), strict=True)}
