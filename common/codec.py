"""A frame's image as bytes and back: the one codec that ingest, the detectors and the sinks share.

A frame carries its image as ``jpeg``, ``png`` or raw ``bgr8`` (``common.wire.Frame.encoding``). Encoding and
decoding live here once, so that every reader of a frame applies the same policy to damaged data: an image that
one part refuses (a JPEG cut short, say) is refused by all, with one error type saying what is wrong, rather than
drawn half grey by one and dead-lettered by another.
"""

from __future__ import annotations

import io
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from common.wire import Frame

Encoding = Literal["jpeg", "png", "bgr8"]

JPEG_END = b"\xff\xd9"
"""The end-of-image marker every complete JPEG ends with (some encoders pad zeros after it)."""


class ImageError(ValueError):
    """An image's bytes cannot be decoded, or do not hold what the message announces."""


class EncodeError(RuntimeError):
    """An image that cannot be encoded (wrong shape or type, or the encoder refused it)."""


def encode_image(image: np.ndarray, encoding: Encoding, quality: int = 90) -> bytes:
    """An HxWx3 uint8 BGR image as ``encoding``'s bytes; ``quality`` (10..100) is the JPEG's."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EncodeError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
    if encoding == "bgr8":
        return np.ascontiguousarray(image).tobytes()
    if encoding == "jpeg":
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]
    else:
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]  # lossless at any level: favour speed over size
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise EncodeError(f"OpenCV could not encode the image as {encoding}")
    data: bytes = buf.tobytes()
    return data


def decode_image(data: bytes, encoding: Encoding, size: tuple[int, int] | None = None) -> np.ndarray:
    """``data`` as an HxWx3 uint8 BGR image, or :class:`ImageError` saying why not.

    ``size`` (width, height) is what the image must measure; a raw ``bgr8`` image needs it. The array of a
    ``bgr8`` image is a read-only view of ``data``: copy it before drawing on it.
    """
    if encoding == "bgr8":
        if size is None:
            raise ImageError("a bgr8 image needs its width and height")
        width, height = size
        expected = width * height * 3
        if len(data) != expected:
            raise ImageError(f"bgr8 image has {len(data)} bytes, expected {expected}")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    bgr: np.ndarray | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        what = "JPEG" if encoding == "jpeg" else "PNG (or it is cut short)"
        raise ImageError(f"image of {len(data)} bytes is not a decodable {what}")
    if encoding == "jpeg":
        check_complete(data)
    _check_size(bgr.shape[1], bgr.shape[0], size)
    return bgr


def decode_frame(frame: Frame) -> np.ndarray:
    """The frame's image as BGR, checked against the size its message announces (see :func:`decode_image`)."""
    return decode_image(frame.data, frame.encoding, (frame.image_width, frame.image_height))


def check_jpeg(data: bytes, size: tuple[int, int] | None = None) -> None:
    """Check a JPEG without decoding it (its header, its size and its end), for a decoder elsewhere (a GPU's)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            kind, (width, height) = header.format, header.size
    except UnidentifiedImageError:
        raise ImageError(f"image of {len(data)} bytes is not a decodable JPEG (no image header)") from None
    except OSError as exc:
        raise ImageError(f"image of {len(data)} bytes is not a decodable JPEG ({exc})") from None
    if kind != "JPEG":
        raise ImageError(f"image of {len(data)} bytes is a {kind}, not a JPEG")
    _check_size(width, height, size)
    check_complete(data)


def check_complete(data: bytes) -> None:
    """Refuse a JPEG cut short: decoders fill the missing part with grey and carry on, and half an image would be
    inferred or drawn as if whole. Complete ones end with the end-of-image marker (maybe zero-padded)."""
    if not data.endswith(JPEG_END) and not data.rstrip(b"\x00").endswith(JPEG_END):
        raise ImageError(f"JPEG of {len(data)} bytes is cut short (no end-of-image marker)")


def _check_size(width: int, height: int, size: tuple[int, int] | None) -> None:
    if size is not None and (width, height) != size:
        raise ImageError(f"image is {width}x{height}, message says {size[0]}x{size[1]}")
