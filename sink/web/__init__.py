"""The web view: a live page of the streams (each one's latest frame with its boxes drawn, recent detections, fps
and end-to-end latency), served by a sink of kind ``web``.

This module declares the web sink's settings and registers its kind (see ``common.plugins``); it imports nothing
but the settings, so the config can be built without a web server. The rest loads only when the sink runs:

- ``view``: :class:`~sink.web.view.View`, what the follower saw per stream, and its rates;
- ``app``: :func:`~sink.web.app.create_app`, the Starlette app (the page, its static files, the JSON/JPEG API);
- ``runner``: :func:`~sink.web.runner.run`, the follower thread and uvicorn in-process;
- ``static/``: the page's HTML, CSS and JS, served as they are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.plugins import SINKS
from common.settings import SinkSettings


class WebSinkConfig(SinkSettings):
    """A live web view: each stream's latest frame with its boxes drawn, recent detections, fps and latency.

    Not a consumer group: it follows the result streams with plain XREAD (like ``sink tail``), so it never takes
    results from the other sinks, and nothing waits on it."""

    kind: Literal["web"] = "web"
    host: str = Field(
        "127.0.0.1",
        pattern=r"^[A-Za-z0-9.:\-]{1,253}$",
        description="Address to serve on; the page has no login, so 0.0.0.0 shows the streams to the whole network.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port to serve on.")
    history: int = Field(50, ge=1, le=10_000, description="Recent detections kept (and listed) per stream.")
    window_s: float = Field(10.0, ge=1, le=3600, description="fps and latency are over the results of this window.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frames served.")
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read of the result streams.")
    rescan_s: float = Field(5.0, gt=0, le=3600, description="How often stream patterns are re-resolved.")


SINKS.register(WebSinkConfig, "sink.web.runner:run")
