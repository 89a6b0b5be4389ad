"""Letterbox in, decode + NMS out: keras-yolo3's inference arithmetic in numpy, batched.

Matches TrainYourOwnYOLO's ``detect_image``: ``letterbox_image`` before the model, ``yolo_eval``
(``yolo_head``, ``yolo_correct_boxes``, per-class ``tf.image.non_max_suppression``) after it.
Everything is float32, as the TensorFlow graph was, so thresholds cut in the same places.
No TensorFlow here: every engine shares this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

FloatArray = npt.NDArray[np.float32]

OutputLayout = Literal["yolov3", "v8", "v5"]
"""What an engine's outputs are: YOLOv3 heads (NHWC, for :func:`decode`), or one tensor of boxes the network
has decoded itself, YOLOv8/v11-style or YOLOv5-style (for :func:`decode_boxes`)."""

# Which anchors (rows of the anchors file) each head uses, heads in output order (stride 32 first).
# Tiny's [1, 2, 3] (not [0, 1, 2]) is keras-yolo3's own choice; TYOY models were trained with it.
ANCHOR_MASKS: dict[str, list[list[int]]] = {
    "yolov3": [[6, 7, 8], [3, 4, 5], [0, 1, 2]],
    "tiny": [[3, 4, 5], [1, 2, 3]],
}
_STRIDES: dict[str, list[int]] = {"yolov3": [32, 16, 8], "tiny": [32, 16]}

# Letterbox fill: PIL's (128, 128, 128) after TYOY's "/ 255" in float32.
_GREY = np.float32(128) / np.float32(255)
# exp() of a raw width/height logit above this would overflow float32 to inf (and NaN in NMS); no real
# box is e^40 anchors wide, so clamping changes nothing a trained model produces.
_MAX_WH_LOGIT = np.float32(40.0)


def letterbox_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where TYOY's letterbox puts a ``width`` x ``height`` image in a ``size`` square: (new_w, new_h, dx, dy).

    Scale to fit, size truncated to int (``max(1, ...)`` only matters for images thinner than 1/size of their
    length, which would break resize), centred.
    """
    scale = min(size / width, size / height)
    nw, nh = max(1, int(width * scale)), max(1, int(height * scale))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def letterbox_into(image: np.ndarray, size: int, out: np.ndarray, resize: Literal["pil", "opencv"] = "pil") -> None:
    """Letterbox ``image`` (HxWx3 uint8 RGB) into ``out``: (size, size, 3) float32 in [0, 1], or uint8 0-255 (a
    quarter of the bytes to move; the engine divides by 255 in float32, which gives the same values).

    Scale to fit (size truncated to int), bicubic resize, centred on grey 128, divided by 255: TYOY's
    ``letterbox_image`` + ``/ 255``. Writes in place so a batcher can fill one slice of its batch array.
    ``resize="pil"`` is PIL's bicubic, as TYOY (and its training) did: the same pixels; ``"opencv"`` is faster,
    without PIL's antialiasing when shrinking.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"letterbox needs an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}: "
            "decode frames to 3-channel 8-bit RGB first"
        )
    if out.shape != (size, size, 3) or out.dtype not in (np.float32, np.uint8):
        raise ValueError(
            f"letterbox output must be a ({size}, {size}, 3) float32 or uint8 array, got shape {out.shape} "
            f"dtype {out.dtype}"
        )
    h, w = image.shape[:2]
    nw, nh, dx, dy = letterbox_geometry(w, h, size)
    if (nw, nh) == (w, h):
        resized = image
    elif resize == "pil":
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
    else:
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC)
    if out.dtype == np.uint8:
        out[...] = 128
        out[dy : dy + nh, dx : dx + nw] = resized
        return
    out[...] = _GREY
    # uint8 -> float32 then / 255 in float32, as TYOY's np.array(..., 'float32') / 255.
    np.divide(resized, np.float32(255), out=out[dy : dy + nh, dx : dx + nw], dtype=np.float32)


def letterbox(image: np.ndarray, size: int) -> FloatArray:
    """Return ``image`` letterboxed to a new (size, size, 3) float32 array; see :func:`letterbox_into`."""
    out = np.empty((size, size, 3), dtype=np.float32)
    letterbox_into(image, size, out)
    return out


@dataclass(frozen=True)
class Detections:
    """One image's detections, in keras-yolo3's order: by class ascending, then score descending.

    ``boxes`` are (N, 4) float32 ``[xmin, ymin, xmax, ymax]`` in original image pixels, clipped to the
    image; ``scores`` (N,) float32; ``classes`` (N,) int32 indices into the classes file.
    """

    boxes: FloatArray
    scores: FloatArray
    classes: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            classes=np.zeros((0,), np.int32),
        )


def _sigmoid(x: FloatArray) -> FloatArray:
    # tanh form: no overflow for large |x| (1 / (1 + exp(-x)) overflows exp at x < -88 in float32).
    half = np.float32(0.5)
    out: FloatArray = (half + half * np.tanh(half * x)).astype(np.float32, copy=False)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_out: int) -> npt.NDArray[np.intp]:
    """Greedy NMS: indices of kept boxes, highest score first; same result as tf.image.non_max_suppression.

    ``boxes`` (N, 4) corners in any consistent order ([x1, y1, x2, y2] or [y1, x1, y2, x2]: IoU is the
    same). A box is dropped when its IoU with a kept box is strictly above ``iou_threshold``; boxes with
    no area overlap nothing, as in TensorFlow.
    """
    if max_out <= 0 or len(scores) == 0:
        return np.zeros((0,), dtype=np.intp)
    b = np.asarray(boxes, dtype=np.float32)
    # TensorFlow accepts flipped corners; normalise so areas and intersections are right either way.
    lo = np.minimum(b[:, :2], b[:, 2:])
    hi = np.maximum(b[:, :2], b[:, 2:])
    areas = np.prod(hi - lo, axis=1)
    # Stable sort: equal scores keep input order, which is deterministic (TF's heap order is not defined).
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        inter = np.prod(np.clip(np.minimum(hi[rest], hi[i]) - np.maximum(lo[rest], lo[i]), 0, None), axis=1)
        union = areas[rest] + areas[i] - inter
        valid = (areas[rest] > 0) & (areas[i] > 0) & (union > 0)
        iou = np.where(valid, inter / np.where(valid, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def _architecture_for_heads(num_heads: int) -> str:
    if num_heads == 3:
        return "yolov3"
    if num_heads == 2:
        return "tiny"
    raise ValueError(
        f"expected 3 output heads (YOLOv3) or 2 (tiny YOLOv3), got {num_heads}: pass every model output "
        "in the model's order"
    )


def decode(
    outputs: Sequence[np.ndarray],
    anchors: np.ndarray,
    num_classes: int,
    input_size: int,
    image_sizes: Sequence[tuple[int, int]],
    score_threshold: float = 0.3,
    iou_threshold: float = 0.45,
    max_per_class: int = 20,
    clip: bool = True,
) -> list[Detections]:
    """Turn raw head outputs for a batch into per-image detections, as keras-yolo3's ``yolo_eval``.

    ``outputs[i]`` is (B, g, g, 3*(5+num_classes)) float32 or float16, heads in model order (stride 32 first);
    ``anchors`` (9 or 6, 2) in input pixels; ``image_sizes[b]`` the (width, height) of original image b.
    """
    arch = _architecture_for_heads(len(outputs))
    masks = ANCHOR_MASKS[arch]
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    needed = max(max(m) for m in masks) + 1
    if len(anchors) < needed:
        raise ValueError(
            f"{arch} heads need at least {needed} anchors, got {len(anchors)}: use the anchors file the "
            "model was trained with (9 pairs for YOLOv3, 6 for tiny)"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    batch = len(image_sizes)
    for b_idx, (w, h) in enumerate(image_sizes):
        if w <= 0 or h <= 0:
            raise ValueError(f"image_sizes[{b_idx}] must be a positive (width, height), got {(w, h)}")

    # Letterbox geometry per image, as yolo_correct_boxes (it rounds where letterbox truncated).
    shape_hw = np.asarray([(h, w) for w, h in image_sizes], dtype=np.float32).reshape(batch, 2)
    inp = np.float32(input_size)
    new_hw = np.round(shape_hw * np.min(inp / shape_hw, axis=1, keepdims=True))
    new_hw = np.maximum(new_hw, np.float32(1))  # degenerate sliver images only; see letterbox_into
    offset = (inp - new_hw) / np.float32(2) / inp
    scale = inp / new_hw
    thr = np.float32(score_threshold)

    cand_image: list[npt.NDArray[np.intp]] = []
    cand_boxes: list[FloatArray] = []
    cand_scores: list[FloatArray] = []
    for head_idx, (raw, mask) in enumerate(zip(outputs, masks, strict=True)):
        stride = _STRIDES[arch][head_idx]
        grid = input_size // stride
        head_anchors = len(mask)
        expected = (batch, grid, grid, head_anchors * (5 + num_classes))
        if tuple(raw.shape) != expected:
            raise ValueError(
                f"output {head_idx} ({arch}, stride {stride}) should have shape {expected} for "
                f"{batch} image(s), {num_classes} classes, {head_anchors} anchors and input {input_size}, "
                f"got {tuple(raw.shape)}: check the classes file, the anchors file and the input size "
                "match the weights"
            )
        feats = np.asarray(raw)
        if feats.dtype not in (np.float32, np.float16):
            feats = feats.astype(np.float32)
        # float16 heads (a GPU engine's, half the bytes to copy back) are cast where read: the objectness channel,
        # then only the candidates' rows. The float32 values are the same as casting the whole head first.
        feats = feats.reshape(batch, grid, grid, head_anchors, 5 + num_classes)
        objectness = _sigmoid(feats[..., 4].astype(np.float32, copy=False))
        # score = obj * p(class) <= obj in float32, so an anchor whose objectness is under the threshold
        # can never pass: decoding only the others gives the same result with a fraction of the work.
        # nonzero's row-major order (image, row, col, anchor) is yolo_eval's order within a head.
        b, gy, gx, a = np.nonzero(objectness >= thr)
        if b.size == 0:
            continue
        f = feats[b, gy, gx, a].astype(np.float32, copy=False)  # (K, 5 + C)
        gsize = np.float32(grid)
        x = (_sigmoid(f[:, 0]) + gx.astype(np.float32)) / gsize
        y = (_sigmoid(f[:, 1]) + gy.astype(np.float32)) / gsize
        head_wh = anchors[mask][a]
        bw = np.exp(np.minimum(f[:, 2], _MAX_WH_LOGIT)) * head_wh[:, 0] / inp
        bh = np.exp(np.minimum(f[:, 3], _MAX_WH_LOGIT)) * head_wh[:, 1] / inp
        y = (y - offset[b, 0]) * scale[b, 0]
        x = (x - offset[b, 1]) * scale[b, 1]
        bh = bh * scale[b, 0]
        bw = bw * scale[b, 1]
        img_h, img_w = shape_hw[b, 0], shape_hw[b, 1]
        two = np.float32(2)
        corners = np.stack(
            [(x - bw / two) * img_w, (y - bh / two) * img_h, (x + bw / two) * img_w, (y + bh / two) * img_h],
            axis=-1,
        )
        cand_image.append(b)
        cand_boxes.append(corners.astype(np.float32, copy=False))
        cand_scores.append(objectness[b, gy, gx, a, None] * _sigmoid(f[:, 5:]))

    if not cand_image:
        return [Detections.empty() for _ in range(batch)]
    image_of = np.concatenate(cand_image)
    boxes = np.concatenate(cand_boxes)
    scores = np.concatenate(cand_scores)
    # A stable sort by image keeps each image's candidates in head order, then row-major order.
    order = np.argsort(image_of, kind="stable")
    bounds = np.searchsorted(image_of[order], np.arange(batch + 1))
    return [
        _select(
            boxes=boxes[order[bounds[i] : bounds[i + 1]]],
            scores=scores[order[bounds[i] : bounds[i + 1]]],
            image_size=image_sizes[i],
            threshold=thr,
            iou_threshold=iou_threshold,
            max_per_class=max_per_class,
            clip=clip,
        )
        for i in range(batch)
    ]


def _select(
    *,
    boxes: FloatArray,
    scores: FloatArray,
    image_size: tuple[int, int],
    threshold: np.float32,
    iou_threshold: float,
    max_per_class: int,
    clip: bool,
) -> Detections:
    """Per-class threshold and NMS for one image's candidates ((K, 4) boxes, (K, C) class scores)."""
    rows, cols = np.nonzero(scores >= threshold)
    if rows.size == 0:
        return Detections.empty()
    out_boxes: list[FloatArray] = []
    out_scores: list[FloatArray] = []
    out_classes: list[npt.NDArray[np.int32]] = []
    for c in np.unique(cols):  # ascending class order, as yolo_eval's loop
        sel = rows[cols == c]
        c_boxes = boxes[sel]
        c_scores = scores[sel, c]
        keep = nms(c_boxes, c_scores, iou_threshold, max_per_class)
        out_boxes.append(c_boxes[keep])
        out_scores.append(c_scores[keep])
        out_classes.append(np.full(keep.shape, c, dtype=np.int32))
    w, h = image_size
    # keras-yolo3 runs NMS on unclipped boxes and TYOY clips afterwards; keep that order. (Its detect_image
    # rounds and clips itself, and drops boxes starting below the image: clip=False leaves that to the caller.)
    final = np.concatenate(out_boxes)
    if clip:
        np.clip(final[:, 0::2], 0, w, out=final[:, 0::2])
        np.clip(final[:, 1::2], 0, h, out=final[:, 1::2])
    return Detections(
        boxes=final.astype(np.float32, copy=False),
        scores=np.concatenate(out_scores).astype(np.float32, copy=False),
        classes=np.concatenate(out_classes),
    )


