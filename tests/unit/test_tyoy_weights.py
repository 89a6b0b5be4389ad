"""Weights a TrainYourOwnYOLO user has on disk load unchanged and give TYOY's own raw outputs and detect_image rows.

``tests/tyoy/reference.py`` stands in for TYOY (keras-yolo3 on Keras 2, via tf_keras) in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.config import ModelConfig, TensorFlowEngineConfig, TorchEngineConfig
from detector import YOLO
from detector.engines import create_engine
from detector.model import ModelSpec
from detector.yolo.files import ModelFileError
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None, reason="needs tf_keras (Keras 2) as TYOY"),
]

CASES = {"yolov3": (3, 96), "tiny": (2, 128)}
SCORE = 0.1  # low enough that random weights always give boxes to compare


@pytest.fixture(scope="module", params=sorted(CASES))
def tyoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    arch: str = request.param
    classes, size = CASES[arch]
    tmp = tmp_path_factory.mktemp(arch)
    rng = np.random.default_rng(5)
    images = []
    for i, (w, h) in enumerate([(640, 480), (480, 640), (300, 200)]):
        path = tmp / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    model = tmp / "model"
    subprocess.run(
        [sys.executable, str(ROOT / "tests/tyoy/reference.py"), "--arch", arch, "--classes", str(classes),
         "--size", str(size), "--out", str(model), "--score", str(SCORE), "--images", *map(str, images)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    reference = json.loads((model / "reference.json").read_text())
    return {
        "arch": arch, "size": size, "model": model, "images": images,
        "rows": {img["name"]: img["out_prediction"] for img in reference["images"]},
        "arrays": np.load(model / "reference.npz"),
        "names": (model / "data_classes.txt").read_text().split(),
    }  # fmt: skip


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def anchors_file(model: Path) -> Path:
    return next(model.glob("*anchors.txt"))


def assert_same_heads(got: list[np.ndarray], tyoy: dict[str, Any], n: int, rtol: float) -> None:
    for h, head in enumerate(got):
        ref = tyoy["arrays"][f"img{n}_head{h}"]
        assert head.shape == ref.shape
        assert float(np.abs(head - ref).max()) <= rtol * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("form", ["folder", "full-model"])
def test_the_tensorflow_engine_gives_tyoys_raw_outputs(tyoy: dict[str, Any], form: str) -> None:
    model: Path = tyoy["model"]
    cfg = (
        ModelConfig(folder=model, input_size=tyoy["size"])
        if form == "folder"
        else ModelConfig(weights=model / "full_model.h5", anchors=anchors_file(model),
                         classes=model / "data_classes.txt", input_size=tyoy["size"])
    )  # fmt: skip
    spec = ModelSpec.from_config(cfg)
    assert spec.architecture == tyoy["arch"]
    engine = create_engine(TensorFlowEngineConfig(gpu=None), spec)
    for n in range(len(tyoy["images"])):
        assert_same_heads(engine.predict(tyoy["arrays"][f"img{n}_input"]), tyoy, n, 1e-4)


def test_the_torch_engine_gives_tyoys_raw_outputs(tyoy: dict[str, Any]) -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    spec = ModelSpec.from_config(ModelConfig(folder=tyoy["model"], input_size=tyoy["size"]))
    engine = create_engine(TorchEngineConfig(gpu=None, precision="fp32"), spec)
    for n in range(len(tyoy["images"])):
        assert_same_heads(engine.predict(tyoy["arrays"][f"img{n}_input"]), tyoy, n, 1e-4)


def yolo(tyoy: dict[str, Any], **kw: Any) -> YOLO:
    model: Path = tyoy["model"]
    return YOLO(
        model_path=model / "trained_weights_final.h5", anchors_path=anchors_file(model),
        classes_path=model / "data_classes.txt", model_image_size=(tyoy["size"], tyoy["size"]), run_on_gpu=None,
        hush=True, score=SCORE, **kw,
    )  # fmt: skip


def test_detect_image_returns_tyoys_rows(tyoy: dict[str, Any]) -> None:
    y = yolo(tyoy)
    for path in tyoy["images"]:
        image = load(path)
        rows, drawn = y.detect_image(image)
        expected = tyoy["rows"][path.name]
        assert len(rows) == len(expected) > 0
        for got, ref in zip(rows, expected, strict=True):
            assert got[:5] == ref[:5]
            assert got[5] == pytest.approx(ref[5], abs=1e-4)
        assert isinstance(drawn, Image.Image) and drawn.size == image.size


def test_detect_image_extended_names_classes_and_drops_ignored_labels(tyoy: dict[str, Any]) -> None:
    names: list[str] = tyoy["names"]
    y = yolo(tyoy, ignore_labels=[names[1]], draw=False)
    image = np.asarray(load(tyoy["images"][0]))
    returned, elapsed, rows = y.detect_image_extended(image)
    expected = [r for r in tyoy["rows"][tyoy["images"][0].name] if r[4] != 1]
    assert returned is image and elapsed > 0
    assert [r[4] for r in rows] == [names[r[4]] for r in expected]
    assert [r[:4] for r in rows] == [r[:4] for r in expected]


def test_mismatched_files_are_named(tyoy: dict[str, Any], tmp_path: Path) -> None:
    model: Path = tyoy["model"]
    weights = model / "trained_weights_final.h5"
    extra = tmp_path / "classes.txt"
    extra.write_text((model / "data_classes.txt").read_text() + "one_too_many\n")
    with pytest.raises(ModelFileError, match=r"trained_weights_final\.h5: was trained for \d classes"):
        ModelSpec.from_config(ModelConfig(weights=weights, anchors=anchors_file(model), classes=extra))
    other = tmp_path / "anchors.txt"
    pairs = 9 if tyoy["arch"] == "tiny" else 6  # the other architecture's anchor count
    other.write_text(", ".join(f"{i + 1},{i + 2}" for i in range(pairs)) + "\n")
    with pytest.raises(ModelFileError, match=r"trained_weights_final\.h5: holds \w+ weights but the anchors file"):
        ModelSpec.from_config(ModelConfig(weights=weights, anchors=other, classes=model / "data_classes.txt"))
