"""Alert actions against real endpoints: a local HTTP server, real JPEG files, the logging system."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pytest

from common.wire import Alert, Detection, Frame
from sink.alerts.actions import DeliveryError, create_action
from sink.alerts.actions.log import LogAction, LogActionConfig
from sink.alerts.actions.mqtt import MqttAction, MqttActionConfig
from sink.alerts.actions.snapshot import SnapshotAction, SnapshotActionConfig
from sink.alerts.actions.webhook import WebhookAction, WebhookActionConfig
from sink.draw import BOX_COLOUR
from tests.conftest import free_port

CAPTURE_TS = 1_700_000_000.5
FRAME_ID = "1700000000500-3"


def alert(state: Literal["on", "off"] = "on", detections: list[Detection] | None = None) -> Alert:
    return Alert(
        sink="alerts",
        rule="people",
        stream="cam1",
        label="person",
        state=state,
        frame_id=FRAME_ID,
        seq=12,
        capture_ts=CAPTURE_TS,
        raised_ts=CAPTURE_TS + 0.2,
        width=640,
        height=480,
        detections=(
            [Detection(label="person", class_id=0, score=0.91, box=(100, 100, 300, 300))]
            if detections is None
            else detections
        ),
        actions=["hook"],
    )


# ---------------------------------------------------------------------------------------------------- webhook
@dataclass
class Hook:
    """What the test server answers and what it received."""

    url: str
    status: int = 200
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((self.path, dict(self.headers.items()), body))
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"server says hi")

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def webhook(url: str, **kw: Any) -> WebhookAction:
    return WebhookAction("hook", WebhookActionConfig(url=url, **kw))


def test_webhook_posts_the_alert_as_json_with_the_configured_headers(hook: Hook) -> None:
    action = webhook(hook.url, headers={"Authorization": "Bearer s3cret", "X-Site": "north"})
    try:
        action.deliver(alert())
    finally:
        action.close()
    ((path, headers, body),) = hook.received
    assert path == "/hook"
    assert headers["Authorization"] == "Bearer s3cret" and headers["X-Site"] == "north"
    assert headers["Content-Type"] == "application/json"
    assert Alert.model_validate(json.loads(body)) == alert()


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_webhook_server_errors_timeouts_and_throttling_are_transient(hook: Hook, status: int) -> None:
    hook.status = status
    action = webhook(hook.url)
    with pytest.raises(DeliveryError) as err:
        action.deliver(alert())
    action.close()
    assert err.value.transient is True
    assert f"HTTP {status}" in str(err.value) and hook.url in str(err.value)


@pytest.mark.parametrize("status", [400, 404, 410])
def test_webhook_client_errors_are_permanent_and_never_show_headers(hook: Hook, status: int) -> None:
    hook.status = status
    action = webhook(hook.url, headers={"Authorization": "Bearer s3cret"})
    with pytest.raises(DeliveryError) as err:
        action.deliver(alert())
    action.close()
    assert err.value.transient is False
    assert f"HTTP {status}" in str(err.value) and "server says hi" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_webhook_errors_hide_credentials_in_the_url(hook: Hook) -> None:
    hook.status = 400
    action = webhook(hook.url.replace("http://", "http://user:pa55word@"))
    with pytest.raises(DeliveryError) as err:
        action.deliver(alert())
    action.close()
    assert hook.received and "pa55word" not in str(err.value) and hook.url in str(err.value)


def test_webhook_server_that_never_answers_is_a_transient_timeout() -> None:
    # The kernel accepts the connection into the backlog; nobody ever reads or answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        action = webhook(url, timeout_s=0.3)
        with pytest.raises(DeliveryError) as err:
            action.deliver(alert())
        action.close()
    assert err.value.transient is True
    assert "no answer within 0.3 s" in str(err.value) and url in str(err.value)


def test_webhook_connection_refused_is_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    action = webhook(url)
    with pytest.raises(DeliveryError) as err:
        action.deliver(alert())
    action.close()
    assert err.value.transient is True and url in str(err.value) and "ConnectError" in str(err.value)


# ---------------------------------------------------------------------------------------------------- snapshot
GREY = 128


def frame_of(encoding: Literal["jpeg", "bgr8"]) -> Frame:
    """A 640x480 camera frame carried as a 320x240 image of flat grey."""
    image = np.full((240, 320, 3), GREY, np.uint8)
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", image)
        assert ok
        data = buf.tobytes()
    else:
        data = image.tobytes()
    return Frame(
        stream="cam1",
        seq=12,
        capture_ts=CAPTURE_TS,
        width=640,
        height=480,
        encoding=encoding,
        image_width=320,
        image_height=240,
        data=data,
    )


class Frames:
    """fetch_frame for the tests: serves one frame (or none) and records what was asked for."""

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame
        self.asked: list[tuple[str, str]] = []

    def __call__(self, stream: str, frame_id: str) -> Frame | None:
        self.asked.append((stream, frame_id))
        return self.frame


def snapshot(folder: Path, frames: Frames) -> SnapshotAction:
    return SnapshotAction("snap", SnapshotActionConfig(folder=folder, quality=95), frames)


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


@pytest.mark.parametrize("encoding", ["jpeg", "bgr8"])
def test_snapshot_saves_the_frame_with_its_boxes_drawn(tmp_path: Path, encoding: Literal["jpeg", "bgr8"]) -> None:
    frames = Frames(frame_of(encoding))
    action = snapshot(tmp_path, frames)
    action.deliver(alert())
    assert frames.asked == [("cam1", FRAME_ID)]
    expected = tmp_path / "cam1" / f"1700000000500_people_{FRAME_ID}.jpg"
    assert action.last_path == expected
    assert [p.name for p in (tmp_path / "cam1").iterdir()] == [expected.name]  # no temp file left behind
    image = cv2.imread(str(expected))
    assert image.shape == (240, 320, 3)
    # The box (100, 100)-(300, 300) of the 640x480 frame is (50, 50)-(150, 150) in the 320x240 image.
    assert close_to(image[100, 50], BOX_COLOUR)  # left edge
    assert close_to(image[150, 100], BOX_COLOUR)  # bottom edge
    assert close_to(image[100, 100], (GREY, GREY, GREY))  # inside, untouched
    assert close_to(image[200, 250], (GREY, GREY, GREY))  # outside, untouched


def test_snapshot_of_a_frame_no_longer_there_is_permanent(tmp_path: Path) -> None:
    action = snapshot(tmp_path, Frames(None))
    with pytest.raises(DeliveryError) as err:
        action.deliver(alert())
    assert err.value.transient is False
    assert FRAME_ID in str(err.value) and "no longer in the frames stream" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_snapshot_of_an_undecodable_image_is_permanent(tmp_path: Path) -> None:
    broken = frame_of("jpeg").model_copy(update={"data": b"\xff\xd8 not really a jpeg"})
    with pytest.raises(DeliveryError) as err:
        snapshot(tmp_path, Frames(broken)).deliver(alert())
    assert err.value.transient is False and "cannot be decoded" in str(err.value) and FRAME_ID in str(err.value)


def test_snapshot_of_an_off_alert_writes_nothing(tmp_path: Path) -> None:
    frames = Frames(frame_of("jpeg"))
    action = snapshot(tmp_path, frames)
    action.deliver(alert("off", detections=[]))
    assert frames.asked == [] and action.last_path is None and not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- log
@pytest.mark.parametrize(("level", "levelno"), [("WARNING", logging.WARNING), ("INFO", logging.INFO)])
def test_log_writes_one_line_per_alert(
    caplog: pytest.LogCaptureFixture, level: Literal["INFO", "WARNING"], levelno: int
) -> None:
    action = LogAction("log", LogActionConfig(level=level))
    two = [
        Detection(label="person", class_id=0, score=0.61, box=(0, 0, 10, 10)),
        Detection(label="person", class_id=0, score=0.87, box=(20, 0, 30, 10)),
    ]
    with caplog.at_level(logging.INFO, logger="sink.alerts"):
        action.deliver(alert(detections=two))
        action.deliver(alert("off", detections=[]))
    on, off = caplog.records
    assert on.name == "sink.alerts" and on.levelno == levelno
    message = on.getMessage()
    for part in ("alert on", "rule=people", "stream=cam1", "label=person", f"frame={FRAME_ID}", "count=2"):
        assert part in message
    assert "best_score=0.87" in message
    assert off.getMessage().startswith("alert off") and "count=0 best_score=-" in off.getMessage()


# ---------------------------------------------------------------------------------------------------- factory
def test_create_action_builds_the_configured_kind(tmp_path: Path) -> None:
    made = [
        create_action("a", WebhookActionConfig(url="http://127.0.0.1/x"), Frames(None)),
        create_action("b", MqttActionConfig(), Frames(None)),
        create_action("c", LogActionConfig(), Frames(None)),
        create_action("d", SnapshotActionConfig(folder=tmp_path), Frames(None)),
    ]
    assert [(type(a), a.name) for a in made] == [
        (WebhookAction, "a"),
        (MqttAction, "b"),
        (LogAction, "c"),
        (SnapshotAction, "d"),
    ]
    for action in made:
        action.close()
