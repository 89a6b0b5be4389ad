"""Tracker replicas against a real server, driven turn by turn: they split the cameras fairly, a joining replica
takes its share, an owner that lost its lease writes nothing, and a new owner continues from the checkpoint."""

from __future__ import annotations

from typing import Any

import pytest

from bench.tracker_bench import AREAS, results
from common.keys import Keys
from common.redis_io import Client, connect
from common.wire import Event, Tracks, decode
from sink.tracker import TrackerSinkConfig
from sink.tracker.runner import Tracking

pytestmark = pytest.mark.contract

CAMERAS = ("c0", "c1", "c2", "c3")


def fill(client: Client, prefix: str, frames: int, start: int = 0) -> None:
    keys = Keys(prefix)
    for i, name in enumerate(CAMERAS):
        for payload in results(name, 10 + i, 4, start + frames)[start:]:
            client.xadd(keys.results(name), {"msg": payload})


def replica(server_url: str, prefix: str, name: str) -> Tracking:
    sink = TrackerSinkConfig.model_validate({"name": "objects", "cameras": {"*": AREAS}, "lease_s": 1, "block_ms": 50,
                                             "reorder_ms": 0, "claim_idle_ms": 200})  # fmt: skip
    return Tracking(connect(server_url), sink, Keys(prefix), name, 1000)


def turns(*replicas: Tracking, n: int = 20) -> None:
    for _ in range(n):
        for r in replicas:
            r._next_lease = 0.0  # manage the leases every turn: no waiting out a third of lease_s
            r.turn()


def entries(client: Client, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    found: Any = client.xrange(key)
    return list(found)


def seqs(client: Client, prefix: str, camera: str) -> list[int]:
    return [decode(f[b"msg"], Tracks).seq for _, f in entries(client, Keys(prefix).tracks("objects", camera))]


def test_a_joining_replica_takes_its_share_and_every_result_is_tracked_once(
    client: Client, server_url: str, prefix: str
) -> None:
    fill(client, prefix, 40)
    first = replica(server_url, prefix, "r1")
    turns(first)
    assert sorted(first.cameras) == list(CAMERAS)  # alone: every camera
    second = replica(server_url, prefix, "r2")
    fill(client, prefix, 40, start=40)
    turns(first, second)
    assert len(first.cameras) == len(second.cameras) == 2, (sorted(first.cameras), sorted(second.cameras))
    fill(client, prefix, 40, start=80)
    turns(first, second)
    for c in CAMERAS:
        assert seqs(client, prefix, c) == list(range(120)), c
        assert client.xpending(Keys(prefix).results(c), "sink:objects")["pending"] == 0


def test_an_owner_that_lost_its_lease_writes_nothing_and_the_new_owner_continues(
    client: Client, server_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    fill(client, prefix, 30)
    old = replica(server_url, prefix, "old")
    turns(old)
    ids_before = {
        e.track_id for _, f in entries(client, keys.events("objects", "c0")) for e in [decode(f[b"msg"], Event)]
    }
    # The old owner pauses past its lease; another replica takes every camera meanwhile.
    for c in CAMERAS:
        client.delete(keys.lease("objects", c))
    new = replica(server_url, prefix, "new")
    turns(new)
    assert sorted(new.cameras) == list(CAMERAS)
    fill(client, prefix, 30, start=30)
    old._next_lease = float("inf")  # it wakes up and reads before it renews: only the fence stops its writes
    old.turn()
    turns(new)  # the results it read are claimed as idle and tracked by the new owner
    assert old.cameras == {} and old.stats["dropped"] == len(CAMERAS) and old.stats["frames"] == 30 * len(CAMERAS)
    for c in CAMERAS:
        assert seqs(client, prefix, c) == list(range(60)), c  # nothing twice, nothing missing
    events = [decode(f[b"msg"], Event) for _, f in entries(client, keys.events("objects", "c0"))]
    starts = [e.track_id for e in events if e.event == "start"]
    assert len(starts) == len(set(starts)), "a track started twice"
    assert ids_before <= {e.track_id for e in events} and ids_before, "the new owner continued the same tracks"
