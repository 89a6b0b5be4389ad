"""A video file FFmpeg can read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field

from common.plugins import SOURCES
from common.settings import ConfigPath
from ingest.sources._capture import CaptureSource
from ingest.sources.base import DecodedVideoSettings, Source, SourceError


class FileSourceConfig(DecodedVideoSettings):
    kind: Literal["file"] = "file"
    path: ConfigPath = Field(description="Video file readable by FFmpeg.")
    loop: bool = Field(False, description="Start over at the end of the file instead of finishing.")
    realtime: bool = Field(False, description="Pace frames at the file's own frame rate.")


def open_file(cfg: FileSourceConfig, decoder_threads: int) -> Source:
    path = Path(cfg.path)
    if not path.is_file():
        raise SourceError(f"video file {path} does not exist: fix the camera's source.path")
    what = f"video file {path} (is it a video FFmpeg can read?)"
    if cfg.decoder == "pyav":
        from ingest.sources._av import AvSource  # PyAV loads FFmpeg's libraries: only when a camera uses it

        return AvSource(str(path), what, live=False, loop=cfg.loop, decoder_threads=decoder_threads,
                        keyframes_only=cfg.keyframes_only, file=str(path))  # fmt: skip
    threads = [cv2.CAP_PROP_N_THREADS, decoder_threads] if decoder_threads else []
    return CaptureSource(str(path), what, live=False, loop=cfg.loop, params=threads, file=str(path))


SOURCES.register(FileSourceConfig, open_file)
