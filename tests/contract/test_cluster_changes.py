"""The one door to Redis through a real Valkey cluster's changes, each test on a cluster of its own that it reshapes:
a slot migrated under a writer and a reader (resharding), a killed primary that comes back as a replica of its
successor, and the majority of primaries lost at once (clear errors, nothing the survivor acknowledged lost)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.keys import Keys, key_slot
from common.redis_io import (
    Client,
    Entry,
    GroupReader,
    RedisIOError,
    Unavailable,
    add_entries,
    ensure_group,
    stream_keys,
)
from tests.servers.valkey_cluster import Node, ValkeyCluster, command, door_client, spread_cameras

pytestmark = [pytest.mark.contract, pytest.mark.timeout(120)]

GROUP = "detector:p"
MAXLEN = 100_000  # never trims here: an entry missing from a stream was lost, not capped away


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    """A cluster of the test's own (3 primaries, 3 replicas): every test here reshapes or destroys it."""
    with ValkeyCluster(tmp_path / "c", node_timeout_ms=1000) as running:
        yield running


def keys_for(prefix: str) -> Keys:
    return Keys(prefix, shards=12)


def reader(client: Client, keys: Keys, names: list[str], group: str = GROUP, block_ms: int = 300) -> GroupReader:
    """A detector's reader of the cameras' frames (literal names: discovering them asks no node)."""
    for name in names:
        ensure_group(client, keys.frames(name), group)
    return GroupReader(
        client,
        group=group,
        consumer="c1",
        discover=lambda: stream_keys(client, keys.stage("frames"), names),
        dead_letters=keys.dead_letters,
        block_ms=block_ms,
        count=10,
        rescan_s=0.5,
    )


class Writer:
    """Ingest's publisher in a thread: one entry per camera in turn, ``rate`` entries a second in all, on a client of
    its own. ``written`` holds the ids the door answered with: what the tests hold the cluster to."""

    def __init__(self, cluster: ValkeyCluster, keys: Keys, names: list[str], rate: float = 50.0) -> None:
        self.keys = keys
        self.names = names
        self.period = 1 / rate
        self.client = door_client(cluster)
        self.written: dict[str, list[str]] = {n: [] for n in names}
        self.unavailable = 0
        self.other_errors: list[str] = []  # anything but Unavailable: a door that leaks the wrong error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.client.close()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for name in self.names:
                try:
                    [answer] = add_entries(self.client, [(self.keys.frames(name), f"{name}-{i}".encode(), MAXLEN)])
                except Unavailable:
                    self.unavailable += 1
                except RedisIOError as exc:
                    self.other_errors.append(repr(exc))
                else:
                    if isinstance(answer, str):
                        self.written[name].append(answer)
                    elif isinstance(answer, Unavailable):  # the server answered the entry so (CLUSTERDOWN)
                        self.unavailable += 1
                    else:
                        self.other_errors.append(repr(answer))
                if self._stop.wait(self.period):
                    return
            i += 1


