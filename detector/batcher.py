"""Cross-stream batching: one read over every assigned stream, so a quiet stream never holds a batch back; and
graceful overload, so that a live camera's newest frame is the one inferred.

A batch closes at ``max_batch`` frames or ``max_wait_ms`` after its first frame. Frames read and not batched yet
wait in the *hand*. With ``shed_behind`` set (the pool's default), a live frame is kept only while at most that many
newer frames of its stream wait: the reader's server-side catch-up skips a stream's backlog past the bound
unread, and a frame in hand that newer ones supersede is shed; batches take the freshest live frames first, then
recordings (never shed) in order. Past capacity, reading everything that arrives would cost the host per frame
pushed: the live streams are then taken in turn, each one's newest frame only, the freshest first (a camera's next
frame is due when its pace says: ``detector.arrivals``). Without ``shed_behind``, frames are
batched in the order they were read. A feeder thread
builds and prepares the next batch (decode + letterbox on a thread pool) while the engine runs the current one.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common.keys import Keys
from common.redis_io import Entry, GroupReader
from common.workers import Worker
from detector.arrivals import Arrivals
from detector.pipeline import Gathered, Held, Pipeline, Prepared, gather, too_old

log = logging.getLogger(__name__)


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
    _live_keys: set[str] = field(default_factory=set)
    """Streams whose last frame read was live."""
    overloaded: bool = False
    """More arrives than the pool infers: live streams are taken in turn, their newest frames only (see _in_turn)."""
    _rotation: tuple[int, int] = (0, 0)
    """(visits to live streams since the count began, frames skipped meanwhile)"""
    _arrivals: Arrivals = field(init=False)

    def __post_init__(self) -> None:
        self._arrivals = Arrivals(retry_s=self.max_wait_ms / 1000)

    @property
    def held(self) -> int:
        """Frames in hand: read, not batched yet."""
        return len(self._live) + len(self._ordered)

    def next(self, stop: threading.Event) -> Gathered:
        """The next batch; empty when nothing arrived within the reader's block time (or on stop)."""
        out = Gathered()
        if self.overloaded:
            self._in_turn(out, stop)
        else:
            read = self._read(out, stop)
            if self.shed_behind is not None and read > 2 * self.max_batch and self._live_keys:
                # Reading everything that arrives costs the host per frame pushed, not per frame inferred: past
                # capacity, that cost grows with the load until it starves the batches themselves.
                self.overloaded, self._rotation = True, (0, 0)
                log.warning("more frames arrive than this replica infers (%d read for one batch of %d): taking the "
                            "live streams in turn, each one's newest frames, the rest skipped and counted as shed",
                            read, self.max_batch)  # fmt: skip
        self._pick(out)
        return out

    def _read(self, out: Gathered, stop: threading.Event) -> int:
        """Read across every stream until a batch is full or its deadline passes; returns the entries read."""
        deadline = time.monotonic() + self.max_wait_ms / 1000 if self.held else None
        read = 0
        fresh = False  # one read per batch at least, so that what waits in Redis competes with what is in hand
        while not stop.is_set():
            skip = self._full()
            if self.reader.keys and skip.issuperset(self.reader.keys):
                break  # a read's worth in hand of every stream: batch those first
            if self.held >= self.max_batch:
                if not fresh:
                    read += self._take(self.reader.read(block_ms=0, skip=skip), out)
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
            read += self._take(entries, out)
            fresh = True
        return read

    def _in_turn(self, out: Gathered, stop: threading.Event) -> None:
        """Overloaded: the live streams in turn, each one's newest frame read and the rest skipped on the server,
        until the hand holds a batch of live frames; so the host reads about what it infers. The turn goes to the
        streams whose newest frame is expected to be the freshest, just after it lands (``Arrivals``), so a served
        frame waits about a batch, not a rotation of the streams. Recordings (and streams not known yet) are read
        as usual, without blocking. As many visits as there are live streams without a frame skipped means the
        load fits again: back to reading everything as it comes."""
        # Every key skipped still runs the reader's rescans and claims (and reads nothing).
        self._take(self.reader.read(block_ms=0, skip=self._full() | self._live_keys), out)
        live = [k for k in self.reader.keys if k in self._live_keys]
        if not live:
            self.overloaded = False  # only recordings left: they are read as they come
            return
        visited: set[str] = set()
        live_keys = set(live)
        ranked: list[str] = []  # ranked once for this visit and the next (ranking every due stream is the cost)
        while len(self._live) < self.max_batch and len(visited) < len(live) and not stop.is_set():
            now = time.time()
            need = self.max_batch - len(self._live)
            if len(ranked) < need:
                ranked = self._arrivals.freshest(live_keys - visited, now, 2 * need)
            keys, ranked = ranked[:need], ranked[need:]
            if not keys:
                break
            visited.update(keys)
            before = sum(out.skipped.values())
            found = self._catch_up(keys, out, keep=1)  # the newest alone: the rest would be shed
            superseded = 0
            for key in keys:
                # The frame this visit came for is still on its way (late: the visit was early), or the one read is
                # about to be superseded (the visit came late): shed it and take the next, when it lands.
                held, old = found.get(key, []), 0
                for h in list(held):
                    late = self._arrivals.late(key, h.frame, now)
                    if late or self._arrivals.superseded_soon(key, h.frame, _landed_at(h), now):
                        self._seen(h)
                        out.shed.append(h.entry)
                        held.remove(h)
                        old += not late
                superseded += old
                if not held and not old:  # nothing new yet: come back shortly
                    self._arrivals.missed(key, now)
            self._hold_fresh(found, out, keep=1)  # and the older in hand of those streams are superseded
            visits, skipped = self._rotation  # a frame shed as about to be superseded lost to the load too
            self._rotation = (visits + len(keys), skipped + sum(out.skipped.values()) - before + superseded)
            if self._rotation[0] >= len(live):
                if self._rotation[1] == 0:
                    self.overloaded = False
                    log.info("the load fits again: reading every stream as frames come")
                    return
                self._rotation = (0, 0)
        if not self.held and not out.held:  # nothing due yet: wait for the first stream that is, not spinning
            due = self._arrivals.next_due(live, time.time())
            stop.wait(min(self.max_wait_ms / 1000, self.max_wait_ms / 1000 if due is None else due))

    def _full(self) -> set[str]:
        """Streams with a read's worth of frames in hand in order already: not read again until some are batched
        (a recording's pacing counts frames not read yet, so the hand must not take them all)."""
        return {k for k, n in self._ordered_per_stream.items() if n >= self.reader.count}

    def _queue(self, held: Held) -> None:
        self._ordered.append(held)
        self._ordered_per_stream[held.entry.key] += 1
        self._live_keys.discard(held.entry.key)

    def _take(self, entries: list[Entry], out: Gathered) -> int:
        """Decode what was read into the hand; settle the undecodable, the too old and the superseded in ``out``.
        Returns how many entries were read."""
        gathered = gather(entries, self.max_age_ms)
        out.failed += gathered.failed
        out.stale += gathered.stale
        if self.shed_behind is None:
            for held in gathered.held:
                self._queue(held)
            return len(entries)
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
        caught = self._catch_up([k for k in by_stream if read[k] >= self.reader.count or k in again], out)
        for key, newer in caught.items():  # the plain read's frames are older than every one the catch-up read
            out.shed += [h.entry for h in by_stream.pop(key, [])]
            by_stream[key] = newer
        self._hold_fresh(by_stream, out)
        return len(entries)

    def _catch_up(self, keys: list[str], out: Gathered, keep: int | None = None) -> dict[str, list[Held]]:
        """The newest ``keep`` (default ``shed_behind + 1``) frames of each stream, the older unread ones skipped on
        the server (and counted in ``out.skipped``); per stream that gave any frame, its live ones (a recording's go
        in order)."""
        keep = keep or (self.shed_behind or 0) + 1
        newest, skipped = self.reader.read_newest(
            {k: self.keys.stream_of(k) for k in keys}, keep, functools.partial(self.keys.shed, self.reader.group)
        )
        for key, n in skipped.items():
            out.skipped[key] = out.skipped.get(key, 0) + n
        caught = gather(newest, self.max_age_ms)
        out.failed += caught.failed
        out.stale += caught.stale
        found: dict[str, list[Held]] = {e.key: [] for e in newest}
        for held in caught.held:
            (found[held.entry.key].append(held) if held.frame.live else self._queue(held))
        return found

    def _hold_fresh(self, by_stream: dict[str, list[Held]], out: Gathered, keep: int | None = None) -> None:
        """Live frames read together, each stream's in order and its last the stream's newest when read (the read
        was not full, or it was a catch-up), into the hand in the order they reached Redis: its end holds the
        freshest."""
        ranked = [
            Held(h.entry, h.frame, h.read_at, len(hs) - 1 - i) for hs in by_stream.values() for i, h in enumerate(hs)
        ]
        for held in sorted(ranked, key=lambda h: _arrival(h.entry.id)):
            self._hold(held, out, keep or (self.shed_behind or 0) + 1)

    def _hold(self, held: Held, out: Gathered, keep: int) -> None:
        key = held.entry.key
        self._live_keys.add(key)
        self._seen(held)
        ids = self._by_stream.setdefault(key, deque())
        ids.append((key, held.entry.id))
        self._live[key, held.entry.id] = held
        while len(ids) > keep:  # superseded: more than keep - 1 newer ones wait
            out.shed.append(self._live.pop(ids.popleft()).entry)

    def _seen(self, held: Held) -> None:
        """Tell the arrivals a live frame was read: when it landed is its entry id's time."""
        self._arrivals.seen(held.entry.key, held.frame, _landed_at(held), held.read_at)

    def _pick(self, out: Gathered) -> None:
        """Up to max_batch frames from the hand: live ones freshest first (the older ones of a stream taken are shed),
        then recordings oldest first; live frames past max_age_ms are settled as stale instead."""
        now = time.time()
        by_arrival = sorted(self._live, key=lambda ref: _arrival(ref[1]))  # the order read is not always this
        while by_arrival and too_old(self._live[by_arrival[0]].frame, now, self.max_age_ms):
            out.stale.append(self._drop(by_arrival.pop(0)).entry)
        picked = by_arrival[::-1][: self.max_batch]
        for ref in picked:
            out.held.append(self._drop(ref))
        for key in {ref[0] for ref in picked}:  # what is left of these streams is older than a frame inferred now:
            for ref in list(self._by_stream.get(key, ())):  # superseded (it would only be answered out of order)
                out.shed.append(self._drop(ref).entry)
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


def _landed_at(held: Held) -> float:
    """When a frame landed in Redis: its entry id's time (the server's clock), in seconds."""
    return _arrival(held.entry.id)[0] / 1000


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
