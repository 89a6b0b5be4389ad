"""Leases against a real server: one owner at a time, renewals only by the owner, expiry, and writes fenced by the
lease (all or nothing)."""

from __future__ import annotations

import time

import pytest
import redis

from common.redis_io import connect
from common.redis_io.leases import (
    Commit,
    acquire,
    commit_if_owner,
    holder,
    leave,
    load,
    members,
    release,
    renew,
    take_pending,
)

pytestmark = pytest.mark.contract


def test_one_owner_at_a_time_until_the_lease_runs_out(client: redis.Redis, server_url: str, prefix: str) -> None:
    door = connect(server_url)
    lease = f"{prefix}:lease"
    assert acquire(door, lease, "a", 300)
    assert not acquire(door, lease, "b", 300)
    assert acquire(door, lease, "a", 300)  # held already: renewed
    assert renew(door, [lease, f"{prefix}:other"], "b", 300) == []
    assert renew(door, [lease], "a", 300) == [lease]
    assert not release(door, lease, "b") and holder(door, lease) == "a"
    time.sleep(0.4)  # a stops renewing: the lease runs out
    assert holder(door, lease) is None
    assert acquire(door, lease, "b", 300) and holder(door, lease) == "b"
    assert release(door, lease, "b") and holder(door, lease) is None


def test_a_commit_writes_everything_under_the_lease_or_nothing(
    client: redis.Redis, server_url: str, prefix: str
) -> None:
    door = connect(server_url)
    lease, results, out, counts, state = (f"{prefix}:{k}" for k in ("lease", "results", "out", "counts", "state"))
    client.xgroup_create(results, "g", id="0", mkstream=True)
    ids = [client.xadd(results, {"msg": b"r"}).decode() for _ in range(3)]
    client.xreadgroup("g", "a", {results: ">"})

    def commit() -> Commit:
        c = Commit()
        c.add(out, "msg", b"\x00\xffbinary", 100)
        c.increment(counts, {"entered:door:person": 2, "nothing": 0})
        c.assign(counts, {"now:door:person": 1})
        c.put(state, b"\x00checkpoint")
        c.ack(results, "g", ids)
        return c

    assert acquire(door, lease, "a", 10_000)
    assert not commit_if_owner(door, lease, "b", commit())  # not b's: nothing written
    assert client.exists(out, counts, state) == 0 and client.xpending(results, "g")["pending"] == 3
    assert commit_if_owner(door, lease, "a", commit())
    assert [e[1] for e in client.xrange(out)] == [{b"msg": b"\x00\xffbinary"}]
    assert client.hgetall(counts) == {b"entered:door:person": b"2", b"now:door:person": b"1"}
    assert load(door, state) == b"\x00checkpoint"
    assert client.xpending(results, "g")["pending"] == 0


def test_many_acks_in_one_commit(client: redis.Redis, server_url: str, prefix: str) -> None:
    door = connect(server_url)
    lease, results = f"{prefix}:lease", f"{prefix}:results"
    client.xgroup_create(results, "g", id="0", mkstream=True)
    pipe = client.pipeline()
    for _ in range(2500):  # more than one XACK's worth in the script (Lua's unpack limit)
        pipe.xadd(results, {"msg": b"r"})
    ids = [i.decode() for i in pipe.execute()]
    client.xreadgroup("g", "a", {results: ">"})
    acquire(door, lease, "a", 10_000)
    c = Commit()
    c.ack(results, "g", ids)
    assert commit_if_owner(door, lease, "a", c)
    assert client.xpending(results, "g")["pending"] == 0


def test_a_new_owner_takes_every_pending_entry_without_counting_a_delivery(
    client: redis.Redis, server_url: str, prefix: str
) -> None:
    door = connect(server_url)
    results = f"{prefix}:results"
    client.xgroup_create(results, "g", id="0", mkstream=True)
    for _ in range(1500):
        client.xadd(results, {"msg": b"r"})
    client.xreadgroup("g", "dead", {results: ">"}, count=1200)
    assert take_pending(door, results, "g", "new") == 1200
    pending = client.xpending_range(results, "g", "-", "+", 2000)
    assert {p["consumer"] for p in pending} == {b"new"} and {p["times_delivered"] for p in pending} == {1}


def test_members_are_counted_until_they_expire_or_leave(client: redis.Redis, server_url: str, prefix: str) -> None:
    door = connect(server_url)
    key = f"{prefix}:replicas"
    assert members(door, key, "a", 5, 100.0) == 1
    assert members(door, key, "b", 5, 101.0) == 2
    assert members(door, key, "b", 5, 105.5) == 1  # a expired at 105
    leave(door, key, "b")
    assert client.zcard(key) == 0
