"""What every store shares: the interfaces the store runner drives, and its error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from common.wire import Event, Result


class StoreError(RuntimeError):
    """A store that cannot be opened or written: the message says what, where, and how to fix it."""


class Store(Protocol):
    def write(self, results: Sequence[Result]) -> int:
        """Store the results durably; returns how many were not stored before."""

    def close(self) -> None:
        """Release the file or connection."""


class EventStore(Store, Protocol):
    """A store that can keep a tracker's events too (its settings class says ``keeps_events = True``)."""

    def write_events(self, events: Sequence[Event]) -> int:
        """Store the events durably, idempotent on ``event_id``; returns how many were not stored before."""
