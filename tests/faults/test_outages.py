"""Outages outside Redis: a camera dies and comes back; a sink's target (PostgreSQL, an MQTT broker, a webhook)
goes away and comes back. Nothing is lost.

The camera case runs the whole stack on a real MJPEG camera and ends with the ledger. The sink cases feed results
(a person in every other one, so that each result raises an alert) onto a real server at a steady rate and run
the sink as a real process against the real target, reached through the test's proxy or stopped and started.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.wire import FIELD, Alert, Detection, Frame, Result, Timings, decode, encode
from tests.conftest import reachable
from tests.faults.conftest import Record
from tests.faults.proxy import Proxy
from tests.faults.stack import (
    jsonl_rows,
    ledger,
    problems,
    processes,
    published,
    redeliveries,
    settle,
    terminate,
    totals,
    wait_for,
    write_config,
)
from tests.servers.mjpeg import MjpegCamera
from tests.servers.webhook import Hook

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "out"
KEYS = Keys(PREFIX)
PG_URL = os.environ.get("STREAMYOLO_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(PG_URL)
MQTT_HOST = os.environ.get("STREAMYOLO_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("STREAMYOLO_MQTT_PORT", "1883"))
QUICK = {"STREAMYOLO__INGEST__RETRY_INITIAL_S": "0.2", "STREAMYOLO__INGEST__RETRY_MAX_S": "1",
         "STREAMYOLO__INGEST__STATS_INTERVAL_S": "1"}  # fmt: skip
"""Ingest reopens a dead source after 0.2 s, then at most every second."""


# ------------------------------------------------------------------------------------------------ the camera
def test_a_camera_dying_and_coming_back_loses_no_frame_it_sent(tmp_path: Path, record: Record) -> None:
    cam = MjpegCamera(fps=8).start()
    source = {"kind": "http", "url": cam.url, "open_timeout_s": 2, "read_timeout_s": 2}
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    config = write_config(tmp_path / "stack.yaml", PREFIX, [{"name": "cam", "source": source}],
                          {"max_age_ms": None}, [sink])  # fmt: skip

    def stored() -> int:
        return len(jsonl_rows(tmp_path / "results.jsonl"))

    try:
        with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url, **QUICK) as procs:
            client = connect(server.url)
            procs.start("detector", "detector", "--replica", "main-0")
            procs.start("sink", "sink")
            procs.start("ingest", "ingest")
            wait_for("results stored", lambda: stored() >= 10, 90)
            down_at = time.time()
            cam.stop()  # the camera dies: its listener closes, its clients are cut off
            time.sleep(4)
            up_at = time.time()
            cam.start()  # back on the same address
            wait_for("results of frames captured since", lambda: captured_after(tmp_path, up_at), 30)
            time.sleep(1)
            terminate(procs, "ingest")
            settle(client, PREFIX, procs, stored)
            terminate(procs, "detector", "sink")
            book = ledger(client, PREFIX, published(procs.log("ingest")))
            frames: Any = client.xrange(KEYS.frames("cam"))
            client.close()
    finally:
        cam.stop()

    assert problems(book, redeliveries([procs.log("detector")])) == []
    rows = jsonl_rows(tmp_path / "results.jsonl")
    assert len({r["seq"] for r in rows}) == len(rows) == totals(book)["answered"]  # each stored once
    captured = sorted(decode(f[b"msg"], Frame).capture_ts for _, f in frames)
    before, after = [t for t in captured if t < down_at], [t for t in captured if t > up_at]
    assert before and after, "frames from before and after the outage"
    assert not [t for t in captured if down_at + 0.5 < t < up_at - 0.5], "frames from a dead camera?"
    gap = max(b - a for a, b in itertools.pairwise(captured))
    # Reopened within the back-off's longest wait (1 s) plus an open, once the camera is back.
    assert gap <= (up_at - down_at) + 2.5, gap
    counters = re.findall(r"camera cam: read \d+, .*reconnects (\d+)", procs.log("ingest"))
    assert counters and int(counters[-1]) >= 1, procs.tail("ingest")
    record(frames=totals(book), down_s=round(up_at - down_at, 2), gap_s=round(gap, 2),
           back_after_s=round(after[0] - up_at, 2), reconnects=int(counters[-1]))  # fmt: skip


def captured_after(tmp_path: Path, since: float) -> bool:
    return any(r["capture_ts"] > since for r in jsonl_rows(tmp_path / "results.jsonl"))


# ------------------------------------------------------------------------------------------------ the sinks
class Feeder:
    """Pushes results onto the results streams at a steady rate, on a thread: a person in the middle of every
    other frame, so that with the rule below each result turns the alert on or off."""

    def __init__(self, client: Client, streams: list[str], per_s: float) -> None:
        self.client = client
        self.streams = streams
        self.every_s = 1 / per_s
        self.pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for seq in itertools.count():
            for stream in self.streams:
                self.client.xadd(KEYS.results(stream), {FIELD: encode(result(stream, seq))})
            self.pushed = seq + 1
            if self._stop.wait(self.every_s):
                return


def result(stream: str, seq: int) -> Result:
    now = time.time()
    dets = [Detection(label="person", class_id=0, score=0.9, box=(280, 200, 360, 280))] if seq % 2 == 0 else []
    return Result(
        frame_id=f"{int(now * 1000)}-{seq}", stream=stream, seq=seq, capture_ts=now, width=640, height=480,
        pool="main", replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=now,
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=9), detections=dets,
    )  # fmt: skip


def results_in_redis(client: Client, streams: list[str]) -> set[tuple[str, str]]:
    entries: list[Any] = [client.xrange(KEYS.results(s)) for s in streams]
    return {(r.stream, r.frame_id) for e in entries for _, f in e for r in [decode(f[b"msg"], Result)]}


def alerts_in_redis(client: Client) -> list[Alert]:
    entries: Any = client.xrange(KEYS.alerts("watch"))
    return [decode(f[b"msg"], Alert) for _, f in entries]


def idle(client: Client, key: str, group: str) -> bool:
    """The group has read everything of ``key`` and acked it."""
    info = {g["name"].decode(): g for g in client.xinfo_groups(key)}.get(group)
    return info is not None and info["pending"] == 0 and info["lag"] == 0


def all_delivered(client: Client, arrived: int) -> bool:
    """Every result read and every alert raised from it handed to the action, and as many arrivals."""
    return (
        idle(client, KEYS.results("cam"), KEYS.sink_group("watch"))
        and idle(client, KEYS.alerts("watch"), KEYS.action_group("out"))
        and arrived >= len(alerts_in_redis(client))
    )


def alert_config(tmp_path: Path, action: dict[str, Any]) -> Path:
    rule = {"name": "person", "labels": ["person"], "min_score": 0.5, "cooldown_s": 0, "actions": ["out"]}
    sink = {"kind": "alert", "name": "watch", "rules": [rule], "actions": {"out": action}, "retry_initial_s": 0.2,
            "retry_max_s": 1}  # fmt: skip
    return write_config(tmp_path / "stack.yaml", PREFIX, [], {}, [sink])


def delivered(alerts: list[Alert], got: list[Alert]) -> dict[str, int]:
    """Every raised alert arrived (at least once), and nothing else did; how many, and how many twice."""
    key = lambda a: (a.stream, a.label, a.state, a.frame_id)  # noqa: E731
    raised, arrived = Counter(map(key, alerts)), Counter(map(key, got))
    assert len(raised) == len(alerts), "an alert raised twice"
    assert set(arrived) == set(raised), (f"missing {len(set(raised) - set(arrived))}, "
                                         f"unknown {len(set(arrived) - set(raised))}")  # fmt: skip
    return {"alerts": len(raised), "deliveries": len(got), "twice": sum(n - 1 for n in arrived.values())}


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A database of its own on the PostgreSQL server; its name."""
    if not reachable(PG.hostname or "127.0.0.1", PG.port or 5432):
        pytest.skip(f"no PostgreSQL server at {PG.hostname}:{PG.port}")
    import psycopg

    name = f"streamyolo_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_postgres_going_away_and_back_stores_every_result_once(
    tmp_path: Path, pg_database: str, record: Record
) -> None:
    import psycopg

    direct = PG._replace(path=f"/{pg_database}").geturl()
    streams = ["a", "b"]
    with EmbeddedServer(tmp_path / "r.sock") as server, Proxy((PG.hostname or "127.0.0.1", PG.port or 5432)) as proxy:
        user = f"{PG.username}@" if PG.username else ""
        via_proxy = PG._replace(netloc=f"{user}127.0.0.1:{proxy.port}", path=f"/{pg_database}").geturl()
        sink = {"kind": "postgres", "name": "pg", "url": via_proxy, "connect_timeout_s": 2, "batch": 10}
        config = write_config(tmp_path / "stack.yaml", PREFIX, [], {}, [sink])
        client = connect(server.url)
        feeder = Feeder(client, streams, per_s=20).start()
        db = psycopg.connect(direct, autocommit=True)

        def rows() -> tuple[int, int, int]:
            """Rows, distinct (stream, frame_id), and the highest seq stored."""
            found = db.execute("SELECT count(*), count(DISTINCT (stream, frame_id)), max(seq) FROM results")
            count, distinct, top = found.fetchone() or (0, 0, None)
            return int(count), int(distinct), -1 if top is None else int(top)

        with processes(tmp_path, config, server.url) as procs:
            procs.start("sink", "sink", "--sink", "pg")
            wait_for("rows stored", lambda: rows_ready(db) and rows()[0] > 40, 60)
            proxy.reset()  # the database goes away: connections reset, new ones refused
            time.sleep(5)
            seq_at_restore = feeder.pushed
            proxy.restore()
            resume_s = wait_for("rows stored again", lambda: rows()[2] >= seq_at_restore, 30)
            time.sleep(1)
            feeder.stop()
            expected = results_in_redis(client, streams)
            wait_for("every result stored", lambda: rows()[1] >= len(expected), 30)
            terminate(procs, "sink")
        stored = {(s, f) for s, f in db.execute("SELECT stream, frame_id FROM results")}
        count, distinct, _ = rows()
        db.close()
        pending = [g for s in streams for g in [KEYS.results(s)] if not idle(client, g, KEYS.sink_group("pg"))]
        client.close()

    assert stored == expected and count == distinct == len(expected)  # each result once, none missing
    assert not pending, pending
    errors = len(re.findall(r"storing \d+ results failed", procs.log("sink")))
    assert errors > 0, procs.tail("sink")  # the outage was seen
    record(results=len(expected), rows=count, storing_errors=errors, resume_s=round(resume_s, 2))


