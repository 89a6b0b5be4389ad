"""MqttAction against a real MQTT broker (Mosquitto on 127.0.0.1:1883 unless STREAMYOLO_MQTT_HOST/PORT say else)."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.wire import Alert, Detection
from sink.alerts.actions import DeliveryError
from sink.alerts.actions.mqtt import MqttAction, MqttActionConfig

pytestmark = pytest.mark.mqtt

WAIT_S = 5.0


class Subscriber:
    """A paho client collecting every message on one topic filter."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), f"no SUBACK for {topic} within {WAIT_S} s"

    def next(self, topic: str) -> mqtt.MQTTMessage:
        """The next message on ``topic`` (others are skipped)."""
        while True:
            msg = self.messages.get(timeout=WAIT_S)
            if msg.topic == topic:
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix(broker: tuple[str, int]) -> Iterator[str]:
    """A topic prefix of its own; its retained state topics are cleared afterwards."""
    prefix = f"streamyolo-test/{uuid.uuid4().hex[:10]}"
    yield prefix
    cleaner = mqtt.Client(CallbackAPIVersion.VERSION2)
    cleaner.connect(*broker)
    cleaner.loop_start()
    cleaner.publish(f"{prefix}/cam1/person/state", b"", qos=1, retain=True).wait_for_publish(WAIT_S)
    cleaner.disconnect()
    cleaner.loop_stop()


def alert(state: Literal["on", "off"]) -> Alert:
    return Alert(
        sink="alerts",
        rule="people",
        stream="cam1",
        label="person",
        state=state,
        frame_id="1700000000500-0",
        seq=3,
        capture_ts=1_700_000_000.5,
        raised_ts=1_700_000_000.7,
        width=640,
        height=480,
        detections=[Detection(label="person", class_id=0, score=0.9, box=(1, 2, 3, 4))] if state == "on" else [],
        actions=["mqtt"],
    )


def failure(action: MqttAction, alert: Alert) -> tuple[bool, str]:
    """(transient, message) of the DeliveryError a delivery raises.

    Unlike pytest.raises, this keeps no traceback: one would hold the dropped paho client in a reference cycle,
    whose sockets the garbage collector may then finalise (ResourceWarning) before the client closes them.
    """
    try:
        action.deliver(alert)
    except DeliveryError as exc:
        return exc.transient, str(exc)
    pytest.fail("the delivery succeeded; expected a DeliveryError")


def retained_state(broker: tuple[str, int], topic: str) -> dict[str, Any]:
    """What a subscriber arriving now is told on the state topic."""
    late = Subscriber(*broker, topic)
    try:
        msg = late.next(topic)
    finally:
        late.close()
    assert msg.retain
    state: dict[str, Any] = json.loads(msg.payload)
    return state


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_alerts_and_the_retained_state_reach_subscribers(
    broker: tuple[str, int], prefix: str, qos: Literal[0, 1, 2]
) -> None:
    host, port = broker
    action = MqttAction("mqtt", MqttActionConfig(host=host, port=port, topic_prefix=prefix, qos=qos, timeout_s=5))
    live = Subscriber(host, port, f"{prefix}/#")
    topic = f"{prefix}/cam1/person"
    try:
        action.deliver(alert("on"))
        event = live.next(topic)
        assert Alert.model_validate_json(event.payload) == alert("on") and not event.retain
        assert json.loads(live.next(f"{topic}/state").payload) == {
            "state": "on",
            "rule": "people",
            "frame_id": "1700000000500-0",
            "capture_ts": 1_700_000_000.5,
        }
        assert retained_state(broker, f"{topic}/state")["state"] == "on"

        action.deliver(alert("off"))
        assert Alert.model_validate_json(live.next(topic).payload).state == "off"
        assert json.loads(live.next(f"{topic}/state").payload)["state"] == "off"  # the broker has it now
        assert retained_state(broker, f"{topic}/state")["state"] == "off"
    finally:
        live.close()
        action.close()


def test_an_unreachable_broker_is_a_transient_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    action = MqttAction("mqtt", MqttActionConfig(host="127.0.0.1", port=port, timeout_s=1))
    transient, message = failure(action, alert("on"))
    action.close()
    assert transient is True and f"127.0.0.1:{port}" in message


class Proxy:
    """A TCP relay to the broker that can be taken down and brought back on the same port: a broker outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._up = False
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)  # so the accept loop sees stop() soon
        self.port, self._listener, self._up = listener.getsockname()[1], listener, True
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        self._up = False
        for t in self._threads:
            t.join()
        self._threads.clear()
        for s in [self._listener, *self._sockets]:
            if s is not None:
                s.close()
        self._listener, self._sockets = None, []

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self, listener: socket.socket) -> None:
        while self._up:
            try:
                down, _ = listener.accept()
            except TimeoutError:
                continue
            up = socket.create_connection(self.target)
            for s in (down, up):
                s.settimeout(0.05)
                self._sockets.append(s)
            self._spawn(self._pipe, down, up)
            self._spawn(self._pipe, up, down)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while self._up:
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            dst.sendall(data)
        # Closing both ends tells the client and the broker the connection is gone.
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_after_a_broker_outage_the_next_delivery_reconnects(broker: tuple[str, int], prefix: str) -> None:
    proxy = Proxy(broker)
    proxy.start()
    action = MqttAction(
        "mqtt", MqttActionConfig(host="127.0.0.1", port=proxy.port, topic_prefix=prefix, qos=1, timeout_s=1)
    )
    live = Subscriber(*broker, f"{prefix}/#")
    topic = f"{prefix}/cam1/person"
    try:
        action.deliver(alert("on"))
        assert live.next(topic).payload

        proxy.stop()
        transient, message = failure(action, alert("off"))
        assert transient is True and f"127.0.0.1:{proxy.port}" in message

        proxy.start()
        action.deliver(alert("off"))
        assert Alert.model_validate_json(live.next(topic).payload).state == "off"
    finally:
        live.close()
        action.close()
        proxy.stop()
