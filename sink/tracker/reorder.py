"""Putting one camera's results back in ``seq`` order.

Several detector replicas answer one camera's frames, so its results arrive out of order. They are held until the
next ``seq`` is there; a missing one (stale, dead-lettered, shed: it may never come) is waited for while fewer than
``window_frames`` results follow it and for at most ``window_ms``, then skipped. A result older than what was
already let through is late: the caller acks it untracked (it is still in the results stream for everyone else),
and so is a second result for a seq already held (a counted re-delivery of the detector).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Reorder(Generic[T]):
    """Results of one camera in, in ``seq`` order out; ``T`` is whatever the caller keeps with each."""

    window_frames: int
    window_ms: int
    next_seq: int | None = None
    """The seq let through next; None before the first (the first result waits a window too: a lower seq may
    still be on its way, unless it is 0)."""
    _held: dict[int, tuple[T, float]] = field(default_factory=dict)
    """seq -> (item, when it arrived)."""

    def __len__(self) -> int:
        return len(self._held)

    def push(self, seq: int, item: T, now_ms: float) -> bool:
        """Hold a result; False when it is late or a duplicate (the caller acks it untracked)."""
        if (self.next_seq is not None and seq < self.next_seq) or seq in self._held:
            return False
        self._held[seq] = (item, now_ms)
        return True

    def ready(self, now_ms: float) -> list[tuple[int, T]]:
        """The results that may go now, in order, each with the number of seqs skipped just before it."""
        out: list[tuple[int, T]] = []
        while self._held:
            skipped = 0
            if self.next_seq not in self._held:
                first = min(self._held)
                # A gap is waited for from the arrival of the oldest result held behind it.
                waited = now_ms - min(t for _, t in self._held.values())
                if not (first == 0 and self.next_seq is None) and (
                    len(self._held) <= self.window_frames and waited < self.window_ms
                ):
                    break  # the gap may still fill
                skipped = 0 if self.next_seq is None else first - self.next_seq
                self.next_seq = first
            assert self.next_seq is not None
            item, _ = self._held.pop(self.next_seq)
            out.append((skipped, item))
            self.next_seq += 1
        return out
