"""Writing frames: ingest's publisher adds a batch of entries in one pipelined round trip, each stream capped with
MAXLEN ~, and after a lost reply reads back the newest entries to learn which of them landed. Reading one back:
an alert's snapshot and the web view fetch the frame a result answers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common.keys import Keys
from common.metrics import UNREPLICATED
from common.redis_io.connection import Client, is_cluster
from common.redis_io.errors import RedisIOError, translated, translated_reply
from common.redis_io.streams import entry_payload, read_entry
from common.wire import FIELD, Frame, decode

log = logging.getLogger(__name__)


@translated
def add_entries(
    client: Client,
    entries: Sequence[tuple[str, bytes, int]],
    payload_field: str = FIELD,
    replicas: int = 0,
    timeout_ms: int = 500,
) -> list[str | RedisIOError]:
    """XADD each (key, payload, maxlen) in one round trip, no transaction; per entry its id, or the error the server
    answered it with (e.g. :class:`Full`). Raises :class:`Unavailable` when the round trip fails: then the entries
    may have been added or not (a reply lost).

    ``replicas``: then wait (WAIT, up to ``timeout_ms``) until that many replicas hold them; those a primary could
    not confirm in time are logged and counted (``streamyolo_writes_unreplicated``), and still returned as added."""
    if replicas and is_cluster(client):
        return _add_on_each_primary(client, entries, payload_field, replicas, timeout_ms)
    pipe = client.pipeline(transaction=False)
    for key, data, maxlen in entries:
        pipe.xadd(key, {payload_field: data}, maxlen=maxlen, approximate=True)
    if replicas:
        pipe.execute_command("WAIT", replicas, timeout_ms)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    if replicas:
        _confirmed(replies.pop(), replicas, len(entries), "the server")
    return [r if isinstance(r, RedisIOError) else _id(r) for r in map(translated_reply, replies)]


def _add_on_each_primary(
    client: Any, entries: Sequence[tuple[str, bytes, int]], payload_field: str, replicas: int, timeout_ms: int
) -> list[str | RedisIOError]:
    """WAIT counts the writes of its own connection: on a cluster, each primary's entries and their WAIT go down one
    connection to it (a cluster pipeline would send WAIT elsewhere). An entry whose slot moved meanwhile is answered
    MOVED (a :class:`Refused`, not retried here: counted by the caller) and the slots are asked for again."""
    by_node: dict[str, list[int]] = {}
    for i, (key, _, _) in enumerate(entries):
        by_node.setdefault(client.get_node_from_key(key).name, []).append(i)
    out: list[str | RedisIOError] = [RedisIOError("not sent")] * len(entries)
    for name, indexes in by_node.items():
        pipe = client.get_redis_connection(client.get_node(node_name=name)).pipeline(transaction=False)
        for i in indexes:
            key, data, maxlen = entries[i]
            pipe.xadd(key, {payload_field: data}, maxlen=maxlen, approximate=True)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        _confirmed(replies.pop(), replicas, len(indexes), name)
        for i, reply in zip(indexes, map(translated_reply, replies), strict=True):
            out[i] = reply if isinstance(reply, RedisIOError) else _id(reply)
            if isinstance(reply, RedisIOError) and "MOVED" in str(reply):
                client.nodes_manager.initialize()
    return out


def _confirmed(reply: object, replicas: int, count: int, node: str) -> None:
    held = reply if isinstance(reply, int) else -1
    if held < replicas:
        UNREPLICATED.labels(node).inc(count)
        log.warning("%d entries written on %s, but %s of %d replicas confirmed them in time: a failover now could lose "
                    "them", count, node, held if held >= 0 else f"none ({reply})", replicas)  # fmt: skip


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
