"""When each live camera's next frame lands, learnt from the frames read of it: past capacity the batcher visits
the streams whose newest frame is the freshest, just after it lands, instead of going round the streams in a fixed
order, where a frame would wait for its stream's turn (up to a frame interval: the served p99 of a rotation).

A camera's frames come every ``interval`` seconds (from two frames read: their capture times over their sequence
numbers) and land in Redis ``lag`` seconds after capture (the entry id's time less the capture time: quick to
rise, slow to fall, and raised when a visit comes too early). Capture times, the server's clock and the
detector's are taken to agree, as a frame's age (``max_age_ms``) takes them already; a skew shows as visits a
little late (or early, and visited again).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from common.wire import Frame

PATIENCE = 3
"""Frame intervals a stream may go without a frame taken before its next fresh frame (landed within half an
interval) comes first: past capacity the freshest frames win, but a stream whose frames keep losing (its phase
against the batches, or a burst always landing first) is then taken, those waiting longest first."""
MIN_INTERVAL_S = 0.02
"""Frames closer than this (a burst, a backlog pushed at once; or a camera sampled faster than 50 frames/s) tell no
pace to go by: such a stream is visited as one whose pace is not known."""
MAX_BACKOFF_S = 5.0
"""Longest wait between visits to a stream whose frames stopped coming (a camera gone)."""


@dataclass
class _Camera:
    capture_ts: float
    """The newest frame read: its capture time."""
    seq: int
    taken_at: float
    """When it was read."""
    lag: float
    """Seconds from capture to landing in Redis."""
    interval: float | None = None
    misses: int = 0
    """Visits in a row that found nothing new."""
    visited_at: float = 0.0
    plan: int = 0
    """Which of its entries in the schedule counts (the last pushed)."""


class Arrivals:
    """Per live stream key: when its next frame is due, and how fresh its newest frame is expected to be."""

    def __init__(self, retry_s: float) -> None:
        self._cameras: dict[str, _Camera] = {}
        self._retry_s = retry_s
        """Between visits to a stream whose pace is not known, while they find nothing (doubling each time)."""
        # A batch ranks only the streams that came due since they were last visited, not every stream: the
        # schedule holds (due time, plan, key), a camera's earlier entries left behind when it is planned again.
        self._schedule: list[tuple[float, int, str]] = []
        self._due: set[str] = set()

    def _planned(self, key: str, cam: _Camera) -> None:
        """``cam`` changed: it is due when its new due time comes."""
        cam.plan += 1
        self._due.discard(key)
        heapq.heappush(self._schedule, (self._due_at(cam), cam.plan, key))
        if len(self._schedule) > 4 * len(self._cameras) + 64:  # drop the entries left behind
            self._schedule = [(self._due_at(c), c.plan, k) for k, c in self._cameras.items() if k not in self._due]
            heapq.heapify(self._schedule)

    def seen(self, key: str, frame: Frame, landed_at: float, read_at: float) -> None:
        """A frame of ``key`` that landed in Redis at ``landed_at`` (its entry id) was read at ``read_at``."""
        lag = max(0.0, landed_at - frame.capture_ts)
        cam = self._cameras.get(key)
        if cam is None or frame.seq < cam.seq:  # new, or its ingest restarted (sequence numbers start again)
            cam = self._cameras[key] = _Camera(frame.capture_ts, frame.seq, read_at, lag)
        else:
            if frame.seq > cam.seq:
                interval = (frame.capture_ts - cam.capture_ts) / (frame.seq - cam.seq)
                cam.interval = interval if interval >= MIN_INTERVAL_S else None
                cam.capture_ts, cam.seq, cam.taken_at = frame.capture_ts, frame.seq, read_at
                cam.misses = 0
            cam.lag = lag if lag > cam.lag else cam.lag - (cam.lag - lag) / 4  # a visit too early costs a retry
        self._planned(key, cam)

    def missed(self, key: str, now: float) -> None:
        """A visit to ``key`` found nothing new: its frame comes later than thought (or no longer)."""
        cam = self._cameras.get(key)
        if cam is not None:
            cam.misses += 1
            cam.visited_at = now
            if cam.interval is not None:
                cam.lag = min(cam.lag + cam.interval / 8, cam.interval)
            self._planned(key, cam)

    def late(self, key: str, frame: Frame, now: float) -> bool:
        """Whether ``frame``, read on a visit at ``now``, is older than the one that visit came for (by more than half
        an interval, and itself older than an interval): the one expected has not landed yet, the visit came too
        early."""
        cam = self._cameras.get(key)
        if cam is None or cam.interval is None or frame.seq <= cam.seq:
            return False
        frames = self._landed(cam, now, cam.interval)  # and a burst, whose frames came at once, is not late
        return (
            frame.seq < cam.seq + frames
            and frame.capture_ts < cam.capture_ts + (frames - 0.5) * cam.interval
            and now - frame.capture_ts > cam.interval  # older than a frame interval: a newer one is on its way
        )

    def superseded_soon(self, key: str, frame: Frame, landed_at: float, now: float) -> bool:
        """Whether the next frame of ``key`` lands within a quarter of an interval of ``now``: ``frame`` (which landed
        in Redis at ``landed_at``), read on a visit that came late in its life (it lost to fresher ones until then,
        or the one the visit came for is a little behind its pace), would be served nearly an interval old just as
        a fresh one lands."""
        cam = self._cameras.get(key)
        if cam is None or cam.interval is None or frame.seq <= cam.seq:
            return False
        return now - landed_at > 0.75 * cam.interval

    def forget(self, key: str) -> None:
        self._cameras.pop(key, None)
        self._due.discard(key)

    def freshest(self, keys: Collection[str], now: float, n: int) -> list[str]:
        """Up to ``n`` of ``keys`` due now: streams not seen yet, then those waiting past their patience (longest
        first), then those whose newest unread frame is expected to be the freshest."""
        while self._schedule and self._schedule[0][0] <= now:
            _, plan, key = heapq.heappop(self._schedule)
            cam = self._cameras.get(key)
            if cam is not None and cam.plan == plan:
                self._due.add(key)
        ranked: list[tuple[tuple[int, float], str]] = [((2, 0.0), k) for k in keys if k not in self._cameras]
        for key in self._due:
            if key in keys and (rank := self._rank(key, now)) is not None:
                ranked.append((rank, key))
        return [key for _, key in heapq.nlargest(n, ranked)]

    def next_due(self, keys: Iterable[str], now: float) -> float | None:
        """Seconds until the first of ``keys`` is due (0 if one is), None if none is known."""
        soonest = None
        for key in keys:
            cam = self._cameras.get(key)
            if cam is None:
                return 0.0
            due = self._due_at(cam)
            soonest = due if soonest is None else min(soonest, due)
        return None if soonest is None else max(0.0, soonest - now)

    def _due_at(self, cam: _Camera) -> float:
        if cam.misses:
            step = (cam.interval or self._retry_s) / 8 * 2.0 ** min(cam.misses - 1, 16)  # past the cap, no overflow
            return cam.visited_at + min(step, MAX_BACKOFF_S)
        if cam.interval is None:
            return cam.taken_at  # no pace known: due at once, like a stream not seen yet
        return cam.capture_ts + cam.interval + cam.lag

    def _rank(self, key: str, now: float) -> tuple[int, float] | None:
        """(2, 0) for a stream not seen yet; (1, how long since its last frame was taken) for one whose pace is not
        known, or past its patience with a fresh frame; else (0, the expected capture time of its newest unread
        frame); None when none is due. Past capacity every due stream is ranked for every batch: written out, not
        through ``_due_at`` and ``_landed`` (the same sums), which made it about twice as slow."""
        cam = self._cameras.get(key)
        if cam is None:
            return 2, 0.0
        interval, capture_ts, lag = cam.interval, cam.capture_ts, cam.lag
        if cam.misses or interval is None:
            if now < self._due_at(cam):
                return None
            if interval is None:  # no pace to go by: in turn, the longest waiting first
                return 1, now - cam.taken_at
        elif now < capture_ts + interval + lag:
            return None
        landed = (now - lag - capture_ts) // interval
        newest = capture_ts + (landed if landed > 1 else 1) * interval
        waited = now - cam.taken_at
        if waited > PATIENCE * interval and now - lag - newest <= interval / 2:
            return 1, waited
        return 0, newest

    @staticmethod
    def _landed(cam: _Camera, now: float, interval: float) -> int:
        """How many frames are expected to have landed since the newest read, by ``now`` (at least one)."""
        return max(1, math.floor((now - cam.lag - cam.capture_ts) / interval))
