"""The bundled demo model on this machine's CPU: model only, through Redis, and the whole stack live.

- model only: the engine's ``predict`` on a ready batch of 8 letterboxed 256-px frames;
- through Redis: 320x240 synthetic JPEG frames queued on an embedded server, then detector replicas read, decode,
  letterbox, infer, decode boxes, publish and ack them all. Reported: frames/s, and the share of a replica's time
  spent outside the model (reading, decoding, publishing, acking: 1 - inference time / elapsed time);
- live: ingest (three synthetic cameras as fast as they render) and the detector at once, on the same cores.

Run: ``python bench/demo_bench.py [--quick]``. Prints a table and writes ``bench/results/demo_cpu.json``.
Nothing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.progress import track

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_bench import backlog_run  # noqa: E402
from bench.machine import cpu_machine  # noqa: E402
from common.config import ModelConfig  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect  # noqa: E402
from common.wire import FIELD, Result, decode  # noqa: E402
from detector.engines import create_engine  # noqa: E402
from detector.engines.tensorflow import TensorFlowEngineConfig  # noqa: E402
from detector.engines.torch import TorchEngineConfig  # noqa: E402
from detector.model import ModelSpec  # noqa: E402
from detector.training.train import render  # noqa: E402
from ingest.sources.synthetic import SyntheticSourceConfig  # noqa: E402

MODEL = ROOT / "detector" / "models" / "shapes"
ENGINES = {"tensorflow": "{kind: tensorflow, gpu: null}", "torch": "{kind: torch, gpu: null}"}
SOURCE = SyntheticSourceConfig(seed=7, width=320, height=240, shapes=4, distractors=1)


def model_only(engine: str, seconds: float) -> float:
    spec = ModelSpec.from_config(ModelConfig(folder=MODEL, input_size=256))
    cfg = TensorFlowEngineConfig(gpu=None) if engine == "tensorflow" else TorchEngineConfig(gpu=None)
    model = create_engine(cfg, spec)
    batch = render(3, 8, 256)[0]
    model.predict(batch)
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < seconds:
        model.predict(batch)
        runs += 1
    return round(runs * len(batch) / (time.perf_counter() - started), 1)


def live(engine: str, frames_per_camera: int, tmp: Path) -> dict[str, Any]:
    """Ingest and one detector replica together: results/s between the first and the last result."""
    config = tmp / f"live_{engine}.yaml"
    cams = "\n".join(
        f"    - {{name: c{i}, source: {{kind: synthetic, seed: {i}, width: 320, height: 240, fps: 1000, "
        f"distractors: 1, realtime: false}}}}"
        for i in range(3)
    )
    config.write_text(
        textwrap.dedent("""\
        streams: {prefix: live, frames_maxlen: 100000}
        ingest:
          cameras:
        """)
        + cams
        + textwrap.dedent(f"""
        detector:
          pools:
            - name: main
              model: {{folder: {MODEL}, input_size: 256}}
              engine: {ENGINES[engine]}
              max_batch: 8
              max_age_ms: null
              ignore_labels: ["NULL"]
        """)
    )
    total = 3 * frames_per_camera
    with EmbeddedServer(tmp / f"live_{engine}.sock") as server:
        env = {**os.environ, "REDIS_URL": server.url}
        detector = subprocess.Popen(
            [sys.executable, "-m", "detector", "--config", str(config), "--max-frames", str(total)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(8)  # model load, so the stream starts into a ready detector
        subprocess.run(
            [sys.executable, "-m", "ingest", "--config", str(config), "--max-frames", str(frames_per_camera)],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        detector.wait(timeout=900)
        client = connect(server.url)
        results = [
            decode(cast(bytes, f[FIELD.encode()]), Result)  # type: ignore[index]
            for i in range(3)
            for _, f in client.xrange(Keys("live").results(f"c{i}"))  # type: ignore[union-attr]
        ]
        client.close()
    stamps = sorted(r.published_ts for r in results)
    latency = [r.timings.end_to_end_ms for r in results]
    return {
        "frames": len(results),
        "frames_per_s": round((len(stamps) - 8) / (stamps[-1] - stamps[0]), 1),
        "p50_latency_ms": round(float(np.percentile(latency, 50)), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames, shorter runs")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/demo_cpu.json")
    args = p.parse_args()
    frames = 400 if args.quick else 1600
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="demobench") as tmp:
        for engine, engine_yaml in track(list(ENGINES.items()), description="engines"):
            row: dict[str, Any] = {"engine": engine, "model_only_img_per_s": model_only(engine, 5.0)}
            model = f"{{folder: {MODEL}, input_size: 256}}"
            for replicas in (1, 2):
                row[f"through_redis_{replicas}_replica"] = backlog_run(
                    f"demo{engine}{replicas}", model, engine_yaml, 8, frames, Path(tmp), SOURCE, replicas
                )
            row["live_stack"] = live(engine, frames // 3, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'engine':<12}{'model img/s':>12}{'replicas':>9}{'frames/s':>10}{'outside model':>15}{'live fps':>10}")
    for r in rows:
        for replicas in (1, 2):
            red = r[f"through_redis_{replicas}_replica"]
            print(
                f"{r['engine']:<12}{r['model_only_img_per_s']:>12}{replicas:>9}{red['frames_per_s']!s:>10}"
                f"{red['share_outside_model']:>15.1%}{r['live_stack']['frames_per_s'] if replicas == 1 else '':>10}"
            )
    import tensorflow as tf
    import torch

    report = {
        "what": "the bundled demo model (tiny YOLOv3, width 0.25, 256 px) on this machine's CPU",
        "method": __doc__.split("\n\n")[1],
        "date": time.strftime("%Y-%m-%d"),
        "machine": cpu_machine(tensorflow=tf.__version__, torch=torch.__version__),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
