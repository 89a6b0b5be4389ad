"""Frame sources. Each yields BGR uint8 frames; ``None`` means the source has ended."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common.config import FileSourceConfig, SourceConfig, SyntheticSourceConfig


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message says which and how to fix it."""


class Source(Protocol):
    fps: float | None
    """Native frame rate, when known."""

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


SHAPE_LABELS = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Truth:
    """A shape drawn in a synthetic frame: its label and box (xmin, ymin, xmax, ymax) in frame pixels."""

    label: str
    box: tuple[int, int, int, int]


class SyntheticSource:
    """Moving labelled shapes, fully determined by the seed and the frame index (so tests can score)."""

    def __init__(self, cfg: SyntheticSourceConfig) -> None:
        self.cfg = cfg
        self.fps: float | None = cfg.fps
        self.index = 0
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
            else:
                points = np.array([[(x0 + x1) // 2, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.int32)
                cv2.fillPoly(frame, [points], colour, cv2.LINE_AA)
        return frame

    def read(self) -> np.ndarray | None:
        frame = self.render(self.index)
        self.index += 1
        return frame

    def close(self) -> None:
        pass


def _bounce(t: float) -> float:
    """Fold a position into [0, 1], reflecting at the walls."""
    t = math.fmod(abs(t), 2.0)
    return 2.0 - t if t > 1.0 else t


class VideoFileSource:
    """A video file through OpenCV's FFmpeg backend, optionally looped."""

    def __init__(self, cfg: FileSourceConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.path)
        if not path.is_file():
            raise SourceError(f"video file {path} does not exist: fix the camera's source.path")
        self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise SourceError(f"OpenCV cannot open video file {path}: is it a video in a format FFmpeg reads?")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not ok and self.cfg.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        return frame if ok else None

    def close(self) -> None:
        self._cap.release()


def open_source(cfg: SourceConfig) -> Source:
    """The source a camera's config describes; raises :class:`SourceError` with a clear message."""
    if isinstance(cfg, SyntheticSourceConfig):
        return SyntheticSource(cfg)
    return VideoFileSource(cfg)