def rows_ready(db: Any) -> bool:
    """The sink created its tables."""
    return db.execute("SELECT to_regclass('results') IS NOT NULL").fetchone()[0] is True


@pytest.mark.mqtt
@pytest.mark.skipif(not reachable(MQTT_HOST, MQTT_PORT), reason=f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT}")
def test_an_mqtt_broker_cut_off_and_back_gets_every_alert(tmp_path: Path, record: Record) -> None:
    import paho.mqtt.client as mqtt

    topics = f"streamyolo-faults-{uuid.uuid4().hex[:8]}"
    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: got.append((msg.topic, bytes(msg.payload)))
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(MQTT_HOST, MQTT_PORT)
    sub.subscribe(f"{topics}/#", qos=1)  # straight to the broker, around the proxy
    sub.loop_start()
    assert subscribed.wait(10)

    def alerts_got() -> list[Alert]:
        return [Alert.model_validate(json.loads(p)) for t, p in list(got) if not t.endswith("/state") and p]

    with EmbeddedServer(tmp_path / "r.sock") as server, Proxy((MQTT_HOST, MQTT_PORT)) as proxy:
        action = {"kind": "mqtt", "host": "127.0.0.1", "port": proxy.port, "topic_prefix": topics, "qos": 1,
                  "timeout_s": 1}  # fmt: skip
        config = alert_config(tmp_path, action)
        client = connect(server.url)
        feeder = Feeder(client, ["cam"], per_s=10).start()
        with processes(tmp_path, config, server.url) as procs:
            procs.start("sink", "sink", "--sink", "watch")
            wait_for("alerts delivered", lambda: len(alerts_got()) > 20, 60)
            proxy.cut()  # the broker stops answering: publishes are never confirmed
            time.sleep(5)
            seq_at_restore = feeder.pushed
            proxy.restore()
            resume_s = wait_for("alerts delivered again",
                                lambda: any(a.seq >= seq_at_restore for a in alerts_got()), 30)  # fmt: skip
            time.sleep(1)
            feeder.stop()
            wait_for("every alert raised and delivered", lambda: all_delivered(client, len(alerts_got())), 30)
            terminate(procs, "sink")
        raised = alerts_in_redis(client)
        left = idle(client, KEYS.results("cam"), KEYS.sink_group("watch"))
        client.close()
    time.sleep(0.5)  # a late duplicate, if any, counts too
    sub.publish(f"{topics}/cam/person/state", b"", qos=1, retain=True).wait_for_publish(5)  # no retained leftovers
    sub.loop_stop()
    sub.disconnect()

    assert left
    counts = delivered(raised, alerts_got())
    assert counts["alerts"] == feeder.pushed  # every result turned the alert on or off
    retries = len(re.findall(r"action out: .*retrying in", procs.log("sink")))
    assert retries > 0, procs.tail("sink")
    # QoS 1 is at least once: a publish whose PUBACK the cut swallowed is sent again.
    record(**counts, delivery_retries=retries, resume_s=round(resume_s, 2), semantics="at least once")


