"""Frame sources: video files, RTSP, HTTP (MJPEG, HLS), webcams, folders of images, and a synthetic camera.

A source is read in two steps so that a live stream is drained at its native rate while only the sampled frames
are converted to BGR (a compressed stream's decoder must still decode every frame: later frames refer to earlier
ones): ``grab()`` takes the next frame and returns its timestamp (None at the end of a finite source;
:class:`SourceError` when the source broke), ``retrieve()`` decodes the frame grabbed last (:class:`FrameError`
when that one frame is unusable: it is skipped and counted).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common.config import (
    FileSourceConfig,
    HttpSourceConfig,
    ImagesSourceConfig,
    RtspSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    WebcamSourceConfig,
)
from common.redact import redact as _redact


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


@dataclass(frozen=True)
class Truth:
    """A shape drawn in a synthetic frame: its label and box (xmin, ymin, xmax, ymax) in frame pixels."""

    label: str
    box: tuple[int, int, int, int]


SHAPE_LABELS = ("circle", "square", "triangle")
DISTRACTOR_LABEL = "NULL"  # TYOY's trick: a class for what gets mis-detected, ignored at run time


class SyntheticSource:
    """Moving labelled shapes, fully determined by the seed and the frame index (so tests can score)."""

    live = False
    total: int | None = None  # endless

    def __init__(self, cfg: SyntheticSourceConfig) -> None:
        self.cfg = cfg
        self.fps: float | None = cfg.fps
        self.index = -1
        rng = np.random.default_rng(cfg.seed)
        w, h = cfg.width, cfg.height
        self._background = self._make_background(rng, w, h)
        side = min(w, h)
        self._shapes = [
            (
                SHAPE_LABELS[i % len(SHAPE_LABELS)],
                int(rng.integers(side // 10, side // 4)),  # size
                rng.uniform(0, 1, 2),  # start position, as a fraction of the free range
                rng.uniform(-0.02, 0.02, 2),  # velocity, fraction of the range per frame
                tuple(int(c) for c in rng.integers(90, 256, 3)),  # BGR colour
            )
            for i in range(cfg.shapes)
        ]
        # Distractors after the shapes, so adding some leaves a seed's shapes where they were.
        self._shapes += [
            (
                DISTRACTOR_LABEL,
                int(rng.integers(side // 10, side // 4)),
                rng.uniform(0, 1, 2),
                rng.uniform(-0.02, 0.02, 2),
                tuple(int(c) for c in rng.integers(90, 256, 3)),
            )
            for _ in range(cfg.distractors)
        ]

    @staticmethod
    def _make_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
        gradient = np.linspace(30, 80, w, dtype=np.float32)[None, :, None]
        noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        background: np.ndarray = np.clip(gradient + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
        return background

    def truth(self, index: int) -> list[Truth]:
        """The shapes of frame ``index``."""
        out = []
        for label, size, start, velocity, _ in self._shapes:
            x, y = (_bounce(s + v * index) for s, v in zip(start, velocity, strict=True))
            left = int(x * (self.cfg.width - size))
            top = int(y * (self.cfg.height - size))
            out.append(Truth(label, (left, top, left + size, top + size)))
        return out

    def render(self, index: int) -> np.ndarray:
        frame = self._background.copy()
        for truth, (_, _, _, _, colour) in zip(self.truth(index), self._shapes, strict=True):
            x0, y0, x1, y1 = truth.box
            if truth.label == "circle":
                cv2.circle(frame, ((x0 + x1) // 2, (y0 + y1) // 2), (x1 - x0) // 2, colour, -1, cv2.LINE_AA)
            elif truth.label == "square":
                cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
            elif truth.label == "triangle":
                points = np.array([[(x0 + x1) // 2, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.int32)
                cv2.fillPoly(frame, [points], colour, cv2.LINE_AA)
            else:  # a distractor: a plus sign, the kind of thing a model mistakes for a shape
                bar = max(2, (x1 - x0) // 4)
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                cv2.rectangle(frame, (x0, cy - bar // 2), (x1 - 1, cy + bar // 2), colour, -1)
                cv2.rectangle(frame, (cx - bar // 2, y0), (cx + bar // 2, y1 - 1), colour, -1)
        return frame

    def grab(self) -> float | None:
        self.index += 1
        return self.index / self.cfg.fps

    def retrieve(self) -> np.ndarray:
        return self.render(self.index)

    def origin(self) -> tuple[str, int | None] | None:
        return None

    def close(self) -> None:
        pass


def _bounce(t: float) -> float:
    """Fold a position into [0, 1], reflecting at the walls."""
    t = math.fmod(abs(t), 2.0)
    return 2.0 - t if t > 1.0 else t


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


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class ImagesSource:
    """A folder of images in name order, or the images a list file names in its order, standing for a camera at
    ``fps``."""

    live = False

    def __init__(self, cfg: ImagesSourceConfig) -> None:
        self.cfg = cfg
        self.fps: float | None = cfg.fps
        self._files = _image_list(Path(cfg.path)) if Path(cfg.path).is_file() else _image_folder(Path(cfg.path), cfg)
        self.total = None if cfg.loop else len(self._files)
        self._index = -1

    def grab(self) -> float | None:
        if self._index + 1 >= len(self._files) and not self.cfg.loop:
            return None
        self._index += 1
        return self._index / self.cfg.fps

    def retrieve(self) -> np.ndarray:
        path = self._files[self._index % len(self._files)]
        # The pixels as stored, like PIL's Image.open, which TrainYourOwnYOLO trains and detects with: an EXIF
        # orientation tag is not applied.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise FrameError(f"{path} is not a readable image (missing, truncated, or not an image format)")
        frame: np.ndarray = image
        return frame

    def origin(self) -> tuple[str, int | None] | None:
        return str(self._files[self._index % len(self._files)]), None

    def close(self) -> None:
        pass


def _image_folder(folder: Path, cfg: ImagesSourceConfig) -> list[Path]:
    if not folder.is_dir():
        raise SourceError(f"image folder {folder} does not exist: fix the camera's source.path")
    files = sorted(p for p in folder.glob(cfg.pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"image folder {folder} has no images matching {cfg.pattern!r}")
    return files


def _image_list(listing: Path) -> list[Path]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"image list {listing} cannot be read ({exc}): fix the camera's source.path") from None
    files = [listing.parent / line.strip() for line in lines if line.strip()]
    if not files:
        raise SourceError(f"image list {listing} names no images: one path a line")
    return files


def open_source(cfg: SourceConfig, decoder_threads: int = 1) -> Source:
    """The source a camera's config describes; raises :class:`SourceError` saying what failed and what to check."""
    threads = [cv2.CAP_PROP_N_THREADS, decoder_threads] if decoder_threads else []
    if isinstance(cfg, SyntheticSourceConfig):
        return SyntheticSource(cfg)
    if isinstance(cfg, ImagesSourceConfig):
        return ImagesSource(cfg)
    if isinstance(cfg, FileSourceConfig):
        path = Path(cfg.path)
        if not path.is_file():
            raise SourceError(f"video file {path} does not exist: fix the camera's source.path")
        what = f"video file {path} (is it a video FFmpeg can read?)"
        return CaptureSource(str(path), what, live=False, loop=cfg.loop, params=threads, file=str(path))
    if isinstance(cfg, RtspSourceConfig | HttpSourceConfig):
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(cfg.read_timeout_s * 1000),
        ]
        options = f"rtsp_transport;{cfg.transport}" if isinstance(cfg, RtspSourceConfig) else None
        what = f"{cfg.kind} stream {_redact(cfg.url)} (check the URL, the network and the camera)"
        return CaptureSource(cfg.url, what, live=True, params=timeouts + threads, ffmpeg_options=options)
    return _webcam(cfg)


def _webcam(cfg: WebcamSourceConfig) -> Source:
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
