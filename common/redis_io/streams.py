"""Streams by name and entry: which keys a set of globs names, one entry read back, the newest of each, a clean-up.

Shared by the group readers, the followers and the inspection functions, so that every one of them finds streams,
and reads entries' payloads, the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from common.keys import Stage, matches
from common.redis_io.connection import Client, connect
from common.redis_io.errors import Refused, Unavailable, translated
from common.redis_io.settings import RedisConfig
from common.wire import FIELD


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_payload(fields: Any, name: str) -> bytes | None:
    """The message field of an entry's fields; None when it has none."""
    if not fields:
        return None
    value = fields.get(name.encode(), fields.get(name))
    return value.encode() if isinstance(value, str) else value


def reply_entries(reply: Any, name: str = FIELD) -> Iterable[tuple[str, str, bytes | None, bool]]:
    """(key, id, payload, trimmed) from an XREAD/XREADGROUP reply (RESP2: [[key, [(id, fields), ...]], ...]).

    A pending entry trimmed from the stream comes back with no fields at all."""
    for key, entries in reply or ():
        for entry_id, fields in entries:
            yield text(key), text(entry_id), entry_payload(fields, name), not fields


def scan_stream_keys(client: Client, stage: Stage, names: Sequence[str]) -> list[str]:
    """The keys of ``stage`` for every literal name, and every existing key of it (on every node of a cluster)
    whose stream name matches one of the glob ``names``. Raises redis-py's errors, for the door's own retry loops;
    :func:`stream_keys` is the one to call from outside."""
    literal = [n for n in names if not any(c in n for c in "*?[")]
    found = {stage.key(n) for n in literal}
    if len(literal) < len(names):
        for raw in client.scan_iter(match=stage.pattern, count=1000, _type="stream"):
            key = text(raw)
            name = stage.name(key)
            if name is not None and matches(name, list(names)):
                found.add(key)
    return sorted(found)


stream_keys = translated(scan_stream_keys)
"""The keys of a stage for every literal name, and every existing key of it whose stream name matches one of the
glob ``names``."""


@translated
def read_entry(client: Client, key: str, entry_id: str, payload_field: str = FIELD) -> bytes | None:
    """The payload of one entry of a stream, or None when the entry (or the stream) is gone."""
    found: Any = client.xrange(key, entry_id, entry_id, count=1)
    return entry_payload(found[0][1], payload_field) if found else None


@translated
def newest(client: Client, keys: Sequence[str], payload_field: str = FIELD) -> list[tuple[str, str, bytes | None]]:
    """(key, id, payload) of the newest entry of each stream that has one, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xrevrange(key, count=1)
    return [
        (key, text(found[0][0]), entry_payload(found[0][1], payload_field))
        for key, found in zip(keys, pipe.execute(), strict=True)
        if found
    ]


def remove_prefix(url: str, prefix: str, cfg: RedisConfig | None = None) -> str | None:
    """Delete every key under ``prefix:`` (a finished run's streams); returns why it could not, or None."""
    client = connect(url, cfg)
    try:
        with translated:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
    except (Unavailable, Refused) as exc:  # unreachable, or an ACL without DEL
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None