class Consumer:
    """A detector's loop around a :class:`GroupReader`: read, record, ack. Runs in the caller's thread
    (:meth:`run_for`, :meth:`run_until`) or in one of its own (:meth:`start`)."""

    def __init__(self, r: GroupReader, keys: Keys, ack: bool = True) -> None:
        self.reader = r
        self.keys = keys
        self.ack = ack
        self.reads: list[tuple[str, str]] = []  # (camera, id), every time one is handed out
        self.read_at: dict[tuple[str, str], float] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ids(self, name: str) -> set[str]:
        return {i for n, i in self.reads if n == name}

    def once(self) -> list[Entry]:
        entries = self.reader.read()
        now = time.monotonic()
        for e in entries:
            seen = (self.keys.stream_of(e.key), e.id)
            self.reads.append(seen)
            self.read_at.setdefault(seen, now)
        if self.ack:
            self.reader.ack(entries)
        return entries

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read until ``done()``; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            self.once()
        return done()

    def start(self) -> Consumer:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.once()
                except Exception as exc:  # read() must not raise: recorded, and the test fails on it
                    self.failures.append(repr(exc))
                    return

        self._thread = threading.Thread(target=loop, name="consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def unread(self, written: dict[str, list[str]], kept: Callable[[str], set[str]] | None = None) -> dict[str, int]:
        """Per camera, how many written entries (those still in the stream, with ``kept``) were never read."""
        out = {}
        for name, ids in written.items():
            answered = set(ids) if kept is None else set(ids) & kept(name)
            if missing := answered - self.ids(name):
                out[name] = len(missing)
        return out


def kept_ids(client: Client, key: str) -> set[str]:
    return {e[0].decode() for e in client.xrange(key)}


def test_a_slot_migrated_under_a_writer_and_a_reader_loses_and_repeats_nothing(
    cluster: ValkeyCluster, prefix: str
) -> None:
    """Resharding moves a camera's slot to another primary while frames are written to it and read from it: redis-py
    follows the ASK and MOVED redirections, so every entry written is read, once, and the group moves with the
    stream (nothing left pending)."""
    keys = keys_for(prefix)
    names = spread_cameras(keys)
    client = door_client(cluster)
    r = reader(client, keys, names)
    consumer = Consumer(r, keys)
    writer = Writer(cluster, keys, names).start()
    slot = key_slot(keys.frames(names[0]))
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    moved_names = [n for n in names if key_slot(keys.frames(n)) == slot]
    try:
        consumer.run_for(2.0)
        started = time.monotonic()
        moved = cluster.migrate_slot(slot, target)
        migrate_s = time.monotonic() - started
        consumer.run_for(3.0)
    finally:
        writer.stop()
    consumer.run_until(lambda: not consumer.unread(writer.written), 10.0)
    r.close()
    errors = r.stats.redis_errors
    report = f"migration {migrate_s * 1000:.0f} ms ({moved} keys), reader counted {errors} transient errors"
    print(
        f"\nresharding: {report}; {sum(map(len, writer.written.values()))} entries written, {len(consumer.reads)} read"
    )
    assert not writer.other_errors, f"{report}; the writer got {writer.other_errors[:3]}"
    assert moved >= len(moved_names), report
    assert all(writer.written[n] for n in names), f"{report}; a camera got nothing written"
    assert all(cluster.primary_of_key(keys.frames(n)) is target for n in moved_names), report
    assert not consumer.unread(writer.written), f"{report}; unread: {consumer.unread(writer.written)}"
    twice = [seen for seen, times in collections.Counter(consumer.reads).items() if times > 1]
    assert not twice, f"{report}; read twice: {twice[:5]}"
    for name in names:
        key = keys.frames(name)
        assert kept_ids(client, key) == set(writer.written[name]), f"{report}; {name}: the stream lost or gained"
        pending = client.xpending(key, GROUP)
        assert pending["pending"] == 0, f"{report}; {name}: {pending}"
    client.close()


def test_a_primary_restarted_after_its_failover_rejoins_as_a_replica_unnoticed(
    cluster: ValkeyCluster, prefix: str
) -> None:
    """A crashed primary's replica takes over; when the old primary comes back (empty: no persistence) it must rejoin
    as a replica of its successor, not take its slots back, and the reader must go on reading its cameras without a
    single error, nor its group recreated (which a client sent to the empty node would do)."""
    keys = keys_for(prefix)
    names = spread_cameras(keys)
    victim_key = keys.frames(names[0])
    client = door_client(cluster)
    r = reader(client, keys, names)
    consumer = Consumer(r, keys)
    writer = Writer(cluster, keys, names).start()
    consumer.start()
    try:
        time.sleep(1.5)
        old = cluster.primary_of_key(victim_key)
        cluster.kill(old)
        new, failover_s = cluster.wait_for_failover(old, timeout=30)
        time.sleep(1.0)
        errors_before, unavailable_before, groups_before = (
            r.stats.redis_errors,
            writer.unavailable,
            r.stats.groups_recreated,
        )
        started = time.monotonic()
        cluster.restart(old)
        rejoin_s = time.monotonic() - started
        written_at = time.monotonic()
        [marker] = add_entries(client, [(victim_key, b"after-rejoin", MAXLEN)])
        assert isinstance(marker, str), marker
        deadline = written_at + 5.0
        while (names[0], marker) not in consumer.read_at and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.5)  # the writer and the reader go on a while beside the rejoined node
    finally:
        writer.stop()
        consumer.stop()
    back_s = consumer.read_at.get((names[0], marker), float("inf")) - written_at
    errors_after = r.stats.redis_errors - errors_before
    report = (
        f"failover {failover_s:.1f} s, rejoin {rejoin_s:.1f} s, entry after the rejoin read in {back_s:.2f} s; "
        f"transient errors: reader {errors_before} before the rejoin, {errors_after} after; "
        f"writer {unavailable_before} before, {writer.unavailable - unavailable_before} after"
    )
    print(f"\nrejoin: {report}")
    assert not consumer.failures, f"{report}; read raised {consumer.failures}"
    assert not writer.other_errors, f"{report}; the writer got {writer.other_errors[:3]}"
    assert old in cluster.replicas(), f"{report}; {old} is not a replica: {cluster.primaries()}"
    assert cluster.primary_of_key(victim_key) is new, report
    assert old in cluster.replicas_of(new), report
    assert back_s <= 5.0, report
    assert errors_after == 0, report
    assert writer.unavailable == unavailable_before, report
    assert r.stats.groups_recreated == groups_before, f"{report}; group recreated (a client reached the empty node)"
    consumer.run_until(lambda: not consumer.unread(writer.written, lambda n: kept_ids(client, keys.frames(n))), 5.0)
    r.close()
    unread = consumer.unread(writer.written, lambda n: kept_ids(client, keys.frames(n)))
    assert not unread, f"{report}; kept entries unread: {unread}"
    client.close()


