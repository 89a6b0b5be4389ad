"""GroupReader and friends against a real server: blocking reads, restarts, claims, trims, dead letters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, GroupReader, Tally, connect, ensure_group, stream_keys
from common.redis_io.settings import RedisConfig

pytestmark = pytest.mark.contract


def reader(client: Client, prefix: str, consumer: str = "c1", **kw: object) -> GroupReader:
    keys = Keys(prefix)
    options: dict[str, object] = dict(block_ms=200, count=10, rescan_s=0.05)
    options.update(kw)
    return GroupReader(
        client,
        group="detector:p",
        consumer=consumer,
        discover=lambda: stream_keys(client, keys.stage("frames"), ["*"]),
        dead_letters=keys.dead_letters,
        **options,  # type: ignore[arg-type]
    )


def push(client: Client, prefix: str, stream: str, *payloads: bytes) -> list[str]:
    return [client.xadd(Keys(prefix).frames(stream), {"msg": p}).decode() for p in payloads]


def drain(r: GroupReader, rounds: int = 5) -> list[tuple[str, bytes | None, int]]:
    out = []
    for _ in range(rounds):
        out += [(e.id, e.payload, e.deliveries) for e in r.read()]
    return out


def test_new_entries_are_read_once_and_acked(client: Client, prefix: str) -> None:
    ids = push(client, prefix, "a", b"1", b"2") + push(client, prefix, "b", b"3")
    r = reader(client, prefix)
    got = drain(r)
    assert sorted(i for i, _, _ in got) == sorted(ids)
    assert {d for _, _, d in got} == {1}
    key = Keys(prefix).frames("a")
    assert client.xpending(key, "detector:p")["pending"] == 2
    r2 = reader(client, prefix)  # the same consumer restarted: its pending entries come back first
    again = drain(r2)
    assert sorted(i for i, _, _ in again) == sorted(ids)
    assert {d for _, _, d in again} == {2}


def test_acked_entries_never_come_back(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"1", b"2")
    r = reader(client, prefix)
    entries = []
    for _ in range(3):
        entries += r.read()
    r.ack(entries)
    assert client.xpending(Keys(prefix).frames("a"), "detector:p")["pending"] == 0
    assert drain(reader(client, prefix)) == []


def test_a_blocking_read_with_nothing_to_read_returns_empty(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"1")
    r = reader(client, prefix, block_ms=300)
    assert len(drain(r, 3)) == 1
    assert r.read() == []  # blocked for block_ms under a socket timeout well above it: no error, no re-send


def test_entries_a_crashed_consumer_left_idle_are_claimed(client: Client, prefix: str) -> None:
    ids = push(client, prefix, "a", b"1", b"2")
    dead = reader(client, prefix, consumer="crashed")
    assert len(drain(dead, 3)) == 2  # read, never acked
    time.sleep(0.25)
    alive = reader(client, prefix, consumer="alive", claim_idle_ms=200)
    got = drain(alive, 3)
    assert sorted(i for i, _, _ in got) == sorted(ids)
    assert {d for _, _, d in got} == {2}
    assert alive.stats.claimed == 2
    pending = client.xpending_range(Keys(prefix).frames("a"), "detector:p", "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"alive"}


def test_entries_whose_read_reply_was_lost_are_taken_back_at_once(client: Client, prefix: str) -> None:
    """A read the server answered but whose reply died with the connection (redis-py then retries it on a new one,
    silently): the entries are pending to this consumer, in nobody's hands. They come back on the next claim
    round, long before claim_idle_ms, and the entries in hand are not handed out twice."""
    r = reader(client, prefix, claim_idle_ms=600_000)
    push(client, prefix, "a", b"1")
    in_hand = drain(r, 3)
    assert [p for _, p, _ in in_hand] == [b"1"]
    lost = push(client, prefix, "a", b"2", b"3")
    key = Keys(prefix).frames("a")
    client.xreadgroup("detector:p", "c1", {key: ">"})  # delivered to c1; the reply never reaches the reader
    r._next_claim = 0.0  # the next claim round (every claim_idle_ms / 2; at once after a failed read)
    got = drain(r, 2)
    assert [(i, p, d) for i, p, d in got] == [(lost[0], b"2", 2), (lost[1], b"3", 2)]
    assert r.stats.claimed == 2


def test_entries_trimmed_while_pending_are_acked_and_skipped(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"1", b"2", b"3")
    assert len(drain(reader(client, prefix), 3)) == 3
    client.xtrim(Keys(prefix).frames("a"), maxlen=1, approximate=False)
    r = reader(client, prefix)
    got = drain(r, 4)
    assert [p for _, p, _ in got] == [b"3"]
    assert r.stats.trimmed == 2
    assert client.xpending(Keys(prefix).frames("a"), "detector:p")["pending"] == 1


def test_past_the_delivery_limit_an_entry_is_dead_lettered_with_its_reason(client: Client, prefix: str) -> None:
    (poison,) = push(client, prefix, "a", b"poison")
    for _ in range(2):
        assert [p for _, p, _ in drain(reader(client, prefix, max_deliveries=2), 3)] == [b"poison"]
    r = reader(client, prefix, max_deliveries=2)
    assert drain(r, 3) == []
    assert r.stats.dead_lettered == 1
    ((_, fields),) = client.xrange(Keys(prefix).dead_letters())
    assert fields[b"origin"] == Keys(prefix).frames("a").encode()
    assert fields[b"id"] == poison.encode()
    assert fields[b"reason"] == b"delivered 3 times (max_deliveries=2)"
    assert fields[b"payload"] == b"poison"
    assert client.xpending(Keys(prefix).frames("a"), "detector:p")["pending"] == 0


def test_dead_letter_keeps_the_payload_and_acks(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"bad")
    r = reader(client, prefix)
    (entry,) = [e for _ in range(3) for e in r.read()]
    r.dead_letter(entry, "WireError: not a msgpack message")
    ((_, fields),) = client.xrange(Keys(prefix).dead_letters())
    assert fields[b"reason"] == b"WireError: not a msgpack message"
    assert fields[b"group"] == b"detector:p" and fields[b"consumer"] == b"c1"
    assert client.xpending(entry.key, "detector:p")["pending"] == 0


def test_publish_and_ack_is_one_transaction(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"1", b"2")
    r = reader(client, prefix)
    entries = [e for _ in range(3) for e in r.read()]
    out = Keys(prefix).results("a")
    tally = Tally(Keys(prefix).stale("detector:p", "a"), {"a": 1})
    r.publish_and_ack([(out, b"r1", 100), (out, b"r2", 100)], entries, tallies=[tally])
    r.publish_and_ack([], entries[:1], tallies=[tally])
    assert [f[b"msg"] for _, f in client.xrange(out)] == [b"r1", b"r2"]
    assert client.xpending(entries[0].key, "detector:p")["pending"] == 0
    assert client.hgetall(tally.key) == {b"a": b"2"}


def test_a_lost_group_is_recreated(client: Client, prefix: str) -> None:
    push(client, prefix, "a", b"1")
    r = reader(client, prefix)
    assert len(drain(r, 3)) == 1
    client.delete(Keys(prefix).frames("a"))  # what a restart without persistence looks like
    push(client, prefix, "a", b"2")
    got = drain(r, 6)
    assert [p for _, p, _ in got] == [b"2"]
    assert r.stats.groups_recreated == 1


def test_streams_appearing_later_are_discovered(client: Client, prefix: str) -> None:
    r = reader(client, prefix)
    assert r.read() == []
    push(client, prefix, "new-cam", b"x")
    time.sleep(0.1)
    assert [p for _, p, _ in drain(r, 4)] == [b"x"]


def test_stream_keys_take_literal_names_and_globs(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    push(client, prefix, "cam1", b"x")
    push(client, prefix, "cam2", b"x")
    push(client, prefix, "door", b"x")
    client.set(f"{prefix}:frames:notastream", b"x")
    found = stream_keys(client, keys.stage("frames"), ["cam*", "gate"])
    assert found == [keys.frames("cam1"), keys.frames("cam2"), keys.frames("gate")]
    assert ensure_group(client, keys.frames("gate"), "g") is True  # created, stream made
    assert ensure_group(client, keys.frames("gate"), "g") is False  # BUSYGROUP is success


def test_reads_survive_the_server_going_away_and_coming_back(tmp_path: Path, prefix: str) -> None:
    sock = tmp_path / "s.sock"
    server = EmbeddedServer(sock).start()
    client = connect(server.url, RedisConfig(retries=1, socket_timeout_s=2, connect_timeout_s=0.5))
    try:
        push(client, prefix, "a", b"1")
        r = reader(client, prefix)
        assert len(drain(r, 3)) == 1
        server.kill()
        assert r.read() == [] and r.stats.redis_errors >= 1  # logged and backed off, not raised
        server = EmbeddedServer(sock).start()  # came back empty: no streams, no groups
        push(client, prefix, "a", b"2")
        got: list[bytes | None] = []
        for _ in range(20):
            got += [e.payload for e in r.read()]
            if got:
                break
        assert got == [b"2"]
    finally:
        client.close()
        server.stop()


def test_a_full_server_holds_results_until_it_has_room_and_none_are_lost(tmp_path: Path, prefix: str) -> None:
    with EmbeddedServer(tmp_path / "full.sock") as server:
        client = connect(server.url)
        keys = Keys(prefix)
        push(client, prefix, "a", b"frame")
        r = reader(client, prefix)
        (entry,) = r.read()
        client.config_set("maxmemory", 1)  # full: every write that needs memory is refused
        room = threading.Timer(1.0, lambda: connect(server.url).config_set("maxmemory", "64mb"))
        room.start()
        started = time.monotonic()
        r.publish_and_ack([(keys.results("a"), b"result", 100)], [entry])  # held, then written: not lost
        room.join()
        assert time.monotonic() - started >= 0.9
        assert r.stats.redis_errors >= 1
        assert [f[b"msg"] for _, f in client.xrange(keys.results("a"))] == [b"result"]
        assert client.xpending(keys.frames("a"), "detector:p")["pending"] == 0
        client.close()
