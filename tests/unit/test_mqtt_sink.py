"""The MQTT sink without a broker: its settings, topic encoding and object ids, the messages it builds (events,
count states, Home Assistant discovery configs), and its acking, over a real GroupReader on fakeredis and a broker
stand-in that hands every message to paho (which refuses what no broker would take) and confirms as told."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import fakeredis
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from common.config import StackConfig
from common.keys import Keys
from common.redis_io import GroupReader, group_reader
from common.wire import BestShot, Event, encode
from sink.mqtt import MqttSinkConfig
from sink.mqtt.discovery import Count, Layout, Message, object_id, parse_counts, topic_level
from sink.mqtt.runner import BrokerError, Forwarder

KEYS = Keys("f")
TRACKER = "people"


def config(**settings: Any) -> MqttSinkConfig:
    return MqttSinkConfig(name="ha", events_of=TRACKER, **settings)


# ------------------------------------------------------------------------------------------------ settings
def test_the_sink_kind_is_in_the_config() -> None:
    stack = StackConfig.model_validate(
        {"sinks": [{"kind": "tracker", "name": "people"}, {"kind": "mqtt", "name": "ha", "events_of": "people"}]}
    )
    sink = stack.sink("ha")
    assert isinstance(sink, MqttSinkConfig)
    assert (sink.topic_prefix, sink.discovery_prefix, sink.qos, sink.discovery) == (
        "streamyolo", "homeassistant", 1, True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"topic_prefix": "a/#"}, "topic_prefix"),
        ({"topic_prefix": "a/"}, "topic_prefix"),
        ({"discovery_prefix": "+"}, "discovery_prefix"),
        ({"node_id": "my node"}, "node_id"),
        ({"qos": 0}, "qos"),
        ({"tls_ca_file": "ca.pem"}, "without tls: true"),
        ({"tls": True, "tls_cert_file": "c.pem"}, "needs both tls_cert_file and tls_key_file"),
        ({"counts": []}, "counts"),
        ({"counts": ["speed"]}, "counts"),
        ({"events_of": "a:b"}, "events_of"),
    ],
)
def test_bad_settings_are_refused_saying_which(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MqttSinkConfig.model_validate({"name": "ha", "events_of": TRACKER, **settings})


# ------------------------------------------------------------------------------------------------ naming
@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("person", "person"),
        ("traffic light", "traffic%20light"),
        ("a/b", "a%2Fb"),
        ("a+b#c", "a%2Bb%23c"),
        ("100%", "100%25"),
        ("tab\there", "tab%09here"),
        ("*", "*"),
        ("front-door_2.b", "front-door_2.b"),
        ("café", "café"),
    ],
)
def test_a_name_becomes_one_topic_level(name: str, level: str) -> None:
    assert topic_level(name) == level
    assert unquote(level) == name  # reversible


def test_topic_levels_are_one_to_one() -> None:
    names = ["a b", "a%20b", "a_b", "a/b", "a%2Fb", "a+b", "a#b", "a\nb", "a\u00a0b", "a b "]
    levels = [topic_level(n) for n in names]
    assert len(set(levels)) == len(names)
    assert not any(c in level for level in levels for c in "/+# \n\u00a0")


def test_object_ids_are_safe_readable_unique_and_stable() -> None:
    ids = [object_id("cam1", "occupancy", *parts) for parts in (["*", "person"], ["_", "person"], ["door", "a b"],
           ["door", "a_b"], ["door", "a/b"], ["door_a", "b"], ["door", "a", "b"])]  # fmt: skip
    assert len(set(ids)) == len(ids)
    assert all(i and all(c.isascii() and (c.isalnum() or c in "_-") for c in i) for i in ids)
    assert ids[2].startswith("cam1_occupancy_door_a_b_")
    # The same parts give the same id in every process and release: Home Assistant keys its entities on it.
    assert object_id("cam1", "occupancy", "door", "person") == "cam1_occupancy_door_person_dbc8767668"


# ------------------------------------------------------------------------------------------------ counts
def test_the_counts_hash_is_parsed_and_malformed_fields_are_named() -> None:
    counts, problems = parse_counts(
        {
            "tracks:person": b"7",
            "entered:door:person": b"3",
            "left:door:traffic light": b"2",
            "now:*:person": b"1",
            "crossed:gate:in:car": b"4",
            "crossed:gate:sideways:car": b"1",
            "now:door": b"1",
            "speed:car": b"3",
            "now:door:dog": b"many",
            "now:door:cat": b"-1",
            "entered::person": b"1",
        }
    )
    assert sorted(counts, key=repr) == sorted(
        [
            Count("tracks", "person", 7),
            Count("entered", "person", 3, "door"),
            Count("left", "traffic light", 2, "door"),
            Count("occupancy", "person", 1, "*"),
            Count("crossed", "car", 4, "gate", "in"),
        ],
        key=repr,
    )
    assert len(problems) == 6
    assert any("sideways" in p for p in problems) and any("'now:door:dog'" in p for p in problems)


# ------------------------------------------------------------------------------------------------ the forwarder
def event(stream: str = "cam1", n: int = 0, label: str = "person", tracker: str = TRACKER) -> Event:
    ts = 1_700_000_000.0 + n
    return Event(
        event_id=f"{tracker}:{stream}:1:{n}", tracker=tracker, stream=stream, event="start" if n == 0 else "update",
        change=None if n == 0 else "zone_enter", zone=None if n == 0 else "door", track_id=1, label=label, class_id=0,
        frame_id=f"{int(ts * 1000)}-0", seq=n, capture_ts=ts, score=0.9, box=(1.0, 2.0, 30.0, 40.0),
        first_seen_ts=1_700_000_000.0, last_seen_ts=ts, duration_s=float(n), zones=[] if n == 0 else ["door"],
        best=BestShot(frame_id="1700000000000-0", seq=0, capture_ts=1_700_000_000.0, score=0.9, box=(1, 2, 30, 40)),
        width=640, height=480,
    )  # fmt: skip


class FakeBroker:
    """Hands each message to an unconnected paho client (which refuses what no broker would take), records it,
    and confirms, of each publish, as many as the next number of ``script`` says (all once it is empty)."""

    def __init__(self) -> None:
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.sent: list[Message] = []
        self.script: list[int] = []
        self.down = False
        self.new_connection = True
        self.ha_online = False

    def ensure(self) -> bool:
        if self.down:
            raise BrokerError("broker away")
        new, self.new_connection = self.new_connection, False
        return new

    def publish(self, messages: Sequence[Message]) -> list[bool]:
        for m in messages:
            self.paho.publish(m.topic, m.payload, qos=1, retain=m.retain)  # raises on a topic paho refuses
        self.sent.extend(messages)
        n = self.script.pop(0) if self.script else len(messages)
        return [i < n for i in range(len(messages))]

    def ha_restarted(self) -> bool:
        restarted, self.ha_online = self.ha_online, False
        return restarted

    def drop(self) -> None:
        self.new_connection = True

    def close(self) -> None:
        pass

    def take(self) -> list[Message]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def forwarder(fake: fakeredis.FakeRedis, **settings: Any) -> tuple[Forwarder, FakeBroker, GroupReader]:
    sink = config(block_ms=1, rescan_s=60, **settings)
    reader = group_reader(fake, KEYS, "events", "sink:ha", "c1", sink, sink.batch, 1000, TRACKER)
    broker = FakeBroker()
    return Forwarder(sink, Layout(sink), reader, fake, KEYS, broker), broker, reader


def add(fake: fakeredis.FakeRedis, *events: Event) -> None:
    for e in events:
        fake.xadd(KEYS.events(TRACKER, e.stream), {"msg": encode(e)})


def pending(fake: fakeredis.FakeRedis, stream: str = "cam1") -> int:
    return int(fake.xpending(KEYS.events(TRACKER, stream), "sink:ha")["pending"])


def step(fw: Forwarder, reader: GroupReader) -> None:
    """One turn of the sink's loop."""
    if not fw.holding:
        fw.take(reader.read(block_ms=0))
    fw.flush()


