"""Delivering alerts: each action reads the alerts stream through a consumer group of its own, on a worker thread.

Raising and delivering are apart so that a slow or unreachable webhook or broker never holds the results back:
alerts wait in the alerts stream (which survives restarts, and which anyone may read) while an action retries with
back-off; each action acks an alert only once it is delivered.
"""

from __future__ import annotations

import logging
import time

from common import metrics
from common.backoff import Backoff
from common.keys import Keys
from common.redis_io import Client, Entry, GroupReader, frame_reader, stream_reader
from common.wire import Alert, WireError, decode
from common.workers import Worker
from sink.alerts import AlertSinkConfig
from sink.alerts.actions import Action, DeliveryError, create_action

log = logging.getLogger(__name__)


class Delivery:
    """One action's deliveries on a worker thread of its own, in stream order. Each alert is retried with back-off
    until it is delivered, refused for good (dead-lettered with the reason), or the sink stops (then it stays
    pending and is delivered after the next start)."""

    def __init__(self, action: Action, reader: GroupReader, retry_initial_s: float, retry_max_s: float) -> None:
        self.action = action
        self.reader = reader
        self.delivered = 0
        self._caught_up_at = 0.0  # monotonic time of the last read that found nothing to deliver
        self._backoff = Backoff(retry_initial_s, retry_max_s, jitter=0.0)  # reset for each alert
        self._worker = Worker(f"action-{action.name}", self._run)
        self._worker.start()  # after the assignment: the thread reads self._worker

    def _run(self) -> None:
        while not self._worker.stopping.is_set():
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
        self._backoff.reset()
        while True:
            try:
                self.action.deliver(alert)
            except DeliveryError as exc:
                if not exc.transient:
                    self.reader.dead_letter(entry, f"action {self.action.name}: {exc}")
                    metrics.DELIVERIES.labels(self.action.name, "refused").inc()
                    return True
                metrics.DELIVERIES.labels(self.action.name, "retried").inc()
                delay = self._backoff.next_delay()
                log.warning("action %s: %s; retrying in %.1f s", self.action.name, exc, delay)
                if self._backoff.wait(self._worker.stopping, delay):
                    return False
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

    def close(self, timeout: float) -> None:
        """Deliver what is queued (within ``timeout`` s), then stop; undelivered alerts stay pending."""
        asked = time.monotonic()
        while self._worker.alive and self._caught_up_at <= asked and time.monotonic() - asked < timeout:
            time.sleep(0.05)
        self._worker.stop()
        try:
            self._worker.join(timeout - (time.monotonic() - asked))
        finally:
            self.reader.close()  # on a cluster: its blocking read's thread ends now, not after its BLOCK
            self.action.close()


def start_deliveries(
    client: Client, keys: Keys, cfg: AlertSinkConfig, consumer: str, dead_maxlen: int
) -> list[Delivery]:
    """One delivery thread per action. A new action's group starts at the end of the alerts stream: it delivers
    the alerts raised from now on, not the history."""
    fetch = frame_reader(client, keys)
    out = []
    for name, action_cfg in cfg.actions.items():
        reader = stream_reader(
            client, keys.alerts(cfg.name), keys.action_group(name), consumer, cfg, cfg.batch, keys.dead_letters,
            dead_maxlen, start_id="$",
        )  # fmt: skip
        out.append(Delivery(create_action(name, action_cfg, fetch), reader, cfg.retry_initial_s, cfg.retry_max_s))
    return out
