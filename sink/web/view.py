"""What the web view's follower saw, per stream, for the pages to read: each stream's latest result, its recent
detections, and its fps and end-to-end latency over a window."""

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
from common.wire import Result

log = logging.getLogger(__name__)

_WINDOW_CAP = 100_000
"""Most results kept per stream for its rates, whatever the window: memory stays bounded at any frame rate."""


@dataclass
class _Stream:
    latest: Result | None = None
    window: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=_WINDOW_CAP))
    """(arrival on this process's clock, capture time, end-to-end ms) of the results seen lately."""
    detections: deque[dict[str, Any]] = field(default_factory=deque)
    results: int = 0


class View:
    """What the follower saw, per stream, for the pages to read (thread-safe)."""

    def __init__(self, window_s: float, history: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.history = history
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._arrived = 0

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
            s = self._streams.setdefault(result.stream, _Stream(detections=deque(maxlen=self.history)))
            if s.latest is None or result.capture_ts >= s.latest.capture_ts:  # replicas may publish out of order
                s.latest = result
            s.detections.extendleft(rows)  # newest first
            if live:
                s.window.append((now, result.capture_ts, result.timings.end_to_end_ms))
                s.results += 1
                self._arrived += 1

    def take_arrivals(self) -> int:
        """Live results added since the last call (the bounded modes count them)."""
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
                out.append({
                    "name": name,
                    "fps": _rate(captures),
                    "latency_p50_ms": _percentile(latencies, 0.50),
                    "latency_p99_ms": _percentile(latencies, 0.99),
                    "results": s.results,
                    "frame_id": latest.frame_id if latest else None,
                    "seq": latest.seq if latest else None,
                    "capture_ts": latest.capture_ts if latest else None,
                    "detections": len(latest.detections) if latest else 0,
                })  # fmt: skip
        return out


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
