"""The web view's followers against a real server: a head start from each stream's newest result (and a tracker's
newest tracks and events), then every new one, and a prompt stop; and the launcher never waits on a web view (it
has no consumer group)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from common.config import parse_config
from common.keys import Keys
from common.stack.launcher import backlog
from common.wire import FIELD, BestShot, Event, Result, Timings, TrackedObject, Tracks, encode
from sink.web import WebSinkConfig
from sink.web.runner import follow, follow_tracker
from sink.web.view import View

pytestmark = [pytest.mark.contract, pytest.mark.timeout(60)]


def result(stream: str, seq: int) -> Result:
    return Result(
        frame_id=f"{1_700_000_000_000 + seq}-0", stream=stream, seq=seq, capture_ts=1_700_000_000.0 + seq * 0.2,
        width=640, height=480, pool="main", replica="r0", engine="torch", device="cpu", batch_size=1,
        published_ts=1_700_000_001.0, detections=[],
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=20 + seq),
    )  # fmt: skip


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_follow_starts_from_the_newest_result_then_takes_every_new_one_and_stops_promptly(
    client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    for seq in range(3):  # history: only the newest is shown, and none of it counts as live
        client.xadd(keys.results("door"), {FIELD: encode(result("door", seq))})
    client.xadd(keys.results("other"), {FIELD: encode(result("other", 0))})  # not among the sink's streams
    client.xadd(keys.results("door"), {FIELD: b"not msgpack"})  # the newest entry is malformed: skipped, logged
    client.xadd(keys.results("yard"), {FIELD: encode(result("yard", 5))})
    sink = WebSinkConfig(name="view", streams=["door", "y*", "gate"], block_ms=100, rescan_s=0.2)
    view, stop = View(window_s=60, history=10), threading.Event()
    thread = threading.Thread(target=follow, args=(client, keys, sink, view, stop), daemon=True)
    thread.start()
    wait_for(lambda: view.names() == ["yard"])
    time.sleep(0.5)  # the live follow starts after the last result of each stream, just after the head start
    for seq in (3, 4):
        client.xadd(keys.results("door"), {FIELD: encode(result("door", seq))})
    client.xadd(keys.results("gate"), {FIELD: encode(result("gate", 0))})  # a stream that appears later
    wait_for(lambda: sum(s["results"] for s in view.summary()) == 3)
    by_name = {s["name"]: s for s in view.summary()}
    assert view.take_arrivals() == 3
    assert by_name["door"]["seq"] == 4 and by_name["door"]["results"] == 2
    assert by_name["door"]["fps"] == pytest.approx(5.0) and by_name["door"]["latency_p99_ms"] == 24.0
    assert by_name["yard"]["seq"] == 5 and by_name["yard"]["results"] == 0 and by_name["gate"]["results"] == 1
    stopped = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - stopped < 2


def test_the_launcher_drains_for_the_sinks_groups_but_never_for_a_web_view(client: redis.Redis, prefix: str) -> None:
    client.xadd(Keys(prefix).results("door"), {FIELD: encode(result("door", 0))})
    web_only = parse_config(f"streams: {{prefix: {prefix}}}\nsinks: [{{kind: web, name: view}}]", environ={})
    assert backlog(web_only, client) == 0
    with_store = parse_config(
        f"streams: {{prefix: {prefix}}}\nsinks: [{{kind: web, name: view}}, {{kind: jsonl, name: j, path: x}}]",
        environ={},
    )
    assert backlog(with_store, client) == 1  # the JSONL sink's group has not read it yet


def tracks(stream: str, seq: int, tracker: str = "trk") -> Tracks:
    x = 10.0 * seq
    return Tracks(
        tracker=tracker, frame_id=f"{1_700_000_000_000 + seq}-0", stream=stream, seq=seq,
        capture_ts=1_700_000_000.0 + seq * 0.2, width=640, height=480, untracked=0, skipped=0,
        objects=[TrackedObject(track_id=1, label="person", class_id=0, score=0.9, box=(x, 0, x + 20, 20))],
    )  # fmt: skip


def event(stream: str, n: int) -> Event:
    return Event(
        event_id=f"trk:{stream}:1:{n}", tracker="trk", stream=stream, event="start" if n == 0 else "update",
        change=None if n == 0 else "zone_enter", zone=None if n == 0 else "porch", track_id=1, label="person",
        class_id=0, frame_id=f"{1_700_000_000_000 + n}-0", seq=n, capture_ts=1_700_000_000.0 + n, score=0.9,
        box=(0, 0, 20, 20), first_seen_ts=1_700_000_000.0, last_seen_ts=1_700_000_000.0 + n, duration_s=n, zones=[],
        best=BestShot(frame_id="1700000000000-0", seq=0, capture_ts=1_700_000_000.0, score=0.9, box=(0, 0, 20, 20)),
        width=640, height=480,
    )  # fmt: skip


def test_the_tracker_followers_start_from_the_newest_tracks_and_events_then_take_every_new_one(
    client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    for seq in range(4):
        client.xadd(keys.tracks("trk", "door"), {FIELD: encode(tracks("door", seq))})
    client.xadd(keys.tracks("trk", "door"), {FIELD: b"junk"})  # malformed: skipped, logged
    # The head start reads the last `trail` (2) entries: the junk and seq 3, whose centre starts the trail.
    client.xadd(keys.tracks("other", "door"), {FIELD: encode(tracks("door", 9, tracker="other"))})  # another tracker
    client.xadd(keys.tracks("trk", "lobby"), {FIELD: encode(tracks("lobby", 0))})  # not among the sink's streams
    for n in range(3):  # the head start keeps the last `events` (2)
        client.xadd(keys.events("trk", "door"), {FIELD: encode(event("door", n))})
    sink = WebSinkConfig(name="view", streams=["door", "g*"], block_ms=100, rescan_s=0.2, tracker="trk", trail=2,
                         events=2)  # fmt: skip
    view, stop = View(window_s=60, history=10, tracker="trk", trail=2, events=2), threading.Event()
    threads = [
        threading.Thread(target=follow_tracker, args=(client, keys, sink, view, stop, stage), daemon=True)
        for stage in ("tracks", "events")
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: [e["event_id"] for e in view.events(10)] == ["trk:door:1:2", "trk:door:1:1"])
    wait_for(lambda: view.tracked("door")[0] is not None)
    shown, trails = view.tracked("door")
    assert shown is not None and shown.seq == 3 and trails == {1: [(40.0, 10.0)]}
    assert view.names() == ["door"]
    time.sleep(0.5)  # the live follow starts after each stream's newest entry, just after the head start
    client.xadd(keys.tracks("trk", "door"), {FIELD: encode(tracks("door", 4))})
    client.xadd(keys.events("trk", "door"), {FIELD: encode(event("door", 3))})
    client.xadd(keys.tracks("trk", "gate"), {FIELD: encode(tracks("gate", 0))})  # a camera that appears later
    client.xadd(keys.events("trk", "gate"), {FIELD: encode(event("gate", 0))})
    wait_for(lambda: len(view.events(10)) == 3 and view.names() == ["door", "gate"])
    wait_for(lambda: (view.tracked("door")[0] or tracks("x", 0)).seq == 4)
    assert view.tracked("door")[1] == {1: [(40.0, 10.0), (50.0, 10.0)]}
    assert [e["event_id"] for e in view.events(10)] == ["trk:door:1:3", "trk:door:1:2", "trk:gate:1:0"]
    assert view.event("door", "trk:door:1:3").zone == "porch"
    stopped = time.monotonic()
    stop.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert time.monotonic() - stopped < 2
