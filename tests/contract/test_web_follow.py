"""The web view's follower against a real server: a head start from each stream's newest result, then every new
result, and a prompt stop; and the launcher never waits on a web view (it has no consumer group)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from common.config import parse_config
from common.keys import Keys
from common.stack.launcher import backlog
from common.wire import FIELD, Result, Timings, encode
from sink.web import WebSinkConfig
from sink.web.runner import follow
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
