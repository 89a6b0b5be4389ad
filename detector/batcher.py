"""Cross-stream batching: one read over every assigned stream, so a quiet stream never holds a batch back; and
graceful overload, so that a live camera's newest frame is the one inferred.

A batch closes at ``max_batch`` frames or ``max_wait_ms`` after its first frame. Frames read and not batched yet
wait in the *hand*. With ``shed_behind`` set (the pool's default), a live frame is kept only while at most that many
newer frames of its stream wait: the reader's server-side catch-up skips a stream's backlog past the bound
unread, and a frame in hand that newer ones supersede is shed; batches take the freshest live frames first, then
recordings (never shed) in order. Without it, frames are batched in the order they were read. A feeder thread
builds and prepares the next batch (decode + letterbox on a thread pool) while the engine runs the current one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common.keys import Keys
from common.redis_io import Entry, GroupReader
from common.workers import Worker
from detector.pipeline import Gathered, Held, Pipeline, Prepared, gather, too_old


@dataclass
class Batcher:
    reader: GroupReader
    keys: Keys
    max_batch: int
    max_wait_ms: int
    max_age_ms: int | None = None
    """Live frames older than this are settled as stale, not batched."""
    shed_behind: int | None = None
    """Live frames: at most this many newer ones of their stream may wait; None: no shedding, batches in read order."""
    _live: dict[tuple[str, str], Held] = field(default_factory=dict)
    """Live frames in hand, in the order read: the freshest last."""
    _by_stream: dict[str, deque[tuple[str, str]]] = field(default_factory=dict)
    _ordered: deque[Held] = field(default_factory=deque)
    """Recordings in hand (and, without shedding, every frame), oldest first."""
    _ordered_per_stream: Counter[str] = field(default_factory=Counter)

    @property
    def held(self) -> int:
        """Frames in hand: read, not batched yet."""
        return len(self._live) + len(self._ordered)

    def next(self, stop: threading.Event) -> Gathered:
        """The next batch; empty when nothing arrived within the reader's block time (or on stop)."""
        out = Gathered()
        deadline = time.monotonic() + self.max_wait_ms / 1000 if self.held else None
        fresh = False  # one read per batch at least, so that what waits in Redis competes with what is in hand
        while not stop.is_set():
            skip = self._full()
            if self.reader.keys and skip.issuperset(self.reader.keys):
                break  # a read's worth in hand of every stream: batch those first
            if self.held >= self.max_batch:
                if not fresh:
                    self._take(self.reader.read(block_ms=0, skip=skip), out)
                break
            if deadline is None:
                entries = self.reader.read(skip=skip)
                if not entries:
                    break
                deadline = time.monotonic() + self.max_wait_ms / 1000
            else:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                entries = self.reader.read(block_ms=left_ms, skip=skip)
            self._take(entries, out)
            fresh = True
        self._pick(out)
        return out

    def _full(self) -> set[str]:
        """Streams with a read's worth of frames in hand in order already: not read again until some are batched
        (a recording's pacing counts frames not read yet, so the hand must not take them all)."""
        return {k for k, n in self._ordered_per_stream.items() if n >= self.reader.count}

    def _queue(self, held: Held) -> None:
        self._ordered.append(held)
        self._ordered_per_stream[held.entry.key] += 1

    def _take(self, entries: list[Entry], out: Gathered) -> None:
        """Decode what was read into the hand; settle the undecodable, the too old and the superseded in ``out``."""
        gathered = gather(entries, self.max_age_ms)
        out.failed += gathered.failed
        out.stale += gathered.stale
        if self.shed_behind is None:
            for held in gathered.held:
                self._queue(held)
            return
        by_stream: dict[str, list[Held]] = {}
        for held in gathered.held:
            if held.frame.live:
                by_stream.setdefault(held.entry.key, []).append(held)
            else:
                self._queue(held)
        # A stream whose read came back full may have newer frames waiting, and so may one whose frames were read
        # before (a restart's own pending, a dead replica's claimed): catch up with it on the server.
        read = Counter(e.key for e in entries)
        again = {e.key for e in entries if e.deliveries > 1}
        behind = {k: self.keys.stream_of(k) for k in by_stream if read[k] >= self.reader.count or k in again}
        newest, skipped = self.reader.read_newest(behind, self.shed_behind + 1, self.keys.shed(self.reader.group))
        for key, n in skipped.items():
            out.skipped[key] = out.skipped.get(key, 0) + n
        caught = gather(newest, self.max_age_ms)
        out.failed += caught.failed
        out.stale += caught.stale
        for key in {e.key for e in newest}:  # the plain read's frames are older than every one the catch-up read
            out.shed += [h.entry for h in by_stream.pop(key, [])]
        for held in caught.held:
            by_stream.setdefault(held.entry.key, []).append(held)
        # The last of each stream is its newest when read (the read was not full, or it was the catch-up's); into
        # the hand in the order they reached Redis, so that the hand's end holds the freshest.
        ranked = [
            Held(h.entry, h.frame, h.read_at, len(hs) - 1 - i) for hs in by_stream.values() for i, h in enumerate(hs)
        ]
        for held in sorted(ranked, key=lambda h: _arrival(h.entry.id)):
            self._hold(held, out)

    def _hold(self, held: Held, out: Gathered) -> None:
        key = held.entry.key
        ids = self._by_stream.setdefault(key, deque())
        ids.append((key, held.entry.id))
        self._live[key, held.entry.id] = held
        while len(ids) > (self.shed_behind or 0) + 1:  # superseded: more than shed_behind newer ones wait
            out.shed.append(self._live.pop(ids.popleft()).entry)

    def _pick(self, out: Gathered) -> None:
        """Up to max_batch frames from the hand: live ones freshest first, then recordings oldest first; live frames
        past max_age_ms are settled as stale instead."""
        now = time.time()
        while self._live:  # the oldest first: stop at the first one young enough
            oldest = next(iter(self._live))
            if not too_old(self._live[oldest].frame, now, self.max_age_ms):
                break
            out.stale.append(self._drop(oldest).entry)
        for ref in list(reversed(self._live))[: self.max_batch]:
            out.held.append(self._drop(ref))
        while self._ordered and len(out.held) < self.max_batch:
            held = self._ordered.popleft()
            self._ordered_per_stream[held.entry.key] -= 1
            if too_old(held.frame, now, self.max_age_ms):
                out.stale.append(held.entry)
            else:
                out.held.append(held)

    def _drop(self, ref: tuple[str, str]) -> Held:
        held = self._live.pop(ref)
        ids = self._by_stream[ref[0]]
        ids.remove(ref)
        if not ids:
            del self._by_stream[ref[0]]
        return held


def _arrival(entry_id: str) -> tuple[int, int]:
    """An entry id's order across streams: the server's clock in ms, then its sequence."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


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
            gathered = self._batcher.next(self.stop)
            settles = gathered.held or gathered.failed or gathered.stale or gathered.shed or gathered.skipped
            self._ready.put(self._pipeline.prepare(gathered, self._decoders) if settles else None)

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
