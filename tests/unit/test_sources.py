from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common.codec import EncodeError
from common.config import CameraConfig
from common.redact import redact as _redact
from ingest.prepare import make_frame, resize_to_max_side
from ingest.sources import FrameError, SourceError, open_source
from ingest.sources.file import FileSourceConfig
from ingest.sources.images import ImagesSourceConfig
from ingest.sources.rtsp import RtspSourceConfig
from ingest.sources.synthetic import SyntheticSource, SyntheticSourceConfig
from ingest.sources.webcam import WebcamSourceConfig


def synthetic(**kw: object) -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig(**kw))  # type: ignore[arg-type]


def read(source: SyntheticSource) -> np.ndarray:
    assert source.grab() is not None
    return source.retrieve()


def test_synthetic_frames_are_deterministic_from_the_seed() -> None:
    a, b, c = synthetic(seed=5), synthetic(seed=5), synthetic(seed=6)
    fa, fb, fc = read(a), read(b), read(c)
    assert fa.shape == (480, 640, 3) and fa.dtype == np.uint8
    assert np.array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert a.truth(0) == b.truth(0)


def test_synthetic_timestamps_are_media_time() -> None:
    src = synthetic(fps=4.0)
    assert [src.grab() for _ in range(3)] == [0.0, 0.25, 0.5]


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
            assert centre.max() >= 90  # shapes are brighter than the background


def test_resize_keeps_the_aspect_and_never_enlarges() -> None:
    img = np.zeros((1080, 1920, 3), np.uint8)
    assert resize_to_max_side(img, 640).shape == (360, 640, 3)
    assert resize_to_max_side(img, 4000) is img


def test_make_frame_carries_the_original_size_and_a_decodable_jpeg() -> None:
    img = synthetic(width=1280, height=720).render(0)
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


def test_camera_config_refuses_both_samplings_and_large_raw_frames() -> None:
    with pytest.raises(ValueError, match="either every_n or fps"):
        CameraConfig(name="c", source=SyntheticSourceConfig(), every_n=2, fps=5.0)
    with pytest.raises(ValueError, match="bgr8 frames need max_side <= 640"):
        CameraConfig(name="c", source=SyntheticSourceConfig(), encoding="bgr8", max_side=1280)
    with pytest.raises(ValueError, match="rtsp:// or rtsps://"):
        RtspSourceConfig(url="http://cam/stream")


def write_video(path: Path, frames: int, size: tuple[int, int] = (160, 120), fps: float = 25.0) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert out.isOpened()
    for i in range(frames):
        out.write(np.full((size[1], size[0], 3), i * 10 % 256, np.uint8))
    out.release()


def test_a_video_file_is_read_to_its_end_with_media_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 5)
    src = open_source(FileSourceConfig(path=path))
    assert src.fps == pytest.approx(25.0) and not src.live
    stamps = []
    while (ts := src.grab()) is not None:
        stamps.append(ts)
        assert src.retrieve().shape == (120, 160, 3)
    assert stamps == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    src.close()


def test_a_looped_file_goes_on_with_increasing_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 4)
    src = open_source(FileSourceConfig(path=path, loop=True))
    stamps = [src.grab() for _ in range(10)]
    assert all(t is not None for t in stamps)
    assert stamps == pytest.approx([i * 0.04 for i in range(10)])
    src.close()


def test_a_missing_or_unreadable_file_is_a_clear_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"does not exist: fix the camera's source\.path"):
        open_source(FileSourceConfig(path=tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot open video file"):
        open_source(FileSourceConfig(path=junk))


def test_a_folder_of_images_is_read_in_name_order_and_a_bad_image_is_one_frame_error(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((20, 30, 3), i * 50, np.uint8))
    (tmp_path / "img3.jpg").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    src = open_source(ImagesSourceConfig(path=tmp_path, fps=2.0))
    values = []
    while (ts := src.grab()) is not None:
        try:
            values.append((ts, int(src.retrieve()[0, 0, 0])))
        except FrameError as exc:
            assert "img3.jpg is not a readable image" in str(exc)
            values.append((ts, -1))
    assert values == [(0.0, 0), (0.5, 50), (1.0, 100), (1.5, -1)]
    looped = open_source(ImagesSourceConfig(path=tmp_path, pattern="*.png", loop=True))
    assert sum(looped.grab() is not None for _ in range(7)) == 7


def test_an_empty_or_missing_image_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="has no images matching"):
        open_source(ImagesSourceConfig(path=tmp_path))
    with pytest.raises(SourceError, match=r"image folder .* does not exist"):
        open_source(ImagesSourceConfig(path=tmp_path / "nope"))


def test_a_webcam_that_is_not_there_is_a_clear_source_error() -> None:
    with pytest.raises(SourceError, match=r"webcam 63 \(/dev/video63: is it present and not in use\?\)"):
        open_source(WebcamSourceConfig(index=63))


def test_passwords_never_reach_the_logs() -> None:
    assert _redact("rtsp://admin:hunter2@10.0.0.5:554/stream1") == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert _redact("http://cam.local/mjpeg") == "http://cam.local/mjpeg"


def test_an_image_list_is_read_in_its_order_and_each_frame_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name, value in (("b.png", 10), ("sub/a.png", 20)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 12, 3), value, np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text("sub/a.png\n\nb.png\n", encoding="utf-8")  # relative to the list; blank lines ignored
    src = open_source(ImagesSourceConfig(path=listing))
    seen = []
    while src.grab() is not None:
        seen.append((int(src.retrieve()[0, 0, 0]), src.origin()))
    assert seen == [(20, (str(tmp_path / "sub" / "a.png"), None)), (10, (str(tmp_path / "b.png"), None))]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(SourceError, match="names no images"):
        open_source(ImagesSourceConfig(path=empty))


def test_images_are_read_as_stored_without_applying_an_exif_rotation(tmp_path: Path) -> None:
    """As PIL reads them, which TrainYourOwnYOLO trains and detects with."""
    from PIL import Image

    pixels = np.zeros((10, 30, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif)
    src = open_source(ImagesSourceConfig(path=tmp_path))
    assert src.grab() is not None
    assert src.retrieve().shape == (10, 30, 3)
    assert cv2.imread(str(tmp_path / "phone.jpg")).shape == (30, 10, 3)  # OpenCV's default would turn it


def test_a_video_files_frames_name_the_file_and_their_index_and_a_png_frame_is_lossless(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", 3)
    src = open_source(FileSourceConfig(path=tmp_path / "v.avi"))
    origins = []
    while src.grab() is not None:
        origins.append(src.origin())
    assert origins == [(str(tmp_path / "v.avi"), i) for i in range(3)]
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    camera = CameraConfig(name="c", source=SyntheticSourceConfig(), encoding="png", max_side=8192)
    frame = make_frame(camera, image, 0, 1.0, live=False, origin=("/x/v.avi", 7))
    assert (frame.file, frame.frame_index, frame.encoding) == ("/x/v.avi", 7, "png")
    decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and np.array_equal(decoded, image)
    assert synthetic().origin() is None
