"""Alert actions: how an alert leaves the stack (webhook, MQTT, log line, snapshot), one plug-in module per kind
(see ``common.plugins``), each with its settings.

Every action delivers one alert at a time and raises :class:`DeliveryError` when it cannot; the error says whether
the caller should try again later (``transient``) or give the alert up (dead-letter it).
"""

from __future__ import annotations

from common.plugins import ACTIONS
from common.redis_io import FetchFrame
from common.settings import ActionSettings
from sink.alerts.actions.base import Action, DeliveryError

__all__ = ["Action", "DeliveryError", "create_action"]


def create_action(name: str, cfg: ActionSettings, fetch_frame: FetchFrame) -> Action:
    """The action ``cfg`` describes, called ``name``; ``fetch_frame`` reads an alert's frame back (snapshots)."""
    action: Action = ACTIONS.factory(cfg)(name, cfg, fetch_frame)
    return action
