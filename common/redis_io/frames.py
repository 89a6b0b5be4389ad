"""Writing frames: ingest's publisher adds a batch of entries in one pipelined round trip, each stream capped with
MAXLEN ~, and after a lost reply reads back the newest entries to learn which of them landed. Reading one back:
an alert's snapshot and the web view fetch the frame a result answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common.keys import Keys
from common.redis_io.connection import Client
from common.redis_io.errors import RedisIOError, translated, translated_reply
from common.redis_io.streams import entry_payload, read_entry
from common.wire import FIELD, Frame, decode


@translated
def add_entries(
    client: Client, entries: Sequence[tuple[str, bytes, int]], payload_field: str = FIELD
) -> list[str | RedisIOError]:
    """XADD each (key, payload, maxlen) in one round trip, no transaction; per entry its id, or the error the server
    answered it with (e.g. :class:`Full`). Raises :class:`Unavailable` when the round trip fails: then the entries
    may have been added or not (a reply lost)."""
    pipe = client.pipeline(transaction=False)
    for key, data, maxlen in entries:
        pipe.xadd(key, {payload_field: data}, maxlen=maxlen, approximate=True)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return [r if isinstance(r, RedisIOError) else _id(r) for r in map(translated_reply, replies)]


def _id(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


@translated
def newest_payloads(client: Client, counts: Mapping[str, int], payload_field: str = FIELD) -> dict[str, list[bytes]]:
    """The payloads of the newest ``count`` entries of each stream, newest first, in one round trip; a stream the
    server refuses to read (another type?) is left out. Raises :class:`Unavailable`."""
    pipe = client.pipeline(transaction=False)
    for key, count in counts.items():
        pipe.xrevrange(key, count=count)
    out: dict[str, list[bytes]] = {}
    for key, entries in zip(counts, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(entries, Exception):
            continue
        out[key] = [p for _, fields in entries if (p := entry_payload(fields, payload_field)) is not None]
    return out


FetchFrame = Callable[[str, str], Frame | None]
"""(stream, frame id) -> the frame, or None once it is trimmed away from its frames stream."""


def frame_reader(client: Client, keys: Keys) -> FetchFrame:
    """Reads a frame back from its frames stream by entry id (snapshots, the web view's drawn frames)."""

    def fetch(stream: str, frame_id: str) -> Frame | None:
        raw = read_entry(client, keys.frames(stream), frame_id)
        return None if raw is None else decode(raw, Frame)

    return fetch
