"""What a TrainYourOwnYOLO user has on disk loads unchanged and gives what TYOY itself gives.

``tests/tyoy/reference.py`` stands in for TYOY (keras-yolo3 on Keras 2, via ``tf_keras``): run in a subprocess, it
writes a TYOY model folder (``trained_weights_final.h5`` from the training model's ``save_weights``, the anchors and
classes files, and ``full_model.h5`` from ``body.save``) and TYOY's ``detect_image`` results on three test images.
Here the product loads those files and must give the same raw head outputs (TensorFlow engine) and the same
``detect_image`` rows (the ``YOLO`` class), and must name the file when the files do not fit together.

Box corners are compared exactly, except that a corner may differ by 1 px where TYOY's own unrounded coordinate
lies within ``ROUNDING_TIE`` of a .5 rounding tie: Keras 3 and Keras 2 compute the same convolutions in a different
order (raw outputs differ by ~5e-5), which moves such a coordinate across the tie.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.config import ModelConfig
from detector import YOLO
from detector.engines import create_engine
from detector.engines.tensorflow import TensorFlowEngineConfig
from detector.engines.torch import TorchEngineConfig
from detector.model import ModelSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("tf_keras") is None,
        reason="needs tf_keras (Keras 2), which stands in for TrainYourOwnYOLO: pip install tf_keras",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "tyoy" / "reference.py"
Arch = Literal["yolov3", "tiny"]
CASES: dict[Arch, tuple[int, int]] = {"yolov3": (3, 96), "tiny": (2, 128)}
"""Architecture -> (classes, input size): small inputs keep the module fast on a 2-core CPU."""
IMAGE_SIZES = [(640, 480), (480, 640), (300, 200)]
SEED = 1
SCORE, IOU = 0.3, 0.45
RAW_RTOL = 1e-4
SCORE_TOL = 1e-4
ROUNDING_TIE = 0.02
"""px: how close to x.5 TYOY's unrounded corner must be for a 1 px difference to count as a rounding tie."""


@dataclass(frozen=True)
class Reference:
    """One TYOY model folder and TYOY's results on the test images."""

    arch: Arch
    num_classes: int
    size: int
    folder: Path
    images: list[Path]
    results: list[dict[str, Any]]
    """Per image: name, key, out_prediction, unrounded (see reference.py)."""
    arrays: dict[str, np.ndarray]

    @property
    def anchors_file(self) -> Path:
        return self.folder / ("yolo_anchors.txt" if self.arch == "yolov3" else "yolo-tiny_anchors.txt")

    @property
    def class_names(self) -> list[str]:
        return (self.folder / "data_classes.txt").read_text(encoding="utf-8").split()

    def result(self, image: Path) -> dict[str, Any]:
        return next(r for r in self.results if r["name"] == image.name)


def write_test_image(path: Path, width: int, height: int, rng: np.random.Generator) -> None:
    """Coloured rectangles and ellipses on a blue-grey ground with pixel noise, as an RGB PNG."""
    ground = rng.normal(0, 20, (height, width, 3)) + np.array([90, 120, 150])
    image = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=colour)
    image.save(path)


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[Arch, Reference]:
    """Both TYOY folders, written by two reference processes run side by side."""
    tmp = tmp_path_factory.mktemp("tyoy")
    rng = np.random.default_rng(7)
    images = [tmp / f"img{i}_{w}x{h}.png" for i, (w, h) in enumerate(IMAGE_SIZES)]
    for path, (w, h) in zip(images, IMAGE_SIZES, strict=True):
        write_test_image(path, w, h, rng)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    procs: dict[Arch, subprocess.Popen[str]] = {}
    for arch, (classes, size) in CASES.items():
        command = [
            sys.executable, str(REFERENCE), "--arch", arch, "--classes", str(classes), "--size", str(size),
            "--seed", str(SEED), "--out", str(tmp / arch), "--score", str(SCORE), "--iou", str(IOU),
            "--images", *map(str, images),
        ]  # fmt: skip
        procs[arch] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
    found: dict[Arch, Reference] = {}
    for arch, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            pytest.fail(f"{REFERENCE.name} --arch {arch} exited with {proc.returncode}:\n{output[-3000:]}")
        folder = tmp / arch
        results = json.loads((folder / "reference.json").read_text(encoding="utf-8"))["images"]
        with np.load(folder / "reference.npz") as npz:
            arrays = {key: npz[key] for key in npz.files}
        classes, size = CASES[arch]
        found[arch] = Reference(arch, classes, size, folder, images, results, arrays)
    return found


@pytest.fixture(scope="module", params=list(CASES))
def tyoy(request: pytest.FixtureRequest, references: dict[Arch, Reference]) -> Reference:
    ref: Reference = references[request.param]
    return ref


