"""Alert sinks: rules over the results, or over a tracker's events, raise alerts (``rules``), which the sink's
actions deliver (``actions``).

This module declares the alert sink's settings and registers its kind (see ``common.plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from common.plugins import ACTIONS, SINKS
from common.settings import (
    ActionSettings,
    ConsumerSinkSettings,
    Name,
    ReadsEvents,
    RelativePoint,
    StreamPatterns,
    Strict,
)
from common.wire import Change, EventType

if TYPE_CHECKING:
    ActionConfig = ActionSettings
else:
    ActionConfig = ACTIONS.union()

WINDOW_FIELDS = frozenset({"min_count", "zone", "k", "n", "cooldown_s"})
"""Fields of a rule over the results (frames in a window): an alert sink with events_of refuses them."""
EVENT_FIELDS = frozenset({"events", "changes", "zones", "lines", "directions"})
"""Fields of a rule over a tracker's events: an alert sink without events_of refuses them."""


class AlertRuleConfig(Strict):
    """When to alert. Over the results: detections in a frame that pass every condition, in k of the last n frames of
    a stream. Over a tracker's events (the sink's events_of): each event that passes every condition, once."""

    name: Name = Field(description="Rule name; appears in every alert it raises.")
    streams: StreamPatterns = Field(["*"])
    labels: list[str] = Field(default_factory=list, description="Labels that count; empty: every label.")
    min_score: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Detections scoring less do not count; over events, the object's best score so far (best.score).",
    )
    # --- over the results
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
    # --- over a tracker's events
    events: list[EventType] = Field(
        default_factory=list, max_length=3, description="Events that count (start, update, end); empty: every one."
    )
    changes: list[Change] = Field(
        default_factory=list,
        max_length=4,
        description="Updates that count (zone_enter, zone_leave, line_cross, loiter); empty: every event.",
    )
    zones: list[Name] = Field(
        default_factory=list,
        max_length=100,
        description="Zones (the tracker's): an event counts when it is about one (entered, left, loitered in) or its "
        "object is in one; empty: anywhere.",
    )
    lines: list[Name] = Field(
        default_factory=list, max_length=100, description="Lines (the tracker's) whose crossings count; empty: any."
    )
    directions: list[Literal["in", "out"]] = Field(
        default_factory=list, max_length=2, description="Line crossings of these directions count; empty: both."
    )
    actions: list[Name] = Field(min_length=1, description="Names of the sink's actions to run for each alert.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n}): an alert needs k of the last n frames")
        if self.changes and self.events and "update" not in self.events:
            raise ValueError(
                f"changes {self.changes} come with update events only, and events {self.events} has no update: add "
                f"update to events, or remove changes"
            )
        return self


class AlertSinkConfig(ConsumerSinkSettings, ReadsEvents):
    """Rules over the results (or a tracker's events); alerts go to a stream of their own, from which each action
    delivers them."""

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

    @model_validator(mode="after")
    def _rules_match_the_input(self) -> Self:
        # A field of the other kind of rule would be ignored, silently: refuse it instead.
        for i, rule in enumerate(self.rules):
            if self.events_of is not None and (wrong := sorted(rule.model_fields_set & WINDOW_FIELDS)):
                raise ValueError(
                    f"rules[{i}] ({rule.name}): {', '.join(wrong)} belong to rules over the results (frames in a "
                    f"window), but this sink reads the events of tracker {self.events_of} (events_of): match events "
                    f"with {', '.join(sorted(EVENT_FIELDS))}, or remove events_of"
                )
            if self.events_of is None and (wrong := sorted(rule.model_fields_set & EVENT_FIELDS)):
                raise ValueError(
                    f"rules[{i}] ({rule.name}): {', '.join(wrong)} match a tracker's events, but this sink reads the "
                    f"results: set events_of to the tracker sink whose events it should read, or remove them"
                )
        return self


SINKS.register(AlertSinkConfig, "sink.alerts.runner:run")
