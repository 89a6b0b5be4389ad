"""A synthetic scene: labelled shapes moving over a noisy gradient, fully determined by a seed and a frame index.

The synthetic camera (``ingest.sources.synthetic``) streams it, and the demo model is trained and scored on it
(``detector.training``): so tests can score detections against the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Truth:
    """A shape drawn in a synthetic frame: its label and box (xmin, ymin, xmax, ymax) in frame pixels, and which
    object of the scene it is (the same ``id`` in every frame: the identity trackers are scored against)."""

    label: str
    box: tuple[int, int, int, int]
    id: int = 0


SHAPE_LABELS = ("circle", "square", "triangle")
DISTRACTOR_LABEL = "NULL"  # TYOY's trick: a class for what gets mis-detected, ignored at run time


class Scene:
    """``shapes`` labelled shapes (and ``distractors``: plus signs labelled NULL) of one seed on a width x height
    frame."""

    def __init__(self, seed: int, width: int, height: int, shapes: int, distractors: int = 0) -> None:
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        self._background = self._make_background(rng, width, height)
        side = min(width, height)
        self._shapes = [
            (
                SHAPE_LABELS[i % len(SHAPE_LABELS)],
                int(rng.integers(side // 10, side // 4)),  # size
                rng.uniform(0, 1, 2),  # start position, as a fraction of the free range
                rng.uniform(-0.02, 0.02, 2),  # velocity, fraction of the range per frame
                tuple(int(c) for c in rng.integers(90, 256, 3)),  # BGR colour
            )
            for i in range(shapes)
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
            for _ in range(distractors)
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
        for identity, (label, size, start, velocity, _) in enumerate(self._shapes):
            x, y = (_bounce(s + v * index) for s, v in zip(start, velocity, strict=True))
            left = int(x * (self.width - size))
            top = int(y * (self.height - size))
            out.append(Truth(label, (left, top, left + size, top + size), identity))
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


def _bounce(t: float) -> float:
    """Fold a position into [0, 1], reflecting at the walls."""
    t = math.fmod(abs(t), 2.0)
    return 2.0 - t if t > 1.0 else t
