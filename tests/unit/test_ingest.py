from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import CameraConfig, FileSourceConfig, SyntheticSourceConfig
from ingest.prepare import EncodeError, make_frame, resize_to_max_side
from ingest.sources import SourceError, SyntheticSource, VideoFileSource, open_source


def synthetic(**kw: object) -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig(**kw))  # type: ignore[arg-type]


def test_synthetic_frames_are_deterministic_from_the_seed() -> None:
    a, b, c = synthetic(seed=5), synthetic(seed=5), synthetic(seed=6)
    fa, fb, fc = a.read(), b.read(), c.read()
    assert fa is not None and fb is not None and fc is not None
    assert fa.shape == (480, 640, 3) and fa.dtype == np.uint8
    assert np.array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert a.truth(0) == b.truth(0)


def test_synthetic_shapes_move_stay_inside_and_are_drawn_where_the_truth_says() -> None:
    src = synthetic(seed=1, shapes=3, width=320, height=240)
    assert [t.label for t in src.truth(0)] == ["circle", "square", "triangle"]
    assert src.truth(0) != src.truth(10)
    for i in range(0, 400, 7):
        frame = src.render(i)
        for t in src.truth(i):
            x0, y0, x1, y1 = t.box
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
            centre = frame[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
            assert centre.max() >= 90  # shapes are brighter than the background (<= ~100 only at the very edge)


def test_resize_keeps_the_aspect_and_never_enlarges() -> None:
    img = np.zeros((1080, 1920, 3), np.uint8)
    assert resize_to_max_side(img, 640).shape == (360, 640, 3)
    assert resize_to_max_side(img, 4000) is img


def test_make_frame_carries_the_original_size_and_a_decodable_jpeg() -> None:
    img = synthetic(width=1280, height=720).read()
    assert img is not None
    cam = CameraConfig(name="c", source=SyntheticSourceConfig(), max_side=320)
    f = make_frame(cam, img, seq=3, capture_ts=1.5)
    assert (f.width, f.height, f.image_width, f.image_height, f.seq) == (1280, 720, 320, 180, 3)
    decoded = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (180, 320, 3)
    raw = make_frame(cam.model_copy(update={"encoding": "bgr8"}), img, seq=0, capture_ts=1.0)
    assert len(raw.data) == 320 * 180 * 3


def test_make_frame_refuses_what_is_not_a_bgr_image() -> None:
    cam = CameraConfig(name="c", source=SyntheticSourceConfig())
    with pytest.raises(EncodeError, match="HxWx3 uint8"):
        make_frame(cam, np.zeros((10, 10), np.uint8), 0, 1.0)


def write_video(path: Path, frames: int, size: tuple[int, int] = (160, 120)) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, size)
    assert out.isOpened()
    for i in range(frames):
        img = np.full((size[1], size[0], 3), i * 10 % 256, np.uint8)
        out.write(img)
    out.release()


def test_a_video_file_is_read_to_its_end_or_looped(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 5)
    once = VideoFileSource(FileSourceConfig(path=path))
    assert once.fps == pytest.approx(25.0)
    count = 0
    while once.read() is not None:
        count += 1
    assert count == 5
    looped = open_source(FileSourceConfig(path=path, loop=True))
    assert all(looped.read() is not None for _ in range(12))
    looped.close()


def test_a_missing_or_unreadable_file_is_a_clear_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"does not exist: fix the camera's source\.path"):
        VideoFileSource(FileSourceConfig(path=tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot open video file"):
        VideoFileSource(FileSourceConfig(path=junk))
