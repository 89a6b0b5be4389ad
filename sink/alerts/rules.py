"""Alert rules: which results, or which of a tracker's events, raise an alert, as pure logic (no Redis, no I/O).

A :class:`RuleBook` holds the rules of one alert sink over the results and the state they keep per (rule, stream,
label); feed it every result of the watched streams in order with :meth:`RuleBook.evaluate`, and it returns the
alerts to raise. :class:`EventRules` holds the rules of a sink reading a tracker's events: they keep no state, since
the tracker already made one event per object and happening.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from common.geometry import inside
from common.keys import matches
from common.wire import Alert, Detection, Event, Result
from sink.alerts import AlertRuleConfig, AlertSinkConfig


@dataclass
class _KeyState:
    """What one (rule, stream, label) remembers."""

    window: deque[bool]
    on: bool = False
    last_on_ts: float | None = None


@dataclass
class _Rule:
    cfg: AlertRuleConfig
    # stream -> label -> state; only keys that have been seen, so memory follows the traffic, not the label space.
    keys: dict[str, dict[str, _KeyState]] = field(default_factory=dict)

    def counted(self, result: Result) -> dict[str, list[Detection]]:
        """The detections of one result that count for this rule, by label (in order of first appearance)."""
        cfg = self.cfg
        by_label: dict[str, list[Detection]] = {}
        for det in result.detections:
            if det.score < cfg.min_score or (cfg.labels and det.label not in cfg.labels):
                continue
            if cfg.zone is not None:
                x1, y1, x2, y2 = det.box
                centre = ((x1 + x2) / 2 / result.width, (y1 + y2) / 2 / result.height)
                if not inside(centre, cfg.zone):
                    continue
            by_label.setdefault(det.label, []).append(det)
        return by_label


class RuleBook:
    """The rules of one alert sink and their state.

    Semantics, per rule:

    - The rule applies to a result when ``matches(result.stream, rule.streams)``.
    - A detection counts when its score is at least ``min_score``, its label is in ``labels`` (empty: every label)
      and, when ``zone`` is set, its box centre in relative coordinates (cx / width, cy / height of the original
      frame) is inside the polygon (ray casting; a point exactly on an edge may go either way).
    - For each (rule, stream, label) the frame *counts* when at least ``min_count`` detections of that label count.
      Each key keeps a window of the last ``n`` such booleans. A window is created the first time a label has a
      detection that counts on that stream; after that every result of the stream appends one boolean to every
      window of that stream (False when the label is absent). Frames before a window existed cannot have counted,
      so starting late changes nothing.
    - The condition holds when the window has at least ``k`` True values.
    - Each key is off at first. Condition holds while off: if the key's last "on" alert was less than
      ``cooldown_s`` ago (by the results' ``capture_ts``), stay off and raise nothing (checked again on the next
      frame); else turn on and raise an "on" alert with the detections that counted in this frame. Condition no
      longer holds while on: turn off and raise an "off" alert with no detections (no cooldown applies).
    - Alerts carry the sink's name, the rule's name and actions, the stream and label, the result's frame id, seq,
      capture time and frame size, and ``raised_ts = now``.
    """

    kind: ClassVar[type[Result]] = Result
    what: ClassVar[str] = "results"

    def __init__(self, cfg: AlertSinkConfig) -> None:
        self.sink = cfg.name
        self._rules = [_Rule(rule) for rule in cfg.rules]

    @staticmethod
    def mark(result: Result) -> str:
        """What records a result as handled (in the sink's ``alerted`` set), so that a redelivery alerts once."""
        return f"{result.stream}/{result.frame_id}"

    def evaluate(self, result: Result, now: float) -> list[Alert]:
        """Advance every applicable rule by one result; returns the alerts it raises (rules in config order)."""
        alerts: list[Alert] = []
        for rule in self._rules:
            if matches(result.stream, rule.cfg.streams):
                alerts.extend(self._advance(rule, result, now))
        return alerts

    def _advance(self, rule: _Rule, result: Result, now: float) -> list[Alert]:
        cfg = rule.cfg
        counted = rule.counted(result)
        states = rule.keys.setdefault(result.stream, {})
        for label in counted:
            if label not in states:
                states[label] = _KeyState(window=deque(maxlen=cfg.n))
        alerts: list[Alert] = []
        for label, state in states.items():
            dets = counted.get(label, [])
            state.window.append(len(dets) >= cfg.min_count)
            holds = sum(state.window) >= cfg.k
            if holds and not state.on:
                if state.last_on_ts is not None and result.capture_ts - state.last_on_ts < cfg.cooldown_s:
                    continue
                state.on, state.last_on_ts = True, result.capture_ts
                alerts.append(self._alert(cfg, result, label, "on", dets, now))
            elif state.on and not holds:
                state.on = False
                alerts.append(self._alert(cfg, result, label, "off", [], now))
        return alerts

    def _alert(
        self,
        rule: AlertRuleConfig,
        result: Result,
        label: str,
        state: Literal["on", "off"],
        detections: list[Detection],
        now: float,
    ) -> Alert:
        return Alert(
            sink=self.sink,
            rule=rule.name,
            stream=result.stream,
            label=label,
            state=state,
            frame_id=result.frame_id,
            seq=result.seq,
            capture_ts=result.capture_ts,
            raised_ts=now,
            width=result.width,
            height=result.height,
            detections=detections,
            actions=list(rule.actions),
        )


class EventRules:
    """The rules of an alert sink that reads a tracker's events (``events_of``).

    Semantics, per rule and event, all conditions given having to hold (an empty list: any):

    - ``matches(event.stream, rule.streams)``; ``event.label`` in ``labels``;
    - the object's best score so far (``event.best.score``) at least ``min_score``: an object seen well once is
      that object, though the tracker may follow it through weaker frames;
    - ``event.event`` in ``events`` (start, update, end); ``event.change`` in ``changes``;
    - ``zones``: the event is about one of them (its ``zone``: entered, left, loitered in) or its object is in one
      (its ``zones``); ``event.line`` in ``lines``; ``event.direction`` in ``directions``.

    Each event that a rule matches raises one "on" alert: there is no window and no "off", since the tracker made one
    event per object and happening already. The alert shows the object at its best: the frame, seq and capture time
    of ``event.best``, and one detection with the object's label and class, its best score and its box there (what
    the snapshot action draws).
    """

    kind: ClassVar[type[Event]] = Event
    what: ClassVar[str] = "events"

    def __init__(self, cfg: AlertSinkConfig) -> None:
        self.sink = cfg.name
        self._rules = list(cfg.rules)

    @staticmethod
    def mark(event: Event) -> str:
        """What records an event as handled: its id, the same when a redelivery publishes it again."""
        return event.event_id

    def evaluate(self, event: Event, now: float) -> list[Alert]:
        """The alerts one event raises (one per matching rule, in config order)."""
        return [self._alert(rule, event, now) for rule in self._rules if self.matches(rule, event)]

    @staticmethod
    def matches(rule: AlertRuleConfig, event: Event) -> bool:
        """Whether ``event`` passes every condition of ``rule`` (see the class docstring)."""
        return (
            matches(event.stream, rule.streams)
            and (not rule.labels or event.label in rule.labels)
            and event.best.score >= rule.min_score
            and (not rule.events or event.event in rule.events)
            and (not rule.changes or event.change in rule.changes)
            and (not rule.zones or event.zone in rule.zones or any(z in rule.zones for z in event.zones))
            and (not rule.lines or event.line in rule.lines)
            and (not rule.directions or event.direction in rule.directions)
        )

    def _alert(self, rule: AlertRuleConfig, event: Event, now: float) -> Alert:
        best = event.best
        fields: dict[str, Any] = {
            "sink": self.sink, "rule": rule.name, "stream": event.stream, "label": event.label, "state": "on",
            "frame_id": best.frame_id, "seq": best.seq, "capture_ts": best.capture_ts, "raised_ts": now,
            "width": event.width, "height": event.height,
            "detections": [Detection(label=event.label, class_id=event.class_id, score=best.score, box=best.box)],
            "actions": list(rule.actions), "event_id": event.event_id,
        }  # fmt: skip
        return Alert.model_validate(fields)
