"""What every source shares: the interface the camera reader drives, its two errors, and the decoder settings of
the video sources (file, rtsp, http)."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from common.settings import SourceSettings


class SourceError(RuntimeError):
    """A source that cannot be opened or stopped delivering; the message says which and how to fix it."""


class FrameError(RuntimeError):
    """One frame that cannot be decoded; the source goes on."""


class Source(Protocol):
    live: bool
    """Frames arrive in real time and must be drained (cameras); otherwise they are read on demand (files)."""
    fps: float | None
    """Native frame rate, when known."""
    total: int | None
    """Frames one pass holds, when known and finite (files, image folders): for progress bars."""

    def grab(self) -> float | None: ...

    def retrieve(self) -> np.ndarray: ...

    def origin(self) -> tuple[str, int | None] | None:
        """Where the frame grabbed last lies: a file, and its position in it for a video; None for a camera."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SampledSource(Protocol):
    """A source that decodes less when it knows how often its frames are sampled (PyAV: keyframes only)."""

    def sample_interval(self, seconds: float | None) -> None:
        """Frames are sampled every ``seconds`` of their timestamps; None: not by time (every n-th frame)."""
        ...


def tell_sample_interval(source: Source, seconds: float | None) -> None:
    """Tell a source its sampling interval before it is read; a source without ``sample_interval`` ignores it."""
    if isinstance(source, SampledSource):
        source.sample_interval(seconds)


KeyframesOnly = Literal["auto", "never"]


class DecodedVideoSettings(SourceSettings):
    """What the file, rtsp and http sources share: which decoder reads them, and whether it may skip frames."""

    decoder: Literal["pyav", "opencv"] = Field(
        "pyav",
        description="pyav: FFmpeg through PyAV, which can decode keyframes only (keyframes_only); opencv: OpenCV's "
        "VideoCapture, which decodes every frame.",
    )
    keyframes_only: KeyframesOnly = Field(
        "auto",
        description="auto: with a camera sampled by fps, decode only keyframes once they are seen to come at least "
        "once per sampling interval (every frame again if they stop doing so); never: decode every frame. pyav only.",
    )
