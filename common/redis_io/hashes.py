"""Small hashes beside the streams: the detector replicas' beacons, the stale-frame tallies."""

from __future__ import annotations

from typing import Any

from common.redis_io.connection import Client
from common.redis_io.errors import translated
from common.redis_io.streams import text


@translated
def set_field(client: Client, key: str, name: str, value: str | bytes) -> None:
    client.hset(key, name, value)


@translated
def delete_field(client: Client, key: str, name: str) -> None:
    client.hdel(key, name)


@translated
def fields(client: Client, key: str) -> dict[str, bytes]:
    """Every field of a hash, by name; empty when it does not exist."""
    found: Any = client.hgetall(key)
    return {text(name): value for name, value in found.items()}
