"""A stand-in for TrainYourOwnYOLO (TYOY) itself: keras-yolo3 on Keras 2, as its users ran it.

TYOY trains and detects with keras-yolo3 on TensorFlow 2.3 / Keras 2.4. This script rebuilds that stack with
``tf_keras`` (Keras 2 for current TensorFlow): keras-yolo3's exact body (``yolo_body`` / ``tiny_yolo_body``), the
training model TYOY saves (body + y_true inputs + a ``Lambda`` named ``yolo_loss``), seeded random weights, and
writes into ``--out`` what a TYOY user has on disk:

- ``trained_weights_final.h5``: the training model's ``save_weights`` (legacy Keras 2 HDF5, weights only);
- ``yolo_anchors.txt`` (9 pairs) or ``yolo-tiny_anchors.txt`` (6 pairs): keras-yolo3's defaults, one line;
- ``data_classes.txt``: one class name a line;
- ``full_model.h5``: the body saved whole with ``body.save`` (a full Keras 2 model file).

The weights are seeded random ones that behave like trained ones (see ``set_random_weights``): BatchNormalization
statistics calibrated on a fixed batch of synthetic images, so the heads depend on the image, and the objectness
biases set so that each test image gets a few dozen boxes at score 0.3.

For every ``--images`` file it runs TYOY's ``detect_image`` on a body rebuilt and loaded from
``trained_weights_final.h5`` (as TYOY's ``YOLO.generate`` does for a weights-only file): PIL letterbox, / 255,
keras-yolo3's ``yolo_eval`` (transcribed to TensorFlow 2 ops), TYOY's rounding and clamping. It writes
``reference.json`` (per image: ``name``, ``key``, TYOY's ``out_prediction`` rows, and ``unrounded``: each row's box
as [xmin, ymin, xmax, ymax] floats before TYOY's rounding, to tell a rounding tie at .5 from a real difference)
and ``reference.npz`` (per image ``{key}_input``: the letterboxed (1, S, S, 3) float32 input, and
``{key}_head{j}``: the raw head outputs, strides 32, 16(, 8)).

The tests run it in a subprocess so that tf_keras (Keras 2) and Keras 3 never share a process: both are Keras
implementations on one TensorFlow with process-wide state (``tf.keras`` resolves to one of them per process,
layer-name counters, sessions, registries). Apart, the product runs exactly as it does without tf_keras installed,
and the reference is exactly Keras 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tf_keras  # type: ignore[import-untyped]
from PIL import Image
from tf_keras.layers import (  # type: ignore[import-untyped]
    Add,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Input,
    Lambda,
    LeakyReLU,
    MaxPooling2D,
    UpSampling2D,
    ZeroPadding2D,
)
from tf_keras.models import Model  # type: ignore[import-untyped]
from tf_keras.regularizers import l2  # type: ignore[import-untyped]

# keras-yolo3's model_data/yolo_anchors.txt and TYOY's yolo-tiny_anchors.txt, as written there.
ANCHORS_TXT = {
    "yolov3": "10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326\n",
    "tiny": "10,14,  23,27,  37,58,  81,82,  135,169,  344,319\n",
}
ANCHORS_FILE = {"yolov3": "yolo_anchors.txt", "tiny": "yolo-tiny_anchors.txt"}
CLASS_NAMES = ["person", "car", "dog", "bicycle", "truck", "cat", "bus", "bird"]
OBJECTNESS_SHIFT = {"yolov3": -1.8, "tiny": -1.8}
"""Added to the objectness logit bias of the output convs. The calibrated logits are O(1), so at 0 some 40 % of
the candidates pass score 0.3 and NMS's 20 a class saturate; at -1.8 the test images get 18 to 52 rows each."""

# --- keras-yolo3 yolo3/model.py, unchanged but for the imports -------------------------------------------------


def compose(*funcs: Callable[..., Any]) -> Callable[..., Any]:
    return reduce(lambda f, g: lambda *a, **kw: g(f(*a, **kw)), funcs)


