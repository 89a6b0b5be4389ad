"""The MQTT sink against a real broker (Mosquitto on 127.0.0.1:1883 unless STREAMYOLO_MQTT_HOST/PORT say else) and a
real Redis-compatible server: events, retained count states, Home Assistant discovery and availability, a restart
that publishes nothing twice, a broker outage that loses nothing, and the last will of a killed sink."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from common import metrics
from common.config import StackConfig
from common.keys import Keys
from common.service import Bounds, Context, Shutdown
from common.wire import FIELD, BestShot, Event, encode
from sink.mqtt.runner import run
from sink.runner import SinkOptions
from tests.conftest import ROOT
from tests.faults.proxy import Proxy

pytestmark = [pytest.mark.mqtt, pytest.mark.contract]

WAIT_S = 10.0
TRACKER = "people"
HA_KEYS = {"name", "unique_id", "state_topic", "device", "availability_topic"}


@pytest.fixture(autouse=True)
def one_collector_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run registers its reader's lag metrics, once per process in production; these runs share one process."""
    monkeypatch.setattr(metrics, "register", lambda _collector: None)


class Listener:
    """A paho client collecting every message under one topic root, in arrival order."""

    def __init__(self, broker: tuple[str, int], root: str) -> None:
        self.root = root
        self.messages: list[mqtt.MQTTMessage] = []
        self._arrived: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._marker = f"{root}/marker/{uuid.uuid4().hex}"
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{root}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self._arrived.put(msg)
        self.client.connect(*broker)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), f"no SUBACK for {root}/# within {WAIT_S} s"

    def settle(self) -> list[mqtt.MQTTMessage]:
        """Every message so far: a marker published now comes back after whatever the broker had queued for us
        (the retained messages of the subscription included)."""
        self.client.publish(self._marker, b"", qos=1)
        deadline = time.monotonic() + WAIT_S
        while (msg := self._arrived.get(timeout=max(0.01, deadline - time.monotonic()))).topic != self._marker:
            self.messages.append(msg)
        return self.messages

    def wait_for(self, check: Callable[[list[mqtt.MQTTMessage]], bool], what: str) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + WAIT_S
        while not check(self.messages):
            try:
                self.messages.append(self._arrived.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"waited {WAIT_S} s for {what}; got {[(m.topic, m.payload) for m in self.messages]}")
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: tuple[str, int], root: str) -> dict[str, bytes]:
    """topic -> payload of every retained message under ``root``: what a subscriber arriving now is told."""
    late = Listener(broker, root)
    try:
        found = late.settle()
    finally:
        late.close()
    assert all(m.retain for m in found)
    return {m.topic: m.payload for m in found}


@pytest.fixture
def root(broker: tuple[str, int]) -> Iterator[str]:
    """A topic root of its own (topics and discovery under it); its retained messages are cleared afterwards."""
    root = f"streamyolo-test/{uuid.uuid4().hex[:10]}"
    yield root
    cleaner = mqtt.Client(CallbackAPIVersion.VERSION2)
    cleaner.connect(*broker)
    cleaner.loop_start()
    for topic in retained(broker, root):
        cleaner.publish(topic, b"", qos=1, retain=True).wait_for_publish(WAIT_S)
    cleaner.disconnect()
    cleaner.loop_stop()


def event(stream: str, n: int, kind: str = "update", zone: str | None = "door") -> Event:
    ts = 1_700_000_000.0 + n
    return Event(
        event_id=f"{TRACKER}:{stream}:1:{n}", tracker=TRACKER, stream=stream, event=kind,  # type: ignore[arg-type]
        change="zone_enter" if kind == "update" else None, zone=zone if kind == "update" else None, track_id=1,
        label="person", class_id=0, frame_id=f"{int(ts * 1000)}-0", seq=n, capture_ts=ts, score=0.9,
        box=(1.0, 2.0, 30.0, 40.0), first_seen_ts=1_700_000_000.0, last_seen_ts=ts, duration_s=float(n),
        zones=[zone] if zone and kind == "update" else [], width=640, height=480,
        best=BestShot(frame_id="1700000000000-0", seq=0, capture_ts=1_700_000_000.0, score=0.9, box=(1, 2, 30, 40)),
    )  # fmt: skip


