"""Iterate a stack's detection results as they are published: ``for result in subscribe(client, "yolo"): ...``.

A subscriber reads with plain XREAD, not a consumer group, so any number of readers can watch without disturbing
the sinks' groups or their pending lists. It never dead-letters: a malformed entry is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

from common.keys import Keys
from common.redis_io import Client, follow
from common.wire import Result, WireError, decode

log = logging.getLogger(__name__)


def subscribe(
    client: Client,
    prefix: str | Keys,
    streams: Sequence[str] = ("*",),
    *,
    from_start: bool = False,
    block_ms: int = 1000,
    stop: threading.Event | None = None,
    rescan_s: float = 5.0,
) -> Iterator[Result]:
    """Results of the streams whose names match the glob ``streams``, in order per stream, until ``stop`` is set.

    ``prefix``: the stack's, or its :class:`~common.keys.Keys` (a cluster's: ``Keys(prefix, shards)``).

    Starts with the results published from now on, or with everything still kept when ``from_start``. The patterns
    are re-resolved every ``rescan_s`` seconds; a stream found later is read from its first entry, since all of
    it is new. ``stop`` is checked at least every ``block_ms``. The client must not decode responses (msgpack is
    binary). Connection loss is logged and retried, never raised; other Redis errors leave as the door's
    (``common.redis_io.RedisIOError``).
    """
    if isinstance(streams, str):
        streams = [streams]  # one name, not its characters
    keys = prefix if isinstance(prefix, Keys) else Keys(prefix)
    entries = follow(client, keys.stage("results"), streams, from_start=from_start, block_ms=block_ms, stop=stop,
                     rescan_s=rescan_s)  # fmt: skip
    for key, entry_id, payload in entries:
        try:
            yield decode(payload, Result)
        except WireError as exc:
            log.warning("skipping malformed result %s %s: %s", key, entry_id, exc)
