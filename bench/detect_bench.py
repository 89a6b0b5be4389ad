"""``streamyolo detect`` against Detector.py's way, on the same files, on this machine's CPU.

Detector.py's way: one process, TrainYourOwnYOLO's ``YOLO`` class (here ``detector.YOLO`` on the TensorFlow
engine, what TYOY runs), one image or video frame at a time: open, ``detect_image``, next. ``streamyolo detect``:
the whole command (embedded server, ingest, detector replicas, JSONL sink, the CSV), images and videos in parallel
and batched. Both with ``--no_save_img`` semantics (no annotated copies), the bundled demo model at Detector.py's
416 px. Reported: wall time and frames (images + video frames) a second, start-up included.

Run: ``python bench/detect_bench.py [--images N] [--videos N] [--frames N]``. Prints a table and writes
``bench/results/detect_cpu.json``. Nothing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from ingest.sources.synthetic import SyntheticSource, SyntheticSourceConfig  # noqa: E402

MODEL = ROOT / "detector" / "models" / "shapes"
FILES = ["--yolo_model", str(MODEL / "trained_weights_final.h5"), "--anchors", str(MODEL / "yolo-tiny_anchors.txt"),
         "--classes", str(MODEL / "data_classes.txt")]  # fmt: skip


def make_inputs(folder: Path, images: int, videos: int, frames: int, scene: SyntheticSourceConfig | None = None) -> int:
    """Synthetic JPEGs and MPEG-4 videos of ``scene`` (default 640x480); returns the frames in all."""
    scene = scene or SyntheticSourceConfig(seed=9, width=640, height=480, shapes=4, distractors=1)
    camera = SyntheticSource(scene)
    for i in range(images):
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), camera.render(i * 3))
    size = (scene.width, scene.height)
    for v in range(videos):
        writer = cv2.VideoWriter(str(folder / f"clip{v}.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 25, size)
        for i in range(frames):
            writer.write(camera.render(1000 * v + i))
        writer.release()
    return images + videos * frames


def detector_py_way(folder: Path) -> float:
    """Seconds for TYOY's loop: one file, one frame at a time, through the YOLO class."""
    from detector import YOLO

    started = time.perf_counter()
    yolo = YOLO(MODEL / "trained_weights_final.h5", MODEL / "yolo-tiny_anchors.txt", MODEL / "data_classes.txt",
                score=0.25, run_on_gpu=None, hush=True, draw=False)  # fmt: skip
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jpg":
            with Image.open(path) as image:
                yolo.detect_image(image.convert("RGB"))
        else:
            cap = cv2.VideoCapture(str(path))
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yolo.detect_image(Image.fromarray(frame[:, :, ::-1]))
            cap.release()
    return time.perf_counter() - started


def streamyolo_detect(folder: Path, out: Path, *extra: str) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "common.stack.launcher", "detect", "--input_path", str(folder),
               "--output", str(out), "--no_save_img", *FILES, *extra]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"streamyolo detect failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--frames", type=int, default=120, help="frames per video")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detect_cpu.json")
    a = p.parse_args()
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU benchmark: TensorFlow must not probe for a GPU
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        total = make_inputs(folder, a.images, a.videos, a.frames)
        variants: list[tuple[str, tuple[str, ...] | None]] = [
            ("Detector.py's way (YOLO class, TensorFlow, one frame at a time)", None),
            ("streamyolo detect --engine tensorflow", ("--engine", "tensorflow")),
            ("streamyolo detect --engine torch", ("--engine", "torch")),
            ("streamyolo detect --engine torch --replicas 2", ("--engine", "torch", "--replicas", "2")),
        ]
        for i, (name, extra) in enumerate(variants):
            if extra is None:
                seconds = detector_py_way(folder)
            else:
                seconds = streamyolo_detect(folder, Path(tmp) / f"out{i}", *extra)
            rows.append({"variant": name, "seconds": round(seconds, 1), "frames_per_s": round(total / seconds, 1)})
            print(f"{name:<70} {seconds:7.1f} s {total / seconds:8.1f} frames/s", flush=True)
    import tensorflow as tf
    import torch

    report = {
        "what": f"{a.images} 640x480 JPEGs and {a.videos} MPEG-4 videos of {a.frames} frames ({total} frames), the "
        "demo model at 416 px, CPU only, no annotated copies; wall time including start-up",
        "machine": cpu_machine(tensorflow=tf.__version__, torch=torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    a.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