def add(client: redis.Redis, keys: Keys, *events: Event) -> None:
    """The events in one transaction, as the tracker publishes a batch: a read sees all or none."""
    pipe = client.pipeline()
    for e in events:
        pipe.xadd(keys.events(TRACKER, e.stream), {FIELD: encode(e)})
    pipe.execute()


def sink_settings(broker: tuple[str, int], root: str, **settings: Any) -> dict[str, Any]:
    return {
        "kind": "mqtt", "name": "ha", "events_of": TRACKER, "host": broker[0], "port": broker[1],
        "topic_prefix": f"{root}/sy", "discovery_prefix": f"{root}/ha", "node_id": "test", "block_ms": 100,
        "rescan_s": 0.2, "timeout_s": 3, "retry_initial_s": 0.1, "retry_max_s": 0.5, **settings,
    }  # fmt: skip


def context(server_url: str, prefix: str, sink: dict[str, Any], bounds: Bounds) -> Context[SinkOptions]:
    config = StackConfig.model_validate({"redis": {"url": server_url}, "streams": {"prefix": prefix},
                                           "sinks": [{"kind": "tracker", "name": TRACKER}, sink]})  # fmt: skip
    return Context(config, SinkOptions("ha", "c1"), Path("stack.yaml"), server_url, Shutdown(), bounds)


def run_sink(ctx: Context[SinkOptions]) -> int:
    return run(ctx, ctx.config.sink("ha"))  # type: ignore[arg-type]


class Running:
    """The sink's run on a thread of its own, until :meth:`stop`."""

    def __init__(self, ctx: Context[SinkOptions]) -> None:
        self.ctx = ctx
        self.rc: list[int] = []
        self.thread = threading.Thread(target=lambda: self.rc.append(run_sink(ctx)), daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.ctx.shutdown.request()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive() and self.rc == [0]
        return self.rc[0]


def events_seen(messages: list[mqtt.MQTTMessage], camera: str, root: str) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in messages if m.topic == f"{root}/sy/{camera}/events"]


def configs(messages: list[mqtt.MQTTMessage], root: str) -> list[mqtt.MQTTMessage]:
    return [m for m in messages if m.topic.startswith(f"{root}/ha/") and m.topic.endswith("/config")]


def states(messages: list[mqtt.MQTTMessage], root: str) -> list[mqtt.MQTTMessage]:
    return [m for m in messages if m.topic.startswith(f"{root}/sy/cam") and not m.topic.endswith("/events")]


def payloads(messages: list[mqtt.MQTTMessage], topic: str) -> list[bytes]:
    """What was published on ``topic`` while listening (not what was retained from before)."""
    return [m.payload for m in messages if m.topic == topic and not m.retain]


def pending(client: redis.Redis, keys: Keys, camera: str) -> int:
    return int(client.xpending(keys.events(TRACKER, camera), keys.sink_group("ha"))["pending"])


COUNTS = {
    "tracks:person": 3,
    "now:*:person": 1,
    "now:door:person": 1,
    "entered:door:person": 2,
    "left:door:person": 1,
    "crossed:gate:in:person": 2,
    "crossed:gate:out:person": 1,
    "now:door:traffic light": 0,
}


