"""What the web view's followers saw, per stream, for the pages to read: each stream's latest result, its recent
detections, and its fps and end-to-end latency over a window; with a tracker, its latest tracks, each track's recent
centres (its trail), and the tracker's recent events."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.keys import valid_stream_name
from common.wire import Event, Result, Tracks

log = logging.getLogger(__name__)

_WINDOW_CAP = 100_000
"""Most results kept per stream for its rates, whatever the window: memory stays bounded at any frame rate."""
_TRAIL_FORGET_S = 30.0
"""A track absent from a camera's tracks this long (capture time) loses its trail: the tracker ended it long ago."""
_TRAILS_CAP = 1000
"""Most trails kept per camera, whatever happens: the least recently seen go first."""


@dataclass
class _Trail:
    points: deque[tuple[float, float]]
    """Centres of the track's box, oldest first, in original-frame pixels."""
    seen_ts: float


@dataclass
class _Stream:
    latest: Result | None = None
    window: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=_WINDOW_CAP))
    """(arrival on this process's clock, capture time, end-to-end ms) of the results seen lately."""
    detections: deque[dict[str, Any]] = field(default_factory=deque)
    results: int = 0
    tracks: Tracks | None = None
    trails: dict[int, _Trail] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=deque)
    """Newest last; at most the view's ``events``."""


class View:
    """What the followers saw, per stream, for the pages to read (thread-safe).

    ``tracker`` names the tracker sink whose tracks and events are added (None: results only); ``trail`` is how many
    recent centres of each track are kept, ``events`` how many recent events per camera."""

    def __init__(
        self,
        window_s: float,
        history: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        tracker: str | None = None,
        trail: int = 20,
        events: int = 100,
    ) -> None:
        self.window_s = window_s
        self.history = history
        self.tracker = tracker
        self.trail = trail
        self.events_kept = events
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._events: dict[tuple[str, str], Event] = {}
        """(stream, event id) -> event, for every event kept: the snapshot and clip routes look them up here."""
        self._arrived = 0

    def _stream(self, name: str) -> _Stream:
        """The stream's record, made when first seen (the lock held)."""
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = _Stream(detections=deque(maxlen=self.history))
        return s

    def add(self, result: Result, live: bool = True) -> None:
        """Record a result; one read back at start (``live`` False) shows its frame but counts in no rate."""
        if not valid_stream_name(result.stream):  # its name would never be a URL of the page, nor a key of ours
            log.warning("skipping a result of stream %r: not a valid stream name", result.stream[:64])
            return
        now = self._clock()
        rows = [
            {"frame_id": result.frame_id, "seq": result.seq, "capture_ts": result.capture_ts, "label": d.label,
             "score": d.score, "box": list(d.box)}
            for d in result.detections
        ]  # fmt: skip
        with self._lock:
            s = self._stream(result.stream)
            if s.latest is None or result.capture_ts >= s.latest.capture_ts:  # replicas may publish out of order
                s.latest = result
            s.detections.extendleft(rows)  # newest first
            if live:
                s.window.append((now, result.capture_ts, result.timings.end_to_end_ms))
                s.results += 1
                self._arrived += 1

    def add_tracks(self, tracks: Tracks) -> None:
        """Record a camera's tracks: the latest shown (replicas of the tracker publish in order per camera, but a
        new owner may publish one again), and each track's centre added to its trail."""
        if not _valid(tracks.stream, "tracks"):
            return
        with self._lock:
            s = self._stream(tracks.stream)
            shown = s.tracks
            if shown is not None and (tracks.capture_ts < shown.capture_ts or tracks.frame_id == shown.frame_id):
                return  # older, or the same one published again: its centres are in the trails already
            s.tracks = tracks
            for track_id in [t for t, trail in s.trails.items() if trail.seen_ts < tracks.capture_ts - _TRAIL_FORGET_S]:
                del s.trails[track_id]
            for obj in tracks.objects:
                x1, y1, x2, y2 = obj.box
                trail = s.trails.pop(obj.track_id, None) or _Trail(deque(maxlen=max(1, self.trail)), 0.0)
                trail.points.append(((x1 + x2) / 2, (y1 + y2) / 2))
                trail.seen_ts = tracks.capture_ts
                s.trails[obj.track_id] = trail  # re-inserted: the dict stays ordered by when each was last seen
            while len(s.trails) > _TRAILS_CAP:
                del s.trails[next(iter(s.trails))]

    def add_event(self, event: Event) -> None:
        """Record a tracker's event; one already kept (the same id, published again) is not added twice."""
        if not _valid(event.stream, "event"):
            return
        with self._lock:
            key = (event.stream, event.event_id)
            if key in self._events:
                return
            s = self._stream(event.stream)
            s.events.append(event)
            self._events[key] = event
            while len(s.events) > self.events_kept:
                gone = s.events.popleft()
                self._events.pop((gone.stream, gone.event_id), None)

    def take_arrivals(self) -> int:
        """Live results added since the last call (the bounded modes count them; tracks and events are not counted:
        each answers a result)."""
        with self._lock:
            n, self._arrived = self._arrived, 0
        return n

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def latest(self, name: str) -> Result | None:
        """The newest result of a stream; KeyError for a stream not seen."""
        with self._lock:
            return self._streams[name].latest

    def detections(self, name: str) -> list[dict[str, Any]]:
        """Recent detections of a stream, newest first; KeyError for a stream not seen."""
        with self._lock:
            return list(self._streams[name].detections)

    def tracked(self, name: str) -> tuple[Tracks | None, dict[int, list[tuple[float, float]]]]:
        """A camera's latest tracks, and the trail (centres, oldest first) of each of its objects; KeyError for a
        stream not seen."""
        with self._lock:
            s = self._streams[name]
            if s.tracks is None:
                return None, {}
            trails = {o.track_id: list(s.trails[o.track_id].points) for o in s.tracks.objects if o.track_id in s.trails}
            return s.tracks, trails

    def event(self, name: str, event_id: str) -> Event:
        """One kept event of a camera; KeyError when it is not (or no longer) among them."""
        with self._lock:
            return self._events[(name, event_id)]

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events of every camera, newest first (by capture time)."""
        with self._lock:
            kept = [e for s in self._streams.values() for e in s.events]
        kept.sort(key=lambda e: (e.capture_ts, e.seq), reverse=True)
        return [_event_row(e) for e in kept[:limit]]

    def summary(self) -> list[dict[str, Any]]:
        """Every stream with its rate and latency over the window, and its latest result's frame."""
        now = self._clock()
        out = []
        with self._lock:
            for name in sorted(self._streams):
                s = self._streams[name]
                while s.window and s.window[0][0] < now - self.window_s:
                    s.window.popleft()
                captures = [c for _, c, _ in s.window]
                latencies = sorted(e for _, _, e in s.window)
                latest = s.latest
                row: dict[str, Any] = {
                    "name": name,
                    "fps": _rate(captures),
                    "latency_p50_ms": _percentile(latencies, 0.50),
                    "latency_p99_ms": _percentile(latencies, 0.99),
                    "results": s.results,
                    "frame_id": latest.frame_id if latest else None,
                    "seq": latest.seq if latest else None,
                    "capture_ts": latest.capture_ts if latest else None,
                    "detections": len(latest.detections) if latest else 0,
                }  # fmt: skip
                if self.tracker is not None:
                    row["tracks"] = _tracks_row(s.tracks)
                out.append(row)
        return out


