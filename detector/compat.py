"""``from detector import YOLO``: TrainYourOwnYOLO's YOLO class, for code that already calls it.

It takes TYOY's constructor names (model_path, anchors_path, classes_path, score, iou, model_image_size, gpu_num)
and the multi-stream fork's (run_on_gpu, gpu_memory_fraction, allow_growth, hush, ignore_labels), and returns
what they return: ``detect_image(image) -> (out_prediction, image)`` with rows
``[xmin, ymin, xmax, ymax, class_index, score]``, and ``detect_image_extended(image) -> (image, seconds, rows)``
with class names and ignored labels dropped. Boxes are drawn with OpenCV (``draw=False`` skips it), and
``detect_images`` runs a whole list as one batch, which TYOY could not.
"""

from __future__ import annotations

import colorsys
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from common.config import ModelConfig
from detector.engines import Engine, create_engine
from detector.engines.tensorflow import TensorFlowEngineConfig
from detector.model import ModelSpec
from detector.yolo.postprocess import Detections, decode, letterbox_into

log = logging.getLogger(__name__)

Row = list[Any]
"""[xmin, ymin, xmax, ymax, class (index or name), score]"""


class YOLO:
    def __init__(
        self,
        model_path: str | Path,
        anchors_path: str | Path,
        classes_path: str | Path,
        score: float = 0.3,
        iou: float = 0.45,
        model_image_size: tuple[int, int] = (416, 416),
        gpu_num: int = 1,
        run_on_gpu: int | None = -1,
        gpu_memory_fraction: float = 1.0,
        allow_growth: bool = True,
        hush: bool = False,
        ignore_labels: Sequence[str] = (),
        draw: bool = True,
        resize: Literal["pil", "opencv"] = "pil",
    ) -> None:
        """``run_on_gpu``: a GPU index, -1 to let TensorFlow choose, None for the CPU."""
        height, width = model_image_size
        if height != width:
            raise ValueError(f"model_image_size {model_image_size}: only square inputs are supported, e.g. (416, 416)")
        if gpu_num != 1:
            log.warning("gpu_num=%d is ignored: run one detector replica per GPU instead", gpu_num)
        self.score = score
        self.iou = iou
        self.ignore_labels = set(ignore_labels)
        self.draw = draw
        model = ModelConfig(
            weights=Path(model_path).expanduser(),
            anchors=Path(anchors_path).expanduser(),
            classes=Path(classes_path).expanduser(),
            input_size=width,
            resize=resize,
        )
        self.spec = ModelSpec.from_config(model)
        self.class_names = list(self.spec.classes)
        self.anchors = self.spec.anchors
        gpu: int | Literal["auto"] | None = "auto" if run_on_gpu == -1 else run_on_gpu
        engine = TensorFlowEngineConfig(
            gpu=gpu, memory_fraction=gpu_memory_fraction, allow_growth=allow_growth, hush=hush
        )
        started = time.perf_counter()
        self.engine: Engine = create_engine(engine, self.spec)
        log.info("%s model, anchors, and classes loaded in %.2f s", model_path, time.perf_counter() - started)
        self.colors = class_colours(len(self.class_names))

    def detect_image(self, image: Image.Image | np.ndarray, show_stats: bool = False) -> tuple[list[Row], Any]:
        """TYOY's ``detect_image``: rows of [xmin, ymin, xmax, ymax, class_index, score], and the drawn image."""
        rows = self.detect_images([image])[0]
        if show_stats:
            log.info("found %d boxes", len(rows))
        return rows, self._drawn(image, rows)

    def detect_image_extended(self, image: Image.Image | np.ndarray) -> tuple[Any, float, list[Row]]:
        """The fork's ``detect_image_extended``: (drawn image, seconds, rows with class names, ignored dropped)."""
        started = time.perf_counter()
        rows = [[*r[:4], self.class_names[r[4]], r[5]] for r in self.detect_images([image])[0]]
        rows = [r for r in rows if r[4] not in self.ignore_labels]
        elapsed = time.perf_counter() - started
        return self._drawn(image, rows), elapsed, rows

    def detect_images(self, images: Sequence[Image.Image | np.ndarray]) -> list[list[Row]]:
        """Rows for many images, run through the model as one batch."""
        arrays = [_rgb(image) for image in images]
        size = self.spec.input_size
        batch = np.empty((len(arrays), size, size, 3), np.uint8)  # engines divide by 255 on their device
        for array, out in zip(arrays, batch, strict=True):
            letterbox_into(array, size, out, self.spec.resize)
        sizes = [(a.shape[1], a.shape[0]) for a in arrays]
        found = decode(
            self.engine.predict(batch), self.anchors, len(self.class_names), size, sizes, self.score, self.iou,
            clip=False,
        )  # fmt: skip
        return [_tyoy_rows(dets, w, h) for dets, (w, h) in zip(found, sizes, strict=True)]

    def _drawn(self, image: Image.Image | np.ndarray, rows: list[Row]) -> Any:
        if not self.draw:
            return image
        canvas = np.array(_rgb(image))
        draw_rows(canvas, rows, self.class_names, self.colors)
        return Image.fromarray(canvas) if isinstance(image, Image.Image) else canvas

    def close_session(self) -> None:
        """TYOY's; nothing to close here."""


def class_colours(count: int) -> list[tuple[int, ...]]:
    """One colour per class, spread around the hue circle (as TYOY's)."""
    hues = [colorsys.hsv_to_rgb(i / count, 1.0, 1.0) for i in range(count)]
    return [tuple(int(c * 255) for c in hue) for hue in hues]


def draw_rows(canvas: np.ndarray, rows: Sequence[Row], class_names: Sequence[str], colours: Sequence[Any]) -> None:
    """Draw rows (class index or name) in place on an image array, each class in its colour with its score."""
    thickness = max(1, (canvas.shape[0] + canvas.shape[1]) // 300)
    for left, top, right, bottom, cls, score in rows:
        index = cls if isinstance(cls, int) else list(class_names).index(cls)
        colour = colours[index]
        cv2.rectangle(canvas, (left, top), (right, bottom), colour, thickness)
        label = f"{class_names[index]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = top - th - 4 if top - th - 4 >= 0 else bottom
        cv2.rectangle(canvas, (left, y), (left + tw + 2, y + th + 4), colour, -1)
        cv2.putText(canvas, label, (left + 1, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB image (PIL, or an HxWx3 uint8 array), got {array.shape} {array.dtype}")
    return array


def _tyoy_rows(dets: Detections, width: int, height: int) -> list[Row]:
    return tyoy_rows(dets.boxes.tolist(), dets.classes.tolist(), dets.scores.tolist(), width, height)


def tyoy_rows(
    boxes: Sequence[Sequence[float]], classes: Sequence[int], scores: Sequence[float], width: int, height: int
) -> list[Row]:
    """TYOY's rows from detections in decoding order: its rounding, clamping and order (it walks yolo_eval's
    output backwards)."""
    rows: list[Row] = []
    for i in reversed(range(len(boxes))):
        xmin, ymin, xmax, ymax = (float(v) for v in boxes[i])
        top = max(0, math.floor(ymin + 0.5))
        left = max(0, math.floor(xmin + 0.5))
        bottom = min(height, math.floor(ymax + 0.5))
        right = min(width, math.floor(xmax + 0.5))
        if top > height or right > width:
            continue
        rows.append([left, top, right, bottom, int(classes[i]), float(scores[i])])
    return rows