def by_topic(messages: list[Message]) -> dict[str, Message]:
    return {m.topic: m for m in messages}


def test_events_are_published_as_json_and_acked_once_confirmed(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    add(fake, event(n=0), event(n=1), event("cam2", 0))
    step(fw, reader)
    events = [m for m in broker.take() if m.topic.endswith("/events")]
    assert [m.topic for m in events] == ["streamyolo/cam1/events"] * 2 + ["streamyolo/cam2/events"]
    assert [Event.model_validate_json(m.payload) for m in events] == [event(n=0), event(n=1), event("cam2", 0)]
    assert json.loads(events[0].payload) == event(n=0).model_dump(mode="json") and not events[0].retain
    assert pending(fake) == pending(fake, "cam2") == 0 and not fw.holding


def test_unconfirmed_events_stay_pending_and_only_they_go_again(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    add(fake, *(event(n=i) for i in range(4)))
    broker.script = [1]
    with pytest.raises(BrokerError, match="confirmed 1 of 4 events"):
        step(fw, reader)
    assert pending(fake) == 3 and fw.holding  # the confirmed one acked, the rest in hand

    broker.take()
    broker.down = True
    with pytest.raises(BrokerError, match="broker away"):
        step(fw, reader)
    assert broker.take() == [] and pending(fake) == 3

    broker.down = False
    add(fake, event(n=9))  # not read while older events wait
    step(fw, reader)
    events = [json.loads(m.payload)["seq"] for m in broker.take() if m.topic.endswith("/events")]
    assert events == [1, 2, 3] and pending(fake) == 0
    step(fw, reader)
    assert [json.loads(m.payload)["seq"] for m in broker.take() if m.topic.endswith("/events")] == [9]


def test_bad_entries_are_dead_lettered_with_the_reason(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    key = KEYS.events(TRACKER, "cam1")
    fake.xadd(key, {"msg": b"\x93not msgpack"})
    fake.xadd(key, {"msg": encode(event("cam2"))})  # another camera's event on cam1's stream
    fake.xadd(key, {"msg": encode(event(tracker="cars"))})
    add(fake, event(n=1))
    step(fw, reader)
    assert [json.loads(m.payload)["seq"] for m in broker.take() if m.topic.endswith("/events")] == [1]
    reasons = [f[b"reason"].decode() for _, f in fake.xrange(KEYS.dead_letters())]
    assert len(reasons) == 3 and reasons[0].startswith("WireError")
    assert "camera 'cam2' on the events stream of tracker 'people', camera 'cam1'" in reasons[1]
    assert "tracker 'cars'" in reasons[2]
    assert pending(fake) == 0


def set_counts(fake: fakeredis.FakeRedis, values: dict[str, int], stream: str = "cam1") -> None:
    fake.hset(KEYS.counts(TRACKER, stream), mapping=values)  # type: ignore[arg-type]


COUNTS = {
    "tracks:person": 7,
    "now:*:person": 2,
    "now:door:person": 1,
    "now:door:traffic light": 0,
    "entered:door:person": 3,
    "left:door:person": 2,
    "crossed:gate/1:in:person": 4,
}


def test_counts_become_retained_states_and_sensors(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake, node_id="home1")
    set_counts(fake, COUNTS)
    add(fake, event())
    step(fw, reader)
    sent = broker.take()
    states = {m.topic: m.payload for m in sent if "/config" not in m.topic and not m.topic.endswith("/events")}
    assert states == {
        "streamyolo/cam1/tracks/person": "7",
        "streamyolo/cam1/occupancy/*/person": "2",
        "streamyolo/cam1/occupancy/door/person": "1",
        "streamyolo/cam1/occupancy/door/traffic%20light": "0",
        "streamyolo/cam1/entered/door/person": "3",
        "streamyolo/cam1/left/door/person": "2",
        "streamyolo/cam1/crossed/gate%2F1/in/person": "4",
        "streamyolo/cam1/occupied/*": "ON",
        "streamyolo/cam1/occupied/door": "ON",
    }
    assert all(m.retain for m in sent if not m.topic.endswith("/events"))
    # paho's own matching: each name is one level, so the usual subscriptions see every state
    assert all(mqtt.topic_matches_sub("streamyolo/+/+/#", t) for t in states)
    assert mqtt.topic_matches_sub("streamyolo/cam1/crossed/+/in/+", "streamyolo/cam1/crossed/gate%2F1/in/person")

    configs = {m.topic: json.loads(m.payload) for m in sent if m.topic.endswith("/config")}
    assert len(configs) == len(states)  # one sensor per state
    order = [m.topic for m in sent]
    assert max(order.index(t) for t in configs) < min(order.index(t) for t in states)  # configs first
    for topic, cfg in configs.items():
        component, node, oid, last = topic.split("/")[1:]
        assert topic.startswith("homeassistant/") and node == "home1" and last == "config"
        assert cfg["unique_id"] == f"home1_{oid}" and cfg["state_topic"] in states
        assert cfg["availability_topic"] == "streamyolo/status"
        assert cfg["device"] == {
            "identifiers": ["home1_cam1"], "name": "cam1", "manufacturer": "streamyolo", "model": "streamyolo",
        }  # fmt: skip
        assert {"name", "unique_id", "state_topic", "device", "availability_topic"} <= set(cfg)
        if component == "binary_sensor":
            assert (cfg["device_class"], cfg["payload_on"], cfg["payload_off"]) == ("occupancy", "ON", "OFF")
        else:
            kind = cfg["state_topic"].split("/")[2]
            assert cfg["state_class"] == ("measurement" if kind == "occupancy" else "total_increasing")
            assert cfg["icon"].startswith("mdi:")
    names = {cfg["state_topic"]: cfg["name"] for cfg in configs.values()}
    assert names["streamyolo/cam1/occupancy/*/person"] == "person in view"
    assert names["streamyolo/cam1/crossed/gate%2F1/in/person"] == "person crossed gate/1 in"
    assert names["streamyolo/cam1/occupied/door"] == "door occupied"
    assert len({cfg["unique_id"] for cfg in configs.values()}) == len(configs)


def test_configs_go_once_per_connection_and_states_when_they_change(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake)
    set_counts(fake, {"now:door:person": 1, "tracks:person": 1})
    add(fake, event())
    step(fw, reader)
    assert len(broker.take()) == 1 + 3 * 2  # the event; 3 sensors (2 counts, 1 occupied), each config and state

    set_counts(fake, {"now:door:person": 0, "tracks:person": 2})
    add(fake, event(n=1))
    step(fw, reader)
    assert {m.topic: m.payload for m in broker.take() if not m.topic.endswith("/events")} == {
        "streamyolo/cam1/occupancy/door/person": "0",
        "streamyolo/cam1/tracks/person": "2",
        "streamyolo/cam1/occupied/door": "OFF",
    }
    step(fw, reader)
    assert broker.take() == []  # nothing new, nothing again

    broker.ha_online = True  # Home Assistant restarted: every config again; the states are retained
    step(fw, reader)
    assert sorted(m.topic.split("/")[1] for m in broker.take()) == ["binary_sensor", "sensor", "sensor"]

    broker.drop()  # a new connection: the broker may have lost its retained messages, everything goes again
    step(fw, reader)
    assert len(broker.take()) == 3 * 2


def test_every_camera_is_published_on_a_new_connection_and_occupancy_gone_rests_at_zero(
    fake: fakeredis.FakeRedis,
) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    set_counts(fake, {"now:door:person": 2}, "cam2")
    add(fake, event(), event("cam2"))
    fake.delete(KEYS.counts(TRACKER, "cam1"))
    step(fw, reader)
    assert {m.topic: m.payload for m in broker.take() if not m.topic.endswith("/events")} == {
        "streamyolo/cam2/occupancy/door/person": "2",
        "streamyolo/cam2/occupied/door": "ON",
    }
    fake.hdel(KEYS.counts(TRACKER, "cam2"), "now:door:person")
    broker.drop()
    step(fw, reader)  # no event: the new connection alone republishes every camera's counts
    assert {m.topic: m.payload for m in broker.take()} == {
        "streamyolo/cam2/occupancy/door/person": "0",
        "streamyolo/cam2/occupied/door": "OFF",
    }


def test_only_the_chosen_labels_zones_lines_and_counts_are_published(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(
        fake, labels=["person"], zones=["*"], lines=["gate"], counts=["occupancy", "crossed"], occupied=False,
        discovery=False,
    )  # fmt: skip
    set_counts(fake, {"now:*:person": 1, "now:*:car": 1, "now:door:person": 1, "crossed:gate:in:person": 2,
                      "crossed:road:in:person": 2, "tracks:person": 5, "entered:*:person": 1})  # fmt: skip
    add(fake, event())
    step(fw, reader)
    assert {m.topic for m in broker.take() if not m.topic.endswith("/events")} == {
        "streamyolo/cam1/occupancy/*/person",
        "streamyolo/cam1/crossed/gate/in/person",
    }


def test_malformed_counts_are_skipped_and_logged_once(
    fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    set_counts(fake, {"now:door:person": 1, "now:door": 3})
    add(fake, event(), event(n=1))
    with caplog.at_level(logging.WARNING):
        step(fw, reader)
        broker.drop()
        step(fw, reader)
    assert caplog.text.count("'now:door'") == 1
    assert "streamyolo/cam1/occupancy/door/person" in {m.topic for m in broker.take()}


def test_a_counts_key_that_is_no_hash_is_skipped(fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    fake.set(KEYS.counts(TRACKER, "cam1"), "x")
    add(fake, event())
    step(fw, reader)
    assert [m.topic for m in broker.take()] == ["streamyolo/cam1/events"]
    assert "cannot read the counts of camera 'cam1'" in caplog.text and pending(fake) == 0


def test_unconfirmed_states_go_again(fake: fakeredis.FakeRedis) -> None:
    fw, broker, reader = forwarder(fake, discovery=False)
    set_counts(fake, {"tracks:person": 1})
    add(fake, event())
    broker.script = [1, 0]  # the event confirmed, its camera's state not
    with pytest.raises(BrokerError, match="confirmed 0 of 1 counts"):
        step(fw, reader)
    assert [m.topic for m in broker.take()] == ["streamyolo/cam1/events", "streamyolo/cam1/tracks/person"]
    assert pending(fake) == 0
    step(fw, reader)
    assert [m.topic for m in broker.take()] == ["streamyolo/cam1/tracks/person"]


def test_the_layout_without_a_broker() -> None:
    layout = Layout(config(topic_prefix="site/a", discovery_prefix="ha"))
    assert layout.status == "site/a/status" and layout.ha_status == "ha/status"
    assert layout.events("cam1") == "site/a/cam1/events"
    assert layout.wanted(Count("crossed", "person", 1, "gate"))
