"""A batch of frame entries in, one result (or one dead-letter reason, or "stale", or "shed") per entry out.

The detector's logic without Redis, in two stages so that the next batch is prepared while the engine runs:
``prepare`` decodes the wire messages and images and letterboxes them into one array (on a thread pool);
``predict`` runs the engine; ``finish`` decodes boxes + NMS, maps boxes to original pixels and applies the label
rules. The detector runs the three on three threads, so the device never waits for the host's part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import cv2
import numpy as np

from common.codec import ImageError, check_jpeg, decode_frame
from common.config import PoolConfig
from common.redis_io import Entry
from common.wire import Detection, Frame, Result, Timings, WireError, decode
from detector.engines import DeviceBatch, Engine, LoadsImages, loads_images, run_batch, stages_batches
from detector.model import ModelSpec
from detector.watchdog import InferenceTimeoutError
from detector.yolo.postprocess import Detections, decode_boxes, letterbox_into
from detector.yolo.postprocess import decode as decode_heads

log = logging.getLogger(__name__)


def decode_image(frame: Frame) -> np.ndarray:
    """The frame's image as RGB uint8, checked against the size the message announces (``common.codec``'s
    policy: a JPEG cut short is refused, not inferred half grey)."""
    return cv2.cvtColor(decode_frame(frame), cv2.COLOR_BGR2RGB)


def encoded_image(frame: Frame) -> bytes | np.ndarray:
    """What an engine that decodes on its device takes: JPEG bytes, checked by their header only (size and
    format, without decoding) and for their end, or a ``png`` or ``bgr8`` frame decoded to RGB."""
    if frame.encoding != "jpeg":
        return decode_image(frame)
    check_jpeg(frame.data, (frame.image_width, frame.image_height))
    return frame.data


@dataclass(frozen=True)
class Held:
    """A frame read and decoded, waiting for a batch: when it was read, and how many newer frames of its stream
    waited then."""

    entry: Entry
    frame: Frame
    read_at: float
    behind: int | None = None
    """None where not counted: a recording's frame, or a pool that does not shed."""


@dataclass
class Gathered:
    """What one batch settles before inference: the frames to infer, and the entries settled without it."""

    held: list[Held] = field(default_factory=list)
    failed: list[tuple[Entry, str]] = field(default_factory=list)
    """Messages that do not decode: dead letters, with the reason."""
    stale: list[Entry] = field(default_factory=list)
    """Live frames older than the pool's max_age_ms: acked uninferred, tallied."""
    shed: list[Entry] = field(default_factory=list)
    """Live frames read but superseded by newer frames of their stream (shed_behind): acked uninferred, tallied."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Live frames skipped unread, per stream key (shed_behind): the server tallied them already."""


@dataclass
class Prepared:
    """A batch ready for the engine: ``batch[i]`` is the frame of ``held[i]``."""

    held: list[Held] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    batch: np.ndarray | DeviceBatch | None = None
    failed: list[tuple[Entry, str]] = field(default_factory=list)
    stale: list[Entry] = field(default_factory=list)
    shed: list[Entry] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> list[Entry]:
        """The entries of the frames in the batch, in its order."""
        return [h.entry for h in self.held]

    @property
    def frames(self) -> list[Frame]:
        """The frames in the batch, in its order."""
        return [h.frame for h in self.held]

    @property
    def size(self) -> int:
        """Entries this batch settles: each ends as a result, a dead letter, a stale or shed ack, or skipped unread."""
        return len(self.entries) + len(self.failed) + len(self.stale) + len(self.shed) + sum(self.skipped.values())


def too_old(frame: Frame, now: float, max_age_ms: int | None) -> bool:
    """A live frame past the pool's max_age_ms: not worth a result any more."""
    return frame.live and max_age_ms is not None and (now - frame.capture_ts) * 1000 > max_age_ms


def gather(entries: Sequence[Entry], max_age_ms: int | None) -> Gathered:
    """Entries as they were read: decoded, the undecodable failed and the live ones past ``max_age_ms`` stale."""
    out = Gathered()
    now = time.time()
    for entry in entries:
        try:
            frame = decode(entry.payload, Frame)
        except WireError as exc:
            out.failed.append((entry, f"WireError: {exc}"))
            continue
        (out.stale.append(entry) if too_old(frame, now, max_age_ms) else out.held.append(Held(entry, frame, now)))
    return out


