"""The alert sink: rules over the results raise alerts onto a stream of their own; each action delivers from it.

Raising and delivering are apart so that a slow or unreachable webhook or broker never holds the results back:
alerts wait in the alerts stream (which survives restarts, and which anyone may read) while an action retries with
back-off. A batch's alerts, the marks that its results were handled and its acks go in one transaction, so a
redelivered result raises nothing twice; each action acks an alert only once it is delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from common import metrics
from common.config import AlertSinkConfig
from common.keys import Keys
from common.redis_io import Entry, GroupReader, Mark, read_entry, stream_reader
from common.wire import Alert, Frame, Result, WireError, decode, encode
from sink.actions import Action, DeliveryError, create_action
from sink.rules import RuleBook

log = logging.getLogger(__name__)


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


class Delivery:
    """One action's deliveries on a thread of its own, in stream order. Each alert is retried with back-off until
    it is delivered, refused for good (dead-lettered with the reason), or the sink stops (then it stays pending and
    is delivered after the next start)."""

    def __init__(self, action: Action, reader: GroupReader, retry_initial_s: float, retry_max_s: float) -> None:
        self.action = action
        self.reader = reader
        self.retry = (retry_initial_s, retry_max_s)
        self.delivered = 0
        self.stop = threading.Event()
        self._caught_up_at = 0.0  # monotonic time of the last read that found nothing to deliver
        self._thread = threading.Thread(target=self._run, name=f"action-{action.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            entries = self.reader.read()
            if not entries:
                self._caught_up_at = time.monotonic()
            for entry in entries:
                if not self._deliver(entry):
                    return

    def _deliver(self, entry: Entry) -> bool:
        """False when stopping with ``entry`` undelivered."""
        try:
            alert = decode(entry.payload, Alert)
        except WireError as exc:
            self.reader.dead_letter(entry, f"WireError: {exc}")
            return True
        if self.action.name not in alert.actions:  # another rule's alert: not for this action
            self.reader.ack([entry])
            return True
        delay = self.retry[0]
        while True:
            try:
                self.action.deliver(alert)
            except DeliveryError as exc:
                if not exc.transient:
                    self.reader.dead_letter(entry, f"action {self.action.name}: {exc}")
                    metrics.DELIVERIES.labels(self.action.name, "refused").inc()
                    return True
                metrics.DELIVERIES.labels(self.action.name, "retried").inc()
                log.warning("action %s: %s; retrying in %.1f s", self.action.name, exc, delay)
            except Exception as exc:  # a bug or bad data in one alert must not stop the action for good
                log.exception("action %s failed on alert %s", self.action.name, entry.id)
                self.reader.dead_letter(entry, f"action {self.action.name}: {type(exc).__name__}: {exc}")
                metrics.DELIVERIES.labels(self.action.name, "failed").inc()
                return True
            else:
                self.reader.ack([entry])
                self.delivered += 1
                metrics.DELIVERIES.labels(self.action.name, "delivered").inc()
                return True
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, self.retry[1])

    def close(self, timeout: float) -> None:
        """Deliver what is queued (within ``timeout`` s), then stop; undelivered alerts stay pending."""
        asked = time.monotonic()
        while self._thread.is_alive() and self._caught_up_at <= asked and time.monotonic() - asked < timeout:
            time.sleep(0.05)
        self.stop.set()
        self._thread.join(max(0.0, timeout - (time.monotonic() - asked)))
        self.action.close()


def frame_fetcher(client: redis.Redis, keys: Keys) -> Callable[[str, str], Frame | None]:
    """Reads a frame back from its frames stream by entry id (for snapshots): None once it is trimmed away."""

    def fetch(stream: str, frame_id: str) -> Frame | None:
        raw = read_entry(client, keys.frames(stream), frame_id)
        return None if raw is None else decode(raw, Frame)

    return fetch


def start_deliveries(
    client: redis.Redis, keys: Keys, cfg: AlertSinkConfig, consumer: str, dead_maxlen: int
) -> list[Delivery]:
    """One delivery thread per action. A new action's group starts at the end of the alerts stream: it delivers
    the alerts raised from now on, not the history."""
    fetch = frame_fetcher(client, keys)
    out = []
    for name, action_cfg in cfg.actions.items():
        reader = stream_reader(
            client, keys.alerts(cfg.name), keys.action_group(name), consumer, cfg, cfg.batch, keys.dead_letters(),
            dead_maxlen, start_id="$",
        )  # fmt: skip
        out.append(Delivery(create_action(name, action_cfg, fetch), reader, cfg.retry_initial_s, cfg.retry_max_s))
    return out
