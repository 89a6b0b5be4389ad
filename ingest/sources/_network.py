"""What the network cameras (rtsp, http) share: their URL, timeouts, decoder and how they are opened."""

from __future__ import annotations

import cv2
from pydantic import Field

from common.redact import redact
from ingest.sources._capture import CaptureSource
from ingest.sources.base import DecodedVideoSettings, Source


class NetworkSourceSettings(DecodedVideoSettings):
    url: str = Field(min_length=8, description="Camera URL; credentials may be in it.")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up opening after this long.")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="A stream silent this long is reconnected.")


def open_stream(cfg: NetworkSourceSettings, decoder_threads: int, options: dict[str, str] | None = None) -> Source:
    """A live network stream, with the settings' timeouts and decoder; ``options``: FFmpeg's (its demuxer's)."""
    what = f"{cfg.kind} stream {redact(cfg.url)} (check the URL, the network and the camera)"
    if cfg.decoder == "pyav":
        from ingest.sources._av import AvSource  # PyAV loads FFmpeg's libraries: only when a camera uses it

        return AvSource(cfg.url, what, live=True, options=options, timeouts=(cfg.open_timeout_s, cfg.read_timeout_s),
                        decoder_threads=decoder_threads, keyframes_only=cfg.keyframes_only)  # fmt: skip
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(cfg.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(cfg.read_timeout_s * 1000),
    ]
    threads = [cv2.CAP_PROP_N_THREADS, decoder_threads] if decoder_threads else []
    ffmpeg_options = "|".join(f"{k};{v}" for k, v in (options or {}).items()) or None  # OpenCV's spelling
    return CaptureSource(cfg.url, what, live=True, params=params + threads, ffmpeg_options=ffmpeg_options)
