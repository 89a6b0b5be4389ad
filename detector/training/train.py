"""Train the bundled demo model: tiny YOLOv3 at a reduced width on the synthetic source's frames.

    python -m detector.training.train --out detector/models/shapes

Keras 3 on TensorFlow, keras-yolo3's loss (``yolo_loss``: BCE on xy, squared error on log wh scaled by
2 - w*h, objectness BCE with predictions that already overlap a box by IoU >= 0.5 left out, class BCE) and its
target assignment (``preprocess_true_boxes``). Frames come from ingest's synthetic source, the renderer the demo
cameras use, so the model sees at training what it sees at run time: circles, squares, triangles and a ``NULL``
distractor (a plus sign) that the demo config ignores. Everything follows from ``--seed`` (data, initial weights,
batch order; TensorFlow's deterministic ops), and the run is a fixed number of steps. Within one process a rerun
gives the same weights; across processes TensorFlow's parallel CPU kernels may round differently (the loss agrees
to about five digits), so a retrain matches in quality rather than bit for bit. Writes TrainYourOwnYOLO's files:
``trained_weights_final.h5`` (legacy Keras 2 HDF5, weights only), ``yolo-tiny_anchors.txt``, ``data_classes.txt``,
and ``metrics.json`` and ``MODEL_CARD.md`` (mAP@0.5 on held-out frames, per engine).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.scenes import DISTRACTOR_LABEL, SHAPE_LABELS, Scene
from detector.training.evaluate import Labelled, mark_occluded, mean_average_precision
from detector.yolo.postprocess import ANCHOR_MASKS, letterbox_geometry, letterbox_into

log = logging.getLogger(__name__)

CLASSES = (*SHAPE_LABELS, DISTRACTOR_LABEL)
FRAME_SIZES = ((320, 240), (320, 180), (256, 256))  # the demo cameras' 320x240, and some variety


def render(seed: int, count: int, size: int) -> tuple[np.ndarray, list[list[Labelled]], list[tuple[int, int]]]:
    """``count`` letterboxed frames (uint8) with their truth in original pixels (occluded boxes marked difficult)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    truths: list[list[Labelled]] = []
    sizes: list[tuple[int, int]] = []
    for i in range(count):
        width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
        source = Scene(
            seed=int(rng.integers(2**31 - 1)), width=width, height=height,
            shapes=int(rng.integers(1, 5)), distractors=int(rng.integers(0, 3)),
        )  # fmt: skip
        index = int(rng.integers(0, 500))
        bgr = source.render(index)
        letterbox_into(np.ascontiguousarray(bgr[..., ::-1]), size, images[i], "pil")
        found = [Labelled(t.label, tuple(float(v) for v in t.box)) for t in source.truth(index)]  # type: ignore[arg-type]
        truths.append(mark_occluded(found, width, height))
        sizes.append((width, height))
    return images, truths, sizes


def to_input(truths: list[Labelled], image_size: tuple[int, int], size: int) -> np.ndarray:
    """Visible truth boxes as (K, 5) [x0, y0, x1, y1, class] in letterboxed input pixels."""
    w, h = image_size
    nw, nh, dx, dy = letterbox_geometry(w, h, size)
    sx, sy = nw / w, nh / h
    rows = [
        [t.box[0] * sx + dx, t.box[1] * sy + dy, t.box[2] * sx + dx, t.box[3] * sy + dy, CLASSES.index(t.label)]
        for t in truths
        if not t.difficult
    ]
    return np.asarray(rows, np.float32).reshape(-1, 5)