def decode_boxes(
    outputs: Sequence[np.ndarray],
    layout: Literal["v8", "v5"],
    num_classes: int,
    input_size: int,
    image_sizes: Sequence[tuple[int, int]],
    score_threshold: float = 0.3,
    iou_threshold: float = 0.45,
    max_per_class: int = 20,
    clip: bool = True,
) -> list[Detections]:
    """Per-image detections from one output of boxes the network decoded itself (Ultralytics-style exports).

    ``v8`` (YOLOv8, v11): (B, 4 + C, N), per box cx, cy, w, h in letterboxed input pixels, then C class scores;
    ``v5``: (B, N, 5 + C), cx, cy, w, h, objectness, C class scores, a class's score being objectness × class
    score. Boxes go back through the letterbox (:func:`letterbox_geometry`, the one the frames were put through)
    to original image pixels; then the same per-class threshold, NMS and clipping as :func:`decode`, so a box may
    be kept for more than one class, as there.
    """
    if len(outputs) != 1:
        raise ValueError(f"a {layout} model has one output, got {len(outputs)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    raw = np.asarray(outputs[0])
    batch = len(image_sizes)
    fields = (4 if layout == "v8" else 5) + num_classes
    axis = 1 if layout == "v8" else 2
    if raw.ndim != 3 or raw.shape[0] != batch or raw.shape[axis] != fields:
        shape = f"({batch}, {fields}, boxes)" if layout == "v8" else f"({batch}, boxes, {fields})"
        raise ValueError(
            f"a {layout} output for {batch} image(s) and {num_classes} classes has shape {shape}, got "
            f"{raw.shape}: check the classes and engine.layout"
        )
    rows = (raw.transpose(0, 2, 1) if layout == "v8" else raw).astype(np.float32, copy=False)  # (B, N, fields)
    scores = rows[..., 4:] if layout == "v8" else rows[..., 5:] * rows[..., 4:5]
    thr = np.float32(score_threshold)
    found = []
    for b, (w, h) in enumerate(image_sizes):
        if w <= 0 or h <= 0:
            raise ValueError(f"image_sizes[{b}] must be a positive (width, height), got {(w, h)}")
        keep = np.max(scores[b], axis=1) >= thr  # only boxes some class keeps go on to NMS
        cx, cy, bw, bh = rows[b, keep, :4].T
        nw, nh, dx, dy = letterbox_geometry(w, h, input_size)
        sx, sy, two = np.float32(w / nw), np.float32(h / nh), np.float32(2)
        x, y, half_w, half_h = (cx - dx) * sx, (cy - dy) * sy, bw * sx / two, bh * sy / two
        corners = np.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=-1)
        found.append(
            _select(
                boxes=corners.astype(np.float32, copy=False),
                scores=scores[b, keep],
                image_size=(w, h),
                threshold=thr,
                iou_threshold=iou_threshold,
                max_per_class=max_per_class,
                clip=clip,
            )
        )
    return found