@pytest.fixture(scope="module")
def yolo(tyoy: Reference) -> Iterator[YOLO]:
    """TYOY's YOLO class on the weights-only file, ignoring the class of img0's first row."""
    model = YOLO(
        model_path=tyoy.folder / "trained_weights_final.h5",
        anchors_path=tyoy.anchors_file,
        classes_path=tyoy.folder / "data_classes.txt",
        score=SCORE,
        iou=IOU,
        model_image_size=(tyoy.size, tyoy.size),
        run_on_gpu=None,
        hush=True,
        ignore_labels=[ignored_label(tyoy)],
    )
    yield model
    model.close_session()


def ignored_label(tyoy: Reference) -> str:
    return str(tyoy.class_names[tyoy.results[0]["out_prediction"][0][4]])


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def row_mismatches(
    got: list[list[Any]], expected: list[list[Any]], unrounded: list[list[float]], label: str
) -> list[str]:
    """Differences between our rows and TYOY's, described; a 1 px difference at a .5 tie is not one."""
    if len(got) != len(expected):
        return [f"{label}: {len(got)} rows, TYOY has {len(expected)}:\n  ours {got}\n  TYOY {expected}"]
    problems = []
    for i, (g, e, u) in enumerate(zip(got, expected, unrounded, strict=True)):
        corners_ok = all(
            gc == ec or (abs(gc - ec) == 1 and abs(uc + 0.5 - round(uc + 0.5)) < ROUNDING_TIE)
            for gc, ec, uc in zip(g[:4], e[:4], u, strict=True)
        )
        if not corners_ok or g[4] != e[4] or abs(g[5] - e[5]) > SCORE_TOL:
            problems.append(f"{label} row {i}: ours {g}, TYOY {e} (TYOY before rounding {u})")
    return problems


def test_the_reference_finds_boxes_in_every_image(tyoy: Reference) -> None:
    """Otherwise the comparisons below would prove nothing."""
    for result in tyoy.results:
        assert len(result["out_prediction"]) >= 3, f"{tyoy.arch} {result['name']}: too few boxes to compare"
    assert len({row[4] for r in tyoy.results for row in r["out_prediction"]}) == tyoy.num_classes


@pytest.mark.parametrize("engine_kind", ["tensorflow", "torch"])
@pytest.mark.parametrize("form", ["folder", "files"])
def test_the_engine_gives_tyoys_raw_outputs(tyoy: Reference, form: str, engine_kind: str) -> None:
    """folder: ModelConfig(folder=...) finds trained_weights_final.h5 (weights only, from the training model);
    files: the full Keras 2 model file (body.save) named explicitly with the anchors and classes files."""
    if form == "folder":
        cfg = ModelConfig(folder=tyoy.folder, input_size=tyoy.size)
    else:
        cfg = ModelConfig(
            weights=tyoy.folder / "full_model.h5",
            anchors=tyoy.anchors_file,
            classes=tyoy.folder / "data_classes.txt",
            input_size=tyoy.size,
        )
    spec = ModelSpec.from_config(cfg)
    assert spec.architecture == tyoy.arch
    assert spec.classes == tuple(tyoy.class_names)
    anchor_values = [float(v) for v in tyoy.anchors_file.read_text(encoding="utf-8").split(",")]
    np.testing.assert_array_equal(spec.anchors, np.reshape(anchor_values, (-1, 2)))
    if engine_kind == "torch" and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (the torch extra)")
    engine_cfg = TensorFlowEngineConfig(gpu=None) if engine_kind == "tensorflow" else TorchEngineConfig(gpu=None)
    engine = create_engine(engine_cfg, spec)
    heads = 3 if tyoy.arch == "yolov3" else 2
    for result in tyoy.results:
        key = result["key"]
        batch = tyoy.arrays[f"{key}_input"]
        assert batch.shape == (1, tyoy.size, tyoy.size, 3) and batch.dtype == np.float32
        outputs = engine.predict(batch)
        assert len(outputs) == heads
        for j, out in enumerate(outputs):
            ref = tyoy.arrays[f"{key}_head{j}"]
            where = f"{engine_kind} {tyoy.arch} {form} {result['name']} head {j} (stride {32 >> j})"
            assert out.shape == ref.shape, f"{where}: shape {out.shape}, TYOY {ref.shape}"
            diff = float(np.abs(out - ref).max())
            bound = RAW_RTOL * max(1.0, float(np.abs(ref).max()))
            assert diff <= bound, f"{where}: max abs difference {diff:.3g} > {bound:.3g}"