def test_the_majority_lost_gives_clear_errors_and_loses_nothing_the_survivor_acknowledged(
    cluster: ValkeyCluster, prefix: str
) -> None:
    """Two of three primaries and their replicas die: no failover can happen and the survivor refuses service. A
    write must fail with :class:`Unavailable` saying so within a bound (not hang in redis-py's retries, nor pass as
    written), a worker's read must not raise (it counts, backs off and returns nothing), and the survivor keeps
    every entry it acknowledged."""
    keys = keys_for(prefix)
    names = spread_cameras(keys)
    client = door_client(cluster)
    survivor = cluster.primary_of_key(keys.frames(names[0]))
    on_survivor = [n for n in names if cluster.primary_of_key(keys.frames(n)) is survivor]
    doomed: list[Node] = []
    for primary in cluster.primaries():
        if primary is not survivor:
            doomed += [primary, *cluster.replicas_of(primary)]
    assert len(doomed) == 4, doomed
    r = reader(client, keys, names)
    consumer = Consumer(r, keys)
    # A second pool reading only the survivor's cameras: every read of it reaches the survivor, none a dead node.
    r_survivor = reader(client, keys, on_survivor, group="detector:q")
    writer = Writer(cluster, keys, names).start()
    read_raised: list[str] = []
    killed = time.monotonic()  # set again at the kill
    try:
        consumer.run_for(1.5)
        r_survivor.read(block_ms=0)
        consumer.ack = False  # an ack is a write: the door holds it until the cluster is back (back-pressure)
        before_loss = {n: list(writer.written[n]) for n in on_survivor}
        killed = time.monotonic()
        for node in doomed:
            cluster.kill(node)
        failure: RedisIOError | None = None
        how, call_s = "", 0.0
        while failure is None and time.monotonic() - killed < 20:
            started = time.monotonic()
            try:
                [answer] = add_entries(client, [(keys.frames(on_survivor[0]), b"after-the-loss", MAXLEN)])
            except RedisIOError as exc:
                failure, how = exc, "raised"
            else:
                if isinstance(answer, RedisIOError):
                    failure, how = answer, "answered for the entry"
                else:
                    time.sleep(0.05)  # written: the survivor has not noticed the loss yet
            call_s = time.monotonic() - started
        unavailable_s = time.monotonic() - killed
        # Each reader reads until it has met the trouble (a few reads at most: the first may hand out what a
        # blocking read got before the loss); a read must come back, empty, never raise.
        read_s: list[float] = []
        errors: dict[str, int] = {}
        for label, one, stats in (("all", consumer.once, r.stats), ("survivor", r_survivor.read, r_survivor.stats)):
            before = stats.redis_errors
            for _ in range(3):
                started = time.monotonic()
                try:
                    one()
                except Exception as exc:
                    read_raised.append(repr(exc))
                read_s.append(time.monotonic() - started)
                if stats.redis_errors > before:
                    break
            errors[label] = stats.redis_errors - before
    finally:
        writer.stop(timeout=60)
        stopped_s = time.monotonic() - killed
    report = (
        f"the write failed {unavailable_s:.1f} s after the kill ({how}, that call took {call_s * 1000:.1f} ms): "
        f"{failure!r}; reads took {', '.join(f'{s:.2f}' for s in read_s)} s, reader errors {errors}; "
        f"the writer counted {writer.unavailable} Unavailable and stopped {stopped_s:.1f} s after the kill"
    )
    print(f"\nmajority lost: {report}; reads raised: {read_raised}")
    assert isinstance(failure, Unavailable), f"no Unavailable within 20 s of the loss; {report}"
    assert unavailable_s <= 15, report
    message = str(failure).lower()
    assert "cluster is down" in message or "cannot be connected" in message, report
    assert not read_raised, f"GroupReader.read() raised {read_raised[:2]}; {report}"
    assert all(errors.values()), f"a reader counted no error; {report}"
    assert not writer.other_errors, f"{report}; the writer got {writer.other_errors[:3]}"
    # The survivor refuses every keyed command while the cluster is down; let it answer reads to count what it kept.
    with cluster.client(survivor) as direct:
        command(direct, "CONFIG", "SET", "cluster-allow-reads-when-down", "yes")
        for name in on_survivor:
            kept = {e[0].decode() for e in direct.xrange(keys.frames(name))}
            assert before_loss[name], f"{name}: nothing written before the loss"
            assert set(before_loss[name]) <= kept, f"{name}: {len(set(before_loss[name]) - kept)} acknowledged lost"
            assert set(writer.written[name]) <= kept, f"{name}: written after the loss began, then lost"
    r.close()
    r_survivor.close()
    client.close()
