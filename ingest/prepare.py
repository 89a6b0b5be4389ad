"""Frame preparation: resize to a maximum side (aspect kept), then encode (JPEG, PNG or raw BGR: ``common.codec``)."""

from __future__ import annotations

import cv2
import numpy as np

from common.codec import EncodeError, encode_image
from common.config import CameraConfig
from common.wire import Frame


def resize_to_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # AREA: no aliasing when shrinking


def make_frame(
    camera: CameraConfig,
    image: np.ndarray,
    seq: int,
    capture_ts: float,
    live: bool = True,
    origin: tuple[str, int | None] | None = None,
) -> Frame:
    """A wire frame from a BGR image; the original size, and a recording's file and frame index, travel with it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:  # before resizing it
        raise EncodeError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    small = resize_to_max_side(image, camera.max_side)
    return Frame(
        stream=camera.name,
        seq=seq,
        capture_ts=capture_ts,
        width=width,
        height=height,
        encoding=camera.encoding,
        image_width=small.shape[1],
        image_height=small.shape[0],
        data=encode_image(small, camera.encoding, camera.jpeg_quality),
        live=live,
        file=origin[0] if origin else None,
        frame_index=origin[1] if origin else None,
    )
