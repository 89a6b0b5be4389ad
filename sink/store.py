"""Where a storage sink keeps results: the :class:`Store` protocol and the factory choosing a backend by config.

Delivery is at-least-once, so every store is idempotent on (stream, frame_id), and ``write`` returns only once the
results are durable: the caller acks them right after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from common.config import StoreSinkConfig
from common.wire import Result


class StoreError(RuntimeError):
    """A store that cannot be opened or written: the message says what, where, and how to fix it."""


class Store(Protocol):
    def write(self, results: Sequence[Result]) -> int:
        """Store the results durably; returns how many were not stored before."""

    def close(self) -> None:
        """Release the file or connection."""


def create_store(cfg: StoreSinkConfig) -> Store:
    """Open (creating or migrating as needed) the store a sink's config names."""
    # Imported here so a sink loads only its own backend (psycopg, sqlite3).
    if cfg.kind == "jsonl":
        from sink.jsonl import JsonlStore

        return JsonlStore(cfg)
    if cfg.kind == "sqlite":
        from sink.sqlite import SqliteStore

        return SqliteStore(cfg)
    from sink.postgres import PostgresStore

    return PostgresStore(cfg)