def kmeans_anchors(boxes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k (w, h) anchors by k-means with 1 - IoU as the distance, smallest first (YOLOv2's recipe)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(100):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
        union = wh[:, None].prod(-1) + centres[None].prod(-1) - inter
        nearest = np.argmax(inter / union, axis=1)
        moved = np.array([wh[nearest == j].mean(0) if np.any(nearest == j) else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    ordered: np.ndarray = centres[np.argsort(centres.prod(1))].astype(np.float32)
    return ordered


def targets(boxes: list[np.ndarray], anchors: np.ndarray, size: int, num_classes: int) -> list[np.ndarray]:
    """keras-yolo3's ``preprocess_true_boxes`` for tiny: per head (B, g, g, 3, 5 + C), xywh relative to the input.

    Each box goes to the anchor (of those the heads use) it overlaps best when both are centred.
    """
    masks = ANCHOR_MASKS["tiny"]
    grids = [size // 32, size // 16]
    out = [np.zeros((len(boxes), g, g, 3, 5 + num_classes), np.float32) for g in grids]
    used = sorted({a for m in masks for a in m})
    for b, rows in enumerate(boxes):
        for x0, y0, x1, y1, cls in rows:
            w, h = x1 - x0, y1 - y0
            inter = np.minimum(w, anchors[used, 0]) * np.minimum(h, anchors[used, 1])
            best = used[int(np.argmax(inter / (w * h + anchors[used].prod(1) - inter)))]
            for head, mask in enumerate(masks):
                if best not in mask:
                    continue
                g = grids[head]
                col = min(g - 1, int((x0 + x1) / 2 / size * g))
                row = min(g - 1, int((y0 + y1) / 2 / size * g))
                k = mask.index(best)
                out[head][b, row, col, k, 0:4] = [(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, w / size, h / size]
                out[head][b, row, col, k, 4] = 1
                out[head][b, row, col, k, 5 + int(cls)] = 1
    return out


def mirror(
    x: np.ndarray, t1: np.ndarray, t2: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch flipped left to right: images, both heads' targets (cells and x centres), and the padded boxes."""
    t1, t2 = t1[:, :, ::-1].copy(), t2[:, :, ::-1].copy()
    for t in (t1, t2):
        t[..., 0] = np.where(t[..., 4] > 0, 1 - t[..., 0], 0)
    real = (boxes.sum(-1) > 0)[..., None]  # padding rows stay zero
    flipped = np.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], -1) * real
    return x[:, :, ::-1], t1, t2, flipped


def yolo_loss(raw: Any, truth: Any, true_boxes: Any, anchors: np.ndarray, size: int) -> Any:
    """keras-yolo3's loss for one head, summed over the batch and divided by its size."""
    import tensorflow as tf

    g = raw.shape[1]
    raw = tf.reshape(raw, (-1, g, g, 3, truth.shape[-1]))
    cells = tf.cast(tf.stack(tf.meshgrid(tf.range(g), tf.range(g)), -1)[:, :, None, :], raw.dtype)
    pred_xy = (tf.sigmoid(raw[..., 0:2]) + cells) / g
    pred_wh = tf.exp(tf.minimum(raw[..., 2:4], 10.0)) * anchors / size
    obj = truth[..., 4:5]
    raw_true_xy = truth[..., 0:2] * g - cells
    raw_true_wh = tf.math.log(tf.where(obj > 0, truth[..., 2:4] * size / anchors, 1.0))
    scale = 2.0 - truth[..., 2:3] * truth[..., 3:4]
    # Predictions overlapping any true box of their image by IoU >= 0.5 are not pushed towards "no object".
    p0, p1 = pred_xy - pred_wh / 2, pred_xy + pred_wh / 2
    t = true_boxes[:, None, None, None, :, :]  # (B, 1, 1, 1, M, 4) as x0, y0, x1, y1 relative
    inter_wh = tf.maximum(tf.minimum(p1[..., None, :], t[..., 2:4]) - tf.maximum(p0[..., None, :], t[..., 0:2]), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = (pred_wh[..., 0:1] * pred_wh[..., 1:2]) + tf.reduce_prod(t[..., 2:4] - t[..., 0:2], -1) - inter
    best = tf.reduce_max(inter / tf.maximum(union, 1e-9), axis=-1, keepdims=True)
    ignore = tf.cast(best < 0.5, raw.dtype)

    def bce(labels: Any, logits: Any) -> Any:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)

    xy = obj * scale * bce(raw_true_xy, raw[..., 0:2])
    wh = obj * scale * 0.5 * tf.square(raw_true_wh - raw[..., 2:4])
    conf = obj * bce(obj, raw[..., 4:5]) + (1 - obj) * bce(obj, raw[..., 4:5]) * ignore
    cls = obj * bce(truth[..., 5:], raw[..., 5:])
    batch = tf.cast(tf.shape(raw)[0], raw.dtype)
    return (tf.reduce_sum(xy) + tf.reduce_sum(wh) + tf.reduce_sum(conf) + tf.reduce_sum(cls)) / batch


def train(
    out: Path, seed: int, size: int, width: float, frames: int, epochs: int, batch: int, eval_frames: int = 300
) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from detector.yolo.keras_model import build_body

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    started = time.monotonic()
    images, truths, sizes = render(seed, frames, size)
    boxes = [to_input(t, s, size) for t, s in zip(truths, sizes, strict=True)]
    kept = sorted({a for m in ANCHOR_MASKS["tiny"] for a in m})  # tiny never uses anchor 0
    anchors = np.empty((6, 2), np.float32)
    anchors[kept] = kmeans_anchors(np.concatenate(boxes), len(kept), seed)
    anchors[0] = anchors[kept[0]] * 0.5
    heads = targets(boxes, anchors, size, len(CLASSES))
    most = max(len(b) for b in boxes)
    relative = np.zeros((frames, most, 4), np.float32)
    for i, b in enumerate(boxes):
        relative[i, : len(b)] = b[:, :4] / size
    log.info("rendered %d frames in %.0f s; anchors %s", frames, time.monotonic() - started, anchors.tolist())

    model = build_body("tiny", len(CLASSES), size, width)
    steps = epochs * (frames // batch)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05, warmup_target=None)
    optimizer = keras.optimizers.Adam(schedule)
    head_anchors = [anchors[m] for m in ANCHOR_MASKS["tiny"]]

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def step(x: Any, t1: Any, t2: Any, tb: Any) -> Any:
        with tf.GradientTape() as tape:
            outs = model(tf.cast(x, tf.float32) / 255.0, training=True)
            loss = sum(yolo_loss(o, t, tb, a, size) for o, t, a in zip(outs, (t1, t2), head_anchors, strict=True))
            loss += tf.add_n(model.losses)  # the L2 5e-4 on kernels, as keras-yolo3 trains
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(seed + 1)
    for epoch in range(epochs):
        order = rng.permutation(frames)
        losses = []
        for s in range(frames // batch):
            idx = np.sort(order[s * batch : (s + 1) * batch])
            flip = rng.random() < 0.5  # a mirrored batch: shapes are symmetric, their positions are not
            x, t1, t2, tb = images[idx], heads[0][idx], heads[1][idx], relative[idx]
            if flip:
                x, t1, t2, tb = mirror(x, t1, t2, tb)
            losses.append(float(step(np.ascontiguousarray(x), t1, t2, tb.astype(np.float32))))
        log.info("epoch %d/%d: loss %.3f (%.0f s)", epoch + 1, epochs, np.mean(losses), time.monotonic() - started)

    out.mkdir(parents=True, exist_ok=True)
    save_tyoy(model, anchors, out)
    card = {
        "architecture": "tiny YOLOv3", "width": width, "input_size": size, "classes": list(CLASSES),
        "seed": seed, "frames": frames, "epochs": epochs, "batch": batch,
        "train_minutes": round((time.monotonic() - started) / 60, 1), "parameters": int(model.count_params()),
        "anchors": anchors.round(2).tolist(), "eval_seed": seed + 1000, "eval_frames": eval_frames,
    }  # fmt: skip
    return write_card(out, card)


def write_card(out: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Score the model in ``out`` with each engine installed; write ``metrics.json`` and ``MODEL_CARD.md``."""
    import importlib.util

    for engine in ("tensorflow", "torch"):
        if importlib.util.find_spec(engine) is not None:
            card |= evaluate(out, card["eval_seed"], card["eval_frames"], card["input_size"], engine)
    (out / "metrics.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(
        f"| {label} | "
        + " | ".join(f"{card[k][label]:.3f}" for k in ("tensorflow_ap50", "torch_ap50") if k in card)
        + " |"
        for label in (*CLASSES, "mAP")
    )
    (out / "MODEL_CARD.md").write_text(f"""# Demo model: shapes (tiny YOLOv3, width {card["width"]})

Trained by this project, from scratch, with `python -m detector.training.train --out {out.name} --seed {card["seed"]}`
(`detector/training/train.py`): {card["frames"]} frames of the synthetic source (320x240, 320x180 and 256x256; 1-4
shapes and 0-2 plus-sign distractors each, random colours, sizes and positions), letterboxed to {card["input_size"]}
px; {card["epochs"]} epochs of batch {card["batch"]}, Adam with a cosine-decayed learning rate from 1e-3, mirrored
batches, keras-yolo3's loss and target assignment; anchors by k-means on the training boxes. {card["parameters"]:,}
parameters; {card["train_minutes"]} minutes on the CPU it was trained on. The seed fixes the data, the initial
weights and the batch order; TensorFlow's parallel CPU kernels still round differently from run to run (the loss
agrees to about five digits), so a retrain matches this model in quality, not bit for bit.

Classes: {", ".join(CLASSES)}. `NULL` is the distractor class (TrainYourOwnYOLO's trick for things that get
mis-detected): the demo config ignores it, so plus signs are neither reported nor called shapes.

Files, in TrainYourOwnYOLO's format: `trained_weights_final.h5` (weights only, legacy Keras 2 HDF5),
`yolo-tiny_anchors.txt`, `data_classes.txt`; `metrics.json` holds every figure below.

## Metrics
AP@0.5 (VOC, all points) on {card["eval_frames"]} held-out frames (seed {card["eval_seed"]}, never trained on);
boxes less than half visible under later shapes are "difficult" and count neither way.

| class | {" | ".join(k.split("_")[0] for k in ("tensorflow_ap50", "torch_ap50") if k in card)} |
| --- | {" | ".join("---:" for k in ("tensorflow_ap50", "torch_ap50") if k in card)} |
{rows}

Limits: it knows these four drawn shapes on a dark gradient and nothing else; it is a demonstration of the stack,
not a general detector.
""")
    return card


def save_tyoy(model: Any, anchors: np.ndarray, out: Path) -> None:
    """TrainYourOwnYOLO's three files: weights (legacy HDF5, as Keras 2's save_weights), anchors, classes."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(out / "trained_weights_final.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    (out / "yolo-tiny_anchors.txt").write_text(", ".join(f"{w:.2f},{h:.2f}" for w, h in anchors) + "\n")
    (out / "data_classes.txt").write_text("\n".join(CLASSES) + "\n")


def evaluate(folder: Path, seed: int, count: int, size: int, engine: str = "tensorflow") -> dict[str, Any]:
    """mAP@0.5 of the model in ``folder`` on ``count`` frames that training never saw, through an engine."""
    from common.config import ModelConfig
    from detector.engines import create_engine
    from detector.engines.tensorflow import TensorFlowEngineConfig
    from detector.engines.torch import TorchEngineConfig
    from detector.model import ModelSpec
    from detector.yolo.postprocess import decode

    spec = ModelSpec.from_config(ModelConfig(folder=folder, input_size=size))
    cfg = TensorFlowEngineConfig(gpu=None) if engine == "tensorflow" else TorchEngineConfig(gpu=None)
    model = create_engine(cfg, spec)
    images, truths, sizes = render(seed, count, size)
    pairs = []
    for start in range(0, count, 32):
        heads = model.predict(images[start : start + 32])
        found = decode(heads, spec.anchors, len(spec.classes), size, sizes[start : start + 32], 0.01, 0.45, 20)
        for dets, truth in zip(found, truths[start : start + 32], strict=True):
            labelled = [
                Labelled(spec.classes[c], tuple(b), s)
                for b, s, c in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.classes.tolist(), strict=True)
            ]
            pairs.append((labelled, truth))
    aps = mean_average_precision(pairs, spec.classes)
    return {f"{engine}_ap50": {k: round(v, 4) for k, v in aps.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the model files")
    p.add_argument("--rescore", action="store_true", help="only score the model in --out again and rewrite its card")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="input side, a multiple of 32")
    p.add_argument("--width", type=float, default=0.25, help="tiny YOLOv3's width multiplier")
    p.add_argument("--frames", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.rescore:
        card = write_card(a.out, json.loads((a.out / "metrics.json").read_text()))
    else:
        card = train(a.out, a.seed, a.size, a.width, a.frames, a.epochs, a.batch)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