def test_events_states_and_sensors_reach_the_broker_and_a_restart_sends_no_event_twice(
    broker: tuple[str, int], root: str, server_url: str, client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    client.hset(keys.counts(TRACKER, "cam1"), mapping=COUNTS)  # type: ignore[arg-type]
    client.hset(keys.counts(TRACKER, "cam2"), mapping={"tracks:car": 1})
    add(client, keys, event("cam1", 0, "start"), event("cam1", 1), event("cam1", 2, "end"), event("cam2", 0, "start"))
    sink = sink_settings(broker, root)
    status = f"{root}/sy/status"

    live = Listener(broker, root)
    try:
        assert run_sink(context(server_url, prefix, sink, Bounds(until_idle_s=1.0))) == 0
        seen = live.settle()
    finally:
        live.close()
    assert events_seen(seen, "cam1", root) == [0, 1, 2] and events_seen(seen, "cam2", root) == [0]
    first = next(m for m in seen if m.topic == f"{root}/sy/cam1/events")
    assert json.loads(first.payload) == event("cam1", 0, "start").model_dump(mode="json") and not first.retain
    assert payloads(seen, status)[0] == b"online" and payloads(seen, status)[-1] == b"offline"
    assert pending(client, keys, "cam1") == pending(client, keys, "cam2") == 0

    kept = retained(broker, root)
    assert kept[status] == b"offline"  # said on leaving: a clean disconnect sends no last will
    states = {t.removeprefix(f"{root}/sy/"): p.decode() for t, p in kept.items() if t.startswith(f"{root}/sy/")}
    assert states == {
        "status": "offline",
        "cam1/tracks/person": "3",
        "cam1/occupancy/*/person": "1",
        "cam1/occupancy/door/person": "1",
        "cam1/occupancy/door/traffic%20light": "0",
        "cam1/entered/door/person": "2",
        "cam1/left/door/person": "1",
        "cam1/crossed/gate/in/person": "2",
        "cam1/crossed/gate/out/person": "1",
        "cam1/occupied/*": "ON",
        "cam1/occupied/door": "ON",
        "cam2/tracks/car": "1",
    }
    configs = {t: json.loads(p) for t, p in kept.items() if t.startswith(f"{root}/ha/")}
    assert len(configs) == len(states) - 1  # a sensor per state
    for topic, cfg in configs.items():
        component, node, oid, last = topic.removeprefix(f"{root}/ha/").split("/")
        assert component in ("sensor", "binary_sensor") and node == "test" and last == "config"
        assert set(cfg) >= HA_KEYS and cfg["unique_id"] == f"test_{oid}" and cfg["availability_topic"] == status
        assert cfg["state_topic"].removeprefix(f"{root}/sy/") in states
        camera = cfg["state_topic"].split("/")[3]
        assert cfg["device"]["identifiers"] == [f"test_{camera}"] and cfg["device"]["name"] == camera
        if component == "sensor":
            occupancy = "/occupancy/" in cfg["state_topic"]
            assert cfg["state_class"] == ("measurement" if occupancy else "total_increasing")

    # A restart: nothing new, so no event goes again (each was acked once the broker confirmed it); the states do,
    # on the new connection.
    live = Listener(broker, root)
    try:
        assert run_sink(context(server_url, prefix, sink, Bounds(until_idle_s=1.0))) == 0
        seen = live.settle()
    finally:
        live.close()
    assert events_seen(seen, "cam1", root) == events_seen(seen, "cam2", root) == []
    assert payloads(seen, f"{root}/sy/cam1/tracks/person") == [b"3"]
    assert payloads(seen, status) == [b"online", b"offline"]

    # One more event, one more publish.
    client.hset(keys.counts(TRACKER, "cam1"), mapping={"now:door:person": 0, "now:*:person": 0})
    add(client, keys, event("cam1", 3, "end"))
    live = Listener(broker, root)
    try:
        assert run_sink(context(server_url, prefix, sink, Bounds(until_idle_s=1.0))) == 0
        seen = live.settle()
    finally:
        live.close()
    assert events_seen(seen, "cam1", root) == [3]
    assert retained(broker, root)[f"{root}/sy/cam1/occupied/door"] == b"OFF"
    assert client.xlen(keys.dead_letters()) == 0


def test_home_assistant_restarting_gets_every_config_again(
    broker: tuple[str, int], root: str, server_url: str, client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    client.hset(keys.counts(TRACKER, "cam1"), mapping={"tracks:person": 1, "now:*:person": 1})
    add(client, keys, event("cam1", 0, "start"))
    live = Listener(broker, root)
    running = Running(context(server_url, prefix, sink_settings(broker, root), Bounds()))
    try:
        live.wait_for(lambda ms: len(configs(ms, root)) == len(states(ms, root)) == 3, "three sensors and their states")
        live.messages.clear()
        live.client.publish(f"{root}/ha/status", b"online", qos=1)  # Home Assistant's birth message
        live.wait_for(lambda ms: len(configs(ms, root)) == 3, "the configs again")
        time.sleep(0.3)
        assert not states(live.settle(), root)  # states are retained: not sent again
    finally:
        running.stop()
        live.close()


def test_a_broker_outage_loses_nothing_and_publishes_nothing_twice(
    broker: tuple[str, int], root: str, server_url: str, client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    status = f"{root}/sy/status"

    def waiting(n: int, what: str) -> None:
        """``n`` events read and not acked, none of them published: the broker confirmed none."""
        time.sleep(2.5)  # beyond timeout_s: the publishes went unconfirmed, reconnection attempts failed meanwhile
        assert events_seen(live.messages, "cam1", root) == list(range(seen)), what
        assert pending(client, keys, "cam1") == n, what

    def published(upto: int) -> None:
        live.wait_for(lambda ms: events_seen(ms, "cam1", root) == list(range(upto)), f"events 0 to {upto - 1}")
        deadline = time.monotonic() + WAIT_S
        while pending(client, keys, "cam1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(client, keys, "cam1") == 0

    with Proxy(broker) as proxy:
        sink = sink_settings(broker, root, port=proxy.port, keepalive_s=5, timeout_s=1)
        live = Listener(broker, root)  # straight to the broker
        add(client, keys, event("cam1", 0, "start"))
        running = Running(context(server_url, prefix, sink, Bounds()))
        try:
            published(1)
            seen = 1
            # A silent network: the connection looks up, but nothing reaches the broker and no PUBACK comes back.
            proxy.cut()
            add(client, keys, event("cam1", 1), event("cam1", 2))
            waiting(2, "through a cut")
            proxy.restore()
            published(3)
            seen = 3
            # The broker gone: the connection reset, new ones refused; the broker publishes the last will.
            proxy.reset()
            live.wait_for(lambda ms: payloads(ms, status)[-1:] == [b"offline"], "the last will")
            add(client, keys, event("cam1", 3, "end"))
            waiting(1, "while refused")
            proxy.restore()
            published(4)
            assert payloads(live.messages, status)[-1] == b"online"
        finally:
            running.stop()
            live.close()
    assert events_seen(live.messages, "cam1", root) == [0, 1, 2, 3]  # each once


def test_a_killed_sink_is_offline_by_its_last_will(
    broker: tuple[str, int], root: str, server_url: str, client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    add(client, keys, event("cam1", 0, "start"))
    config = tmp_path / "stack.yaml"
    sinks = [{"kind": "tracker", "name": TRACKER}, sink_settings(broker, root)]
    config.write_text(yaml.safe_dump({"streams": {"prefix": prefix}, "sinks": sinks}))
    status = f"{root}/sy/status"
    live = Listener(broker, root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sink", "--config", str(config), "--sink", "ha"],
        cwd=ROOT, env={**os.environ, "REDIS_URL": server_url}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        live.wait_for(lambda ms: events_seen(ms, "cam1", root) == [0], "the event, from the sink process")
        assert payloads(live.messages, status) == [b"online"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT_S)
        live.wait_for(lambda ms: payloads(ms, status)[-1:] == [b"offline"], "the last will")
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate(timeout=WAIT_S)[0].decode()
        live.close()
    assert "Traceback" not in out, out
    assert retained(broker, root)[status] == b"offline"
