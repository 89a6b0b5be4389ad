"""Raising alerts: rules over a batch of results put alerts on the sink's alerts stream, once per result.

A batch's alerts, the marks that its results were handled and its acks go in one transaction, so a redelivered
result raises nothing twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common import metrics
from common.keys import Keys
from common.redis_io import Entry, GroupReader, Mark
from common.wire import Result, encode
from sink.alerts import AlertSinkConfig
from sink.alerts.rules import RuleBook


@dataclass
class Raiser:
    """Turns a batch of result entries into alerts on the alerts stream, once per result."""

    rules: RuleBook
    reader: GroupReader
    keys: Keys
    cfg: AlertSinkConfig
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("results", "alerts", "again", "dead"), 0))

    def handle(self, entries: list[Entry]) -> None:
        good = self.reader.messages(entries, Result)
        self.counts["dead"] += len(entries) - len(good)
        marks = [f"{r.stream}/{r.frame_id}" for _, r in good]
        seen = self.reader.handled(self.keys.alerted(self.cfg.name), marks)
        now = time.time()
        alerts = [
            a for (_, r), m in zip(good, marks, strict=True) if m not in seen for a in self.rules.evaluate(r, now)
        ]
        self.reader.publish_and_ack(
            [(self.keys.alerts(self.cfg.name), encode(a), self.cfg.alerts_maxlen) for a in alerts],
            [e for e, _ in good],
            Mark(self.keys.alerted(self.cfg.name), [m for m in marks if m not in seen]),
        )
        self.counts["results"] += len(good) - len(seen)
        self.counts["again"] += len(seen)
        self.counts["alerts"] += len(alerts)
        for a in alerts:
            metrics.ALERTS.labels(self.cfg.name, a.rule).inc()
