"""Pacing a recording by its readers: a file or an image folder read unpaced goes as fast as the detectors take it.

A live camera is drained at its own rate and its frames are worth little once old, so it never waits: past what the
detectors can take, the pool's ``max_age_ms`` and the stream's cap bound the backlog. A recording has no rate of its
own: read flat out it would outrun any detector, and its frames past the stream's cap would be trimmed before anyone
read them. So its reader asks for room before each frame it pushes: at most ``ingest.max_lag`` frames that the
slowest detector pool has not been given yet, or, while no pool reads the stream, the stream's cap.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from common.redis_io import Refused, Unavailable, backlog
from ingest.publisher import Publisher

log = logging.getLogger(__name__)

POLL_S = 0.02
"""Wait between looks at a full backlog: a look is one XINFO GROUPS; a detector frees room a batch at a time."""
IDLE_POLL_S = 0.5
"""Wait between looks while no pool reads the stream, or Redis cannot be reached."""
NOTE_EVERY_S = 30.0


@dataclass
class Pacer:
    """Room in one stream's backlog for a recording's frames; :meth:`admit` blocks its reader until there is some."""

    publisher: Publisher
    stream: str
    max_lag: int
    cap: int
    stop: threading.Event
    _room: int = 0
    _noted: float = float("-inf")
    _full_since: float | None = None

    def admit(self) -> bool:
        """Wait for room for one more frame; False when a stop is asked meanwhile."""
        while self._room <= 0:
            self._room, delay = self._measure()
            if self._room <= 0 and self.stop.wait(delay):
                return False
        self._room -= 1
        return True

    def _measure(self) -> tuple[int, float]:
        """The room now, and how long to wait before looking again when there is none."""
        # Queued first: a frame published between the two looks is then counted twice, never missed (only this
        # thread hands the publisher frames of this stream).
        queued = self.publisher.queued(self.stream)
        try:
            found = backlog(self.publisher.client, self.publisher.keys.frames(self.stream), self.max_lag)
        except Unavailable as exc:
            self._note(f"waits: Redis is unreachable ({exc}); reading resumes when it answers")
            return 0, IDLE_POLL_S
        except Refused as exc:  # an ACL without XINFO?: better unpaced than stuck
            self._note(
                f"its backlog cannot be read ({exc}), so it goes unpaced; allow XINFO and XLEN", level=logging.ERROR
            )
            return self.max_lag, POLL_S
        ahead = found.unread + queued
        if not found.readers:
            room = self.cap - ahead
            if room <= 0:
                self._note(f"waits: no detector pool reads its frames stream yet, and it is at its cap ({self.cap})")
            return room, IDLE_POLL_S
        room = self.max_lag - ahead
        # Waiting on the detectors is a recording's normal pace; waiting long on one that reads nothing is not (a
        # group left behind by a pool that was removed or renamed).
        now = time.monotonic()
        if room > 0:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        elif now - self._full_since >= NOTE_EVERY_S:
            self._note(f"waits: group {found.slowest} has had {found.unread} of its frames to read for "
                       f"{now - self._full_since:.0f} s; if its pool is gone, XGROUP DESTROY it")  # fmt: skip
        return room, POLL_S

    def _note(self, why: str, level: int = logging.INFO) -> None:
        """Log why the recording waits (or goes unpaced), at most every NOTE_EVERY_S."""
        now = time.monotonic()
        if now - self._noted >= NOTE_EVERY_S:
            self._noted = now
            log.log(level, "camera %s (a recording): %s", self.stream, why)
