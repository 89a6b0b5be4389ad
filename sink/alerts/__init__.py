"""Alert sinks: rules over the results raise alerts (``rules``), which the sink's actions deliver (``actions``).

This module declares the alert sink's settings and registers its kind (see ``common.plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from common.plugins import ACTIONS, SINKS
from common.settings import ActionSettings, ConsumerSinkSettings, Name, RelativePoint, StreamPatterns, Strict

if TYPE_CHECKING:
    ActionConfig = ActionSettings
else:
    ActionConfig = ACTIONS.union()


class AlertRuleConfig(Strict):
    """When to alert: detections in a frame that pass every condition, in k of the last n frames of a stream."""

    name: Name = Field(description="Rule name; appears in every alert it raises.")
    streams: StreamPatterns = Field(["*"])
    labels: list[str] = Field(default_factory=list, description="Labels that count; empty: every label.")
    min_score: float = Field(0.5, ge=0, le=1, description="Detections scoring less do not count.")
    min_count: int = Field(1, ge=1, le=10_000, description="Detections of one label a frame needs to count.")
    zone: list[RelativePoint] | None = Field(
        None,
        min_length=3,
        description="Polygon in relative coordinates (0-1, x right, y down): a box counts when its centre is "
        "inside. None: the whole frame.",
    )
    k: int = Field(1, ge=1, le=1000, description="Frames, of the last n, that must count for the alert.")
    n: int = Field(1, ge=1, le=1000, description="Window of frames per stream and label.")
    cooldown_s: float = Field(60.0, ge=0, le=86_400, description="No second alert per stream and label within this.")
    actions: list[Name] = Field(min_length=1, description="Names of the sink's actions to run for each alert.")

    @model_validator(mode="after")
    def _k_within_n(self) -> Self:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n}): an alert needs k of the last n frames")
        return self


class AlertSinkConfig(ConsumerSinkSettings):
    """Rules over the results; alerts go to a stream of their own, from which each action delivers them."""

    kind: Literal["alert"] = "alert"
    rules: list[AlertRuleConfig] = Field(min_length=1, max_length=1000, description="Alert rules.")
    actions: dict[Name, ActionConfig] = Field(min_length=1, description="Named actions the rules refer to.")
    alerts_maxlen: int = Field(
        100_000, ge=100, le=10_000_000, description="Alerts kept (queued for delivery) in the alerts stream."
    )
    retry_initial_s: float = Field(1.0, gt=0, le=600, description="First wait before retrying a failed delivery.")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between delivery retries.")

    @model_validator(mode="after")
    def _actions_exist(self) -> Self:
        for rule in self.rules:
            unknown = [a for a in rule.actions if a not in self.actions]
            if unknown:
                raise ValueError(
                    f"rule {rule.name!r} names actions {unknown} that are not defined; actions: {list(self.actions)}"
                )
        return self


SINKS.register(AlertSinkConfig, "sink.alerts.runner:run")
