"""A local camera through V4L2 (/dev/videoN)."""

from __future__ import annotations

from typing import Literal

import cv2
from pydantic import Field

from common.plugins import SOURCES
from common.settings import SourceSettings
from ingest.sources._capture import CaptureSource
from ingest.sources.base import Source


class WebcamSourceConfig(SourceSettings):
    kind: Literal["webcam"] = "webcam"
    index: int = Field(0, ge=0, le=255, description="Device index: /dev/video<index>.")
    width: int | None = Field(None, ge=32, le=8192, description="Capture width to ask the device for.")
    height: int | None = Field(None, ge=32, le=8192, description="Capture height to ask the device for.")
    fps: float | None = Field(None, gt=0, le=1000, description="Frame rate to ask the device for.")


def open_webcam(cfg: WebcamSourceConfig, decoder_threads: int) -> Source:
    params: list[int] = []
    for prop, value in (
        (cv2.CAP_PROP_FRAME_WIDTH, cfg.width),
        (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
        (cv2.CAP_PROP_FPS, cfg.fps),
    ):
        if value is not None:
            params += [prop, int(value)]
    what = f"webcam {cfg.index} (/dev/video{cfg.index}: is it present and not in use?)"
    return CaptureSource(cfg.index, what, live=True, api=cv2.CAP_V4L2, params=params)


SOURCES.register(WebcamSourceConfig, open_webcam)
