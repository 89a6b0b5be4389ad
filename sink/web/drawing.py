"""Tracked objects drawn on frames, for the web view's grid and events: each box labelled with its track id and
label, each track's trail (its recent centres), and an event's best shot cropped around its box.

Boxes are in ``sink.draw.BOX_COLOUR`` (pure red, which the synthetic cameras never draw, so a test finds them);
trails in yellow. Coordinates come in original-frame pixels and are scaled to the image carried."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from common.wire import Box, Tracks
from sink.draw import BOX_COLOUR

TRAIL_COLOUR = (0, 215, 255)
"""BGR: amber, apart from the boxes' red."""
CROP_MARGIN = 0.5
"""A snapshot shows this much of the box's size around it on every side: where the object was, not only what."""
CROP_MIN = 96
"""... and at least this many pixels a side, so a far-off object is not a blur of a few pixels."""


def draw_tracks(image: np.ndarray, tracks: Tracks, trails: Mapping[int, Sequence[tuple[float, float]]]) -> None:
    """Draw each tracked object's trail, then its box labelled ``#id label``, in place."""
    sx, sy = image.shape[1] / tracks.width, image.shape[0] / tracks.height
    thickness = _thickness(image)
    for obj in tracks.objects:
        points = trails.get(obj.track_id, ())
        if len(points) > 1:
            line = np.array([[round(x * sx), round(y * sy)] for x, y in points], np.int32)
            cv2.polylines(image, [line], False, TRAIL_COLOUR, thickness, cv2.LINE_AA)
            cv2.circle(image, tuple(int(v) for v in line[-1]), thickness + 1, TRAIL_COLOUR, cv2.FILLED)
    for obj in tracks.objects:
        _box(image, obj.box, (sx, sy), f"#{obj.track_id} {obj.label}", thickness)


def draw_best(image: np.ndarray, box: Box, size: tuple[int, int], text: str) -> np.ndarray:
    """The part of a frame around an object's box, the box drawn and labelled; ``size`` is the original frame's
    (width, height), which the box's pixels are of."""
    sx, sy = image.shape[1] / size[0], image.shape[0] / size[1]
    _box(image, box, (sx, sy), text, _thickness(image))
    x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    half_w = max((x2 - x1) * (0.5 + CROP_MARGIN), CROP_MIN / 2)
    half_h = max((y2 - y1) * (0.5 + CROP_MARGIN), CROP_MIN / 2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    left, right = max(0, round(cx - half_w)), min(w, round(cx + half_w))
    top, bottom = max(0, round(cy - half_h)), min(h, round(cy + half_h))
    if right - left < 2 or bottom - top < 2:  # a box outside the picture: the whole frame, rather than nothing
        return image
    return np.ascontiguousarray(image[top:bottom, left:right])


def _thickness(image: np.ndarray) -> int:
    return max(2, round(int(min(image.shape[:2])) / 240))


def _box(image: np.ndarray, box: Box, scale: tuple[float, float], text: str, thickness: int) -> None:
    x1, y1, x2, y2 = box
    p1 = (round(x1 * scale[0]), round(y1 * scale[1]))
    p2 = (round(x2 * scale[0]), round(y2 * scale[1]))
    cv2.rectangle(image, p1, p2, BOX_COLOUR, thickness)
    size = max(0.4, min(image.shape[:2]) / 800)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    top = p1[1] - th - base if p1[1] - th - base >= 0 else p1[1]  # above the box, or inside it at the top edge
    cv2.rectangle(image, (p1[0], top), (p1[0] + tw, top + th + base), BOX_COLOUR, cv2.FILLED)
    cv2.putText(image, text, (p1[0], top + th), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
