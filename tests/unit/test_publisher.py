"""The publisher's ledger: every submitted frame ends up published or dropped, once, however close() finds it."""

from __future__ import annotations

import threading
import time
from typing import Any

import fakeredis
import pytest
import redis

from common.keys import Keys
from common.wire import Frame
from ingest.publisher import Publisher


class SlowPipeline:
    """Takes ``delay`` seconds to answer, then accepts every XADD."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.commands = 0

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        self.commands += 1

    def execute(self, raise_on_error: bool = True) -> list[bytes]:
        time.sleep(self.delay)
        return [b"1-0"] * self.commands


class SlowClient:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent = threading.Event()

    def pipeline(self, transaction: bool = False) -> SlowPipeline:
        self.sent.set()
        return SlowPipeline(self.delay)


def frame(seq: int, live: bool = True) -> Frame:
    return Frame(
        stream="cam", seq=seq, capture_ts=time.time(), width=8, height=8, encoding="bgr8",
        image_width=8, image_height=8, data=b"\x00" * 192, live=live,
    )  # fmt: skip


def test_a_send_still_under_way_at_the_close_deadline_is_counted_dropped_once() -> None:
    client = SlowClient(delay=1.0)
    publisher = Publisher(client, Keys("t"), queue_size=100, pipeline=32).start()  # type: ignore[arg-type]
    counters = publisher.counter("cam")
    for seq in range(40):
        publisher.submit(frame(seq), 100)
    assert client.sent.wait(2)
    publisher.close(timeout=0.2)  # the first batch of 32 is still on the wire
    assert (counters.published, counters.dropped) == (0, 40)
    time.sleep(1.2)  # the abandoned send answers: it must not be counted a second time
    assert (counters.published, counters.dropped) == (0, 40)


def test_a_close_with_time_enough_publishes_everything_queued() -> None:
    publisher = Publisher(SlowClient(delay=0.05), Keys("t"), pipeline=8).start()  # type: ignore[arg-type]
    counters = publisher.counter("cam")  # a camera registers its stream before it submits, as the reader does
    for seq in range(20):
        publisher.submit(frame(seq), 100)
    publisher.close(timeout=5)
    assert (counters.published, counters.dropped) == (20, 0)


class LostReply:
    """A real server (fakeredis) on a failing network: the next send is executed (``reaches``) or not, and either
    way its reply never comes back (a timeout); later sends go through."""

    def __init__(self, reaches: bool) -> None:
        self.server = fakeredis.FakeRedis()
        self.reaches = reaches
        self.failures = 1

    def pipeline(self, transaction: bool = False) -> Any:
        pipe = self.server.pipeline(transaction=transaction)
        if self.failures:
            self.failures -= 1
            real = pipe.execute

            def lost(raise_on_error: bool = True) -> list[Any]:
                if self.reaches:
                    real(raise_on_error)
                raise redis.TimeoutError("Timeout reading from socket")

            pipe.execute = lost  # type: ignore[method-assign]
        return pipe


@pytest.mark.parametrize("reaches", [True, False])
def test_a_send_whose_reply_is_lost_counts_what_the_stream_holds(reaches: bool) -> None:
    client = LostReply(reaches)
    publisher = Publisher(client, Keys("t"), pipeline=8)  # type: ignore[arg-type]
    counters = publisher.counter("cam")
    for seq in range(3):  # queued before it starts: one batch
        publisher.submit(frame(seq), 100)
    publisher.start()
    time.sleep(0.3)  # the first send fails; a back-off
    publisher.submit(frame(3), 100)  # the next send finds out first
    publisher.close(timeout=5)
    landed = 3 if reaches else 0
    assert client.server.xlen("t:frames:cam") == landed + 1
    assert (counters.published, counters.dropped) == (landed + 1, 3 - landed)


def test_a_recordings_frames_that_missed_redis_are_sent_again_not_dropped() -> None:
    client = LostReply(reaches=False)
    publisher = Publisher(client, Keys("t"), pipeline=8)  # type: ignore[arg-type]
    counters = publisher.counter("cam")
    for seq in range(3):
        publisher.submit(frame(seq, live=False), 100)
    publisher.start()
    time.sleep(0.3)  # the first send fails: read back, not there, queued again
    publisher.close(timeout=5)
    assert (counters.published, counters.dropped) == (3, 0)
    assert client.server.xlen("t:frames:cam") == 3


def test_a_full_queue_drops_the_oldest_live_frame_never_a_recordings() -> None:
    publisher = Publisher(SlowClient(delay=0.0), Keys("t"), queue_size=3)  # type: ignore[arg-type]
    counters = publisher.counter("cam")
    for seq, live in enumerate([True, False, False, False, True]):  # not started: everything stays queued
        publisher.submit(frame(seq, live), 100)
    assert counters.dropped == 1  # seq 0, the only live frame when the queue was full
    assert [(f.seq, f.live) for f, _ in publisher._queue] == [(1, False), (2, False), (3, False), (4, True)]
