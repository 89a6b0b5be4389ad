"""A camera thread survives what its source or its own code throws: it restarts the camera, never ends silently."""

from __future__ import annotations

import logging

import fakeredis
import numpy as np
import pytest

from common.backoff import Backoff
from common.config import CameraConfig
from common.keys import Keys
from ingest import reader as reader_module
from ingest.publisher import Publisher
from ingest.reader import CameraReader


class Flaky:
    """Two frames, then an error no source should raise; the next opening delivers two frames and ends."""

    live = False
    fps: float | None = 10.0
    total: int | None = None
    opened = 0

    def __init__(self) -> None:
        Flaky.opened += 1
        self.index = -1

    def grab(self) -> float | None:
        self.index += 1
        if Flaky.opened == 1 and self.index == 2:
            raise ZeroDivisionError("a bug in a decoder")
        return None if self.index == 2 else self.index / 10

    def retrieve(self) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)

    def origin(self) -> tuple[str, int | None] | None:
        return None

    def close(self) -> None:
        pass


def test_an_unexpected_error_restarts_the_camera_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reader_module, "open_source", lambda *_: Flaky())
    camera = CameraConfig.model_validate({"name": "cam", "source": {"kind": "synthetic", "realtime": False}})
    publisher = Publisher(fakeredis.FakeRedis(), Keys("t"))  # never started: frames stay queued
    cam = CameraReader(camera, publisher, 100, Backoff(0.01, 0.01))
    with caplog.at_level(logging.ERROR, logger="ingest.reader"):
        cam.run()
    counters = publisher.counter("cam")
    assert cam.finished and Flaky.opened == 2
    assert (counters.sampled, counters.reconnects) == (4, 1)
    assert counters.last_error == "unexpected ZeroDivisionError: a bug in a decoder"
    assert "camera cam: unexpected error" in caplog.text and "Traceback" in caplog.text
