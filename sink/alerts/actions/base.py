"""What every alert action shares: the interface the deliveries drive, and its error."""

from __future__ import annotations

from typing import Protocol

from common.wire import Alert


class DeliveryError(Exception):
    """An alert that could not be delivered; ``transient``: retrying later may succeed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Action(Protocol):
    """Delivers alerts somewhere; raises :class:`DeliveryError` on failure."""

    name: str

    def deliver(self, alert: Alert) -> None: ...

    def close(self) -> None: ...
