"""The log action: a log line per alert."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from common.plugins import ACTIONS
from common.settings import ActionSettings
from common.wire import Alert

alert_log = logging.getLogger("sink.alerts")


class LogActionConfig(ActionSettings):
    """A log line per alert."""

    kind: Literal["log"] = "log"
    level: Literal["INFO", "WARNING", "ERROR"] = Field("WARNING", description="Level of the line.")


class LogAction:
    """One line on the ``sink.alerts`` logger per alert."""

    def __init__(self, name: str, cfg: LogActionConfig) -> None:
        self.name = name
        self._level = logging.getLevelNamesMapping()[cfg.level]

    def deliver(self, alert: Alert) -> None:
        best = max((d.score for d in alert.detections), default=None)
        alert_log.log(
            self._level,
            "alert %s: rule=%s stream=%s label=%s frame=%s count=%d best_score=%s",
            alert.state,
            alert.rule,
            alert.stream,
            alert.label,
            alert.frame_id,
            len(alert.detections),
            "-" if best is None else f"{best:.2f}",
        )

    def close(self) -> None:
        """Nothing to release."""


ACTIONS.register(LogActionConfig, lambda name, cfg, _fetch: LogAction(name, cfg))
