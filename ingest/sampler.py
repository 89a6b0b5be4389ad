"""Which frames to publish: every n-th, or a target rate on the frames' own timestamps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sampler:
    """``due(ts)`` is asked for every frame read, in order; ``ts`` is the frame's time in seconds.

    With ``fps`` the schedule advances by exact intervals (no drift: 25 fps sampled at 4 fps gives 4 a second on
    average, not 25/6). A frame up to a tenth of an interval early counts as on time, so a source whose rate equals
    the target keeps every frame despite jitter. After a stall longer than an interval the schedule restarts from
    the next frame instead of bursting.
    """

    every_n: int = 1
    fps: float | None = None
    _count: int = 0
    _next: float | None = None

    def due(self, ts: float) -> bool:
        self._count += 1
        if self.fps is None:
            return (self._count - 1) % self.every_n == 0
        interval = 1.0 / self.fps
        if self._next is None or ts - self._next >= interval:
            self._next = ts + interval
            return True
        if ts >= self._next - 0.1 * interval:
            self._next += interval
            return True
        return False
