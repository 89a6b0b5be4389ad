"""An RTSP camera (RTP over TCP or UDP)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from common.plugins import SOURCES
from ingest.sources._network import NetworkSourceSettings, open_stream
from ingest.sources.base import Source


class RtspSourceConfig(NetworkSourceSettings):
    kind: Literal["rtsp"] = "rtsp"
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP over the RTSP TCP connection, or over UDP.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("rtsp://", "rtsps://")):
            raise ValueError("an rtsp source needs an rtsp:// or rtsps:// URL")
        return url


def open_rtsp(cfg: RtspSourceConfig, decoder_threads: int) -> Source:
    return open_stream(cfg, decoder_threads, options={"rtsp_transport": cfg.transport})


SOURCES.register(RtspSourceConfig, open_rtsp)
