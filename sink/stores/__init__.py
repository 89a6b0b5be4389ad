"""Where a store sink keeps results, or a tracker's events: one plug-in module per backend (see ``common.plugins``),
each with its settings.

Delivery is at-least-once, so every store is idempotent (results on (stream, frame_id), events on event_id), and
``write`` / ``write_events`` return only once the messages are durable: the runner (``sink.stores._runner``, every
store kind's) acks them right after. ``events`` queries the events an SQLite or PostgreSQL store kept;
``python -m sink.stores query`` is its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from common.plugins import SINKS, STORES
from common.settings import StoreSettings
from common.wire import Change, Event, EventType
from sink.stores.base import EventStore, Store, StoreError

if TYPE_CHECKING:
    from sink.stores.sql import DetectionQueries

__all__ = ["EventStore", "Store", "StoreError", "create_event_store", "create_store", "events", "open_store"]


def create_store(cfg: StoreSettings) -> Store:
    """Open (creating or migrating as needed) the store a sink's settings name."""
    store: Store = STORES.factory(cfg)(cfg)
    return store


def create_event_store(cfg: StoreSettings) -> EventStore:
    """Open the store a sink's settings name, to keep a tracker's events; StoreError when its kind cannot (the
    config's validation refuses such a sink before it gets here)."""
    store = create_store(cfg)
    if not type(cfg).keeps_events or not hasattr(store, "write_events"):
        store.close()
        raise StoreError(f"sink {cfg.name}: the {cfg.kind} store cannot keep events; remove events_of")
    return cast(EventStore, store)  # checked just above


def open_store(where: str | Path | StoreSettings) -> DetectionQueries:
    """Open an SQLite or PostgreSQL store read-only, to query it: a ``postgresql://`` URL, an SQLite file, or a
    sqlite or postgres sink's settings."""
    from sink.stores.postgres import PostgresSinkConfig, PostgresStore
    from sink.stores.sqlite import SqliteSinkConfig, SqliteStore

    if isinstance(where, PostgresSinkConfig):
        return PostgresStore.open(where.url, connect_timeout_s=where.connect_timeout_s)
    if isinstance(where, SqliteSinkConfig):
        return SqliteStore.open(where.path, busy_timeout_s=where.busy_timeout_s)
    if isinstance(where, StoreSettings):
        raise StoreError(f"sink {where.name}: the {where.kind} store has no queries (sqlite and postgres stores do)")
    if isinstance(where, str) and where.startswith(("postgres://", "postgresql://")):
        return PostgresStore.open(where)
    return SqliteStore.open(where)


def events(
    where: DetectionQueries | str | Path | StoreSettings,
    label: str | None = None,
    zone: str | None = None,
    since: float | None = None,
    until: float | None = None,
    stream: str | None = None,
    event: EventType | None = None,
    change: Change | None = None,
    limit: int = 1000,
) -> list[Event]:
    """Events an SQLite or PostgreSQL store kept whose frame was captured in [since, until) (UNIX seconds), oldest
    first: of one label, about or in one zone (the event's ``zone``, or one of its ``zones``), of one stream, kind and
    change, if given. ``where``: an open store, or what :func:`open_store` takes (then opened and closed here)."""
    from sink.stores.sql import DetectionQueries

    store = where if isinstance(where, DetectionQueries) else open_store(where)
    try:
        return store.events(label, zone, since, until, stream, event, change, limit)
    finally:
        if store is not where:
            store.close()


SINKS.register(StoreSettings, "sink.stores._runner:run")
