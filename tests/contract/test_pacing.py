"""A recording's pace against a real server: the backlog of a frames stream, and the room the pacer gives."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from common.keys import Keys
from common.redis_io import Backlog, Client, backlog, connect, ensure_group
from common.redis_io.settings import RedisConfig
from common.wire import Frame
from ingest import pacing
from ingest.pacing import Pacer
from ingest.publisher import Publisher
from tests.conftest import free_port

pytestmark = pytest.mark.contract


def fill(client: Client, key: str, n: int) -> list[str]:
    return [client.xadd(key, {"msg": b"x"}).decode() for _ in range(n)]


def test_the_backlog_is_what_the_slowest_group_has_to_read_or_the_whole_stream_without_one(
    client: Client, prefix: str
) -> None:
    key = Keys(prefix).frames("cam")
    assert backlog(client, key, 100) == Backlog(0, 0)  # no stream yet
    ids = fill(client, key, 10)
    assert backlog(client, key, 100) == Backlog(0, 10)  # nobody reads it: every entry is unread
    ensure_group(client, key, "fast")
    ensure_group(client, key, "slow")
    client.xreadgroup("fast", "c", {key: ">"}, count=7)
    client.xreadgroup("slow", "c", {key: ">"}, count=2)
    assert backlog(client, key, 100) == Backlog(2, 8, "slow")
    # An entry deleted in the middle leaves Redis unable to tell the lag: the entries are counted instead.
    client.xdel(key, ids[5])
    assert client.xinfo_groups(key)[1]["lag"] is None
    assert backlog(client, key, 100) == Backlog(2, 7, "slow")
    assert backlog(client, key, 4) == Backlog(2, 4, "slow")  # counted up to the limit


def pacer(client: Client, prefix: str, max_lag: int = 5, cap: int = 12) -> Pacer:
    return Pacer(Publisher(client, Keys(prefix)), "cam", max_lag, cap, threading.Event())


def test_a_recording_waits_for_the_slowest_pool_and_goes_on_as_it_reads(client: Client, prefix: str) -> None:
    key = Keys(prefix).frames("cam")
    ensure_group(client, key, "detector:main")
    p = pacer(client, prefix)
    for _ in range(5):
        assert p.admit()
        client.xadd(key, {"msg": b"x"})
    waiting = threading.Thread(target=p.admit)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive(), "a sixth frame got room while the pool had 5 to read"
    client.xreadgroup("detector:main", "c", {key: ">"}, count=1)  # the pool reads one: room for one more
    waiting.join(2.0)
    assert not waiting.is_alive()


def test_a_group_that_reads_nothing_for_long_is_named_in_the_log(
    client: Client, prefix: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "NOTE_EVERY_S", 0.3)
    key = Keys(prefix).frames("cam")
    ensure_group(client, key, "detector:gone")  # a pool that was removed: nobody reads for it
    fill(client, key, 5)
    p = pacer(client, prefix)
    threading.Timer(1.0, p.stop.set).start()
    with caplog.at_level(logging.INFO, logger="ingest.pacing"):
        assert p.admit() is False
    assert "group detector:gone has had 5 of its frames to read for" in caplog.text


def test_with_no_pool_a_recording_fills_its_stream_to_the_cap_then_waits_for_one(client: Client, prefix: str) -> None:
    key = Keys(prefix).frames("cam")
    p = pacer(client, prefix, max_lag=5, cap=12)
    for _ in range(12):
        assert p.admit()
        client.xadd(key, {"msg": b"x"})
    done = threading.Event()
    waiting = threading.Thread(target=lambda: done.set() if p.admit() else None)
    waiting.start()
    waiting.join(1.0)
    assert not done.is_set(), "pushed past the cap with nobody reading: a frame would be trimmed unread"
    ensure_group(client, key, "detector:main")
    client.xreadgroup("detector:main", "c", {key: ">"}, count=8)  # a pool starts: 4 to read, room for 1 more
    waiting.join(2.0)
    assert done.is_set()


def test_frames_handed_to_the_publisher_count_as_ahead(client: Client, prefix: str) -> None:
    ensure_group(client, Keys(prefix).frames("cam"), "detector:main")
    p = pacer(client, prefix, max_lag=5)
    frame = Frame(stream="cam", seq=0, capture_ts=time.time(), width=8, height=8, encoding="jpeg",
                  image_width=8, image_height=8, data=b"x")  # fmt: skip
    for _ in range(3):
        p.publisher.submit(frame, 100)  # not started: they stay queued
    for _ in range(2):
        assert p.admit()
        p.publisher.submit(frame, 100)
    assert p.publisher.queued("cam") == 5 and p.publisher.queued("other") == 0
    p.stop.set()
    assert p.admit() is False  # no room, and a stop ends the wait


def test_an_unreachable_server_makes_a_recording_wait_and_a_stop_ends_it(prefix: str) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", RedisConfig(retries=0))
    p = pacer(client, prefix)
    threading.Timer(0.8, p.stop.set).start()
    started = time.monotonic()
    assert p.admit() is False
    assert 0.7 < time.monotonic() - started < 3.0