def _valid(stream: str, what: str) -> bool:
    if valid_stream_name(stream):
        return True
    log.warning("skipping %s of stream %r: not a valid stream name", what, stream[:64])
    return False


def _tracks_row(tracks: Tracks | None) -> dict[str, Any] | None:
    if tracks is None:
        return None
    return {
        "frame_id": tracks.frame_id, "seq": tracks.seq, "capture_ts": tracks.capture_ts,
        "objects": [{"track_id": o.track_id, "label": o.label, "score": o.score} for o in tracks.objects],
        "untracked": tracks.untracked,
    }  # fmt: skip


def _event_row(e: Event) -> dict[str, Any]:
    return {
        "event_id": e.event_id, "stream": e.stream, "event": e.event, "change": e.change, "zone": e.zone,
        "line": e.line, "direction": e.direction, "track_id": e.track_id, "label": e.label, "score": e.score,
        "seq": e.seq, "capture_ts": e.capture_ts, "first_seen_ts": e.first_seen_ts, "last_seen_ts": e.last_seen_ts,
        "duration_s": e.duration_s, "zones": list(e.zones),
        "best": {"frame_id": e.best.frame_id, "capture_ts": e.best.capture_ts, "score": e.best.score},
    }  # fmt: skip


def _rate(captures: list[float]) -> float:
    """Frames per second of the stream's own clock (capture times): neither the detector's batching nor clock
    differences between hosts bend it. 0 with fewer than two results in the window."""
    if len(captures) < 2 or max(captures) <= min(captures):
        return 0.0
    return (len(captures) - 1) / (max(captures) - min(captures))


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
