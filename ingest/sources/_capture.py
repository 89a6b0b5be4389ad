"""OpenCV's capture (its FFmpeg or V4L2 backend), shared by the file, rtsp, http and webcam sources."""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np

from ingest.sources.base import FrameError, SourceError

# FFmpeg reads its capture options from the environment when a capture opens: serialise opens that set them.
_OPEN_LOCK = threading.Lock()


class CaptureSource:
    """Anything OpenCV's FFmpeg (or V4L2) backend opens: files, RTSP, HTTP MJPEG and HLS, webcams."""

    def __init__(
        self,
        target: str | int,
        what: str,
        *,
        live: bool,
        loop: bool = False,
        api: int = cv2.CAP_FFMPEG,
        params: list[int] | None = None,
        ffmpeg_options: str | None = None,
        file: str | None = None,
    ) -> None:
        self.live = live
        self.loop = loop
        self._what = what
        self._file = file
        with _OPEN_LOCK:
            saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            if ffmpeg_options:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ffmpeg_options
            try:
                self._cap = cv2.VideoCapture(target, api, params or [])
            finally:
                if saved is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved
        if not self._cap.isOpened():
            raise SourceError(f"cannot open {what}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if not live and not loop and count > 0 else None
        self._index = -1
        self._offset = 0.0  # media time of the loops already played

    def grab(self) -> float | None:
        if self._cap.grab():
            return self._timestamp()
        if self.live:
            raise SourceError(f"{self._what} stopped delivering frames")
        if not self.loop or self._index < 0:
            return None
        self._offset += (self._index + 1) / (self.fps or 25.0)  # the loop just played
        self._index = -1
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if not self._cap.grab():
            raise SourceError(f"{self._what} cannot be rewound to loop")
        return self._timestamp()

    def _timestamp(self) -> float:
        if self.live:
            return time.monotonic()
        self._index += 1
        return self._offset + self._index / (self.fps or 25.0)

    def retrieve(self) -> np.ndarray:
        ok, frame = self._cap.retrieve()
        if not ok or frame is None:
            raise FrameError(f"{self._what}: a frame could not be decoded")
        image: np.ndarray = frame
        return image

    def origin(self) -> tuple[str, int | None] | None:
        return None if self._file is None else (self._file, self._index)

    def close(self) -> None:
        self._cap.release()
