"""Cross-stream batching against a real server: size, deadline, quiet streams, overflow."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from common.keys import Keys
from common.redis_io import GroupReader, stream_keys
from detector.batcher import Batcher

pytestmark = pytest.mark.contract


def batcher(
    client: redis.Redis,
    prefix: str,
    max_batch: int,
    max_wait_ms: int,
    block_ms: int = 2000,
    names: tuple[str, ...] = ("*",),
) -> Batcher:
    keys = Keys(prefix)
    reader = GroupReader(
        client, group="detector:p", consumer="c", dead_key=keys.dead_letters(), block_ms=block_ms, count=max_batch,
        rescan_s=0.05, discover=lambda: stream_keys(client, keys.frames_pattern(), keys.frames(""), list(names)),
    )  # fmt: skip
    return Batcher(reader, max_batch, max_wait_ms)


def push(client: redis.Redis, prefix: str, stream: str, n: int) -> None:
    for i in range(n):
        client.xadd(Keys(prefix).frames(stream), {"msg": f"{stream}-{i}".encode()})


def test_a_full_batch_spans_streams_and_closes_at_max_batch(client: redis.Redis, prefix: str) -> None:
    for s in ("a", "b", "c"):
        push(client, prefix, s, 3)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=5000)
    stop = threading.Event()
    first = b.next(stop)
    assert len(first) == 4
    rest = b.next(stop) + b.next(stop)
    got = sorted(e.payload or b"" for e in first + rest)
    assert got == sorted(f"{s}-{i}".encode() for s in "abc" for i in range(3))  # overflow carried, none lost


def test_a_partial_batch_closes_at_the_deadline_from_its_first_frame(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "busy", 2)
    push(client, prefix, "quiet", 0)
    b = batcher(client, prefix, max_batch=64, max_wait_ms=300)
    stop = threading.Event()
    started = time.monotonic()
    batch = b.next(stop)
    waited = time.monotonic() - started
    assert len(batch) == 2
    assert waited < 1.9  # closed by max_wait_ms, not by the 2 s block: the quiet stream held nothing back


def test_a_frame_arriving_within_the_deadline_joins_the_batch(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 1)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=1500, names=("a", "b"))  # b exists, silent so far
    stop = threading.Event()
    threading.Timer(0.3, push, args=(client, prefix, "b", 1)).start()
    batch = b.next(stop)
    assert sorted(e.payload or b"" for e in batch) == [b"a-0", b"b-0"]


def test_nothing_to_read_returns_an_empty_batch_after_the_block_time(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 0)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=10, block_ms=200)
    assert b.next(threading.Event()) == []
