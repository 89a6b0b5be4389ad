"""A detector replica's beacon: every few seconds it writes what it is (device, engine, GPU memory, counts) to a
hash in Redis, so that ``python -m common.stack.status`` can show the replicas without reaching into each process."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from common import metrics
from common.redis_io import Client, RedisIOError, delete_field, set_field
from common.workers import Worker, WorkerError
from detector.watchdog import Watchdog

log = logging.getLogger(__name__)

EVERY_S = 5.0


def replica_info(pool: str, engine: Watchdog, counts: dict[str, int]) -> dict[str, Any]:
    """What a replica announces; also keeps the GPU-memory gauge current."""
    held = engine.memory_bytes()
    if held is not None:
        metrics.GPU_MEMORY.labels(pool, engine.device).set(held)
    return {"device": engine.device, "engine": engine.name, "gpu_memory_mb": None if held is None else held >> 20,
            "engine_restarts": engine.restarts, **counts}  # fmt: skip


class Beacon:
    """Writes ``info()`` (plus the time) under ``member`` of the hash ``key`` every ``EVERY_S`` seconds, on a daemon
    thread; a Redis outage only skips beats."""

    def __init__(self, client: Client, key: str, member: str, info: Callable[[], dict[str, Any]]) -> None:
        self.client, self.key, self.member, self.info = client, key, member, info
        self._worker = Worker("beacon", self._run)

    def start(self) -> Beacon:
        self._worker.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                set_field(self.client, self.key, self.member, json.dumps({**self.info(), "ts": time.time()}))
            except RedisIOError as exc:
                log.debug("beacon skipped: %s", exc)
            if self._worker.stopping.wait(EVERY_S):
                return

    def close(self) -> None:
        """Stop, and take this replica off the hash (a clean stop is not a dead replica)."""
        self._worker.stop()
        with contextlib.suppress(WorkerError):  # logged when it failed; what matters now is leaving the hash
            self._worker.join(5.0)
        try:
            delete_field(self.client, self.key, self.member)
        except RedisIOError as exc:
            log.debug("beacon not removed: %s", exc)
