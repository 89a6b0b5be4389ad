"""``streamyolo detect`` on a GPU machine: every image and video of a folder through the stack on one GPU.

Runs the command as a user would (``--gpu_num 1``: the replicas on GPU 0) on synthetic 1280x720 JPEGs and MPEG-4
videos, with the bundled demo model and with YOLOv3-416 (random weights, from a stack config's pool), and reports
wall time (start-up included), frames a second and the device each replica said it ran on.

Run on the GPU machine: ``python bench/gpu_detect.py --out DIR``. Writes ``DIR/gpu_detect.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detect_bench import make_inputs  # noqa: E402
from ingest.sources.synthetic import SyntheticSourceConfig  # noqa: E402

MODEL = ROOT / "detector" / "models" / "shapes"


def detect(folder: Path, out: Path, log: Path, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "common.stack.launcher", "detect", "--input_path", str(folder),
               "--output", str(out), "--no_save_img", "--gpu_num", "1", "--engine", "torch", *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    log.write_text(done.stderr, encoding="utf-8")
    rows = (out / "Detection_Results.csv").read_text().count("\n") - 1 if done.returncode == 0 else 0
    return {
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "csv_rows": rows,
        "engines": sorted(set(re.findall(r"torch engine ready: [^\n]*", done.stderr))),
        "log_tail": done.stderr[-1500:] if done.returncode else "",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        scene = SyntheticSourceConfig(seed=4, width=1280, height=720, shapes=6, distractors=2)
        total = make_inputs(folder, a.images, a.videos, a.frames, scene)
        config = Path(tmp) / "yolov3.yaml"
        config.write_text(
            "detector:\n  pools:\n    - name: main\n      model: {classes: [circle, square, triangle, 'NULL']}\n"
            "      engine: {kind: torch, decode: cpu, compile: false}\n      max_batch: 32\n      replicas: 2\n"
            "      decode_threads: 8\n",
            encoding="utf-8",
        )
        demo = ["--yolo_model", str(MODEL / "trained_weights_final.h5"), "--anchors",
                str(MODEL / "yolo-tiny_anchors.txt"), "--classes", str(MODEL / "data_classes.txt")]  # fmt: skip
        variants = {
            "demo model (tiny YOLOv3, 1/4 width), 416 px, detect's own pool (1 replica)": demo,
            "YOLOv3-416 (random weights), 2 replicas, max_batch 32": ["--config", str(config)],
        }
        for i, (name, extra) in enumerate(variants.items()):
            r = detect(folder, Path(tmp) / f"out{i}", a.out / f"gpu_detect_{i}.log", *extra)
            r.update(variant=name, frames=total, frames_per_s=round(total / r["seconds"], 1))
            results.append(r)
            print(json.dumps(r), flush=True)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False).stdout.strip().splitlines()  # fmt: skip
    report = {
        "what": f"streamyolo detect --gpu_num 1 on {a.images} 1280x720 JPEGs and {a.videos} MPEG-4 videos of "
        f"{a.frames} frames ({total} frames), --no_save_img; wall time including start-up",
        "date": time.strftime("%Y-%m-%d"),
        "gpus": smi,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_detect.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