def test_a_webhook_down_and_back_gets_every_alert(tmp_path: Path, record: Record) -> None:
    hook = Hook().start()
    config = alert_config(tmp_path, {"kind": "webhook", "url": hook.url, "timeout_s": 1})
    try:
        with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url) as procs:
            client = connect(server.url)
            feeder = Feeder(client, ["cam"], per_s=10).start()
            procs.start("sink", "sink", "--sink", "watch")
            wait_for("alerts delivered", lambda: len(hook.bodies) > 20, 60)
            hook.stop()  # the endpoint goes away: connections refused
            time.sleep(4)
            seq_at_restart = feeder.pushed
            hook.start()
            resume_s = wait_for("alerts delivered again",
                                lambda: any(b["seq"] >= seq_at_restart for b in list(hook.bodies)), 30)  # fmt: skip
            time.sleep(1)
            feeder.stop()
            wait_for("every alert raised and delivered", lambda: all_delivered(client, len(hook.bodies)), 30)
            terminate(procs, "sink")
            raised = alerts_in_redis(client)
            left = idle(client, KEYS.results("cam"), KEYS.sink_group("watch"))
            client.close()
    finally:
        hook.stop()

    assert left
    counts = delivered(raised, [Alert.model_validate(b) for b in hook.bodies])
    assert counts["alerts"] == feeder.pushed
    retries = len(re.findall(r"action out: .*retrying in", procs.log("sink")))
    assert retries > 0, procs.tail("sink")
    record(**counts, delivery_retries=retries, resume_s=round(resume_s, 2))
