"""Non-blocking GroupReader logic on fakeredis (blocking, timing and restarts are in tests/contract)."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
import redis

from common.keys import Keys
from common.redis_io import GroupReader, stream_keys


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def reader(fake: fakeredis.FakeRedis, names: list[str]) -> GroupReader:
    keys = Keys("f")
    return GroupReader(
        fake,
        group="g",
        consumer="c",
        dead_letters=keys.dead_letters,
        block_ms=1,
        rescan_s=60,
        discover=lambda: stream_keys(fake, keys.stage("frames"), names),
    )


def test_literal_stream_names_get_their_group_before_any_frame_arrives(fake: fakeredis.FakeRedis) -> None:
    r = reader(fake, ["door"])
    assert r.read(block_ms=0) == []
    assert [g["name"] for g in fake.xinfo_groups("f:frames:door")] == [b"g"]
    fake.xadd("f:frames:door", {"msg": b"early"})
    got = [e.payload for _ in range(3) for e in r.read(block_ms=0)]
    assert got == [b"early"]


def test_only_streams_matching_the_patterns_are_read(fake: fakeredis.FakeRedis) -> None:
    fake.xadd("f:frames:cam1", {"msg": b"1"})
    fake.xadd("f:frames:yard", {"msg": b"2"})
    fake.xadd("other:frames:cam2", {"msg": b"3"})
    r = reader(fake, ["cam*"])
    got = [(e.key, e.payload) for _ in range(3) for e in r.read(block_ms=0)]
    assert got == [("f:frames:cam1", b"1")]


def test_an_entry_without_the_message_field_is_handed_on_to_be_dead_lettered(fake: fakeredis.FakeRedis) -> None:
    fake.xadd("f:frames:a", {"other": b"x"})
    r = reader(fake, ["a"])
    (entry,) = [e for _ in range(3) for e in r.read(block_ms=0)]
    assert entry.payload is None and not entry.trimmed
    assert r.stats.trimmed == 0


def test_entries_delivered_in_a_lost_reply_are_claimed_back_but_not_those_in_hand(fake: fakeredis.FakeRedis) -> None:
    r = reader(fake, ["a"])
    r.claim_idle_ms = 50
    fake.xadd("f:frames:a", {"msg": b"in hand"})
    assert [e.payload for e in r.read(block_ms=0)] == [b"in hand"]  # being worked on, not acked yet
    fake.xadd("f:frames:a", {"msg": b"lost"})
    fake.xreadgroup("g", "c", {"f:frames:a": ">"})  # the server delivered it to c; the reply never came back
    time.sleep(0.1)
    assert [e.payload for e in r.read(block_ms=0)] == [b"lost"]
    assert r.stats.claimed == 1


class LoseReplies:
    """fakeredis, except that the next ``lose`` pipelines are executed but their reply is lost (a timeout)."""

    def __init__(self, fake: fakeredis.FakeRedis) -> None:
        self.fake = fake
        self.lose = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.fake.pipeline(transaction=transaction)
        if self.lose:
            self.lose -= 1
            real = pipe.execute

            def lost(raise_on_error: bool = True) -> list[Any]:
                real(raise_on_error)
                raise redis.TimeoutError("Timeout reading from socket")

            pipe.execute = lost  # type: ignore[method-assign]
        return pipe


class FailOnce(LoseReplies):
    """The next transaction fails before reaching the server, which meanwhile restarted empty (no persistence)."""

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.fake.pipeline(transaction=transaction)
        if self.lose:
            self.lose -= 1

            def refused(raise_on_error: bool = True) -> list[Any]:
                self.fake.flushall()
                raise redis.ConnectionError("Connection refused")

            pipe.execute = refused  # type: ignore[method-assign]
        return pipe


@pytest.mark.parametrize(
    ("failure", "why"),
    [(LoseReplies, "retried, found done: not published twice"),
     (FailOnce, "the frame is gone with the server, its result is not")],
)  # fmt: skip
def test_a_failed_transaction_is_sent_again_only_if_it_did_not_run(
    fake: fakeredis.FakeRedis, failure: type[LoseReplies], why: str
) -> None:
    client = failure(fake)
    r = reader(fake, ["a"])
    r.client = client  # type: ignore[assignment]
    fake.xadd("f:frames:a", {"msg": b"frame"})
    (entry,) = r.read(block_ms=0)
    client.lose = 1
    r.publish_and_ack([("f:results:a", b"result", 100)], [entry])
    assert fake.xlen("f:results:a") == 1, why
    assert r.stats.redis_errors == 1


def test_the_group_collector_reports_lag_and_pending_and_nothing_during_an_outage(fake: fakeredis.FakeRedis) -> None:
    from common.metrics import GroupCollector

    for n in range(3):
        fake.xadd("f:frames:a", {"msg": str(n).encode()})
    r = reader(fake, ["a"])
    r.count = 1
    assert len(r.read(block_ms=0)) == 1  # one delivered, two to go
    gauges = {m.name: m.samples for m in GroupCollector(r, lambda key: key.rsplit(":", 1)[1]).collect()}
    assert [(s.labels, s.value) for s in gauges["streamyolo_consumer_lag"]] == [({"group": "g", "stream": "a"}, 2)]
    assert [s.value for s in gauges["streamyolo_consumer_pending"]] == [1]

    class Down:
        def xinfo_groups(self, key: str) -> None:
            raise redis.ConnectionError("Connection refused")

    r.client = Down()  # type: ignore[assignment]
    assert [m.samples for m in GroupCollector(r, str).collect()] == [[], []]