def test_detect_image_gives_tyoys_rows(tyoy: Reference, yolo: YOLO) -> None:
    problems: list[str] = []
    for path in tyoy.images:
        image = load_rgb(path)
        result = tyoy.result(path)
        rows, drawn = yolo.detect_image(image)
        assert all(type(v) is int for row in rows for v in row[:5]), rows
        problems += row_mismatches(rows, result["out_prediction"], result["unrounded"], f"{tyoy.arch} {path.name}")
        assert isinstance(drawn, Image.Image) and drawn.size == image.size
        assert not np.array_equal(np.asarray(drawn), np.asarray(image)), "boxes were found but none drawn"
        # A numpy RGB array gives the same rows, and a drawn array back.
        array = np.asarray(image)
        array_rows, drawn_array = yolo.detect_image(array)
        assert array_rows == rows
        assert isinstance(drawn_array, np.ndarray) and drawn_array.shape == array.shape
    assert not problems, "detect_image differs from TYOY's:\n" + "\n".join(problems)


def test_detect_image_extended_names_classes_and_drops_ignored_labels(tyoy: Reference, yolo: YOLO) -> None:
    ignored = ignored_label(tyoy)
    path = tyoy.images[0]
    result = tyoy.result(path)
    names = tyoy.class_names
    expected = [[*r[:4], names[r[4]], r[5]] for r in result["out_prediction"] if names[r[4]] != ignored]
    unrounded = [
        u for r, u in zip(result["out_prediction"], result["unrounded"], strict=True) if names[r[4]] != ignored
    ]
    assert len(expected) < len(result["out_prediction"]), "the ignored label must be among TYOY's rows"
    drawn, elapsed, rows = yolo.detect_image_extended(load_rgb(path))
    assert isinstance(drawn, Image.Image)
    assert elapsed > 0
    assert all(isinstance(r[4], str) and r[4] != ignored for r in rows)
    problems = row_mismatches(rows, expected, unrounded, f"{tyoy.arch} {path.name} extended")
    assert not problems, "detect_image_extended differs from TYOY's:\n" + "\n".join(problems)


def test_draw_false_returns_the_input_untouched(tyoy: Reference) -> None:
    plain = YOLO(
        model_path=tyoy.folder / "trained_weights_final.h5",
        anchors_path=tyoy.anchors_file,
        classes_path=tyoy.folder / "data_classes.txt",
        model_image_size=(tyoy.size, tyoy.size),
        run_on_gpu=None,
        hush=True,
        draw=False,
    )
    image = load_rgb(tyoy.images[0])
    before = np.asarray(image).copy()
    rows, returned = plain.detect_image(image)
    assert rows and returned is image
    np.testing.assert_array_equal(np.asarray(image), before)
    array = before.copy()
    returned_array, _, _ = plain.detect_image_extended(array)
    assert returned_array is array
    np.testing.assert_array_equal(array, before)


def test_one_class_too_many_names_the_weights_file(tyoy: Reference, tmp_path: Path) -> None:
    classes = tmp_path / "data_classes.txt"
    classes.write_text("\n".join([*tyoy.class_names, "one_too_many"]) + "\n", encoding="utf-8")
    weights = tyoy.folder / "trained_weights_final.h5"
    with pytest.raises(Exception, match=re.escape(weights.name)) as caught:
        ModelSpec.from_config(ModelConfig(weights=weights, anchors=tyoy.anchors_file, classes=classes))
    message = str(caught.value)
    assert "class" in message.lower(), message
    assert str(tyoy.num_classes) in message and str(tyoy.num_classes + 1) in message, message


def test_anchors_of_the_other_architecture_name_the_weights_file(tyoy: Reference, tmp_path: Path) -> None:
    """9 anchors with tiny weights (and 6 with YOLOv3 weights) cannot work: the heads do not fit."""
    other = "yolov3" if tyoy.arch == "tiny" else "tiny"
    count = 9 if other == "yolov3" else 6
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(",  ".join(f"{10 * (i + 1)},{12 * (i + 1)}" for i in range(count)) + "\n", encoding="utf-8")
    weights = tyoy.folder / "trained_weights_final.h5"
    with pytest.raises(Exception, match=re.escape(weights.name)) as caught:
        ModelSpec.from_config(ModelConfig(weights=weights, anchors=anchors, classes=tyoy.folder / "data_classes.txt"))
    assert re.search(r"anchor|architecture|tiny|yolov3", str(caught.value), re.IGNORECASE), str(caught.value)


def test_a_missing_weights_file_is_named(tyoy: Reference, tmp_path: Path) -> None:
    missing = tmp_path / "trained_weights_final_missing.h5"
    with pytest.raises(Exception, match=rf"{re.escape(missing.name)}.*(does not exist|not found)"):
        YOLO(
            model_path=missing,
            anchors_path=tyoy.anchors_file,
            classes_path=tyoy.folder / "data_classes.txt",
            model_image_size=(tyoy.size, tyoy.size),
            run_on_gpu=None,
            hush=True,
        )
