"""Keras 3 rebuild of keras-yolo3's bodies: layer counts, wiring, loading TYOY's legacy .h5 by order."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from detector.yolo.keras_model import build_body, num_anchors  # noqa: E402
from detector.yolo.postprocess import decode  # noqa: E402

NUM_CLASSES = 3  # 3 * (5 + 3) = 24 output channels
SIZE = 64  # small input: the layer structure does not depend on it

# The weighted layers of keras-yolo3's yolo_body / tiny_yolo_body in `model.layers` order, as Keras 2
# (tf_keras, same graph ordering as TYOY's Keras 2.4) lists them for 3 classes: the order a TYOY
# trained_weights_final.h5 stores them in. "k:in>out" is a k x k conv (with "b": bias), "nC" a BN.


def _tokens(text: str) -> list[str]:
    return text.split()


KERAS2_ORDER = {
    "yolov3": _tokens(
        "3:3>32 n32 3:32>64 n64 1:64>32 n32 3:32>64 n64 3:64>128 n128 1:128>64 n64 3:64>128 n128 1:128>64 "
        "n64 3:64>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 "
        "1:256>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 "
        "1:256>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 1:256>128 n128 3:128>256 n256 "
        "3:256>512 n512 1:512>256 n256 3:256>512 n512 1:512>256 n256 3:256>512 n512 1:512>256 n256 "
        "3:256>512 n512 1:512>256 n256 3:256>512 n512 1:512>256 n256 3:256>512 n512 1:512>256 n256 "
        "3:256>512 n512 1:512>256 n256 3:256>512 n512 1:512>256 n256 3:256>512 n512 3:512>1024 n1024 "
        "1:1024>512 n512 3:512>1024 n1024 1:1024>512 n512 3:512>1024 n1024 1:1024>512 n512 3:512>1024 "
        "n1024 1:1024>512 n512 3:512>1024 n1024 1:1024>512 n512 3:512>1024 n1024 1:1024>512 n512 "
        "3:512>1024 n1024 1:1024>512 n512 1:512>256 n256 1:768>256 n256 3:256>512 n512 1:512>256 n256 "
        "3:256>512 n512 1:512>256 n256 1:256>128 n128 1:384>128 n128 3:128>256 n256 1:256>128 n128 "
        "3:128>256 n256 1:256>128 n128 3:512>1024 3:256>512 3:128>256 n1024 n512 n256 1:1024>24b "
        "1:512>24b 1:256>24b"
    ),
    "tiny": _tokens(
        "3:3>16 n16 3:16>32 n32 3:32>64 n64 3:64>128 n128 3:128>256 n256 3:256>512 n512 3:512>1024 n1024 "
        "1:1024>256 n256 1:256>128 n128 3:256>512 3:384>256 n512 n256 1:512>24b 1:256>24b"
    ),
}


@pytest.fixture(scope="module")
def yolov3() -> Any:
    return build_body("yolov3", NUM_CLASSES, SIZE)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return build_body("tiny", NUM_CLASSES, SIZE)


def _token(layer: Any) -> str:
    if isinstance(layer, keras.layers.Conv2D):
        k, _, cin, cout = layer.kernel.shape
        return f"{k}:{cin}>{cout}" + ("b" if layer.use_bias else "")
    return f"n{layer.gamma.shape[0]}"


def _weighted(model: Any) -> list[Any]:
    return [layer for layer in model.layers if layer.weights]


def test_yolov3_layer_counts(yolov3: Any) -> None:
    kinds = collections.Counter(type(layer).__name__ for layer in yolov3.layers)
    # keras-yolo3 (TYOY freezes "all but the last 3" of these 252) counts the Input layer too.
    assert len(yolov3.layers) == 252
    assert kinds["InputLayer"] == 1
    assert kinds["Conv2D"] == 75
    assert kinds["BatchNormalization"] == 72
    assert kinds["LeakyReLU"] == 72
    assert kinds["Add"] == 23
    assert kinds["ZeroPadding2D"] == 5
    assert kinds["UpSampling2D"] == 2
    assert kinds["Concatenate"] == 2
    assert len(_weighted(yolov3)) == 147


def test_tiny_layer_counts(tiny: Any) -> None:
    kinds = collections.Counter(type(layer).__name__ for layer in tiny.layers)
    assert len(tiny.layers) == 44
    assert kinds["Conv2D"] == 13
    assert kinds["BatchNormalization"] == 11
    assert kinds["MaxPooling2D"] == 6
    assert len(_weighted(tiny)) == 24


def test_output_shapes(yolov3: Any, tiny: Any) -> None:
    assert [tuple(o.shape) for o in yolov3.outputs] == [(None, 2, 2, 24), (None, 4, 4, 24), (None, 8, 8, 24)]
    assert [tuple(o.shape) for o in tiny.outputs] == [(None, 2, 2, 24), (None, 4, 4, 24)]
    assert tuple(yolov3.inputs[0].shape) == (None, SIZE, SIZE, 3)
    big = build_body("tiny", 1, 416)
    assert [tuple(o.shape) for o in big.outputs] == [(None, 13, 13, 18), (None, 26, 26, 18)]


@pytest.mark.parametrize("arch", ["yolov3", "tiny"])
def test_weighted_layer_order_matches_keras2(arch: str, yolov3: Any, tiny: Any) -> None:
    model = yolov3 if arch == "yolov3" else tiny
    assert [_token(layer) for layer in _weighted(model)] == KERAS2_ORDER[arch]


def test_only_the_output_convs_have_bias(yolov3: Any) -> None:
    convs = [layer for layer in yolov3.layers if isinstance(layer, keras.layers.Conv2D)]
    with_bias = [layer for layer in convs if layer.use_bias]
    assert len(with_bias) == 3
    assert {id(layer.output) for layer in with_bias} == {id(t) for t in yolov3.outputs}


def test_conv_padding_regulariser_and_activations(yolov3: Any) -> None:
    layers = yolov3.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.kernel_regularizer.get_config()["l2"] == pytest.approx(5e-4)
            if layer.strides == (2, 2):
                # Darknet pads top-left only, then convolves 'valid'.
                assert layer.padding == "valid"
                assert isinstance(layers[i - 1], keras.layers.ZeroPadding2D)
                assert layers[i - 1].padding == ((1, 0), (1, 0))
            else:
                assert layer.padding == "same"
        elif isinstance(layer, keras.layers.LeakyReLU):
            assert layer.negative_slope == pytest.approx(0.1)
        elif isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == pytest.approx(0.99)
            assert layer.epsilon == pytest.approx(1e-3)
    assert sum(1 for layer in layers if getattr(layer, "strides", None) == (2, 2)) == 5


@pytest.mark.parametrize("arch", ["yolov3", "tiny"])
def test_concatenate_puts_the_upsampled_path_first(arch: str, yolov3: Any, tiny: Any) -> None:
    # Swapping the inputs keeps every shape but scrambles the channels the next kernel was trained on.
    model = yolov3 if arch == "yolov3" else tiny
    concats = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert len(concats) == (2 if arch == "yolov3" else 1)
    for layer in concats:
        first, second = (t._keras_history.operation for t in layer.input)
        assert isinstance(first, keras.layers.UpSampling2D)
        assert not isinstance(second, keras.layers.UpSampling2D)


def test_tiny_pools(tiny: Any) -> None:
    pools = [layer for layer in tiny.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [p.strides for p in pools] == [(2, 2)] * 5 + [(1, 1)]
    assert all(p.pool_size == (2, 2) and p.padding == "same" for p in pools)


def test_invalid_arguments_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match=r"multiple of 32.*use 96 or 128"):
        build_body("yolov3", 3, 100)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_body("tiny", 3, 0)
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        build_body("tiny", 0, 416)
    with pytest.raises(ValueError, match="'yolov3'"):
        build_body("yolov4", 3, 416)  # type: ignore[arg-type]
    assert (num_anchors("yolov3"), num_anchors("tiny")) == (9, 6)


def _write_keras2_weights(path: Path, order: list[str], seed: int) -> list[list[np.ndarray]]:
    """Write a TYOY-style legacy HDF5 weights file: Keras 2 names, weightless layers, training extras.

    Only the weighted layers' order and shapes come from KERAS2_ORDER, so this does not depend on the code
    under test.
    """
    rng = np.random.default_rng(seed)
    values: list[list[np.ndarray]] = []
    names: list[str] = ["input_1"]
    groups: dict[str, list[tuple[str, np.ndarray]]] = {"input_1": []}
    convs = bns = 0
    for token in order:
        if token.startswith("n"):
            c = int(token[1:])
            name = f"batch_normalization_{bns}" if bns else "batch_normalization"
            bns += 1
            arrays = [
                rng.uniform(0.5, 1.5, c).astype(np.float32),
                rng.normal(0, 0.1, c).astype(np.float32),
                rng.normal(0, 0.1, c).astype(np.float32),
                rng.uniform(0.5, 1.5, c).astype(np.float32),
            ]
            weight_names = ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"]
        else:
            k, rest = token.split(":")
            cin, cout = rest.rstrip("b").split(">")
            name = f"conv2d_{convs}" if convs else "conv2d"
            convs += 1
            arrays = [rng.normal(0, 0.05, (int(k), int(k), int(cin), int(cout))).astype(np.float32)]
            weight_names = ["kernel:0"]
            if token.endswith("b"):
                arrays.append(rng.normal(0, 0.1, int(cout)).astype(np.float32))
                weight_names.append("bias:0")
        names.append(name)
        groups[name] = [(f"{name}/{w}", a) for w, a in zip(weight_names, arrays, strict=True)]
        values.append(arrays)
        if token.startswith("n"):
            leaky = f"leaky_re_lu_{bns}"
            names.append(leaky)
            groups[leaky] = []
    for extra in ("input_2", "input_3", "yolo_loss"):  # TYOY's training model: y_true inputs and the loss
        names.append(extra)
        groups[extra] = []
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        for name in names:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([w.encode() for w, _ in groups[name]])
            for weight_name, array in groups[name]:
                group.create_dataset(weight_name, data=array)
    return values


def test_loads_tyoy_legacy_h5_by_layer_order(tmp_path: Path, tiny: Any) -> None:
    path = tmp_path / "trained_weights_final.h5"
    expected = _write_keras2_weights(path, KERAS2_ORDER["tiny"], seed=1)
    model = build_body("tiny", NUM_CLASSES, SIZE)
    model.load_weights(str(path))
    got = [layer.get_weights() for layer in _weighted(model)]
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert len(g) == len(e), i
        for a, b in zip(g, e, strict=True):
            np.testing.assert_array_equal(a, b)
    # The loaded model runs, and its raw outputs feed decode.
    images = np.random.default_rng(2).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    outputs = [np.asarray(o) for o in model(images, training=False)]
    anchors = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)
    dets = decode(outputs, anchors, NUM_CLASSES, SIZE, [(64, 48), (48, 64)], score_threshold=0.0)
    assert len(dets) == 2
    assert all(len(d) > 0 for d in dets)


def test_weights_for_another_class_count_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "trained_weights_final.h5"
    _write_keras2_weights(path, KERAS2_ORDER["tiny"], seed=1)  # 3 classes
    model = build_body("tiny", NUM_CLASSES + 1, SIZE)
    with pytest.raises(ValueError, match=r"(?i)shape"):
        model.load_weights(str(path))
