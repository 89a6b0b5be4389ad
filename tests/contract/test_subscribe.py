"""Subscribing to results against a real server: the Python API, and ``python -m sink tail`` as a real process."""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import connect
from common.wire import FIELD, Detection, Result, Timings, encode
from sink.client.subscribe import subscribe
from tests.conftest import ROOT

pytestmark = [pytest.mark.contract, pytest.mark.timeout(120)]


def result(stream: str, seq: int, label: str = "person", score: float = 0.87) -> Result:
    return Result(
        frame_id=f"{1_700_000_000_000 + seq}-0",
        stream=stream,
        seq=seq,
        capture_ts=1_700_000_000.0 + seq,
        width=640,
        height=480,
        pool="main",
        replica="r1",
        engine="torch",
        device="cpu",
        batch_size=1,
        published_ts=1_700_000_000.1 + seq,
        timings=Timings(queue_ms=1, decode_ms=2, inference_ms=3, postprocess_ms=4, end_to_end_ms=10),
        detections=[Detection(label=label, class_id=0, score=score, box=(10.4, 20.6, 110.0, 220.5))],
    )


def publish(client: redis.Redis, prefix: str, *results: Result) -> None:
    for r in results:
        client.xadd(Keys(prefix).results(r.stream), {FIELD: encode(r)})