@dataclass(frozen=True)
class Predicted:
    """A prepared batch with the engine's raw heads, or why inference failed; ``infer_s`` is per frame."""

    prepared: Prepared
    outputs: list[np.ndarray] | None = None
    infer_s: float = 0.0
    failure: str | None = None


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
        self._floor = min([self.pool.score_threshold, *self.pool.min_score.values()])

    def process(self, entries: Sequence[Entry]) -> Outcome:
        """Both stages on the calling thread; stale entries are reported as failed."""
        prepared = self.prepare(entries)
        outcome = self.infer(prepared)
        return Outcome(outcome.published, outcome.failed + [(e, "stale") for e in prepared.stale])

    def gather(self, entries: Sequence[Entry]) -> Gathered:
        """Entries as they were read: decoded, the undecodable failed and the too old stale."""
        return gather(entries, self.pool.max_age_ms)

    def prepare(self, batch: Sequence[Entry] | Gathered, executor: Executor | None = None) -> Prepared:
        gathered = batch if isinstance(batch, Gathered) else self.gather(batch)
        out = Prepared(failed=list(gathered.failed), stale=list(gathered.stale), shed=list(gathered.shed),
                       skipped=dict(gathered.skipped))  # fmt: skip
        self._load(gathered.held, out, executor)
        return out

    def _load(self, frames: list[Held], out: Prepared, executor: Executor | None) -> None:
        """Decode and letterbox ``frames`` into ``out.batch`` (on the engine's device when it loads images)."""
        if loads_images(engine := self.engine):
            self._load_on_device(engine, frames, out)
            return
        size = self.spec.input_size
        batch = np.empty((len(frames), size, size, 3), np.uint8)  # engines divide by 255 on their device

        def fill(i: int) -> tuple[int, float | str]:
            t0 = time.perf_counter()
            try:
                letterbox_into(decode_image(frames[i].frame), size, batch[i], self.spec.resize)
            except ImageError as exc:
                return i, f"ImageError: {exc}"
            return i, (time.perf_counter() - t0) * 1000

        results = executor.map(fill, range(len(frames))) if executor else map(fill, range(len(frames)))
        good: list[int] = []
        for i, ms in results:
            if isinstance(ms, str):
                out.failed.append((frames[i].entry, ms))
            else:
                good.append(i)
                out.held.append(frames[i])
                out.decode_ms.append(ms)
        out.batch = batch[good] if len(good) < len(frames) else batch
        if good and stages_batches(engine):
            out.batch = engine.stage(out.batch)  # onto the device now, while the batch before it runs

    def _load_on_device(self, engine: LoadsImages, frames: list[Held], out: Prepared) -> None:
        t0 = time.perf_counter()
        images, sent = [], []
        for held in frames:
            try:
                images.append(encoded_image(held.frame))
                sent.append(held)
            except ImageError as exc:
                out.failed.append((held.entry, f"ImageError: {exc}"))
        if not images:
            return
        loaded = engine.load(images)
        ms = (time.perf_counter() - t0) * 1000 / max(1, len(frames))
        out.failed.extend((sent[i].entry, f"ImageError: {why}") for i, why in loaded.failed.items())
        out.held = [sent[i] for i in loaded.kept]
        out.decode_ms = [ms] * len(loaded.kept)
        out.batch = loaded

    def infer(self, prepared: Prepared) -> Outcome:
        """Both halves of inference on the calling thread."""
        return self.finish(self.predict(prepared))

    def predict(self, prepared: Prepared) -> Predicted:
        """The engine's half: raw heads for the batch (retried once if the engine had to be restarted)."""
        if not prepared.held or prepared.batch is None:
            return Predicted(prepared)
        t0 = time.perf_counter()
        try:
            outputs = run_batch(self.engine, prepared.batch)
        except InferenceTimeoutError as first:
            log.error("%s; the engine was restarted: retrying the batch once", first)
            try:
                outputs = run_batch(self.engine, prepared.batch)
            except InferenceTimeoutError as second:
                return Predicted(prepared, failure=f"inference timed out twice ({second})")
        return Predicted(prepared, outputs, (time.perf_counter() - t0) / len(prepared.held))

    def finish(self, predicted: Predicted) -> Outcome:
        """The host's half: boxes + NMS, boxes in original pixels, label rules, one result per frame."""
        prepared = predicted.prepared
        if predicted.failure is not None:
            return Outcome([], prepared.failed + [(e, predicted.failure) for e in prepared.entries])
        if predicted.outputs is None:
            return Outcome([], prepared.failed)
        t1 = time.perf_counter()
        sizes = [(h.frame.image_width, h.frame.image_height) for h in prepared.held]
        cuts = (self._floor, self.pool.iou_threshold, self.pool.max_per_class, self.pool.clip_boxes)
        layout, num_classes, size = self.engine.output_layout, len(self.spec.classes), self.spec.input_size
        if layout == "yolov3":
            found = decode_heads(predicted.outputs, self.spec.anchors, num_classes, size, sizes, *cuts)
        else:  # boxes the network decoded itself (an ONNX export of YOLOv5/v8/v11)
            found = decode_boxes(predicted.outputs, layout, num_classes, size, sizes, *cuts)
        n = len(prepared.held)
        post_s = (time.perf_counter() - t1) / n
        now = time.time()
        published = [
            (h.entry, self._result(h, dets, n, now, ms, predicted.infer_s, post_s))
            for h, dets, ms in zip(prepared.held, found, prepared.decode_ms, strict=True)
        ]
        return Outcome(published, prepared.failed)

    def _result(
        self, held: Held, dets: Detections, n: int, now: float, decode_ms: float, infer_s: float, post_s: float
    ) -> Result:
        entry, frame = held.entry, held.frame
        return Result(
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
                queue_ms=max(0.0, (held.read_at - frame.capture_ts) * 1000),
                decode_ms=decode_ms,
                inference_ms=infer_s * 1000,
                postprocess_ms=post_s * 1000,
                end_to_end_ms=max(0.0, (now - frame.capture_ts) * 1000),
            ),
            detections=self._detections(frame, dets),
            file=frame.file,
            frame_index=frame.frame_index,
            behind=held.behind,
        )

    def _detections(self, frame: Frame, dets: Detections) -> list[Detection]:
        # Boxes come back in the pixels of the image carried; scale them to the original frame.
        sx, sy = frame.width / frame.image_width, frame.height / frame.image_height
        out = []
        for (x0, y0, x1, y1), score, cls in zip(
            dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist(), strict=True
        ):
            label = self.spec.classes[cls]
            if label in self._ignored or score < self.pool.min_score.get(label, self.pool.score_threshold):
                continue
            out.append(Detection(label=label, class_id=cls, score=score, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)))
        return out
