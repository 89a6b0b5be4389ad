"""The detector's last stage: inferred batches become published results, dead letters and acks.

It runs on a thread of its own, so that while the host turns one batch's heads into boxes and sends them, the
device is already running the next batch. Batches are finished in the order they were inferred.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from dataclasses import dataclass, field

from common import metrics
from common.keys import Keys
from common.redis_io import GroupReader, Tally
from common.wire import Result, encode
from common.workers import Worker
from detector.pipeline import Pipeline, Predicted

log = logging.getLogger(__name__)


@dataclass
class Publishing:
    """Finishes one inferred batch: results published and acked together, failures dead-lettered, stale and shed
    frames acked."""

    pipeline: Pipeline
    reader: GroupReader
    keys: Keys
    results_maxlen: int
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("results", "stale", "shed", "dead", "batches"), 0)
    )

    def finish(self, predicted: Predicted) -> None:
        prepared = predicted.prepared
        outcome = self.pipeline.finish(predicted)
        for entry, reason in outcome.failed:
            self.reader.dead_letter(entry, reason)
        # Stale frames (too old to be worth a result) and shed ones (newer frames of their stream waited) are acked
        # uninferred, and tallied per stream in Redis in the same transaction, so that every frame read is accounted
        # for. (Frames skipped unread were tallied by the server as it skipped them.)
        stale = Counter(self.keys.stream_of(e.key) for e in prepared.stale)
        shed = Counter(self.keys.stream_of(e.key) for e in prepared.shed)
        group = self.reader.group
        tallies = [Tally(self.keys.stale(group, s), {s: n}) for s, n in stale.items()]
        tallies += [Tally(self.keys.shed(group, s), {s: n}) for s, n in shed.items()]
        self.reader.publish_and_ack(
            [(self.keys.results(r.stream), encode(r), self.results_maxlen) for _, r in outcome.published],
            [e for e, _ in outcome.published] + prepared.stale + prepared.shed,
            tallies=tallies,
        )
        skipped = Counter({self.keys.stream_of(k): n for k, n in prepared.skipped.items()})
        self._observe(predicted, [r for _, r in outcome.published], stale, {"superseded": shed, "skipped": skipped})
        self.counts["results"] += len(outcome.published)
        self.counts["stale"] += len(prepared.stale)
        self.counts["shed"] += len(prepared.shed) + skipped.total()
        self.counts["dead"] += len(outcome.failed)
        self.counts["batches"] += 1

    def _observe(
        self, predicted: Predicted, results: list[Result], stale: Counter[str], shed: dict[str, Counter[str]]
    ) -> None:
        # Once per stream and batch, not per frame: a label lookup takes a lock.
        pool = self.pipeline.pool.name
        for stream, n in Counter(r.stream for r in results).items():
            metrics.FRAMES_OUT.labels(pool, stream).inc(n)
        latency = metrics.END_TO_END.labels(pool)
        for r in results:
            latency.observe(r.timings.end_to_end_ms / 1000)
        for stream, n in stale.items():
            metrics.STALE.labels(pool, stream).inc(n)
        for reason, counts in shed.items():
            for stream, n in counts.items():
                metrics.SHED.labels(pool, stream, reason).inc(n)
        if predicted.outputs is not None:
            size = len(predicted.prepared.entries)
            metrics.BATCH_SIZE.labels(pool).observe(size)
            metrics.INFERENCE.labels(pool).observe(predicted.infer_s * size)


class Publisher:
    """``Publishing`` on a background thread, one batch queued at most (back-pressure on the inference loop)."""

    def __init__(self, publishing: Publishing) -> None:
        self.publishing = publishing
        self._queue: queue.Queue[Predicted | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        """Why publishing failed: the thread lives on, draining the queue, so that put() never blocks on it."""
        self._worker = Worker("publisher", self._run).start()

    @property
    def counts(self) -> dict[str, int]:
        return self.publishing.counts

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue  # failed already: what is still queued stays pending in Redis, for a redelivery
            try:
                self.publishing.finish(item)
            except Exception as exc:  # surfaced by put()/close(): the process must not run on without publishing
                log.exception("publishing a batch failed")
                self.error = exc

    def put(self, predicted: Predicted) -> None:
        """Queue a batch to finish; waits while one is already queued. Raises what stopped the publisher."""
        self._raise()
        self._queue.put(predicted)

    def close(self, timeout: float) -> bool:
        """Finish what is queued (within ``timeout`` seconds) and stop; False if that ran out of time."""
        deadline = time.monotonic() + timeout
        while self._worker.alive:
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        ended = self._worker.join(deadline - time.monotonic())
        self._raise()
        return ended

    def _raise(self) -> None:
        self._worker.check()  # the thread itself died (not a failed batch, which it survives)
        if self.error is not None:
            raise RuntimeError(f"publishing results failed: {self.error}") from self.error
