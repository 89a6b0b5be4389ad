"""Publishing frames: one thread per ingest process, pipelined XADDs, each frames stream capped with MAXLEN ~.

Camera threads hand frames over with :meth:`Publisher.submit`, which never blocks: when Redis is slow, down or out
of memory, the queue fills and its oldest frames are dropped and counted (the newest frames are the useful ones),
and publishing resumes by itself once Redis answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import redis
from redis.exceptions import RedisError

from common.keys import Keys
from common.redis_io import TRANSIENT_ERRORS
from common.wire import FIELD, Frame, encode

log = logging.getLogger(__name__)

UNREACHABLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, OSError)


@dataclass
class StreamCounters:
    """Per-stream counters; every frame read ends up sampled or not, and every sampled one in exactly one of
    published, dropped (Redis refused it or the queue overflowed) or skipped (could not be decoded or encoded)."""

    read: int = 0
    sampled: int = 0
    published: int = 0
    dropped: int = 0
    skipped: int = 0
    reconnects: int = 0
    last_error: str = ""

    def line(self) -> str:
        text = (
            f"read {self.read}, sampled {self.sampled}, published {self.published}, dropped {self.dropped}, "
            f"skipped {self.skipped}, reconnects {self.reconnects}"
        )
        return f"{text}; last error: {self.last_error}" if self.last_error else text


@dataclass
class Publisher:
    client: redis.Redis
    keys: Keys
    queue_size: int = 256
    pipeline: int = 32
    counters: dict[str, StreamCounters] = field(default_factory=dict)
    _queue: deque[tuple[Frame, int]] = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closing: bool = False
    _in_flight: list[tuple[Frame, int]] = field(default_factory=list)
    """The batch being sent: off the queue, not yet counted."""
    _abandoned: bool = False
    _thread: threading.Thread | None = None
    _last_warning: float = 0.0

    def counter(self, stream: str) -> StreamCounters:
        with self._cond:
            return self.counters.setdefault(stream, StreamCounters())

    def start(self) -> Publisher:
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()
        return self

    def submit(self, frame: Frame, maxlen: int) -> None:
        """Queue a frame for publishing; never blocks."""
        with self._cond:
            if len(self._queue) >= self.queue_size:
                oldest, _ = self._queue.popleft()
                self.counters[oldest.stream].dropped += 1
            self._queue.append((frame, maxlen))
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Publish what is queued (within ``timeout``), then stop; what is left is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            # A send still under way past the deadline is given up: its frames count as dropped, once.
            self._abandoned = True
            for frame, _ in [*self._queue, *self._in_flight]:
                self.counters[frame.stream].dropped += 1
            self._queue.clear()
            self._in_flight = []

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.pipeline, len(self._queue)))]
                self._in_flight = batch
            if self._send(batch):
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.1), 2.0)
                with self._cond:
                    if not self._closing:  # closing: no back-off, so close() gets through what is queued
                        self._cond.wait(backoff)

    def _send(self, batch: list[tuple[Frame, int]]) -> bool:
        """XADD a batch in one round trip; False when Redis could not be reached or refused frames (dropped)."""
        pipe = self.client.pipeline(transaction=False)
        for frame, maxlen in batch:
            pipe.xadd(self.keys.frames(frame.stream), {FIELD: encode(frame)}, maxlen=maxlen, approximate=True)
        try:
            replies: list[object] = pipe.execute(raise_on_error=False)
        except UNREACHABLE as exc:
            self._settle(batch, [exc] * len(batch), f"redis unreachable: {exc}")
            return False
        refused = next((r for r in replies if isinstance(r, RedisError)), None)
        why = f"redis refused frames ({type(refused).__name__}: {refused})" if refused is not None else ""
        self._settle(batch, replies, why)
        return refused is None

    def _settle(self, batch: list[tuple[Frame, int]], replies: list[object], why: str) -> None:
        """Count each frame of the sent batch as published or dropped, in one step with taking it off in-flight."""
        with self._cond:
            if self._abandoned:
                return  # close() counted this batch already
            self._in_flight = []
            for (frame, _), reply in zip(batch, replies, strict=True):
                failed = isinstance(reply, Exception)
                self.counters[frame.stream].dropped += failed
                self.counters[frame.stream].published += not failed
        now = time.monotonic()
        if why and now - self._last_warning > 5.0:
            self._last_warning = now
            log.warning("%s: dropping frames until it accepts them again", why)
