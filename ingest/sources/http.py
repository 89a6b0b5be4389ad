"""An HTTP camera: MJPEG or HLS."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from common.plugins import SOURCES
from ingest.sources._network import NetworkSourceSettings, open_stream


class HttpSourceConfig(NetworkSourceSettings):
    kind: Literal["http"] = "http"

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("an http source (MJPEG, HLS) needs an http:// or https:// URL")
        return url


SOURCES.register(HttpSourceConfig, open_stream)
