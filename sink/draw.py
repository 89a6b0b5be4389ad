"""Frames as images, with their detections drawn: shared by the snapshot action and the web view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from common.codec import ImageError, decode_frame
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
    """The frame's image as a writable BGR array; ImageError (a ValueError) saying why when it cannot be decoded.

    Decoded by ``common.codec``, so that what a detector refuses (a JPEG cut short, say) is not drawn half grey.
    """
    try:
        image = decode_frame(frame)
    except ImageError as exc:
        raise ImageError(f"the {frame.encoding.upper()} image cannot be decoded: {exc}") from None
    return image if image.flags.writeable else image.copy()


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