class Collector:
    """subscribe() on a thread of its own, with a client of its own named so the test can see it block in XREAD."""

    def __init__(self, server_url: str, prefix: str, **options: Any) -> None:
        self.name = f"{prefix}-sub"
        self.client = redis.Redis.from_url(server_url, client_name=self.name)
        self.stop = threading.Event()
        self.results: queue.Queue[Result] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(prefix, options), daemon=True)
        self.thread.start()

    def _run(self, prefix: str, options: dict[str, Any]) -> None:
        for r in subscribe(self.client, prefix, stop=self.stop, **options):
            self.results.put(r)

    def wait_reading(self, probe: redis.Redis, timeout: float = 10.0) -> None:
        """Until the subscriber blocks in XREAD: its start positions are fixed from then on."""
        deadline = time.monotonic() + timeout
        while not any(c.get("name") == self.name and c.get("cmd") == "xread" for c in probe.client_list()):
            assert time.monotonic() < deadline, "the subscriber never reached XREAD"
            time.sleep(0.02)

    def take(self, n: int, timeout: float = 10.0) -> list[Result]:
        return [self.results.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()
        assert not self.thread.is_alive(), "subscribe() did not end after stop was set"


@contextmanager
def collector(server_url: str, prefix: str, **options: Any) -> Iterator[Collector]:
    options.setdefault("block_ms", 200)
    c = Collector(server_url, prefix, **options)
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------------- the API
def test_yields_only_results_published_after_it_started_in_order_per_stream(
    client: redis.Redis, server_url: str, prefix: str
) -> None:
    publish(client, prefix, result("a", 0), result("b", 0))  # before the start: not to be seen
    with collector(server_url, prefix) as c:
        c.wait_reading(client)
        for seq in range(1, 6):
            publish(client, prefix, result("a", seq), result("b", seq))
        got = c.take(10)
        time.sleep(0.3)
        assert c.results.empty()
    assert [r.seq for r in got if r.stream == "a"] == [1, 2, 3, 4, 5]
    assert [r.seq for r in got if r.stream == "b"] == [1, 2, 3, 4, 5]
    assert got[0] == result(got[0].stream, 1)  # decoded whole
    assert client.xinfo_groups(Keys(prefix).results("a")) == []  # no consumer group: the sinks are not disturbed


def test_from_start_yields_the_results_kept_in_the_stream(client: redis.Redis, server_url: str, prefix: str) -> None:
    publish(client, prefix, *(result("a", seq) for seq in range(3)))
    with collector(server_url, prefix, from_start=True) as c:
        assert [r.seq for r in c.take(3)] == [0, 1, 2]


def test_a_stream_created_later_is_picked_up_from_its_first_result(
    client: redis.Redis, server_url: str, prefix: str
) -> None:
    publish(client, prefix, result("cam-a", 0))
    with collector(server_url, prefix, streams=["cam-*"], rescan_s=0.1) as c:
        c.wait_reading(client)
        publish(client, prefix, result("other", 1))  # matches no pattern
        publish(client, prefix, result("cam-new", 1), result("cam-new", 2))
        got = c.take(2)
        time.sleep(0.5)
        assert c.results.empty()
    assert [(r.stream, r.seq) for r in got] == [("cam-new", 1), ("cam-new", 2)]


def test_a_malformed_entry_is_skipped_with_a_warning_and_left_alone(
    client: redis.Redis, server_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = Keys(prefix).results("a")
    publish(client, prefix, result("a", 0))
    with caplog.at_level(logging.WARNING, logger="sink.client.subscribe"), collector(server_url, prefix) as c:
        c.wait_reading(client)
        publish(client, prefix, result("a", 1))
        garbage = client.xadd(key, {FIELD: b"\xc1 not msgpack"}).decode()
        no_field = client.xadd(key, {"other": b"x"}).decode()
        publish(client, prefix, result("a", 2))
        assert [r.seq for r in c.take(2)] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert key in warnings[0] and garbage in warnings[0]
    assert key in warnings[1] and no_field in warnings[1]
    assert client.xlen(key) == 5  # still there: a reader never deletes
    assert not client.exists(Keys(prefix).dead_letters())  # nor dead-letters


@pytest.mark.parametrize("with_stream", [True, False], ids=["reading", "waiting-for-streams"])
def test_setting_stop_ends_the_iterator_within_block_ms(
    client: redis.Redis, server_url: str, prefix: str, with_stream: bool
) -> None:
    if with_stream:
        publish(client, prefix, result("a", 0))
    c = Collector(server_url, prefix, block_ms=300)
    if with_stream:
        c.wait_reading(client)
    else:
        time.sleep(0.2)
    started = time.monotonic()
    c.close()
    assert time.monotonic() - started < 1.5


def test_stop_is_honoured_between_results_of_one_read(client: redis.Redis, server_url: str, prefix: str) -> None:
    publish(client, prefix, *(result("a", seq) for seq in range(5)))
    stop = threading.Event()
    seen = []
    with connect(server_url) as reader:
        for r in subscribe(reader, prefix, from_start=True, stop=stop, block_ms=200):
            seen.append(r.seq)
            stop.set()
    assert seen == [0]


# ---------------------------------------------------------------------------------------------------- the CLI
def tail(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sink", "tail", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"tail did not finish in {timeout:g} s; stdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, err
    return out, err


def test_tail_json_prints_exactly_count_results_one_json_object_a_line(
    client: redis.Redis, server_url: str, prefix: str
) -> None:
    published = [result("cam1", seq) for seq in range(4)]
    publish(client, prefix, *published)
    out, _ = finish(tail("--json", "--from-start", "--count", "3", "--redis-url", server_url, "--prefix", prefix))
    lines = out.splitlines()
    assert len(lines) == 3
    assert [Result.model_validate(json.loads(line)) for line in lines] == published[:3]


def test_tail_prints_results_published_while_it_runs(client: redis.Redis, server_url: str, prefix: str) -> None:
    publish(client, prefix, result("cam1", 0))
    proc = tail("--json", "--count", "3", "--redis-url", server_url, "--prefix", prefix)
    seq = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # it prints only what comes once it is reading
        seq += 1
        publish(client, prefix, result("cam1", seq))
        time.sleep(0.05)
    out, _ = finish(proc)
    seqs = [Result.model_validate_json(line).seq for line in out.splitlines()]
    assert len(seqs) == 3
    assert seqs[0] >= 1
    assert seqs == list(range(seqs[0], seqs[0] + 3))


def test_tail_readable_line_shows_the_stream_label_and_score(client: redis.Redis, server_url: str, prefix: str) -> None:
    publish(client, prefix, result("door-cam", 5, label="bicycle", score=0.87))
    out, _ = finish(tail("--from-start", "--count", "1", "--redis-url", server_url, "--prefix", prefix))
    lines = out.splitlines()
    assert len(lines) == 1
    assert "door-cam" in lines[0] and "#5" in lines[0]
    assert "bicycle 0.87 [10, 21, 110, 220]" in lines[0]
    assert "10 ms" in lines[0]


def test_tail_exits_with_0_on_ctrl_c(client: redis.Redis, server_url: str, prefix: str) -> None:
    proc = tail("--json", "--redis-url", server_url, "--prefix", prefix)
    assert proc.stdout is not None
    seq, deadline = 0, time.monotonic() + 60
    while proc.poll() is None and not select.select([proc.stdout], [], [], 0.1)[0]:  # printed: it is reading
        assert time.monotonic() < deadline, "tail printed nothing"
        seq += 1
        publish(client, prefix, result("cam1", seq))
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, timeout=20)
    assert "Traceback" not in err


def clean_env(tmp: Path) -> dict[str, str]:
    """No REDIS_URL, and a runtime folder where no embedded server runs."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["XDG_RUNTIME_DIR"] = str(tmp)
    return env


def test_tail_without_any_redis_says_which_flag_or_variable_to_set(tmp_path: Path, prefix: str) -> None:
    proc = tail("--prefix", prefix, env=clean_env(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out == ""
    assert "--redis-url" in err and "REDIS_URL" in err and "redis.url" in err


def test_tail_with_a_config_finds_the_stacks_running_embedded_server(
    tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> None:
    folder = tmp_path_factory.mktemp("emb")
    config = folder / "stack.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {folder}}}}}
        streams: {{prefix: {prefix}}}
        """)
    )
    with EmbeddedServer(folder / f"{prefix}.sock") as server, connect(server.url) as c:
        publish(c, prefix, result("cam1", 0), result("cam1", 1))
        out, _ = finish(tail("--json", "--from-start", "--count", "2", "--config", str(config), env=clean_env(folder)))
    assert [Result.model_validate_json(line).seq for line in out.splitlines()] == [0, 1]
