"""Reading many streams on a Redis Cluster: one read per slot, and at most one blocking read per slot at a time.

A cluster refuses a command whose keys lie in several slots (CROSSSLOT), even on one node: XREADGROUP and XREAD over
every camera of a stack become one command per shard (the cameras of a shard share its hash tag, see
``common.keys``). Blocking them one after another would make a frame on the last shard wait for every other shard's
timeout; so a read first asks every shard without blocking (one pipelined round trip per node) and, when nothing is
there, blocks on every shard at once, each on a thread of its own, and returns as soon as one answers. A shard whose
blocking read is still out is not asked again until it answers: its answer is kept for the next read.

On one server the streams are read in one command, as before: :func:`read_shards` is then that command.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Sequence
from typing import Any

from common.keys import MAX_SHARDS, key_slot
from common.redis_io.connection import Client, is_cluster

ReadKeys = Callable[[Any, list[str], int | None], Any]
"""(client or pipeline, keys of one slot, BLOCK milliseconds or None) -> queues or runs one XREAD/XREADGROUP."""


def by_slot(keys: Sequence[str]) -> dict[int, list[str]]:
    """The keys grouped by their cluster slot, in order."""
    out: dict[int, list[str]] = {}
    for key in keys:
        out.setdefault(key_slot(key), []).append(key)
    return out


class ShardReads:
    """One reader's reads over the slots of a cluster (see the module's docstring); thread-safe only in the sense
    that its own threads run the blocking reads: call :meth:`read` from one thread."""

    def __init__(self, client: Client, name: str = "shard-read") -> None:
        self.client = client
        self._name = name
        self._pool: cf.ThreadPoolExecutor | None = None
        self._out: dict[int, cf.Future[Any]] = {}
        """Slot -> its blocking read still out."""
        self._lock = threading.Lock()

    @property
    def waiting(self) -> set[int]:
        """Slots with a blocking read out: their entries may be on the way to this consumer."""
        return set(self._out)

    def read(self, keys: Sequence[str], read: ReadKeys, block_ms: int) -> list[Any]:
        """The replies of reading ``keys``: one per slot that answered (a single-server client: one command)."""
        if not is_cluster(self.client):
            return [read(self.client, list(keys), block_ms if block_ms > 0 else None)]
        replies = self._answered()
        if replies:
            return replies
        slots = {s: ks for s, ks in by_slot(keys).items() if s not in self._out}
        if slots:
            pipe = self.client.pipeline(transaction=False)
            for group in slots.values():
                read(pipe, group, None)
            replies = [r for r in pipe.execute() if r]
            if replies or block_ms <= 0:
                return replies
            # A thread per slot read (made as needed): one waiting in a queue would leave its shard unread meanwhile.
            pool = self._pool or cf.ThreadPoolExecutor(max_workers=MAX_SHARDS + 16, thread_name_prefix=self._name)
            self._pool = pool
            for slot, group in slots.items():
                self._out[slot] = pool.submit(read, self.client, group, block_ms)
        if self._out:
            cf.wait(list(self._out.values()), timeout=block_ms / 1000 + 1.0, return_when=cf.FIRST_COMPLETED)
        return self._answered()

    def _answered(self) -> list[Any]:
        """Replies of the blocking reads that are back (an error is raised, once the others are collected)."""
        replies: list[Any] = []
        error: BaseException | None = None
        for slot, future in list(self._out.items()):
            if not future.done():
                continue
            del self._out[slot]
            if (exc := future.exception()) is not None:
                error = error or exc
            elif reply := future.result():
                replies.append(reply)
        if error is not None and not replies:
            raise error
        return replies

    def close(self) -> None:
        """Stop waiting: reads still out end with their BLOCK (what they deliver stays pending to this consumer,
        and is claimed back by it or another)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._out.clear()
