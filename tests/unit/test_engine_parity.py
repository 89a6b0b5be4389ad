"""The torch and TensorFlow engines give the same detections from the same TrainYourOwnYOLO-format weights file.

The file is written the way Keras 2 writes it (legacy HDF5, layers named in creation order) from a Keras body with
random weights and shifted objectness, so there are plenty of boxes to compare. CPU, fp32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from common.config import ModelConfig
from detector.engines import create_engine
from detector.engines.tensorflow import TensorFlowEngineConfig
from detector.engines.torch import TorchEngineConfig
from detector.model import ModelSpec
from detector.yolo.postprocess import Detections, decode, letterbox

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the torch extra)"),
]

CLASSES = ["circle", "square", "triangle"]


def legacy_weights(tmp: Path, arch: Literal["yolov3", "tiny"], size: int) -> Path:
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from detector.yolo.keras_model import build_body

    keras.utils.set_random_seed(3)
    model = build_body(arch, len(CLASSES), size)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        weights = layer.get_weights()
        if len(weights) == 4:  # BatchNormalization: real-looking statistics, not the identity
            gamma, beta, mean, var = weights
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape),
            ])  # fmt: skip
        elif len(weights) == 2:  # an output conv: lift objectness so boxes pass the threshold
            kernel, bias = weights
            bias.reshape(3, -1)[:, 4] += 2.0
            layer.set_weights([kernel, bias])
    path = tmp / f"{arch}.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def boxes_of(
    engine_cfg: TensorFlowEngineConfig | TorchEngineConfig, spec: ModelSpec, images: list[np.ndarray]
) -> list[Detections]:
    engine = create_engine(engine_cfg, spec)
    batch = np.stack([letterbox(img, spec.input_size) for img in images])
    sizes = [(img.shape[1], img.shape[0]) for img in images]
    return decode(engine.predict(batch), spec.anchors, len(CLASSES), spec.input_size, sizes, 0.3, 0.45, 20)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)
    return inter / union if union > 0 else 1.0


@pytest.mark.parametrize(("arch", "size"), [("yolov3", 160), ("tiny", 224)])
def test_torch_and_tensorflow_find_the_same_boxes(tmp_path: Path, arch: Literal["yolov3", "tiny"], size: int) -> None:
    weights = legacy_weights(tmp_path, arch, size)
    spec = ModelSpec.from_config(ModelConfig(weights=weights, classes=CLASSES, architecture=arch, input_size=size))
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((240, 320, 3), (300, 200, 3), (size, size, 3))]
    tf_dets = boxes_of(TensorFlowEngineConfig(gpu=None), spec, images)
    torch_dets = boxes_of(TorchEngineConfig(gpu=None, precision="fp32"), spec, images)
    compared = 0
    for tf_d, torch_d in zip(tf_dets, torch_dets, strict=True):
        assert len(tf_d) == len(torch_d)
        assert np.array_equal(tf_d.classes, torch_d.classes)
        np.testing.assert_allclose(tf_d.scores, torch_d.scores, atol=1e-3)
        for a, b in zip(tf_d.boxes, torch_d.boxes, strict=True):
            assert iou(a, b) >= 0.99
        compared += len(tf_d)
    assert compared >= 10, "the weights should give boxes to compare"
