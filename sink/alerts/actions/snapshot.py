"""The snapshot action: an alert's frame with its boxes drawn, saved as JPEG (for an alert raised by a tracker's
event: the object's best frame with its box there)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from common.codec import EncodeError, encode_image
from common.plugins import ACTIONS
from common.redis_io import FetchFrame, RedisIOError, Unavailable
from common.settings import ActionSettings, ConfigPath
from common.wire import Alert, Frame, WireError
from sink.alerts.actions.base import DeliveryError
from sink.draw import draw_detections, frame_image  # shared with the web view


class SnapshotActionConfig(ActionSettings):
    """The frame with its boxes drawn, saved as JPEG (fetched from the frames stream while it is still there)."""

    kind: Literal["snapshot"] = "snapshot"
    folder: ConfigPath = Field(description="Snapshots go to FOLDER/STREAM/; created if missing.")
    quality: int = Field(90, ge=10, le=100, description="JPEG quality.")


class SnapshotAction:
    """Saves the frame of an "on" alert with its counted boxes drawn, as JPEG; "off" alerts save nothing. An alert
    raised by a tracker's event carries the object's best frame and its box there (``sink.alerts.rules.EventRules``):
    that is the picture saved.

    Files go to ``folder/<stream>/<capture ms>_<rule>_<frame id>.jpg`` (with ``_<event id>`` before ``.jpg`` when the
    alert names its event: several objects may share a best frame), written atomically. A frame already trimmed
    from its frames stream cannot be saved: the alert is refused for good (dead-lettered, saying so), not retried.
    """

    def __init__(self, name: str, cfg: SnapshotActionConfig, fetch_frame: FetchFrame) -> None:
        self.name = name
        self._cfg = cfg
        self._fetch = fetch_frame
        self.last_path: Path | None = None

    def deliver(self, alert: Alert) -> None:
        if alert.state != "on":
            return
        event_id = alert.event_id  # set by alerts raised from events
        what = f"frame {alert.frame_id}" if event_id is None else f"the best frame {alert.frame_id} of event {event_id}"
        where = f"snapshot {self.name!r}: {what} of stream {alert.stream!r}"
        image = _decode(self._frame(alert, where), where)
        draw_detections(image, alert)
        try:
            jpeg = encode_image(image, "jpeg", self._cfg.quality)
        except EncodeError as exc:
            raise DeliveryError(f"{where}: cannot encode the snapshot: {exc}", transient=False) from None
        folder = Path(self._cfg.folder) / _safe(alert.stream)
        stem = f"{round(alert.capture_ts * 1000)}_{_safe(alert.rule)}_{_safe(alert.frame_id)}"
        path = folder / (f"{stem}.jpg" if event_id is None else f"{stem}_{_safe(event_id)}.jpg")
        try:
            _write_atomically(path, jpeg)
        except OSError as exc:
            # A full or unwritable disk can be fixed while the alert waits.
            raise DeliveryError(f"{where}: cannot write {path}: {exc}", transient=True) from None
        self.last_path = path

    def _frame(self, alert: Alert, where: str) -> Frame:
        try:
            frame = self._fetch(alert.stream, alert.frame_id)
        except Unavailable as exc:  # Redis is down for now: the frame may still be there when it is back
            raise DeliveryError(f"{where}: cannot read the frame: {exc}", transient=True) from None
        except (RedisIOError, WireError) as exc:
            raise DeliveryError(f"{where}: cannot read the frame: {exc}", transient=False) from None
        if frame is None:
            raise DeliveryError(
                f"{where} is no longer in the frames stream (trimmed: a frames stream keeps its newest "
                f"streams.frames_maxlen frames, or the camera's maxlen); no snapshot saved",
                transient=False,
            )
        return frame

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


ACTIONS.register(SnapshotActionConfig, SnapshotAction)
