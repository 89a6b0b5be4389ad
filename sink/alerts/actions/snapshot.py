"""The snapshot action: an alert's frame with its boxes drawn, saved as JPEG."""

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
from common.redis_io import FetchFrame
from common.settings import ActionSettings, ConfigPath
from common.wire import Alert, Frame
from sink.alerts.actions.base import DeliveryError
from sink.draw import draw_detections, frame_image  # shared with the web view


class SnapshotActionConfig(ActionSettings):
    """The frame with its boxes drawn, saved as JPEG (fetched from the frames stream while it is still there)."""

    kind: Literal["snapshot"] = "snapshot"
    folder: ConfigPath = Field(description="Snapshots go to FOLDER/STREAM/; created if missing.")
    quality: int = Field(90, ge=10, le=100, description="JPEG quality.")


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
        try:
            jpeg = encode_image(image, "jpeg", self._cfg.quality)
        except EncodeError as exc:
            raise DeliveryError(f"{where}: cannot encode the snapshot: {exc}", transient=False) from None
        folder = Path(self._cfg.folder) / _safe(alert.stream)
        path = folder / f"{round(alert.capture_ts * 1000)}_{_safe(alert.rule)}_{_safe(alert.frame_id)}.jpg"
        try:
            _write_atomically(path, jpeg)
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


ACTIONS.register(SnapshotActionConfig, SnapshotAction)
