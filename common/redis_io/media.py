"""Frames read back by time, for clips: a frames stream's entries between two moments, and its oldest entry.

A frames stream's entry ids are the milliseconds (server clock) at which ingest added each frame, so a range of
ids is a range of times: XRANGE by ``{ms}-0`` ids, no scan of the stream."""

from __future__ import annotations

from typing import Any

from common.redis_io.connection import Client
from common.redis_io.errors import translated
from common.redis_io.streams import entry_payload, text
from common.wire import FIELD


@translated
def entries_between(
    client: Client, key: str, start_ms: int, end_ms: int, count: int, payload_field: str = FIELD
) -> list[tuple[str, bytes | None]]:
    """(id, payload) of the entries added from ``start_ms`` to ``end_ms`` (inclusive), oldest first; at most
    ``count``, the newest of them when there are more. Empty when the stream is gone, or has none then."""
    if end_ms < start_ms or count < 1:
        return []
    found: Any = client.xrevrange(key, f"{end_ms}-18446744073709551615", f"{max(0, start_ms)}-0", count=count)
    return [(text(entry_id), entry_payload(fields, payload_field)) for entry_id, fields in reversed(found)]


@translated
def oldest_id(client: Client, key: str) -> str | None:
    """The id of a stream's oldest entry still kept; None when the stream is empty or gone."""
    found: Any = client.xrange(key, "-", "+", count=1)
    return text(found[0][0]) if found else None
