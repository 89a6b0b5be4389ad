"""The sinks as real processes on a real embedded server: stores (SQLite, JSONL, PostgreSQL where one runs) and an
alert sink (webhook, log, snapshot, MQTT where a broker runs). A redelivered batch is stored and alerted once; an
alert raised while its webhook is down waits and is delivered when it comes back, and storage does not wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.wire import FIELD, Alert, Detection, Frame, Result, Timings, encode
from sink.stores.sqlite import SqliteStore
from tests.conftest import ROOT, free_port, reachable
from tests.servers.webhook import Hook

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "sinks"
MQTT_HOST = os.environ.get("STREAMYOLO_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("STREAMYOLO_MQTT_PORT", "1883"))


def push_frames_and_results(client: Client, labels: list[list[tuple[str, float]]]) -> list[Result]:
    """One real JPEG frame per entry of ``labels`` on the frames stream, and a result for it naming its id."""
    keys = Keys(PREFIX)
    out = []
    for seq, dets in enumerate(labels):
        image = np.full((240, 320, 3), 60, np.uint8)
        cv2.rectangle(image, (100, 60), (220, 180), (0, 200, 0), -1)
        frame = Frame(
            stream="cam", seq=seq, capture_ts=time.time(), width=640, height=480, encoding="jpeg",
            image_width=320, image_height=240, data=cv2.imencode(".jpg", image)[1].tobytes(),
        )  # fmt: skip
        frame_id = client.xadd(keys.frames("cam"), {FIELD: encode(frame)}).decode()
        result = Result(
            frame_id=frame_id, stream="cam", seq=seq, capture_ts=frame.capture_ts, width=640, height=480,
            pool="main", replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=time.time(),
            timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=9),
            detections=[Detection(label=label, class_id=0, score=score, box=(200, 120, 440, 360))
                        for label, score in dets],
        )  # fmt: skip
        client.xadd(keys.results("cam"), {FIELD: encode(result)})
        out.append(result)
    return out


def write_config(tmp: Path, hook_url: str, *, pg_url: str | None, mqtt_prefix: str | None) -> Path:
    quick = {"block_ms": 300}
    sinks: list[dict[str, object]] = [
        {"kind": "sqlite", "name": "db", "path": "results.db", **quick},
        {"kind": "jsonl", "name": "lines", "path": "results.jsonl", **quick},
    ]
    if pg_url:
        sinks.append({"kind": "postgres", "name": "pg", "url": pg_url, **quick})
    actions: dict[str, dict[str, object]] = {
        "hook": {"kind": "webhook", "url": hook_url, "timeout_s": 1},
        "say": {"kind": "log"},
        "shot": {"kind": "snapshot", "folder": "snapshots"},
    }
    if mqtt_prefix:
        actions["broker"] = {"kind": "mqtt", "host": MQTT_HOST, "port": MQTT_PORT, "topic_prefix": mqtt_prefix}
    rule = {
        "name": "person-in-door", "labels": ["person"], "min_score": 0.5, "cooldown_s": 0, "actions": list(actions),
        "zone": [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]],
    }  # fmt: skip
    sinks.append({
        "kind": "alert", "name": "watch", "rules": [rule], "actions": actions, "retry_initial_s": 0.2,
        "retry_max_s": 1, **quick,
    })  # fmt: skip
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump({"streams": {"prefix": PREFIX}, "sinks": sinks}, sort_keys=False))
    return path


def sink(config: Path, url: str, name: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sink", "--config", str(config), "--sink", name, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_stores_and_alerts_hold_once_each_through_a_redelivery(tmp_path: Path, pg_url: str | None) -> None:
    mqtt_prefix = f"streamyolo-test-{uuid.uuid4().hex[:8]}" if reachable(MQTT_HOST, MQTT_PORT) else None
    hook = Hook().start()
    config = write_config(tmp_path, hook.url, pg_url=pg_url, mqtt_prefix=mqtt_prefix)
    names = ["db", "lines", "watch"] + (["pg"] if pg_url else [])
    keys = Keys(PREFIX)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        client = connect(server.url)
        # person in the zone (alert on), person again (still on: nothing), a cat (person gone: off), and two
        # results no sink can read.
        results = push_frames_and_results(client, [[("person", 0.9)], [("person", 0.8)], [("cat", 0.7)]])
        client.xadd(keys.results("cam"), {FIELD: b"\x00 not msgpack"})
        client.xadd(keys.results("cam"), {FIELD: encode(results[0]).replace(b"\xa1v\x01", b"\xa1v\x09")})
        entries = len(results) + 2
        logs: dict[str, dict[str, str]] = {}
        for attempt in ("first", "redelivered"):
            logs[attempt] = {n: finish(sink(config, server.url, n, "--max-frames", str(entries))) for n in names}
            assert "Traceback" not in "".join(logs[attempt].values()), logs[attempt]
            if attempt == "first":
                for n in names:  # every entry again, as after a crash before the acks: at-least-once delivery
                    client.xgroup_setid(keys.results("cam"), keys.sink_group(n), "0")
        # Stores: one row per result, detections kept, however often delivered.
        db = SqliteStore.open(tmp_path / "results.db")
        stored = db.detections(stream="cam")
        assert [(d.seq, d.label) for d in stored] == [(0, "person"), (1, "person"), (2, "cat")]
        assert stored[0].box == pytest.approx((200, 120, 440, 360))
        assert [d.label for d in db.detections(label="cat")] == ["cat"]
        db.close()
        lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
        assert [r["seq"] for r in lines] == [0, 1, 2]
        if pg_url:
            from sink.stores.postgres import PostgresStore

            pg = PostgresStore.open(pg_url)
            assert [(d.seq, d.label) for d in pg.detections(stream="cam")] == [(0, "person"), (1, "person"), (2, "cat")]
            pg.close()
        # Alerts: on at frame 0, off at frame 2, each once, through every action.
        raised = [Alert.model_validate(b) for b in hook.bodies]
        assert [(a.state, a.seq, a.rule, a.label) for a in raised] == [
            ("on", 0, "person-in-door", "person"), ("off", 2, "person-in-door", "person"),
        ]  # fmt: skip
        assert raised[0].frame_id == results[0].frame_id
        assert client.xlen(keys.alerts("watch")) == 2
        shots = list((tmp_path / "snapshots" / "cam").glob("*.jpg"))
        assert len(shots) == 1 and results[0].frame_id in shots[0].name
        assert cv2.imread(str(shots[0])).shape == (240, 320, 3)
        # The log action's logger ("sink.alerts"), not its package's modules' loggers (sink.alerts.runner...).
        said = [line for line in logs["first"]["watch"].splitlines() if " sink.alerts: " in line]
        assert len(said) == 2 and all("person-in-door" in line for line in said), said
        assert "stored 3 new results" in logs["first"]["db"] and "stored 0 new results" in logs["redelivered"]["db"]
        # The two unreadable results: dead-lettered by each sink, with the reason; nothing left pending.
        reasons = [f[b"reason"].decode() for _, f in client.xrange(keys.dead_letters())]
        assert len(reasons) == 2 * len(names) * 2, reasons  # each sink, each attempt
        assert all(r.startswith("WireError: ") for r in reasons)
        assert any("unknown message version 9" in r for r in reasons)
        for n in names:
            assert client.xpending(keys.results("cam"), keys.sink_group(n))["pending"] == 0
        if mqtt_prefix:
            assert_mqtt_state(mqtt_prefix, "off")
        client.close()
    hook.stop()


def assert_mqtt_state(prefix: str, expected: str) -> None:
    """A fresh subscriber gets the retained state of the rule's stream and label."""
    import paho.mqtt.client as mqtt

    got: list[bytes | bytearray] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.connect(MQTT_HOST, MQTT_PORT)
    sub.subscribe(f"{prefix}/cam/person/state", qos=1)
    sub.loop_start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.1)
    sub.publish(f"{prefix}/cam/person/state", b"", qos=1, retain=True).wait_for_publish(5)  # clear it
    sub.loop_stop()
    sub.disconnect()
    assert got and json.loads(got[0])["state"] == expected


def test_an_alert_waits_for_its_webhook_and_storage_does_not(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: the webhook is down
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/alerts", pg_url=None, mqtt_prefix=None)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        client = connect(server.url)
        push_frames_and_results(client, [[("person", 0.9)]])
        alerts = sink(config, server.url, "watch", "--duration", "60")
        store = sink(config, server.url, "db", "--max-frames", "1")
        finish(store)  # stored while the alert is still undelivered
        db = SqliteStore.open(tmp_path / "results.db")
        assert len(db.detections()) == 1
        db.close()
        time.sleep(2)  # a few failed deliveries, backing off
        hook = Hook(port).start()
        deadline = time.monotonic() + 30
        while not hook.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        alerts.terminate()
        log = finish(alerts)
        hook.stop()
        assert [Alert.model_validate(b).state for b in hook.bodies] == ["on"]
        assert "retrying in" in log
        assert client.xpending(Keys(PREFIX).alerts("watch"), Keys(PREFIX).action_group("hook"))["pending"] == 0
        client.close()
