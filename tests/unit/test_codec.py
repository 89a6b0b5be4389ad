"""The frame codec: what ingest encodes every reader decodes, and damaged images are refused the same everywhere."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pytest

from common.codec import EncodeError, ImageError, check_jpeg, decode_frame, decode_image, encode_image
from common.wire import Alert, Detection, Frame
from sink.alerts.actions import DeliveryError
from sink.alerts.actions.snapshot import SnapshotAction, SnapshotActionConfig
from sink.draw import frame_image

Encoding = Literal["jpeg", "png", "bgr8"]


def picture(width: int = 64, height: int = 48) -> np.ndarray:
    """Smooth, so that a JPEG of it stays close to it."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    return np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                     np.full((height, width), 128, np.float32)], axis=2).astype(np.uint8)  # fmt: skip


def frame(data: bytes, encoding: Encoding = "jpeg", size: tuple[int, int] = (64, 48)) -> Frame:
    return Frame(stream="cam", seq=0, capture_ts=time.time(), width=size[0], height=size[1], encoding=encoding,
                 image_width=size[0], image_height=size[1], data=data)  # fmt: skip


@pytest.mark.parametrize("encoding", ["png", "bgr8"])
def test_lossless_encodings_round_trip_pixel_for_pixel(encoding: Encoding) -> None:
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_image(image, encoding), encoding, (64, 48)), image)


def test_jpeg_round_trips_close_and_its_quality_is_applied() -> None:
    image = picture()
    low, high = encode_image(image, "jpeg", 10), encode_image(image, "jpeg", 100)
    assert len(low) < len(high)
    back = decode_image(high, "jpeg", (64, 48))
    assert back.shape == (48, 64, 3) and np.abs(back.astype(int) - image).mean() < 3


def test_encode_refuses_what_is_not_an_8_bit_bgr_image() -> None:
    with pytest.raises(EncodeError, match="HxWx3 uint8"):
        encode_image(np.zeros((4, 4), np.uint8), "jpeg")
    with pytest.raises(EncodeError, match="HxWx3 uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32), "png")


@pytest.fixture
def grey_filling_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV 4's decoder: a JPEG cut short comes back whole, its missing part grey (OpenCV 5 refuses it)."""
    real = cv2.imdecode

    def imdecode(buf: np.ndarray, flags: int) -> np.ndarray | None:
        data = buf.tobytes()
        return real(buf, flags) if data.endswith(b"\xff\xd9") else np.full((48, 64, 3), 128, np.uint8)

    monkeypatch.setattr(cv2, "imdecode", imdecode)


def test_a_jpeg_cut_short_is_refused_by_any_decoder() -> None:
    jpeg = encode_image(picture(), "jpeg")
    for cut in (jpeg[:-2], jpeg[: len(jpeg) - 40], jpeg[: len(jpeg) // 2]):
        with pytest.raises(ImageError, match=f"JPEG of {len(cut)} bytes is cut short|not a decodable JPEG"):
            decode_image(cut, "jpeg")


@pytest.mark.usefixtures("grey_filling_decoder")
def test_a_jpeg_cut_short_is_refused_though_the_decoder_fills_it_with_grey() -> None:
    jpeg = encode_image(picture(), "jpeg")
    cut = jpeg[: len(jpeg) - 40]
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None  # grey-filled, not refused
    with pytest.raises(ImageError, match=f"JPEG of {len(cut)} bytes is cut short"):
        decode_image(cut, "jpeg")
    with pytest.raises(ImageError, match="cut short"):
        check_jpeg(cut, (64, 48))
    padded = jpeg + b"\x00" * 16  # some encoders pad after the end-of-image marker
    assert decode_image(padded, "jpeg").shape == (48, 64, 3)
    check_jpeg(padded, (64, 48))


def test_damaged_or_mislabelled_images_are_refused_saying_what_is_wrong() -> None:
    png = encode_image(picture(), "png")
    with pytest.raises(ImageError, match=r"image of 6 bytes is not a decodable JPEG$"):
        decode_image(b"\xff\xd8junk", "jpeg")
    with pytest.raises(ImageError, match="not a decodable PNG"):
        decode_image(png[: len(png) // 2], "png")
    with pytest.raises(ImageError, match="bgr8 image has 10 bytes, expected 9216"):
        decode_image(b"\x00" * 10, "bgr8", (64, 48))
    with pytest.raises(ImageError, match="needs its width and height"):
        decode_image(b"\x00" * 9216, "bgr8")
    with pytest.raises(ImageError, match="image is 64x48, message says 32x48"):
        decode_frame(frame(png, "png", (32, 48)))
    with pytest.raises(ImageError, match="is a PNG, not a JPEG"):
        check_jpeg(png)
    with pytest.raises(ImageError, match="no image header"):
        check_jpeg(b"junk")
    with pytest.raises(ImageError, match="image is 64x48, message says 64x40"):
        check_jpeg(encode_image(picture(), "jpeg"), (64, 40))


@pytest.mark.usefixtures("grey_filling_decoder")
def test_drawing_applies_the_detectors_policy_and_gets_a_writable_copy() -> None:
    jpeg = encode_image(picture(), "jpeg")
    with pytest.raises(ImageError, match=r"the JPEG image cannot be decoded: JPEG of .* bytes is cut short"):
        frame_image(frame(jpeg[:-40]))
    raw = frame(encode_image(picture(), "bgr8"), "bgr8")
    image = frame_image(raw)
    image[:] = 0  # a bgr8 frame's pixels are a read-only view of its bytes: drawing gets a copy
    assert raw.data == encode_image(picture(), "bgr8")


@pytest.mark.parametrize("decoder", ["opencv", "grey-filling"])
def test_the_snapshot_action_refuses_a_jpeg_cut_short_as_a_permanent_failure(
    tmp_path: Path, decoder: str, request: pytest.FixtureRequest
) -> None:
    if decoder == "grey-filling":  # what the snapshot action drew, half grey, before it used the detector's policy
        request.getfixturevalue("grey_filling_decoder")
    jpeg = encode_image(picture(), "jpeg")
    cut = frame(jpeg[: len(jpeg) * 2 // 3])
    alert = Alert(sink="alerts", rule="people", stream="cam", label="person", state="on", frame_id="1-0", seq=0,
                  capture_ts=time.time(), raised_ts=time.time(), width=64, height=48,
                  detections=[Detection(label="person", class_id=0, score=0.9, box=(10, 10, 40, 30))],
                  actions=["snap"])  # fmt: skip
    action = SnapshotAction("snap", SnapshotActionConfig(folder=tmp_path), lambda stream, frame_id: cut)
    with pytest.raises(DeliveryError, match=r"cannot be decoded: .*(cut short|not a decodable JPEG)") as err:
        action.deliver(alert)
    assert err.value.transient is False
    assert action.last_path is None and not any(tmp_path.iterdir())  # nothing half grey was saved
    whole = frame(jpeg)
    SnapshotAction("snap", SnapshotActionConfig(folder=tmp_path), lambda stream, frame_id: whole).deliver(alert)
    assert len(list(tmp_path.rglob("*.jpg"))) == 1
