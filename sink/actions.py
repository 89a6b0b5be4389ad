"""Alert actions: how an alert leaves the stack (webhook, MQTT, log line, snapshot), one class per kind.

Every action delivers one alert at a time and raises :class:`DeliveryError` when it cannot; the error says whether
the caller should try again later (``transient``) or give the alert up (dead-letter it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import httpx
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from common.config import (
    ActionConfig,
    LogActionConfig,
    MqttActionConfig,
    SnapshotActionConfig,
    WebhookActionConfig,
)
from common.redact import redact_text
from common.wire import Alert, Frame
from sink.draw import draw_detections, frame_image  # shared with the web view

alert_log = logging.getLogger("sink.alerts")

FetchFrame = Callable[[str, str], Frame | None]
"""(stream, frame id) -> the frame, or None when it is no longer in the frames stream."""

_TRANSIENT_HTTP = frozenset({408, 429})


class DeliveryError(Exception):
    """An alert that could not be delivered; ``transient``: retrying later may succeed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Action(Protocol):
    """Delivers alerts somewhere; raises :class:`DeliveryError` on failure."""

    name: str

    def deliver(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------- webhook
class WebhookAction:
    """POSTs the alert as JSON; 2xx is delivered, 5xx/408/429 and network errors are transient, other 4xx not."""

    def __init__(self, name: str, cfg: WebhookActionConfig) -> None:
        self.name = name
        self._cfg = cfg
        # Credentials in the URL never reach messages or logs; header values are never shown at all.
        self._shown_url = str(httpx.URL(cfg.url).copy_with(username=None, password=None))
        self._client = httpx.Client(timeout=cfg.timeout_s)

    def deliver(self, alert: Alert) -> None:
        where = f"webhook {self.name!r} POST {self._shown_url}"
        try:
            response = self._client.post(self._cfg.url, json=alert.model_dump(mode="json"), headers=self._cfg.headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"{where}: no answer within {self._cfg.timeout_s} s", transient=True) from None
        except httpx.TransportError as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {redact_text(str(exc))}", transient=True) from None
        if response.is_success:
            return
        status = response.status_code
        body = response.text.strip()
        for secret in self._cfg.headers.values():
            if len(secret) >= 4:  # an endpoint that echoes the request must not put its token in our messages
                body = body.replace(secret, "***")
        body = body[:200]
        raise DeliveryError(
            f"{where}: HTTP {status} {response.reason_phrase}" + (f": {body}" if body else ""),
            transient=status >= 500 or status in _TRANSIENT_HTTP,
        )

    def close(self) -> None:
        self._client.close()


# ---------------------------------------------------------------------------------------------------- mqtt
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


# ---------------------------------------------------------------------------------------------------- log
class LogAction:
    """One line on the ``sink.alerts`` logger per alert."""

    def __init__(self, name: str, cfg: LogActionConfig) -> None:
        self.name = name
        self._level = logging.getLevelNamesMapping()[cfg.level]

    def deliver(self, alert: Alert) -> None:
        best = max((d.score for d in alert.detections), default=None)
        alert_log.log(
            self._level,
            "alert %s: rule=%s stream=%s label=%s frame=%s count=%d best_score=%s",
            alert.state,
            alert.rule,
            alert.stream,
            alert.label,
            alert.frame_id,
            len(alert.detections),
            "-" if best is None else f"{best:.2f}",
        )

    def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------------- snapshot
class SnapshotAction:
    """Saves the frame of an "on" alert with its counted boxes drawn, as JPEG; "off" alerts save nothing.

    Files go to ``folder/<stream>/<capture ms>_<rule>_<frame id>.jpg``, written atomically.
    """

    def __init__(self, name: str, cfg: SnapshotActionConfig, fetch_frame: FetchFrame) -> None:
        self.name = name
        self._cfg = cfg
        self._fetch = fetch_frame
        self.last_path: Path | None = None

    def deliver(self, alert: Alert) -> None:
        if alert.state != "on":
            return
        where = f"snapshot {self.name!r}: frame {alert.frame_id} of stream {alert.stream!r}"
        frame = self._fetch(alert.stream, alert.frame_id)
        if frame is None:
            raise DeliveryError(f"{where} is no longer in the frames stream", transient=False)
        image = _decode(frame, where)
        draw_detections(image, alert)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._cfg.quality])
        if not ok:
            raise DeliveryError(f"{where}: OpenCV could not encode the snapshot", transient=False)
        folder = Path(self._cfg.folder) / _safe(alert.stream)
        path = folder / f"{round(alert.capture_ts * 1000)}_{_safe(alert.rule)}_{_safe(alert.frame_id)}.jpg"
        try:
            _write_atomically(path, jpeg.tobytes())
        except OSError as exc:
            # A full or unwritable disk can be fixed while the alert waits.
            raise DeliveryError(f"{where}: cannot write {path}: {exc}", transient=True) from None
        self.last_path = path

    def close(self) -> None:
        """Nothing to release."""


def _decode(frame: Frame, where: str) -> np.ndarray:
    """The frame's image as a writable BGR array; an image that cannot be decoded is a permanent failure."""
    try:
        return frame_image(frame)
    except ValueError as exc:
        raise DeliveryError(f"{where}: {exc}", transient=False) from None


def _safe(part: str) -> str:
    """A name usable as one path component: no separators, no leading dot (so never '..')."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", part).lstrip(".") or "_"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------- factory
def create_action(name: str, cfg: ActionConfig, fetch_frame: FetchFrame) -> Action:
    """The action a config describes; ``fetch_frame`` is used by snapshots only."""
    if isinstance(cfg, WebhookActionConfig):
        return WebhookAction(name, cfg)
    if isinstance(cfg, MqttActionConfig):
        return MqttAction(name, cfg)
    if isinstance(cfg, LogActionConfig):
        return LogAction(name, cfg)
    return SnapshotAction(name, cfg, fetch_frame)
