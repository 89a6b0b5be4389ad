"""A video file FFmpeg can read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field

from common.plugins import SOURCES
from common.settings import ConfigPath, SourceSettings
from ingest.sources._capture import CaptureSource
from ingest.sources.base import Source, SourceError


class FileSourceConfig(SourceSettings):
    kind: Literal["file"] = "file"
    path: ConfigPath = Field(description="Video file readable by OpenCV/FFmpeg.")
    loop: bool = Field(False, description="Start over at the end of the file instead of finishing.")
    realtime: bool = Field(False, description="Pace frames at the file's own frame rate.")


def open_file(cfg: FileSourceConfig, decoder_threads: int) -> Source:
    path = Path(cfg.path)
    if not path.is_file():
        raise SourceError(f"video file {path} does not exist: fix the camera's source.path")
    what = f"video file {path} (is it a video FFmpeg can read?)"
    threads = [cv2.CAP_PROP_N_THREADS, decoder_threads] if decoder_threads else []
    return CaptureSource(str(path), what, live=False, loop=cfg.loop, params=threads, file=str(path))


SOURCES.register(FileSourceConfig, open_file)
