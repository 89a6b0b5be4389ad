"""The MQTT action: each alert published on ``{topic_prefix}/{stream}/{label}``, its retained state on ``.../state``."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from common.plugins import ACTIONS
from common.settings import ActionSettings
from common.wire import Alert
from sink.alerts.actions.base import DeliveryError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    from paho.mqtt.reasoncodes import ReasonCode


class MqttActionConfig(ActionSettings):
    """The alert published on ``{topic_prefix}/{stream}/{label}``, the retained state on ``.../state``."""

    kind: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("streamyolo", min_length=1, pattern=r"^[^#+]+$", description="First topic levels.")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service of every publish.")
    username: str | None = Field(None, description="Broker user; the password comes from MQTT_PASSWORD.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout to connect and to have a publish confirmed.")


class MqttAction:
    """Publishes the alert on ``{prefix}/{stream}/{label}`` and the retained state on ``.../state``.

    Connects on the first delivery; any failure drops the connection, so the next delivery reconnects.
    """

    def __init__(self, name: str, cfg: MqttActionConfig) -> None:
        self.name = name
        self._cfg = cfg
        self._client: mqtt.Client | None = None
        self._where = f"mqtt {name!r} broker {cfg.host}:{cfg.port}"

    def deliver(self, alert: Alert) -> None:
        topic = f"{self._cfg.topic_prefix}/{alert.stream}/{alert.label}"
        state = {"state": alert.state, "rule": alert.rule, "frame_id": alert.frame_id, "capture_ts": alert.capture_ts}
        client = self._client or self._connect()
        try:
            infos = [
                client.publish(topic, json.dumps(alert.model_dump(mode="json")), qos=self._cfg.qos, retain=False),
                client.publish(f"{topic}/state", json.dumps(state), qos=self._cfg.qos, retain=True),
            ]
        except ValueError as exc:
            # A label holding '+' or '#' makes a topic no broker accepts; retrying cannot help.
            raise DeliveryError(f"{self._where}: cannot publish on {topic!r}: {exc}", transient=False) from None
        deadline = time.monotonic() + self._cfg.timeout_s  # one limit for both publishes together
        try:
            for info in infos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise RuntimeError(f"not confirmed within {self._cfg.timeout_s} s")
        except (RuntimeError, ValueError) as exc:
            self._drop()
            raise DeliveryError(f"{self._where}: publish on {topic!r} failed: {exc}", transient=True) from None

    def close(self) -> None:
        self._drop()

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt  # here: every process imports the plug-in modules, only an alert sink publishes
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self._cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.connect_timeout = cfg.timeout_s
        if cfg.username is not None:
            client.username_pw_set(cfg.username, os.environ.get("MQTT_PASSWORD"))
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(_client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            connected.set()

        client.on_connect = on_connect
        try:
            client.connect(cfg.host, cfg.port)
        except OSError as exc:
            raise DeliveryError(f"{self._where}: cannot connect: {exc}", transient=True) from None
        client.loop_start()
        self._client = client
        if not connected.wait(cfg.timeout_s) or refused:
            self._drop()
            why = f"refused the connection: {refused[0]}" if refused else f"no CONNACK within {cfg.timeout_s} s"
            raise DeliveryError(f"{self._where}: {why}", transient=True)
        return client

    def _drop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.disconnect()
            client.loop_stop()


ACTIONS.register(MqttActionConfig, lambda name, cfg, _fetch: MqttAction(name, cfg))
