"""keras-yolo3's YOLOv3 and tiny YOLOv3 bodies, rebuilt layer for layer in Keras 3.

A TrainYourOwnYOLO ``trained_weights_final.h5`` holds weights only, in the legacy Keras 2 HDF5 layout, and
Keras' legacy loader assigns them by the order of the weighted layers in ``model.layers``. That order
follows the graph (depth, then traversal order), so the graph here must be the one keras-yolo3 builds:
same layers, same wiring, same order of the inputs to every Concatenate. Only layer names differ, and
the loader ignores them.
"""

from __future__ import annotations

from typing import Any, Literal

import keras
from keras import layers

from detector.yolo.weights import scaled

Architecture = Literal["yolov3", "tiny"]

# Darknet's L2 weight decay: it only matters for training, but it keeps the layer config as TYOY's.
_WEIGHT_DECAY = 5e-4
_ANCHORS_PER_HEAD = 3


def num_anchors(architecture: Architecture) -> int:
    """Anchors a weights file of this architecture was trained with: 9 (YOLOv3) or 6 (tiny)."""
    if architecture == "yolov3":
        return 9
    if architecture == "tiny":
        return 6
    raise ValueError(f"unknown YOLO architecture {architecture!r}: use 'yolov3' or 'tiny'")


def _conv(x: Any, filters: int, kernel: int, *, strides: int = 1, use_bias: bool = False) -> Any:
    """keras-yolo3's DarknetConv2D: 'valid' after an explicit pad when striding, 'same' otherwise."""
    return layers.Conv2D(
        filters,
        (kernel, kernel),
        strides=(strides, strides),
        padding="valid" if strides == 2 else "same",
        use_bias=use_bias,
        kernel_regularizer=keras.regularizers.L2(_WEIGHT_DECAY),
    )(x)


def _conv_bn_leaky(x: Any, filters: int, kernel: int, *, strides: int = 1) -> Any:
    """DarknetConv2D_BN_Leaky: bias-free conv, BatchNormalization with Keras defaults, LeakyReLU(0.1)."""
    x = _conv(x, filters, kernel, strides=strides)
    x = layers.BatchNormalization()(x)
    return layers.LeakyReLU(negative_slope=0.1)(x)


def _resblock_body(x: Any, filters: int, blocks: int) -> Any:
    # Darknet pads top and left only before a stride-2 conv; Keras 'same' would pad bottom/right.
    x = layers.ZeroPadding2D(((1, 0), (1, 0)))(x)
    x = _conv_bn_leaky(x, filters, 3, strides=2)
    for _ in range(blocks):
        y = _conv_bn_leaky(x, filters // 2, 1)
        y = _conv_bn_leaky(y, filters, 3)
        x = layers.Add()([x, y])
    return x


def _make_last_layers(x: Any, filters: int, out_filters: int) -> tuple[Any, Any]:
    """Five conv blocks feeding the next scale, then a 3x3 block and the linear output conv."""
    for kernel in (1, 3, 1, 3, 1):
        x = _conv_bn_leaky(x, filters if kernel == 1 else filters * 2, kernel)
    y = _conv_bn_leaky(x, filters * 2, 3)
    y = _conv(y, out_filters, 1, use_bias=True)
    return x, y


def _yolo_body(inputs: Any, out_filters: int) -> keras.Model:
    x = _conv_bn_leaky(inputs, 32, 3)
    x = _resblock_body(x, 64, 1)
    x = _resblock_body(x, 128, 2)
    stride8 = _resblock_body(x, 256, 8)  # keras-yolo3's darknet.layers[92]
    stride16 = _resblock_body(stride8, 512, 8)  # darknet.layers[152]
    stride32 = _resblock_body(stride16, 1024, 4)

    x, y1 = _make_last_layers(stride32, 512, out_filters)
    x = _conv_bn_leaky(x, 256, 1)
    x = layers.UpSampling2D(2)(x)
    # Upsampled path first: the order decides the channel layout the next conv's kernel was trained on.
    x = layers.Concatenate()([x, stride16])
    x, y2 = _make_last_layers(x, 256, out_filters)
    x = _conv_bn_leaky(x, 128, 1)
    x = layers.UpSampling2D(2)(x)
    x = layers.Concatenate()([x, stride8])
    _, y3 = _make_last_layers(x, 128, out_filters)
    return keras.Model(inputs, [y1, y2, y3], name="yolo_body")


def _tiny_yolo_body(inputs: Any, out_filters: int, width: float = 1.0) -> keras.Model:
    def w(filters: int) -> int:
        return scaled(filters, width)

    x1 = inputs
    for i, filters in enumerate((16, 32, 64, 128, 256)):
        if i:
            x1 = layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same")(x1)
        x1 = _conv_bn_leaky(x1, w(filters), 3)
    x2 = layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same")(x1)
    x2 = _conv_bn_leaky(x2, w(512), 3)
    # Stride 1: deepens the receptive field without shrinking the 13x13 grid.
    x2 = layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same")(x2)
    x2 = _conv_bn_leaky(x2, w(1024), 3)
    x2 = _conv_bn_leaky(x2, w(256), 1)
    y1 = _conv_bn_leaky(x2, w(512), 3)
    y1 = _conv(y1, out_filters, 1, use_bias=True)

    x2 = _conv_bn_leaky(x2, w(128), 1)
    x2 = layers.UpSampling2D(2)(x2)
    y2 = layers.Concatenate()([x2, x1])
    y2 = _conv_bn_leaky(y2, w(256), 3)
    y2 = _conv(y2, out_filters, 1, use_bias=True)
    return keras.Model(inputs, [y1, y2], name="tiny_yolo_body")


def build_body(architecture: Architecture, num_classes: int, input_size: int, width: float = 1.0) -> keras.Model:
    """Build keras-yolo3's ``yolo_body`` or ``tiny_yolo_body`` for a square ``input_size`` input.

    Outputs are the raw head tensors, shape (B, input_size/stride, input_size/stride, 3*(5+num_classes)),
    strides 32, 16, 8 for YOLOv3 and 32, 16 for tiny. Load TYOY weights with ``model.load_weights(path)``
    on the ``*.h5`` file (not ``*.weights.h5``, which Keras reads with its new-format loader). ``width`` scales
    every hidden layer's filters (tiny only: the project's own small models; TYOY's are 1.0).
    """
    if architecture not in ("yolov3", "tiny"):
        raise ValueError(f"unknown YOLO architecture {architecture!r}: use 'yolov3' (9 anchors) or 'tiny' (6 anchors)")
    if num_classes < 1:
        raise ValueError(
            f"num_classes must be at least 1, got {num_classes}: check that the classes file lists "
            "one class name a line"
        )
    if input_size < 32 or input_size % 32:
        lower = max(32, input_size - input_size % 32)
        raise ValueError(
            f"input_size must be a positive multiple of 32 (the network's largest stride), got "
            f"{input_size}: use {lower} or {lower + 32}"
        )
    if width != 1.0 and architecture != "tiny":
        raise ValueError(f"a width of {width} is supported for tiny YOLOv3 only; YOLOv3 is built at 1.0")
    out_filters = _ANCHORS_PER_HEAD * (5 + num_classes)
    inputs = keras.Input(shape=(input_size, input_size, 3))
    if architecture == "yolov3":
        return _yolo_body(inputs, out_filters)
    return _tiny_yolo_body(inputs, out_filters, width)
