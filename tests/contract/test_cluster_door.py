"""The one door to Redis on a real Valkey cluster (3 primaries, 3 replicas): reads per shard (one blocking read per
shard, woken by any), writes split by slot, scripts loaded where they run, and a primary's failover under a reader."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.keys import Keys
from common.metrics import UNREPLICATED
from common.redis_io import (
    Client,
    GroupReader,
    Tally,
    add_entries,
    ensure_group,
    follow,
    stream_keys,
)
from common.redis_io.leases import acquire, renew
from common.redis_io.settings import RedisConfig
from common.service import redis_refusal
from tests.conftest import ROOT
from tests.servers.valkey_cluster import ValkeyCluster, door_client, spread_cameras

pytestmark = [pytest.mark.contract, pytest.mark.timeout(120)]

GROUP = "detector:p"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path_factory.mktemp("cluster"), node_timeout_ms=1000) as running:
        yield running


@pytest.fixture
def client(cluster: ValkeyCluster) -> Iterator[Client]:
    c = door_client(cluster)
    yield c
    c.close()


def keys_for(prefix: str) -> Keys:
    return Keys(prefix, shards=12)


def reader(client: Client, keys: Keys, consumer: str = "c1", **kw: object) -> GroupReader:
    options: dict[str, object] = {"block_ms": 200, "count": 10, "rescan_s": 0.05}
    options.update(kw)
    return GroupReader(
        client,
        group=GROUP,
        consumer=consumer,
        discover=lambda: stream_keys(client, keys.stage("frames"), ["*"]),
        dead_letters=keys.dead_letters,
        **options,  # type: ignore[arg-type]
    )


def test_a_reader_reads_every_shard_and_a_blocking_read_wakes_on_any(client: Client, prefix: str) -> None:
    keys = keys_for(prefix)
    names = spread_cameras(keys)
    for name in names:
        ensure_group(client, keys.frames(name), GROUP)
        add_entries(client, [(keys.frames(name), f"{name}-{i}".encode(), 1000) for i in range(3)])
    r = reader(client, keys)
    got: list[bytes] = []
    for _ in range(20):
        got += [e.payload or b"" for e in r.read(block_ms=0)]
    assert sorted(got) == sorted(f"{n}-{i}".encode() for n in names for i in range(3))
    try:
        # Every shard blocks at once: an entry on any of them ends the read, long before BLOCK runs out.
        for name in (names[0], names[-1]):
            out: list[float] = []

            def wait(out: list[float] = out) -> None:
                if r.read(block_ms=5000):
                    out.append(time.monotonic())

            waiting = threading.Thread(target=wait)
            waiting.start()
            time.sleep(0.5)
            pushed = time.monotonic()
            add_entries(client, [(keys.frames(name), b"late", 1000)])
            waiting.join(10)
            assert out and out[0] - pushed < 1.0, f"woke {out[0] - pushed if out else None} s after the push"
    finally:
        r.close()


def test_writes_split_by_slot_results_tallies_and_dead_letters_land_in_their_cameras_shards(
    client: Client, prefix: str
) -> None:
    keys = keys_for(prefix)
    names = spread_cameras(keys, 6)
    for name in names:
        ensure_group(client, keys.frames(name), GROUP)
        add_entries(client, [(keys.frames(name), b"frame", 1000), (keys.frames(name), b"poison", 1000)])
    r = reader(client, keys)
    entries = [e for _ in range(10) for e in r.read(block_ms=0)]
    frames = [e for e in entries if e.payload == b"frame"]
    assert len(frames) == len(names)
    by_name = {keys.stream_of(e.key): e for e in frames}
    r.publish_and_ack(
        [(keys.results(n), b"result", 100) for n in names],
        frames,
        tallies=[Tally(keys.stale(GROUP, n), {n: 1}) for n in names],
    )
    for e in entries:
        if e.payload == b"poison":
            r.dead_letter(e, "not a frame")
    for name in names:
        assert client.xlen(keys.results(name)) == 1
        assert client.hget(keys.stale(GROUP, name), name) == b"1"
        assert not client.xpending_range(keys.frames(name), GROUP, "-", "+", 10)
        dead = client.xrange(keys.dead_letters(by_name[name].key))
        assert [f[b"reason"] for _, f in dead if f[b"origin"].decode() == keys.frames(name)] == [b"not a frame"]
    assert sum(len(client.hgetall(t)) for t in keys.tallies("stale", GROUP)) == len(names)
    r.close()


def test_catching_up_runs_the_script_on_every_shard(client: Client, prefix: str) -> None:
    keys = keys_for(prefix)
    names = spread_cameras(keys, 6)
    for name in names:
        ensure_group(client, keys.frames(name), GROUP)
        add_entries(client, [(keys.frames(name), str(i).encode(), 1000) for i in range(10)])
    r = reader(client, keys)
    r.read(block_ms=0, skip=[keys.frames(n) for n in names])  # discovers the streams
    got, skipped = r.read_newest({keys.frames(n): n for n in names}, 2, functools.partial(keys.shed, GROUP))
    assert sorted(e.payload for e in got) == sorted([b"8", b"9"] * len(names))
    assert skipped == {keys.frames(n): 8 for n in names}
    assert all(client.hget(keys.shed(GROUP, n), n) == b"8" for n in names)
    r.close()


def test_leases_of_cameras_on_several_shards_renew_together(client: Client, prefix: str) -> None:
    keys = keys_for(prefix)
    leases = [keys.lease("t", n) for n in spread_cameras(keys, 6)]
    assert all(acquire(client, lease, "r1", 5000) for lease in leases)
    assert sorted(renew(client, leases, "r1", 5000)) == sorted(leases)
    assert renew(client, leases, "r2", 5000) == []


def test_following_reads_every_shard(client: Client, prefix: str) -> None:
    keys = keys_for(prefix)
    names = spread_cameras(keys, 6)
    for name in names:
        add_entries(client, [(keys.results(name), name.encode(), 100)])
    stop = threading.Event()
    seen = []
    for _, _, payload in follow(client, keys.stage("results"), ["*"], from_start=True, block_ms=200, stop=stop):
        seen.append(payload)
        if len(seen) == len(names):
            stop.set()
    assert sorted(seen) == sorted(n.encode() for n in names)


def test_a_reader_carries_on_across_a_primary_failover(cluster: ValkeyCluster, client: Client, prefix: str) -> None:
    """SIGKILL the primary of a camera's shard while a writer and a reader run: its replica takes over, the reader
    reads that camera again within the bound, and every entry the writer was answered for is read, or was lost
    in the replication window (counted: it is not in the stream any more)."""
    keys = keys_for(prefix)
    names = spread_cameras(keys, 6)
    for name in names:
        ensure_group(client, keys.frames(name), GROUP)
    victim_key = keys.frames(names[0])
    written: dict[str, list[str]] = {n: [] for n in names}
    stop = threading.Event()

    def write() -> None:
        writer = door_client(cluster)
        i = 0
        while not stop.is_set():
            for name in names:
                try:
                    [answer] = add_entries(writer, [(keys.frames(name), str(i).encode(), 100_000)])
                except Exception:
                    continue
                if isinstance(answer, str):
                    written[name].append(answer)
            i += 1
            time.sleep(0.02)
        writer.close()

    r = reader(client, keys, block_ms=300)
    read: dict[str, set[str]] = {n: set() for n in names}
    killed = float("inf")
    first_after_kill: dict[str, float] = {}

    def consume(until: float) -> None:
        while time.monotonic() < until:
            entries = r.read()
            for e in entries:
                read[keys.stream_of(e.key)].add(e.id)
                if time.monotonic() > killed:
                    first_after_kill.setdefault(keys.stream_of(e.key), time.monotonic())
            r.ack(entries)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        consume(time.monotonic() + 2)
        victim = cluster.primary_of_key(victim_key)
        killed = time.monotonic()
        cluster.kill(victim)
        _, failover_s = cluster.wait_for_failover(victim, timeout=30)
        consume(time.monotonic() + 6)
        back_s = first_after_kill.get(names[0], float("inf")) - killed
    finally:
        stop.set()
        thread.join(30)
    consume(time.monotonic() + 3)
    r.close()
    assert back_s <= 10, f"the reader read the failed-over camera again {back_s:.1f} s after the kill"
    lost = 0
    for name in names:
        kept = {e[0].decode() for e in client.xrange(keys.frames(name))}
        answered = set(written[name])
        lost += len(answered - kept)
        assert (answered & kept) <= read[name], f"{name}: {len((answered & kept) - read[name])} kept entries unread"
    assert lost <= 50, f"{lost} entries lost with the primary (failover took {failover_s:.1f} s)"
    print(f"failover {failover_s:.1f} s, camera read again after {back_s:.1f} s, {lost} entries lost with the primary")


def test_a_cluster_config_needs_a_tcp_url_of_database_0(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cluster: true needs a redis:// or rediss:// url"):
        RedisConfig(cluster=True)
    with pytest.raises(ValueError, match="a unix socket is not"):
        RedisConfig(cluster=True, url=f"unix://{tmp_path}/s.sock")
    with pytest.raises(ValueError, match=r"database 0 only; drop the /N from the url \(rediss://u:\*\*\*@h:1/3\)"):
        RedisConfig(cluster=True, url="rediss://u:pw@h:1/3")
    assert RedisConfig(cluster=True, url="redis://h:1/0").cluster


def test_waiting_for_replicas_holds_a_write_until_a_replica_has_it(tmp_path: Path, prefix: str) -> None:
    """redis.wait_replicas: each primary's entries and their WAIT go down one connection to it, so a replica that
    does not follow shows (the write waits out the timeout, and is counted unreplicated), and one that does costs a
    round trip. A cluster of its own: every primary must have its replica."""
    with ValkeyCluster(tmp_path / "c", node_timeout_ms=5000) as cluster:
        client = door_client(cluster)
        keys = keys_for(prefix)
        names = spread_cameras(keys, 6)
        batch = [(keys.frames(n), b"frame", 1000) for n in names]
        started = time.monotonic()
        assert all(isinstance(r, str) for r in add_entries(client, batch, replicas=1, timeout_ms=2000))
        assert time.monotonic() - started < 1.5  # every replica follows: no timeout waited out
        slow = cluster.primary_of_key(keys.frames(names[0]))
        replica = cluster.replicas_of(slow)[0]
        before = UNREPLICATED.labels(f"127.0.0.1:{slow.port}")._value.get()
        cluster.pause(replica)
        try:
            started = time.monotonic()
            replies = add_entries(client, batch, replicas=1, timeout_ms=300)
            waited = time.monotonic() - started
        finally:
            cluster.resume(replica)
        assert all(isinstance(r, str) for r in replies)  # on the primaries all the same
        assert 0.3 <= waited < 2.0
        on_slow = sum(cluster.primary_of_key(k) is slow for k, _, _ in batch)
        assert UNREPLICATED.labels(f"127.0.0.1:{slow.port}")._value.get() - before == on_slow
        client.close()


def test_a_service_started_before_its_cluster_answers_waits_for_it(tmp_path: Path) -> None:
    """A cluster's client asks for the slot map as it is made: a service started while no node answers (a stack
    starting with its cluster, a cluster hung) waits for it, retrying, instead of ending with a traceback; it goes on
    once the cluster answers, and a stop ends the wait."""
    with ValkeyCluster(tmp_path / "c", replicas=0) as cluster:
        url = cluster.url
        cfg = RedisConfig(url=url, cluster=True, socket_timeout_s=1, connect_timeout_s=1)
        stop = threading.Event()
        assert redis_refusal(url, cfg, stop) is None  # it answers
        for node in cluster.nodes:
            cluster.pause(node)  # its port accepts, nothing answers
        outcome: list[str | None] = []
        waiting = threading.Thread(target=lambda: outcome.append(redis_refusal(url, cfg, stop)), daemon=True)
        try:
            waiting.start()
            time.sleep(3.0)
            assert waiting.is_alive() and not outcome  # still waiting, not ended
        finally:
            for node in cluster.nodes:
                cluster.resume(node)
        waiting.join(20)
        assert not waiting.is_alive() and outcome == [None]
        for node in cluster.nodes:
            cluster.pause(node)
        try:
            threading.Timer(1.0, stop.set).start()
            started = time.monotonic()
            assert redis_refusal(url, cfg, stop) is None
            assert time.monotonic() - started < 4.0  # the stop ended the wait
        finally:
            for node in cluster.nodes:
                cluster.resume(node)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["common.stack.status", "--once"], "redis at redis://127.0.0.1:1: Redis Cluster cannot be connected"),
        (["sink", "tail", "--count", "1"], "cannot read from Redis (Redis Cluster cannot be connected"),
    ],
)
def test_the_status_table_and_the_tail_say_so_when_no_cluster_node_answers(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    """The tools ask a cluster for its slot map as they connect: no node answering is one line and exit 1, not a
    traceback (as with one server)."""
    config = tmp_path / "stack.yaml"
    config.write_text("streams: {prefix: t}\nredis: {cluster: true}\n")
    done = subprocess.run(
        [sys.executable, "-m", *argv, "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1"}, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
