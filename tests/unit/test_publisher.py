"""The publisher's ledger: every submitted frame ends up published or dropped, once, however close() finds it."""

from __future__ import annotations

import threading
import time
from typing import Any

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


def frame(seq: int) -> Frame:
    return Frame(
        stream="cam", seq=seq, capture_ts=time.time(), width=8, height=8, encoding="bgr8",
        image_width=8, image_height=8, data=b"\x00" * 192,
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
