"""Where a store sink keeps results: one plug-in module per backend (see ``common.plugins``), each with its settings.

Delivery is at-least-once, so every store is idempotent on (stream, frame_id), and ``write`` returns only once the
results are durable: the runner (``sink.stores._runner``, every store kind's) acks them right after.
"""

from __future__ import annotations

from common.plugins import SINKS, STORES
from common.settings import StoreSettings
from sink.stores.base import Store, StoreError

__all__ = ["Store", "StoreError", "create_store"]


def create_store(cfg: StoreSettings) -> Store:
    """Open (creating or migrating as needed) the store a sink's settings name."""
    store: Store = STORES.factory(cfg)(cfg)
    return store


SINKS.register(StoreSettings, "sink.stores._runner:run")
