"""One batch of frame entries in, one result (or one dead-letter reason) per entry out.

This is the detector's logic without any Redis: decode the wire message and the image, letterbox into one batch,
run the engine, decode boxes + NMS, map boxes to original pixels, drop ignored labels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from common.config import PoolConfig
from common.redis_io import Entry
from common.wire import Detection, Frame, Result, Timings, WireError, decode
from detector.engines import Engine
from detector.model import ModelSpec
from detector.yolo.postprocess import Detections, letterbox_into
from detector.yolo.postprocess import decode as decode_heads


class ImageError(ValueError):
    """The frame's image bytes cannot be decoded."""


def decode_image(frame: Frame) -> np.ndarray:
    """The frame's image as RGB uint8, checked against the size the message announces."""
    if frame.encoding == "jpeg":
        bgr = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageError(f"image of {len(frame.data)} bytes is not a decodable JPEG")
    else:
        expected = frame.image_width * frame.image_height * 3
        if len(frame.data) != expected:
            raise ImageError(f"bgr8 image has {len(frame.data)} bytes, expected {expected}")
        bgr = np.frombuffer(frame.data, np.uint8).reshape(frame.image_height, frame.image_width, 3)
    if bgr.shape[:2] != (frame.image_height, frame.image_width):
        raise ImageError(
            f"image is {bgr.shape[1]}x{bgr.shape[0]}, message says {frame.image_width}x{frame.image_height}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Outcome:
    published: list[tuple[Entry, Result]]
    failed: list[tuple[Entry, str]]


@dataclass
class Pipeline:
    spec: ModelSpec
    engine: Engine
    pool: PoolConfig
    replica: str

    def __post_init__(self) -> None:
        self._ignored = set(self.pool.ignore_labels)

    def process(self, entries: Sequence[Entry]) -> Outcome:
        picked_up = time.time()
        size = self.spec.input_size
        batch = np.empty((len(entries), size, size, 3), np.float32)
        good: list[tuple[Entry, Frame, float]] = []
        failed: list[tuple[Entry, str]] = []
        for entry in entries:
            t0 = time.perf_counter()
            try:
                frame = decode(entry.payload, Frame)
                letterbox_into(decode_image(frame), size, batch[len(good)])
            except (WireError, ImageError) as exc:
                failed.append((entry, f"{type(exc).__name__}: {exc}"))
                continue
            good.append((entry, frame, (time.perf_counter() - t0) * 1000))
        if not good:
            return Outcome([], failed)
        t0 = time.perf_counter()
        outputs = self.engine.predict(batch[: len(good)])
        t1 = time.perf_counter()
        found = decode_heads(
            outputs,
            self.spec.anchors,
            len(self.spec.classes),
            size,
            [(f.image_width, f.image_height) for _, f, _ in good],
            score_threshold=self.pool.score_threshold,
            iou_threshold=self.pool.iou_threshold,
            max_per_class=self.pool.max_per_class,
        )
        t2 = time.perf_counter()
        n = len(good)
        now = time.time()
        published = [
            (
                entry,
                Result(
                    frame_id=entry.id,
                    stream=frame.stream,
                    seq=frame.seq,
                    capture_ts=frame.capture_ts,
                    width=frame.width,
                    height=frame.height,
                    pool=self.pool.name,
                    replica=self.replica,
                    engine=self.engine.name,
                    device=self.engine.device,
                    batch_size=n,
                    published_ts=now,
                    timings=Timings(
                        queue_ms=max(0.0, (picked_up - frame.capture_ts) * 1000),
                        decode_ms=decode_ms,
                        inference_ms=(t1 - t0) * 1000 / n,
                        postprocess_ms=(t2 - t1) * 1000 / n,
                        end_to_end_ms=max(0.0, (now - frame.capture_ts) * 1000),
                    ),
                    detections=self._detections(frame, dets),
                ),
            )
            for (entry, frame, decode_ms), dets in zip(good, found, strict=True)
        ]
        return Outcome(published, failed)

    def _detections(self, frame: Frame, dets: Detections) -> list[Detection]:
        # Boxes come back in the pixels of the image carried; scale them to the original frame.
        sx, sy = frame.width / frame.image_width, frame.height / frame.image_height
        out = []
        for (x0, y0, x1, y1), score, cls in zip(
            dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist(), strict=True
        ):
            label = self.spec.classes[cls]
            if label in self._ignored:
                continue
            out.append(Detection(label=label, class_id=cls, score=score, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)))
        return out