def DarknetConv2D(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (keras-yolo3's name)
    darknet_conv_kwargs: dict[str, Any] = {"kernel_regularizer": l2(5e-4)}
    darknet_conv_kwargs["padding"] = "valid" if kwargs.get("strides") == (2, 2) else "same"
    darknet_conv_kwargs.update(kwargs)
    return Conv2D(*args, **darknet_conv_kwargs)


def DarknetConv2D_BN_Leaky(*args: Any, **kwargs: Any) -> Any:  # noqa: N802
    no_bias_kwargs = {"use_bias": False}
    no_bias_kwargs.update(kwargs)
    return compose(DarknetConv2D(*args, **no_bias_kwargs), BatchNormalization(), LeakyReLU(alpha=0.1))


def resblock_body(x: Any, num_filters: int, num_blocks: int) -> Any:
    x = ZeroPadding2D(((1, 0), (1, 0)))(x)
    x = DarknetConv2D_BN_Leaky(num_filters, (3, 3), strides=(2, 2))(x)
    for _ in range(num_blocks):
        y = compose(DarknetConv2D_BN_Leaky(num_filters // 2, (1, 1)), DarknetConv2D_BN_Leaky(num_filters, (3, 3)))(x)
        x = Add()([x, y])
    return x


def darknet_body(x: Any) -> Any:
    x = DarknetConv2D_BN_Leaky(32, (3, 3))(x)
    x = resblock_body(x, 64, 1)
    x = resblock_body(x, 128, 2)
    x = resblock_body(x, 256, 8)
    x = resblock_body(x, 512, 8)
    return resblock_body(x, 1024, 4)


def make_last_layers(x: Any, num_filters: int, out_filters: int) -> tuple[Any, Any]:
    x = compose(
        DarknetConv2D_BN_Leaky(num_filters, (1, 1)),
        DarknetConv2D_BN_Leaky(num_filters * 2, (3, 3)),
        DarknetConv2D_BN_Leaky(num_filters, (1, 1)),
        DarknetConv2D_BN_Leaky(num_filters * 2, (3, 3)),
        DarknetConv2D_BN_Leaky(num_filters, (1, 1)),
    )(x)
    y = compose(DarknetConv2D_BN_Leaky(num_filters * 2, (3, 3)), DarknetConv2D(out_filters, (1, 1)))(x)
    return x, y


def yolo_body(inputs: Any, num_anchors: int, num_classes: int) -> Any:
    darknet = Model(inputs, darknet_body(inputs))
    x, y1 = make_last_layers(darknet.output, 512, num_anchors * (num_classes + 5))
    x = compose(DarknetConv2D_BN_Leaky(256, (1, 1)), UpSampling2D(2))(x)
    x = Concatenate()([x, darknet.layers[152].output])
    x, y2 = make_last_layers(x, 256, num_anchors * (num_classes + 5))
    x = compose(DarknetConv2D_BN_Leaky(128, (1, 1)), UpSampling2D(2))(x)
    x = Concatenate()([x, darknet.layers[92].output])
    x, y3 = make_last_layers(x, 128, num_anchors * (num_classes + 5))
    return Model(inputs, [y1, y2, y3])


def tiny_yolo_body(inputs: Any, num_anchors: int, num_classes: int) -> Any:
    x1 = compose(
        DarknetConv2D_BN_Leaky(16, (3, 3)),
        MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        DarknetConv2D_BN_Leaky(32, (3, 3)),
        MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        DarknetConv2D_BN_Leaky(64, (3, 3)),
        MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        DarknetConv2D_BN_Leaky(128, (3, 3)),
        MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        DarknetConv2D_BN_Leaky(256, (3, 3)),
    )(inputs)
    x2 = compose(
        MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        DarknetConv2D_BN_Leaky(512, (3, 3)),
        MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
        DarknetConv2D_BN_Leaky(1024, (3, 3)),
        DarknetConv2D_BN_Leaky(256, (1, 1)),
    )(x1)
    y1 = compose(DarknetConv2D_BN_Leaky(512, (3, 3)), DarknetConv2D(num_anchors * (num_classes + 5), (1, 1)))(x2)
    x2 = compose(DarknetConv2D_BN_Leaky(128, (1, 1)), UpSampling2D(2))(x2)
    y2 = compose(
        Concatenate(),
        DarknetConv2D_BN_Leaky(256, (3, 3)),
        DarknetConv2D(num_anchors * (num_classes + 5), (1, 1)),
    )([x2, x1])
    return Model(inputs, [y1, y2])


# keras-yolo3's yolo_head / yolo_correct_boxes / yolo_boxes_and_scores / yolo_eval, K.* replaced by the tf ops
# they call (K.round is tf.round, half to even).


def yolo_head(feats: tf.Tensor, anchors: np.ndarray, num_classes: int, input_shape: tf.Tensor) -> tuple[Any, ...]:
    num_anchors = len(anchors)
    anchors_tensor = tf.reshape(tf.constant(anchors, tf.float32), [1, 1, 1, num_anchors, 2])
    grid_shape = tf.shape(feats)[1:3]
    grid_y = tf.tile(tf.reshape(tf.range(0, grid_shape[0]), [-1, 1, 1, 1]), [1, grid_shape[1], 1, 1])
    grid_x = tf.tile(tf.reshape(tf.range(0, grid_shape[1]), [1, -1, 1, 1]), [grid_shape[0], 1, 1, 1])
    grid = tf.cast(tf.concat([grid_x, grid_y], -1), feats.dtype)
    feats = tf.reshape(feats, [-1, grid_shape[0], grid_shape[1], num_anchors, num_classes + 5])
    box_xy = (tf.sigmoid(feats[..., :2]) + grid) / tf.cast(grid_shape[::-1], feats.dtype)
    box_wh = tf.exp(feats[..., 2:4]) * anchors_tensor / tf.cast(input_shape[::-1], feats.dtype)
    return box_xy, box_wh, tf.sigmoid(feats[..., 4:5]), tf.sigmoid(feats[..., 5:])


def yolo_correct_boxes(box_xy: Any, box_wh: Any, input_shape: Any, image_shape: Any) -> Any:
    box_yx = box_xy[..., ::-1]
    box_hw = box_wh[..., ::-1]
    input_shape = tf.cast(input_shape, box_yx.dtype)
    image_shape = tf.cast(image_shape, box_yx.dtype)
    new_shape = tf.round(image_shape * tf.reduce_min(input_shape / image_shape))
    offset = (input_shape - new_shape) / 2.0 / input_shape
    scale = input_shape / new_shape
    box_yx = (box_yx - offset) * scale
    box_hw *= scale
    box_mins = box_yx - (box_hw / 2.0)
    box_maxes = box_yx + (box_hw / 2.0)
    boxes = tf.concat([box_mins[..., 0:1], box_mins[..., 1:2], box_maxes[..., 0:1], box_maxes[..., 1:2]], -1)
    return boxes * tf.concat([image_shape, image_shape], -1)


def yolo_eval(
    yolo_outputs: Sequence[Any],
    anchors: np.ndarray,
    num_classes: int,
    image_shape: Any,
    max_boxes: int = 20,
    score_threshold: float = 0.6,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_layers = len(yolo_outputs)
    anchor_mask = [[6, 7, 8], [3, 4, 5], [0, 1, 2]] if num_layers == 3 else [[3, 4, 5], [1, 2, 3]]
    input_shape = tf.shape(yolo_outputs[0])[1:3] * 32
    boxes, box_scores = [], []
    for layer in range(num_layers):
        box_xy, box_wh, box_confidence, box_class_probs = yolo_head(
            yolo_outputs[layer], anchors[anchor_mask[layer]], num_classes, input_shape
        )
        boxes.append(tf.reshape(yolo_correct_boxes(box_xy, box_wh, input_shape, image_shape), [-1, 4]))
        box_scores.append(tf.reshape(box_confidence * box_class_probs, [-1, num_classes]))
    all_boxes = tf.concat(boxes, axis=0)
    all_scores = tf.concat(box_scores, axis=0)
    mask = all_scores >= score_threshold
    max_boxes_tensor = tf.constant(max_boxes, dtype="int32")
    boxes_, scores_, classes_ = [], [], []
    for c in range(num_classes):
        class_boxes = tf.boolean_mask(all_boxes, mask[:, c])
        class_box_scores = tf.boolean_mask(all_scores[:, c], mask[:, c])
        nms_index = tf.image.non_max_suppression(
            class_boxes, class_box_scores, max_boxes_tensor, iou_threshold=iou_threshold
        )
        class_boxes = tf.gather(class_boxes, nms_index)
        class_box_scores = tf.gather(class_box_scores, nms_index)
        boxes_.append(class_boxes)
        scores_.append(class_box_scores)
        classes_.append(tf.ones_like(class_box_scores, "int32") * c)
    return tf.concat(boxes_, 0).numpy(), tf.concat(scores_, 0).numpy(), tf.concat(classes_, 0).numpy()


# --- TYOY: train.py's create_model / create_tiny_model, utils.letterbox_image, yolo.YOLO.detect_image ----------


def build_body(arch: str, num_classes: int) -> Any:
    image_input = Input(shape=(None, None, 3))
    if arch == "yolov3":
        return yolo_body(image_input, 3, num_classes)
    return tiny_yolo_body(image_input, 3, num_classes)


def training_model(body: Any, arch: str, num_classes: int, size: int) -> Any:
    """The model TYOY trains and saves: y_true inputs and a loss Lambda around the body (no weights of their own).

    The loss itself is not saved by ``save_weights``; a stand-in keeps the graph's shape without keras-yolo3's
    ``yolo_loss`` code.
    """
    strides = [32, 16, 8] if arch == "yolov3" else [32, 16]
    y_true = [Input(shape=(size // s, size // s, 3, num_classes + 5)) for s in strides]
    model_loss = Lambda(
        lambda args: tf_keras.backend.sum(args[0]) * 0.0,
        output_shape=(1,),
        name="yolo_loss",
    )([*body.output, *y_true])
    return Model([body.input, *y_true], model_loss)


def set_random_weights(body: Any, arch: str, num_classes: int, size: int, seed: int) -> None:
    """Seeded weights that behave like trained ones: activations O(1) and dependent on the image, boxes found.

    Conv kernels ~ N(0, 1/fan_in); BatchNormalization gamma in [0.5, 1.5], beta ~ N(0, 0.1), and its moving mean
    and variance set from the statistics it sees on a fixed batch of synthetic images (one forward pass in
    training mode with momentum 0), so every layer normalises its input as a trained network does. Without that
    (moving variance drawn in [0.5, 1.5]) the heads barely depend on the image, and a letterbox error would go
    unseen. The output convs' objectness biases are moved by ``OBJECTNESS_SHIFT`` so that some, not all, candidates
    pass score 0.3; class logit biases ~ N(0, 1), so scores differ between classes.
    """
    rng = np.random.default_rng(seed)
    outputs = 3 * (num_classes + 5)
    norms = []
    for layer in body.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, BatchNormalization):
            channels = weights[0].shape
            new = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels), np.zeros(channels), np.ones(channels)]
            norms.append(layer)
        else:
            kernel = weights[0]
            new = [rng.normal(0, 1, kernel.shape) / math.sqrt(int(np.prod(kernel.shape[:-1])))]
            if len(weights) == 2:  # an output conv (linear, with bias): x, y, w, h, objectness, classes per anchor
                assert kernel.shape[-1] == outputs, kernel.shape
                bias = rng.normal(0, 0.3, (3, num_classes + 5))
                bias[:, 4] += OBJECTNESS_SHIFT[arch]
                bias[:, 5:] = rng.normal(0, 1.0, (3, num_classes))
                new.append(bias.reshape(-1))
        layer.set_weights([w.astype(np.float32) for w in new])
    # Calibration batch: blocks of colour with pixel noise, half of them letterboxed (grey bars), like real inputs.
    blocks = rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8)
    smooth = [np.asarray(Image.fromarray(b).resize((size, size), Image.BICUBIC), np.float32) for b in blocks]
    calibration = np.clip(np.stack(smooth) + rng.normal(0, 20, (8, size, size, 3)), 0, 255)
    calibration[::2, : size // 8] = calibration[::2, -size // 8 :] = 128
    calibration = (np.round(calibration) / 255.0).astype(np.float32)
    momentum = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    body(calibration, training=True)
    for layer, m in zip(norms, momentum, strict=True):
        layer.momentum = m


def letterbox_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """TYOY's utils.letterbox_image: resize with unchanged aspect ratio using padding."""
    iw, ih = image.size
    w, h = size
    scale = min(w / iw, h / ih)
    nw = int(iw * scale)
    nh = int(ih * scale)
    image = image.resize((nw, nh), Image.BICUBIC)
    new_image = Image.new("RGB", size, (128, 128, 128))
    new_image.paste(image, ((w - nw) // 2, (h - nh) // 2))
    return new_image


def detect_image(
    body: Any,
    image: Image.Image,
    anchors: np.ndarray,
    num_classes: int,
    size: int,
    score: float,
    iou: float,
) -> tuple[list[list[Any]], list[list[float]], np.ndarray, list[np.ndarray]]:
    """TYOY's YOLO.detect_image, less the drawing: (out_prediction, each row's box before rounding as
    [xmin, ymin, xmax, ymax], letterboxed input, raw head outputs)."""
    boxed_image = letterbox_image(image, (size, size))
    image_data = np.array(boxed_image, dtype="float32")
    image_data /= 255.0
    image_data = np.expand_dims(image_data, 0)
    outputs = [np.asarray(o) for o in body.predict(image_data, verbose=0)]
    out_boxes, out_scores, out_classes = yolo_eval(
        [tf.constant(o) for o in outputs],
        anchors,
        num_classes,
        tf.constant([image.size[1], image.size[0]], tf.float32),  # TYOY feeds a float32 placeholder
        score_threshold=score,
        iou_threshold=iou,
    )
    out_prediction: list[list[Any]] = []
    unrounded: list[list[float]] = []
    for i, c in reversed(list(enumerate(out_classes))):
        top, left, bottom, right = out_boxes[i]
        box = [float(left), float(top), float(right), float(bottom)]
        top = max(0, np.floor(top + 0.5).astype("int32"))
        left = max(0, np.floor(left + 0.5).astype("int32"))
        bottom = min(image.size[1], np.floor(bottom + 0.5).astype("int32"))
        right = min(image.size[0], np.floor(right + 0.5).astype("int32"))
        if top > image.size[1] or right > image.size[0]:
            continue
        out_prediction.append([int(left), int(top), int(right), int(bottom), int(c), float(out_scores[i])])
        unrounded.append(box)
    return out_prediction, unrounded, image_data, outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", choices=["yolov3", "tiny"], required=True)
    parser.add_argument("--classes", type=int, required=True, help="number of classes")
    parser.add_argument("--size", type=int, default=416, help="input size (a multiple of 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, nargs="*", default=[])
    parser.add_argument("--score", type=float, default=0.3)
    parser.add_argument("--iou", type=float, default=0.45)
    args = parser.parse_args(argv)
    arch: str = args.arch
    num_classes: int = args.classes
    size: int = args.size
    if size % 32:
        parser.error("--size must be a multiple of 32")
    if not 1 <= num_classes <= len(CLASS_NAMES):
        parser.error(f"--classes must be 1 to {len(CLASS_NAMES)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    tf_keras.utils.set_random_seed(args.seed)
    body = build_body(arch, num_classes)
    model = training_model(body, arch, num_classes, size)
    set_random_weights(body, arch, num_classes, size, args.seed)
    model.save_weights(str(out / "trained_weights_final.h5"))
    body.save(str(out / "full_model.h5"))
    (out / ANCHORS_FILE[arch]).write_text(ANCHORS_TXT[arch], encoding="utf-8")
    (out / "data_classes.txt").write_text("".join(f"{n}\n" for n in CLASS_NAMES[:num_classes]), encoding="utf-8")

    # TYOY's YOLO.generate on a weights-only file: load_model fails, so it rebuilds the body and loads by order.
    tf_keras.backend.clear_session()
    loaded = build_body(arch, num_classes)
    loaded.load_weights(str(out / "trained_weights_final.h5"))
    anchors = np.array([float(v) for v in ANCHORS_TXT[arch].split(",")], np.float32).reshape(-1, 2)

    reference: dict[str, Any] = {"arch": arch, "classes": num_classes, "size": size, "seed": args.seed}
    reference["score"], reference["iou"], reference["images"] = args.score, args.iou, []
    arrays: dict[str, np.ndarray] = {}
    for i, path in enumerate(args.images):
        with Image.open(path) as opened:
            image = opened.convert("RGB") if opened.mode != "RGB" else opened.copy()
        rows, unrounded, image_data, outputs = detect_image(
            loaded, image, anchors, num_classes, size, args.score, args.iou
        )
        reference["images"].append(
            {"name": path.name, "key": f"img{i}", "out_prediction": rows, "unrounded": unrounded}
        )
        arrays[f"img{i}_input"] = image_data
        for j, o in enumerate(outputs):
            arrays[f"img{i}_head{j}"] = o
        print(f"{path.name}: {len(rows)} boxes", file=sys.stderr)
    (out / "reference.json").write_text(json.dumps(reference, indent=1), encoding="utf-8")
    np.savez(out / "reference.npz", **arrays)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
