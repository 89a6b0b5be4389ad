"""Publishing frames: one thread per ingest process, pipelined XADDs, each frames stream capped with MAXLEN ~.

Camera threads hand frames over with :meth:`Publisher.submit`, which never blocks: when Redis is slow, down or out
of memory, the queue fills and its oldest frames are dropped and counted (the newest frames are the useful ones),
and publishing resumes by itself once Redis answers again. A recording's frames (``live`` false) are the exception:
its pacer bounds how many it queues, and those that could not reach Redis are sent again, not dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from common.backoff import Backoff
from common.keys import Keys
from common.redis_io import Client, RedisIOError, Unavailable, add_entries, newest_payloads
from common.wire import Frame, WireError, decode, encode
from common.workers import Worker

log = logging.getLogger(__name__)


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
    client: Client
    keys: Keys
    queue_size: int = 256
    pipeline: int = 32
    replicas: int = 0
    """Replicas that must hold each batch before it counts as published (redis.wait_replicas)."""
    replicas_timeout_ms: int = 500
    counters: dict[str, StreamCounters] = field(default_factory=dict)
    _queue: deque[tuple[Frame, int]] = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closing: bool = False
    _in_flight: list[tuple[Frame, int]] = field(default_factory=list)
    """The batch being sent (and an unsure one): off the queue, not yet counted."""
    _unsure: list[tuple[Frame, int]] = field(default_factory=list)
    """A batch whose send failed after it may have reached Redis (a timeout, a connection lost before the reply):
    whether its frames were published is read back from the streams before anything else is sent."""
    _abandoned: bool = False
    _worker: Worker | None = None
    _last_warning: float = 0.0

    def counter(self, stream: str) -> StreamCounters:
        with self._cond:
            return self.counters.setdefault(stream, StreamCounters())

    def start(self) -> Publisher:
        self._worker = Worker("publisher", self._run)
        self._worker.start()
        return self

    def submit(self, frame: Frame, maxlen: int) -> None:
        """Queue a frame for publishing; never blocks."""
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._drop_oldest_live()
            self._queue.append((frame, maxlen))
            self._cond.notify()

    def _drop_oldest_live(self) -> None:
        """Make room by dropping the oldest live frame (the newest are the useful ones). A recording's frames are
        never dropped for room: its pacer bounds how many are queued, and each is wanted."""
        for i, (old, _) in enumerate(self._queue):
            if old.live:
                del self._queue[i]
                self.counters[old.stream].dropped += 1
                return

    def check(self) -> None:
        """Raise :class:`common.workers.WorkerError` if the publishing thread died (a bug): the process must stop
        rather than go on queueing frames nobody sends."""
        if self._worker is not None:
            self._worker.check()

    def queued(self, stream: str) -> int:
        """Frames of a stream handed over and not yet counted as published or dropped."""
        with self._cond:
            return sum(frame.stream == stream for frame, _ in (*self._queue, *self._in_flight))

    def close(self, timeout: float) -> None:
        """Publish what is queued (within ``timeout``), then stop; what is left is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        try:
            if self._worker is not None:
                self._worker.join(timeout)  # raises if the thread died: its error reaches the ingest process
        finally:
            self._abandon()

    def _abandon(self) -> None:
        with self._cond:
            # A send still under way past the deadline is given up: its frames count as dropped, once.
            self._abandoned = True
            for frame, _ in [*self._queue, *self._in_flight]:
                self.counters[frame.stream].dropped += 1
            self._queue.clear()
            self._in_flight = []

    def _run(self) -> None:
        backoff = Backoff(0.1, 2.0, jitter=0.0)
        while True:
            with self._cond:
                while not self._queue and not self._unsure and not self._closing:
                    self._cond.wait()
                if not self._queue and (self._closing or not self._unsure):
                    break
                # With nothing queued but an unsure batch, the send only finds out what became of it.
                batch = [self._queue.popleft() for _ in range(min(self.pipeline, len(self._queue)))]
                self._in_flight = [*self._in_flight, *batch]
            if self._send(batch):
                backoff.reset()
            else:
                delay = backoff.next_delay()
                with self._cond:
                    if not self._closing:  # closing: no back-off, so close() gets through what is queued
                        self._cond.wait(delay)
        if self._unsure:
            try:
                self._resolve()
            except Unavailable as exc:  # unknown for good: counted as dropped
                self._settle(self._unsure, [exc] * len(self._unsure), f"redis unreachable: {exc}")

    def _send(self, batch: list[tuple[Frame, int]]) -> bool:
        """XADD a batch in one round trip; False when Redis could not be reached or refused frames (dropped)."""
        if self._unsure:
            try:
                self._resolve()
            except Unavailable as exc:  # this batch was not sent: dropped
                self._settle(batch, [exc] * len(batch), f"redis unreachable: {exc}")
                return False
        if not batch:
            return True
        entries = [(self.keys.frames(frame.stream), encode(frame), maxlen) for frame, maxlen in batch]
        try:
            replies: list[object] = list(
                add_entries(self.client, entries, replicas=self.replicas, timeout_ms=self.replicas_timeout_ms)
            )
        except Unavailable as exc:
            # Redis may have taken the frames and the reply been lost: found out before the next send.
            self._unsure = batch
            self._warn(f"redis unreachable: {exc}")
            return False
        refused = next((r for r in replies if isinstance(r, RedisIOError)), None)
        why = f"redis refused frames ({type(refused).__name__}: {refused})" if refused is not None else ""
        self._settle(batch, replies, why)
        return refused is None

    def _resolve(self) -> None:
        """Count the unsure batch: its frames that their streams hold as published, the others as dropped.

        This publisher is its streams' only writer and has sent nothing since, so a frame of that batch that
        landed is among the newest entries of its stream (found by stream, seq and capture time)."""
        batch = self._unsure
        streams = Counter(self.keys.frames(frame.stream) for frame, _ in batch)
        held: set[tuple[str, int, float]] = set()
        # A stream refused (of another type?) is left out: its frames count as dropped.
        for payloads in newest_payloads(self.client, streams).values():
            for data in payloads:
                try:
                    frame = decode(data, Frame)
                except WireError:
                    continue
                held.add((frame.stream, frame.seq, frame.capture_ts))
        self._unsure = []
        lost = Unavailable("lost with the connection")
        self._settle(batch, [b"" if (f.stream, f.seq, f.capture_ts) in held else lost for f, _ in batch], "")

    def _settle(self, batch: list[tuple[Frame, int]], replies: list[object], why: str) -> None:
        """Count each frame of the sent batch as published or dropped, in one step with taking it off in-flight.
        A recording's frames that did not reach Redis go back to the head of the queue instead (unless closing)."""
        with self._cond:
            if self._abandoned:
                return  # close() counted this batch already
            settled = {id(item) for item in batch}
            self._in_flight = [item for item in self._in_flight if id(item) not in settled]
            again: list[tuple[Frame, int]] = []
            for item, reply in zip(batch, replies, strict=True):
                frame = item[0]
                if isinstance(reply, Unavailable) and not frame.live and not self._closing:
                    again.append(item)
                    continue
                failed = isinstance(reply, Exception)
                self.counters[frame.stream].dropped += failed
                self.counters[frame.stream].published += not failed
            self._queue.extendleft(reversed(again))
        self._warn(why)

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if why and now - self._last_warning > 5.0:
            self._last_warning = now
            log.warning("%s: dropping frames until it accepts them again", why)
