"""Raising alerts: rules over a batch of results (or of a tracker's events) put alerts on the sink's alerts stream,
once per message.

A batch's alerts, the marks that its messages were handled and its acks go in one transaction, so a redelivered
result or event raises nothing twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

from common import metrics
from common.keys import Keys
from common.redis_io import Entry, GroupReader, Mark
from common.wire import Alert, Event, Result, encode
from sink.alerts import AlertSinkConfig

Message = TypeVar("Message", Result, Event)


class Rules(Protocol[Message]):
    """What raises alerts from one kind of message: :class:`~sink.alerts.rules.RuleBook` (results),
    :class:`~sink.alerts.rules.EventRules` (events)."""

    kind: ClassVar[type[Message]]
    what: ClassVar[str]

    def mark(self, message: Message) -> str: ...

    def evaluate(self, message: Message, now: float) -> list[Alert]: ...


@dataclass
class Raiser(Generic[Message]):
    """Turns a batch of entries into alerts on the alerts stream, once per message."""

    rules: Rules[Message]
    reader: GroupReader
    keys: Keys
    cfg: AlertSinkConfig
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = dict.fromkeys((self.rules.what, "alerts", "again", "dead"), 0)

    def handle(self, entries: list[Entry]) -> None:
        good = self.reader.messages(entries, self.rules.kind)
        self.counts["dead"] += len(entries) - len(good)
        marks = [self.rules.mark(m) for _, m in good]
        seen = self.reader.handled(self.keys.alerted(self.cfg.name), marks)
        now = time.time()
        fresh: list[str] = []
        alerts: list[Alert] = []
        for (_, message), mark in zip(good, marks, strict=True):
            # Handled before, or twice in this batch (a tracker that republished an event after a restart).
            if mark in seen or mark in fresh:
                continue
            fresh.append(mark)
            alerts.extend(self.rules.evaluate(message, now))
        self.reader.publish_and_ack(
            [(self.keys.alerts(self.cfg.name), encode(a), self.cfg.alerts_maxlen) for a in alerts],
            [e for e, _ in good],
            Mark(self.keys.alerted(self.cfg.name), fresh),
        )
        self.counts[self.rules.what] += len(fresh)
        self.counts["again"] += len(good) - len(fresh)
        self.counts["alerts"] += len(alerts)
        for a in alerts:
            metrics.ALERTS.labels(self.cfg.name, a.rule).inc()
