"""Publishing frames: XADD onto each camera's frames stream, capped with MAXLEN ~."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import redis
from redis.exceptions import RedisError

from common.keys import Keys
from common.redis_io import TRANSIENT_ERRORS
from common.wire import FIELD, Frame, encode

log = logging.getLogger(__name__)


@dataclass
class StreamCounters:
    read: int = 0
    sampled: int = 0
    published: int = 0
    dropped: int = 0
    skipped: int = 0


@dataclass
class Publisher:
    """Shared by the camera threads of one ingest process. A frame that cannot be published is dropped and
    counted; readers are never held up for longer than the client's retries."""

    client: redis.Redis
    keys: Keys
    maxlen: int
    counters: dict[str, StreamCounters] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_warning: float = 0.0

    def counter(self, stream: str) -> StreamCounters:
        with self._lock:
            return self.counters.setdefault(stream, StreamCounters())

    def publish(self, frame: Frame) -> bool:
        counters = self.counter(frame.stream)
        try:
            self.client.xadd(
                self.keys.frames(frame.stream), {FIELD: encode(frame)}, maxlen=self.maxlen, approximate=True
            )
        except (RedisError, OSError) as exc:
            if not isinstance(exc, TRANSIENT_ERRORS) and not str(exc).startswith("OOM"):
                raise
            counters.dropped += 1
            now = time.monotonic()
            if now - self._last_warning > 5.0:
                self._last_warning = now
                log.warning("redis refuses frames (%s): dropping frames until it is back", exc)
            return False
        counters.published += 1
        return True
