"""``streamyolo detect`` (TrainYourOwnYOLO's Detector.py on the stack) and stacks of recordings that end by themselves.

The reference is ``tests/tyoy/reference.py`` (keras-yolo3 on Keras 2, standing in for TYOY): it writes a TYOY model
folder and TYOY's ``detect_image`` rows for each image; here ``streamyolo detect`` runs the same folder and the
same images (and a video whose frames the reference sees as images) through the real processes, and its
``Detection_Results.csv`` must hold TYOY's rows: same corners (a 1 px difference only at a .5 rounding tie), same
class index, same score, in TYOY's order, with Detector.py's columns.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.unit.test_tyoy_compat import REFERENCE, row_mismatches, write_test_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

SCORE = 0.25  # Detector.py's default --confidence
DEMO = ROOT / "detector" / "models" / "shapes"
IMAGE_SIZES = [(640, 480), (480, 640), (300, 200)]
VIDEO_FRAMES = 4


def streamyolo(*argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "common.stack.launcher", *argv]
    return subprocess.run(command, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def write_video(path: Path, frames: list[np.ndarray], fps: float = 5.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def video_frames(path: Path) -> list[np.ndarray]:
    """The frames as FFmpeg decodes them (what ingest reads), BGR."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def read_csv(path: Path) -> tuple[list[str], dict[str, list[list[Any]]]]:
    """The header, and per ``image`` value its rows as [xmin, ymin, xmax, ymax, label, confidence] (+ sizes)."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader)
        rows: dict[str, list[list[Any]]] = {}
        for image, image_path, *values in reader:
            numbers = [int(v) for v in values[:5]] + [float(values[5])] + [int(v) for v in values[6:]]
            rows.setdefault(image, []).append([image_path, *numbers])
    return header, rows


@pytest.fixture(scope="module")
def tyoy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A TYOY tree (Data/Model_Weights, Data/Source_Images/Test_Images with images, a subfolder and a video) and the
    reference's rows for each image and each video frame."""
    root = tmp_path_factory.mktemp("TrainYourOwnYOLO")
    tests = root / "Data" / "Source_Images" / "Test_Images"
    (tests / "more").mkdir(parents=True)
    rng = np.random.default_rng(11)
    images = [tests / "img0.png", tests / "img1.jpg", tests / "more" / "img2.png"]
    for path, (w, h) in zip(images, IMAGE_SIZES, strict=True):
        write_test_image(path, w, h, rng)  # a .jpg name makes PIL write a JPEG: read back the same by both
    frames = []
    for i in range(VIDEO_FRAMES):
        write_test_image(root / f"frame{i}.png", 320, 240, rng)
        frames.append(imread(root / f"frame{i}.png"))
    write_video(tests / "clip.mp4", frames)
    decoded = video_frames(tests / "clip.mp4")
    assert len(decoded) == VIDEO_FRAMES
    for i, frame in enumerate(decoded):
        cv2.imwrite(str(root / f"decoded{i}.png"), frame)  # lossless: the reference sees what ingest read
    model = root / "Data" / "Model_Weights"
    inputs = [*images, *(root / f"decoded{i}.png" for i in range(VIDEO_FRAMES))]
    command = [sys.executable, str(REFERENCE), "--arch", "tiny", "--classes", "2", "--size", "416", "--seed", "1",
               "--out", str(model), "--score", str(SCORE), "--images", *map(str, inputs)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    reference = json.loads((model / "reference.json").read_text(encoding="utf-8"))["images"]
    expected = {}
    for path, result in zip(inputs, reference, strict=True):
        name = path.name if not path.name.startswith("decoded") else f"clip.mp4#frame={path.stem[len('decoded') :]}"
        expected[name] = result
        assert len(result["out_prediction"]) >= 3, f"{name}: too few boxes to compare"
    # Detector.py's default anchors file sits in TYOY's source tree; the reference wrote it beside the weights.
    anchors = root / "2_Training" / "src" / "keras_yolo3" / "model_data"
    anchors.mkdir(parents=True)
    (model / "yolo-tiny_anchors.txt").rename(anchors / "yolo-tiny_anchors.txt")
    (tests / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (tests / "notes.txt").write_text("not an image", encoding="utf-8")
    return {"root": root, "expected": expected, "images": images}


@pytest.mark.parametrize("engine", ["torch", "tensorflow"])
def test_detect_writes_the_rows_detector_py_writes_for_images_and_video_frames(
    tyoy: dict[str, Any], engine: str
) -> None:
    root: Path = tyoy["root"]
    results = root / "Data" / "Source_Images" / "Test_Image_Detection_Results"
    # Run from 3_Inference, as Detector.py is: the defaults find the TYOY folder above it.
    inference = root / "3_Inference"
    inference.mkdir(exist_ok=True)
    done = streamyolo("detect", "--is_tiny", "--engine", engine, "--postfix", f"_{engine}", cwd=inference)
    # broken.jpg cannot be read: the run says so and fails, but everything else is answered and written.
    assert done.returncode == 1, done.stderr[-4000:]
    assert "broken.jpg: not answered: not a readable image" in done.stderr
    assert f"answered {3 + VIDEO_FRAMES} frames (3 images, {VIDEO_FRAMES} video frames)" in done.stderr
    header, rows = read_csv(results / "Detection_Results.csv")
    assert header == ["image", "image_path", "xmin", "ymin", "xmax", "ymax", "label", "confidence", "x_size", "y_size"]
    problems = []
    for name, reference in tyoy["expected"].items():
        got = rows.pop(name, [])
        sizes = {tuple(r[7:]) for r in got}
        assert len(sizes) == 1, f"{name}: x_size, y_size {sizes}"
        problems += row_mismatches([r[1:7] for r in got], reference["out_prediction"], reference["unrounded"], name)
    assert not problems, "\n".join(problems)
    assert not rows, f"rows for files that are not inputs: {list(rows)}"
    img2 = results / "more" / f"img2_{engine}.png"
    with Image.open(img2) as drawn, Image.open(tyoy["images"][2]) as source:
        assert drawn.size == source.size
        assert np.abs(np.asarray(drawn, np.int16) - np.asarray(source.convert("RGB"), np.int16)).max() > 100
    assert len(video_frames(results / f"clip_{engine}.mp4")) == VIDEO_FRAMES


def test_detect_with_no_save_img_writes_only_the_csv_where_box_file_says(tyoy: dict[str, Any], tmp_path: Path) -> None:
    root: Path = tyoy["root"]
    box = tmp_path / "boxes.csv"
    done = streamyolo(
        "detect", "--input_path", str(tyoy["images"][0]), "--output", str(tmp_path / "out"), "--no_save_img",
        "--box_file", str(box), "--yolo_model", str(root / "Data" / "Model_Weights" / "trained_weights_final.h5"),
        "--classes", str(root / "Data" / "Model_Weights" / "data_classes.txt"),
        "--anchors", str(root / "2_Training" / "src" / "keras_yolo3" / "model_data" / "yolo-tiny_anchors.txt"),
        "--confidence", "0.5", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    _, rows = read_csv(box)
    assert set(rows) == {"img0.png"}
    expected = [r for r in tyoy["expected"]["img0.png"]["out_prediction"] if r[5] >= 0.5]
    assert len(rows["img0.png"]) == len(expected) > 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detect_takes_engine_replicas_and_batch_from_a_config_and_refuses_a_bad_model(
    tyoy: dict[str, Any], tmp_path: Path
) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(
        f"detector:\n  pools:\n    - name: gpu\n      model: {{folder: {DEMO}, input_size: 128}}\n"
        "      engine: {kind: torch, gpu: null}\n      replicas: 2\n      max_batch: 2\n",
        encoding="utf-8",
    )
    done = streamyolo("detect", "--config", str(config), "--input_path", str(tyoy["images"][0].parent),
                      "--output", str(tmp_path / "out"), "--file_types", "PNG", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "detector-gpu-0, detector-gpu-1" in done.stderr  # both replicas of the config's pool
    _, rows = read_csv(tmp_path / "out" / "Detection_Results.csv")
    assert set(rows) <= {"img0.png", "img2.png"}  # only .png (any case), none of the demo's classes needed
    assert (tmp_path / "out" / "img0_catface.png").exists() and (
        tmp_path / "out" / "more" / "img2_catface.png"
    ).exists()
    bad = streamyolo("detect", "--input_path", str(tyoy["images"][0]), "--yolo_model", str(tmp_path / "nope.h5"),
                     "--classes", str(DEMO / "data_classes.txt"), cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2
    assert "nope.h5" in bad.stderr and "does not exist" in bad.stderr


def test_a_stack_of_recordings_ends_by_itself_once_every_frame_is_stored(tmp_path: Path) -> None:
    """``streamyolo --config`` whose cameras are all finite recordings (an image folder and a video file) exits 0
    by itself, with every frame stored once and named by its file and frame index."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        write_test_image(images / f"{i}.png", 160, 120, rng)
    frames = []
    for _ in range(7):
        write_test_image(tmp_path / "f.png", 160, 120, rng)
        frames.append(imread(tmp_path / "f.png"))
    write_video(tmp_path / "clip.mp4", frames)
    config = tmp_path / "stack.yaml"
    config.write_text(
        f"""
redis: {{embedded: {{socket_dir: {tmp_path}}}}}
streams: {{prefix: rec}}
ingest:
  cameras:
    - {{name: pictures, source: {{kind: images, path: {images}}}}}
    - {{name: clip, source: {{kind: file, path: {tmp_path / "clip.mp4"}}}}}
detector:
  pools:
    - {{name: main, model: {{folder: {DEMO}, input_size: 128}}, engine: {{kind: torch, gpu: null}}}}
sinks:
  - {{kind: jsonl, name: store, path: {tmp_path / "results.jsonl"}}}
""",
        encoding="utf-8",
    )
    done = streamyolo("--config", str(config), cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "every recording has been read" in done.stderr
    stored = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    got = sorted((r["stream"], Path(r["file"]).name, r["frame_index"]) for r in stored)
    assert got == sorted(
        [("pictures", f"{i}.png", None) for i in range(5)] + [("clip", "clip.mp4", i) for i in range(7)]
    )


def test_detect_on_a_server_of_ones_own_leaves_none_of_its_keys_behind(
    tyoy: dict[str, Any], tmp_path: Path, server_url: str
) -> None:
    import redis

    client = redis.Redis.from_url(server_url)
    before = set(client.keys("*"))
    done = streamyolo("detect", "--redis-url", server_url, "--input_path", str(tyoy["images"][0]),
                      "--output", str(tmp_path), "--yolo_model", str(DEMO / "trained_weights_final.h5"),
                      "--anchors", str(DEMO / "yolo-tiny_anchors.txt"), "--classes", str(DEMO / "data_classes.txt"),
                      "--input_size", "128", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    _, rows = read_csv(tmp_path / "Detection_Results.csv")
    assert set(rows) == {"img0.png"}
    assert set(client.keys("*")) == before  # its frames, results, groups and tallies were removed
    client.close()


def test_a_configs_relative_paths_are_its_own_folders_not_the_runs(tyoy: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    shutil.copytree(DEMO, tmp_path / "conf" / "models" / "shapes")
    config = tmp_path / "conf" / "stack.yaml"
    config.write_text(
        "detector:\n  pools:\n    - name: main\n      model: {folder: models/shapes, input_size: 128}\n"
        "      engine: {kind: torch, gpu: null}\n",
        encoding="utf-8",
    )
    done = streamyolo("detect", "--config", str(config), "--input_path", str(tyoy["images"][0]),
                      "--output", str(tmp_path / "out"), "--no_save_img", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "out" / "Detection_Results.csv").exists()
