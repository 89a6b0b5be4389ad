"""The store sink's write: a database that fails is retried with back-off while the batch waits, unacked."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from common.config import StackConfig
from common.service import Bounds, Context, Shutdown
from common.wire import Result
from sink.runner import SinkOptions
from sink.stores._runner import write


class FlakyStore:
    """Fails ``failures`` times (as a database that is down), then stores."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def write(self, results: Sequence[Result]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("server closed the connection unexpectedly")
        return len(results)

    def close(self) -> None:
        pass


def context() -> Context[SinkOptions]:
    return Context(StackConfig(), SinkOptions("s", "c"), Path("stack.yaml"), "redis://unused", Shutdown(), Bounds())


def test_a_failing_store_is_retried_until_it_stores(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(failures=2)
    started = time.monotonic()
    assert write(store, [], context()) == 0
    assert store.calls == 3
    assert time.monotonic() - started >= 0.5 + 1.0  # backed off 0.5 s, then 1 s
    assert caplog.text.count("storing 0 results failed (ConnectionError: server closed") == 2


def test_stopping_while_the_store_is_down_leaves_the_batch_unstored() -> None:
    store = FlakyStore(failures=1000)
    ctx = context()
    threading.Timer(0.3, ctx.shutdown.request).start()
    started = time.monotonic()
    assert write(store, [], ctx) is None  # the caller does not ack: the batch is redelivered after a restart
    assert time.monotonic() - started < 5
