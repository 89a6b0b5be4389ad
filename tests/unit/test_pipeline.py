"""The detector's frame → result logic, with a stand-in engine whose raw outputs are chosen by the test."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import pytest

from common.config import ModelConfig, PoolConfig
from common.redis_io import Entry
from common.wire import Frame, decode, encode
from detector.engines import DeviceBatch, Image
from detector.model import ModelSpec
from detector.pipeline import Pipeline
from detector.watchdog import Watchdog
from detector.yolo.postprocess import OutputLayout

SIZE = 64
CLASSES = ["cat", "NULL"]


class ScriptedEngine:
    """Returns tiny-YOLO head outputs with one confident box per listed (class, cell) in the stride-32 head."""

    name = "scripted"
    device = "cpu"
    loads_images = False
    output_layout: OutputLayout = "yolov3"

    def __init__(self, hits: list[int], class_logit: float = 20.0) -> None:
        self.hits = hits
        self.class_logit = class_logit
        self.batches: list[int] = []
        self.loaded: list[list[str]] = []  # per load: "jpeg" or "rgb" for each image handed over

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        # As a device decoder would: JPEGs it cannot decode are reported, the rest become rows.
        self.loaded.append(["jpeg" if isinstance(im, bytes) else "rgb" for im in images])
        failed = {i: "nvJPEG refused it" for i, im in enumerate(images) if isinstance(im, bytes) and b"BAD" in im}
        kept = [i for i in range(len(images)) if i not in failed]
        return DeviceBatch(np.zeros((len(kept), 3, SIZE, SIZE), np.uint8), kept, failed)

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        self.batches.append(len(batch))
        channels = 3 * (5 + len(CLASSES))
        coarse = np.full((len(batch), SIZE // 32, SIZE // 32, channels), -20.0, np.float32)
        fine = np.full((len(batch), SIZE // 16, SIZE // 16, channels), -20.0, np.float32)
        for cls in self.hits:
            # Cell (0, 0), first anchor of the coarse head: centre of the cell, anchor-sized, objectness ~1.
            coarse[:, 0, 0, 0:4] = 0.0
            coarse[:, 0, 0, 4] = 20.0
            coarse[:, 0, 0, 5 + cls] = self.class_logit
        return [coarse, fine]


def make(hits: list[int], class_logit: float = 20.0, **pool: Any) -> tuple[Pipeline, ScriptedEngine]:
    model = ModelConfig(classes=CLASSES, architecture="tiny", input_size=SIZE)
    engine = ScriptedEngine(hits, class_logit)
    cfg = PoolConfig(name="p", model=model, **pool)
    return Pipeline(ModelSpec.from_config(model), engine, cfg, "r1"), engine


def jpeg_entry(seq: int, width: int = 128, height: int = 64, original: tuple[int, int] = (256, 128)) -> Entry:
    img = np.zeros((height, width, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    frame = Frame(
        stream="cam",
        seq=seq,
        capture_ts=time.time(),
        width=original[0],
        height=original[1],
        encoding="jpeg",
        image_width=width,
        image_height=height,
        data=buf.tobytes(),
    )
    return Entry("k", f"1-{seq}", encode(frame))


def test_every_good_frame_gets_a_result_with_boxes_in_original_pixels() -> None:
    pipeline, engine = make([0])
    out = pipeline.process([jpeg_entry(0), jpeg_entry(1)])
    assert engine.batches == [2]
    assert out.failed == []
    assert [r.seq for _, r in out.published] == [0, 1]
    result = out.published[0][1]
    assert (result.frame_id, result.pool, result.replica, result.engine, result.batch_size) == (
        "1-0",
        "p",
        "r1",
        "scripted",
        2,
    )
    (det,) = result.detections
    assert det.label == "cat" and det.class_id == 0 and det.score > 0.99
    # The carried image is 128x64 (half the 256x128 original); boxes come back in original pixels.
    x0, y0, x1, y1 = det.box
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 128
    assert x1 > 128 / 2  # scaled up from the carried image, not left in its pixels
    assert result.timings.inference_ms >= 0 and result.timings.end_to_end_ms > 0


def test_ignored_labels_are_dropped_but_the_frame_still_gets_a_result() -> None:
    pipeline, _ = make([1], ignore_labels=["NULL"])
    out = pipeline.process([jpeg_entry(0)])
    assert len(out.published) == 1 and out.published[0][1].detections == []


def test_bad_entries_fail_with_reasons_while_good_ones_flow() -> None:
    pipeline, engine = make([0])
    good = jpeg_entry(5)
    broken = Frame(
        stream="cam",
        seq=6,
        capture_ts=time.time(),
        width=8,
        height=8,
        encoding="jpeg",
        image_width=8,
        image_height=8,
        data=b"\xff\xd8 not really",
    )
    wrong_size = Frame(
        stream="cam",
        seq=7,
        capture_ts=time.time(),
        width=8,
        height=8,
        encoding="bgr8",
        image_width=8,
        image_height=8,
        data=b"\x00" * 10,
    )
    entries = [
        Entry("k", "1-1", b"\x93garbage"),
        Entry("k", "1-2", encode(broken)),
        good,
        Entry("k", "1-3", encode(wrong_size)),
        Entry("k", "1-4", None),
    ]
    out = pipeline.process(entries)
    assert [r.seq for _, r in out.published] == [5]
    assert engine.batches == [1]
    reasons = {e.id: why for e, why in out.failed}
    assert reasons["1-1"].startswith("WireError:")
    assert reasons["1-2"].startswith("ImageError: image of")
    assert reasons["1-3"] == "ImageError: bgr8 image has 10 bytes, expected 192"
    assert reasons["1-4"] == "WireError: entry has no 'msg' field"


def test_a_batch_of_only_bad_entries_never_reaches_the_engine() -> None:
    pipeline, engine = make([0])
    out = pipeline.process([Entry("k", "1-1", b"junk")])
    assert out.published == [] and len(out.failed) == 1
    assert engine.batches == []


def test_frames_older_than_max_age_are_stale_and_never_reach_the_engine() -> None:
    pipeline, engine = make([0], max_age_ms=1000)
    old = jpeg_entry(0)
    frame = decode(old.payload, Frame).model_copy(update={"capture_ts": time.time() - 5})
    prepared = pipeline.prepare([Entry("k", "1-9", encode(frame)), jpeg_entry(1)])
    assert [e.id for e in prepared.stale] == ["1-9"]
    assert [f.seq for f in prepared.frames] == [1]
    pipeline.infer(prepared)
    assert engine.batches == [1]


def test_a_recordings_frames_are_never_stale() -> None:
    pipeline, _ = make([0], max_age_ms=1000)
    frame = decode(jpeg_entry(0).payload, Frame).model_copy(update={"capture_ts": time.time() - 60, "live": False})
    prepared = pipeline.prepare([Entry("k", "1-9", encode(frame))])
    assert prepared.stale == [] and [f.seq for f in prepared.frames] == [0]


def test_per_label_min_score_replaces_the_pool_threshold() -> None:
    # A class logit of 0 scores the scripted box 0.5: a per-label floor above it removes it, one below keeps it.
    strict, _ = make([0], class_logit=0.0, min_score={"cat": 0.6})
    assert strict.process([jpeg_entry(0)]).published[0][1].detections == []
    lenient, _ = make([0], class_logit=0.0, score_threshold=0.9, min_score={"cat": 0.4})
    (det,) = lenient.process([jpeg_entry(0)]).published[0][1].detections
    assert det.score == pytest.approx(0.5)
    assert make([0], class_logit=0.0, score_threshold=0.9)[0].process([jpeg_entry(0)]).published[0][1].detections == []


class StuckOnce(ScriptedEngine):
    """Hangs on its first call, as a wedged GPU would."""

    calls = 0

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        StuckOnce.calls += 1
        if StuckOnce.calls == 1:
            time.sleep(2)
        return super().predict(batch)


def test_the_watchdog_restarts_a_stuck_engine_and_the_batch_is_retried_once() -> None:
    StuckOnce.calls = 0
    engines: list[ScriptedEngine] = []

    def factory() -> ScriptedEngine:
        engines.append(StuckOnce([0]))
        return engines[-1]

    watchdog = Watchdog(factory, timeout_s=0.3)
    pipeline, _ = make([0])
    pipeline.engine = watchdog
    out = pipeline.process([jpeg_entry(0)])
    assert watchdog.restarts == 1 and len(engines) == 2
    assert len(out.published) == 1 and out.failed == []
    watchdog.close()


class AlwaysStuck(ScriptedEngine):
    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        time.sleep(1)
        return super().predict(batch)


def test_a_batch_that_times_out_twice_is_dead_lettered_with_the_reason() -> None:
    watchdog = Watchdog(lambda: AlwaysStuck([0]), timeout_s=0.2)
    pipeline, _ = make([0])
    pipeline.engine = watchdog
    out = pipeline.process([jpeg_entry(0), jpeg_entry(1)])
    assert out.published == []
    assert [why for _, why in out.failed] == [
        "inference timed out twice (inference of a batch of 2 ran past 0.2 s (engine.inference_timeout_s))"
    ] * 2
    assert watchdog.restarts == 2
    watchdog.close()


class BrokenBatcher:
    def next(self, stop: object) -> list[Entry]:
        raise ConnectionError("the server said something unexpected")


def test_a_failed_feeder_stops_the_loop_instead_of_hanging_it() -> None:
    from typing import cast

    from detector.batcher import Batcher, Feeder

    pipeline, _ = make([0])
    feeder = Feeder(cast(Batcher, BrokenBatcher()), pipeline, threads=1)
    with pytest.raises(RuntimeError, match="reading and preparing frames failed: the server said"):
        feeder.get()
    feeder.close(1.0)


def frame_entry(
    seq: int, data: bytes, size: tuple[int, int] = (128, 64), encoding: Literal["jpeg", "bgr8"] = "jpeg"
) -> Entry:
    frame = Frame(
        stream="cam", seq=seq, capture_ts=time.time(), width=size[0] * 2, height=size[1] * 2,
        encoding=encoding, image_width=size[0], image_height=size[1], data=data,
    )  # fmt: skip
    return Entry("k", f"2-{seq}", encode(frame))


def test_an_engine_that_loads_images_gets_jpeg_bytes_checked_by_header_and_its_failures_are_dead_lettered() -> None:
    pipeline, engine = make([0])
    engine.loads_images = True
    good = jpeg_entry(0)
    jpeg = decode(good.payload, Frame).data
    bgr = np.zeros((64, 128, 3), np.uint8).tobytes()
    png = cv2.imencode(".png", np.zeros((64, 128, 3), np.uint8))[1].tobytes()
    entries = [
        good,
        frame_entry(1, b"\xff\xd8 not really"),
        frame_entry(2, jpeg, size=(100, 64)),  # the header says 128x64
        frame_entry(3, png),
        frame_entry(4, jpeg[:-2] + b"BAD" + jpeg[-2:]),  # a header that parses, a body the "device" refuses
        frame_entry(5, bgr, encoding="bgr8"),
    ]
    out = pipeline.process(entries)
    assert engine.loaded == [["jpeg", "jpeg", "rgb"]]  # only frames whose header holds reach the engine
    assert [r.seq for _, r in out.published] == [0, 5]
    (det,) = out.published[0][1].detections
    assert det.box[2] > 64  # boxes mapped to original pixels, as on the CPU path
    reasons = {e.id: why for e, why in out.failed}
    assert reasons["2-1"] == "ImageError: image of 13 bytes is not a decodable JPEG (no image header)"
    assert reasons["2-2"] == "ImageError: image is 128x64, message says 100x64"
    assert reasons["2-3"].endswith("is a PNG, not a JPEG")
    assert reasons["2-4"] == "ImageError: nvJPEG refused it"
    assert set(reasons) == {"2-1", "2-2", "2-3", "2-4"}


def test_a_batch_with_nothing_to_load_never_calls_the_engine() -> None:
    pipeline, engine = make([0])
    engine.loads_images = True
    out = pipeline.process([frame_entry(1, b"junk")])
    assert engine.loaded == [] and engine.batches == [] and len(out.failed) == 1


def test_a_png_frame_reaches_the_engine_pixel_for_pixel_and_a_cut_one_is_refused() -> None:
    from common.codec import ImageError
    from detector.pipeline import decode_image

    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok

    def png(data: bytes) -> Frame:
        return Frame(stream="cam", seq=0, capture_ts=time.time(), width=32, height=24, encoding="png",
                     image_width=32, image_height=24, data=data)  # fmt: skip

    assert np.array_equal(decode_image(png(buf.tobytes())), rgb)
    with pytest.raises(ImageError, match="not a decodable PNG"):
        decode_image(png(buf.tobytes()[: len(buf) // 2]))


def test_a_recordings_file_and_frame_index_go_on_to_its_result_and_boxes_may_stay_unclipped() -> None:
    pipeline, _ = make([0], clip_boxes=False)
    frame = decode(jpeg_entry(0).payload, Frame).model_copy(update={"file": "/v.mp4", "frame_index": 9})
    (_, result), *_ = pipeline.process([Entry("k", "1-0", encode(frame))]).published
    assert (result.file, result.frame_index) == ("/v.mp4", 9)
    assert result.detections[0].box[0] < 0  # the anchor-sized box at the corner cell reaches past the edge
    (_, clipped), *_ = make([0])[0].process([Entry("k", "1-0", encode(frame))]).published
    assert clipped.detections[0].box[0] == 0


class StagingEngine(ScriptedEngine):
    """Decodes nothing itself, but takes host-letterboxed batches onto its device ahead of their turn."""

    stages_batches = True

    def __init__(self, hits: list[int]) -> None:
        super().__init__(hits)
        self.staged: list[np.ndarray] = []

    def stage(self, batch: np.ndarray) -> DeviceBatch:
        self.staged.append(batch.copy())
        return DeviceBatch(batch.transpose(0, 3, 1, 2), list(range(len(batch))), {})


def test_a_host_letterboxed_batch_is_staged_on_the_device_before_inference() -> None:
    model = ModelConfig(classes=CLASSES, architecture="tiny", input_size=SIZE)
    engine = StagingEngine([1])
    pipeline = Pipeline(ModelSpec.from_config(model), engine, PoolConfig(name="p", model=model), "r1")
    prepared = pipeline.prepare([jpeg_entry(0), frame_entry(1, b"junk"), jpeg_entry(2)])
    assert isinstance(prepared.batch, DeviceBatch) and len(prepared.batch) == 2  # the undecodable one left out
    [staged] = engine.staged
    assert staged.shape == (2, SIZE, SIZE, 3) and staged.dtype == np.uint8
    assert (staged[:, 0, 0] == 128).all()  # letterboxed on the host: grey above the 2:1 image
    out = pipeline.infer(prepared)
    assert [r.seq for _, r in out.published] == [0, 2] and engine.batches == [2]
    assert [why.split(":")[0] for _, why in out.failed] == ["ImageError"]
