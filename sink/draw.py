"""Frames as images, with their detections drawn: shared by the snapshot action and the web view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from common.wire import Detection, Frame

BOX_COLOUR = (0, 0, 255)
"""BGR colour of the boxes and label backgrounds: pure red, which the synthetic cameras never draw (their shapes
have every channel at 90 or more, their background is grey), so a test can find the boxes in a picture."""


class Boxes(Protocol):
    """What has boxes to draw: a result or an alert (boxes in pixels of the original ``width`` x ``height``)."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def detections(self) -> Sequence[Detection]: ...


def frame_image(frame: Frame) -> np.ndarray:
    """The frame's image as a writable BGR array; ValueError saying why when it cannot be decoded."""
    if frame.encoding != "bgr8":
        image: np.ndarray | None = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"the {frame.encoding.upper()} image cannot be decoded")
        return image
    expected = frame.image_width * frame.image_height * 3
    if len(frame.data) != expected:
        raise ValueError(
            f"bgr8 image holds {len(frame.data)} bytes, {frame.image_width}x{frame.image_height} needs {expected}"
        )
    return np.frombuffer(frame.data, np.uint8).reshape(frame.image_height, frame.image_width, 3).copy()


def draw_detections(image: np.ndarray, boxes: Boxes) -> None:
    """Draw the boxes (original-frame pixels, scaled to the image) with label and score, in place."""
    h, w = image.shape[:2]
    sx, sy = w / boxes.width, h / boxes.height
    thickness = max(2, round(min(w, h) / 240))
    scale = max(0.4, min(w, h) / 800)
    for det in boxes.detections:
        x1, y1, x2, y2 = det.box
        p1 = (round(x1 * sx), round(y1 * sy))
        p2 = (round(x2 * sx), round(y2 * sy))
        cv2.rectangle(image, p1, p2, BOX_COLOUR, thickness)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        # The label sits above the box, or inside it when the box touches the top edge.
        top = p1[1] - th - base if p1[1] - th - base >= 0 else p1[1]
        cv2.rectangle(image, (p1[0], top), (p1[0] + tw, top + th + base), BOX_COLOUR, cv2.FILLED)
        cv2.putText(image, text, (p1[0], top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
