"""Cross-stream batching: one read over every assigned stream, so a quiet stream never holds a batch back.

A batch closes at ``max_batch`` frames or ``max_wait_ms`` after its first frame. A feeder thread builds and
prepares the next batch (decode + letterbox on a thread pool) while the engine runs the current one.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common.redis_io import Entry, GroupReader
from common.workers import Worker
from detector.pipeline import Pipeline, Prepared


@dataclass
class Batcher:
    reader: GroupReader
    max_batch: int
    max_wait_ms: int
    _carry: list[Entry] = field(default_factory=list)

    def next(self, stop: threading.Event) -> list[Entry]:
        """The next batch; empty when nothing arrived within the reader's block time (or on stop)."""
        batch, self._carry = self._carry[: self.max_batch], self._carry[self.max_batch :]
        deadline = time.monotonic() + self.max_wait_ms / 1000 if batch else None
        while len(batch) < self.max_batch and not stop.is_set():
            if deadline is None:
                entries = self.reader.read()
                if not entries:
                    break
                deadline = time.monotonic() + self.max_wait_ms / 1000
            else:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                entries = self.reader.read(block_ms=left_ms)
            batch.extend(entries)
        # XREADGROUP's COUNT is per stream: what does not fit waits for the next batch.
        self._carry = batch[self.max_batch :] + self._carry
        return batch[: self.max_batch]


class Feeder:
    """Reads and prepares batches on a thread of its own; ``get`` hands them to the inference loop in order."""

    def __init__(self, batcher: Batcher, pipeline: Pipeline, threads: int) -> None:
        self._batcher = batcher
        self._pipeline = pipeline
        self._decoders = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self._ready: queue.Queue[Prepared | None] = queue.Queue(maxsize=1)  # one batch ahead, no more
        # A failure wakes get() with None, which then raises it: the loop must not wait forever on a dead feeder.
        self._worker = Worker("feeder", self._run, on_error=lambda _: self._ready.put(None))
        self.stop: threading.Event = self._worker.stopping
        self._worker.start()

    @property
    def error(self) -> BaseException | None:
        """What stopped the feeder, if anything did."""
        return self._worker.error

    def _run(self) -> None:
        while not self.stop.is_set():
            entries = self._batcher.next(self.stop)
            prepared = self._pipeline.prepare(entries, self._decoders) if entries else None
            self._ready.put(prepared)  # None: nothing arrived; the loop gets to check its bounds

    def get(self) -> Prepared | None:
        """The next prepared batch, or None when nothing arrived; raises what stopped the feeder."""
        item = self._ready.get()
        if (error := self.error) is not None:
            raise RuntimeError(f"reading and preparing frames failed: {error}") from error
        return item

    def close(self, timeout: float) -> list[Prepared]:
        """Stop reading; returns the batches already prepared, which the loop still finishes."""
        self.stop.set()
        left: list[Prepared] = []
        deadline = time.monotonic() + timeout
        while self._worker.alive and time.monotonic() < deadline:
            try:
                item = self._ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is not None:
                left.append(item)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if item is not None:
                left.append(item)
        self._decoders.shutdown(wait=False)
        return left
