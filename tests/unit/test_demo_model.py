"""The bundled demo model and the script that trains it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from detector.training.evaluate import Labelled
from detector.training.train import CLASSES, targets, to_input
from detector.yolo.weights import inspect_weights
from tests.conftest import ROOT

MODEL = ROOT / "detector" / "models" / "shapes"


def test_the_bundled_model_is_small_and_in_tyoy_format() -> None:
    files = {p.name for p in MODEL.iterdir()}
    assert {"trained_weights_final.h5", "yolo-tiny_anchors.txt", "data_classes.txt", "MODEL_CARD.md"} <= files
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 5 * 2**20
    assert (MODEL / "data_classes.txt").read_text().split() == list(CLASSES)
    info = inspect_weights(MODEL / "trained_weights_final.h5")
    assert (info.architecture, info.width, info.num_classes) == ("tiny", 0.25, 4)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the torch extra)")
def test_held_out_map_is_at_least_0_9_on_tensorflow_and_torch_is_within_0_01() -> None:
    from detector.training.train import evaluate

    card = json.loads((MODEL / "metrics.json").read_text())
    tf_map = evaluate(MODEL, card["eval_seed"], card["eval_frames"], card["input_size"])["tensorflow_ap50"]["mAP"]
    torch_map = evaluate(MODEL, card["eval_seed"], card["eval_frames"], card["input_size"], "torch")
    assert tf_map >= 0.9
    assert tf_map == pytest.approx(card["tensorflow_ap50"]["mAP"], abs=1e-3), "the model card's figure"
    assert abs(torch_map["torch_ap50"]["mAP"] - tf_map) <= 0.01


def test_each_box_is_assigned_to_its_cell_and_best_anchor_in_the_heads_that_use_it() -> None:
    anchors = np.array([[4, 4], [8, 8], [16, 16], [32, 32], [64, 64], [128, 128]], np.float32)
    boxes = [np.array([[100, 40, 132, 72, 2], [0, 0, 8, 8, 1]], np.float32)]  # a 32 px box, an 8 px box
    coarse, fine = targets(boxes, anchors, 256, len(CLASSES))
    # 32 px matches anchor 3, which both tiny heads use ([3, 4, 5] and [1, 2, 3]).
    assert coarse[0, 1, 3, 0].tolist() == [116 / 256, 56 / 256, 32 / 256, 32 / 256, 1, 0, 0, 1, 0]
    assert fine[0, 3, 7, 2, 4] == 1 and fine[0, 3, 7, 2, 7] == 1
    # 8 px matches anchor 1: the fine head only, slot 0.
    assert fine[0, 0, 0, 0, 4] == 1 and fine[0, 0, 0, 0, 6] == 1
    assert coarse[..., 4].sum() == 1 and fine[..., 4].sum() == 2


def test_truth_goes_to_letterboxed_input_pixels_without_the_difficult_boxes() -> None:
    truths = [Labelled("square", (0, 0, 32, 24)), Labelled("NULL", (0, 0, 4, 4), difficult=True)]
    rows = to_input(truths, (320, 240), 256)
    # 320x240 into 256: scale 0.8, 32 px bars above and below.
    np.testing.assert_allclose(rows, [[0.0, 32.0, 25.6, 51.2, 1.0]], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="reads the weights with the torch reader")
def test_training_is_deterministic_from_its_seed(tmp_path: Path) -> None:
    from detector.training.train import train
    from detector.yolo.torch_model import conv_plan, read_h5

    runs = []
    for run in ("a", "b"):
        card = train(tmp_path / run, seed=5, size=64, width=0.25, frames=64, epochs=1, batch=16, eval_frames=8)
        assert card["parameters"] > 0
        runs.append(read_h5(tmp_path / run / "trained_weights_final.h5", conv_plan("tiny", len(CLASSES), 0.25)))
    for (wa, ba), (wb, bb) in zip(*runs, strict=True):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)


def test_a_mirrored_batch_moves_targets_with_the_pixels_and_mirroring_twice_is_the_identity() -> None:
    from detector.training.train import mirror

    anchors = np.array([[4, 4], [8, 8], [16, 16], [32, 32], [64, 64], [128, 128]], np.float32)
    boxes = np.array([[[10, 40, 42, 72, 0], [0, 0, 0, 0, 0]]], np.float32)  # one box and a padding row
    x = np.zeros((1, 256, 256, 3), np.uint8)
    x[0, 40:72, 10:42] = 255
    t1, t2 = targets([boxes[0, :1]], anchors, 256, len(CLASSES))
    fx, f1, f2, fb = mirror(x, t1, t2, boxes[..., :4] / 256)
    assert fx[0, 40:72, 214:246].min() == 255  # the pixels moved to the right edge
    want = np.array([[214, 40, 246, 72], [0, 0, 0, 0]], np.float32) / 256
    np.testing.assert_allclose(fb[0], want, rtol=1e-6)
    expected = targets([np.array([[214, 40, 246, 72, 0]], np.float32)], anchors, 256, len(CLASSES))
    np.testing.assert_allclose(f1, expected[0], atol=1e-6)
    np.testing.assert_allclose(f2, expected[1], atol=1e-6)
    back = mirror(fx, f1, f2, fb)
    np.testing.assert_array_equal(back[0], x)
    np.testing.assert_allclose(back[1], t1, atol=1e-6)
