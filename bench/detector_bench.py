"""Detector throughput on this machine's CPU: YOLOv3-416 and tiny YOLOv3-416 at batch 1, 4 and 8.

- model only: the TensorFlow engine's ``predict`` on a ready batch (random weights: the cost is the same);
- through Redis: frames (640x480 JPEG, as ingest publishes them) queued on an embedded server, then a real
  ``python -m detector`` process reads, decodes, letterboxes, infers, decodes boxes, publishes and acks them;
  frames/s is counted between its first and last published result, so model loading is left out.

Run: ``python bench/detector_bench.py [--quick]``. Prints a table and writes ``bench/results/detector_cpu.json``.
Nothing here is asserted: the machines are shared and noisy.
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
from typing import Any, Literal, cast

import numpy as np
from rich.progress import track

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from common.config import CameraConfig, ModelConfig  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect  # noqa: E402
from common.wire import FIELD, Result, decode, encode  # noqa: E402
from detector.engines import create_engine  # noqa: E402
from detector.engines.tensorflow import TensorFlowEngineConfig  # noqa: E402
from detector.model import ModelSpec  # noqa: E402
from ingest.prepare import make_frame  # noqa: E402
from ingest.sources.synthetic import SyntheticSource, SyntheticSourceConfig  # noqa: E402

ARCHS: tuple[Literal["yolov3", "tiny"], ...] = ("yolov3", "tiny")
BATCHES = (1, 4, 8)


def model_only(arch: Literal["yolov3", "tiny"], batch: int, seconds: float) -> dict[str, Any]:
    spec = ModelSpec.from_config(ModelConfig(classes=["a", "b", "c"], architecture=arch, input_size=416))
    engine = create_engine(TensorFlowEngineConfig(gpu=None), spec)
    x = np.random.default_rng(0).uniform(0, 1, (batch, 416, 416, 3)).astype(np.float32)
    engine.predict(x)  # trace and warm up
    runs, started = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - started < seconds:
        engine.predict(x)
        runs += 1
    elapsed = time.perf_counter() - started
    return {"img_per_s": round(runs * batch / elapsed, 2), "ms_per_batch": round(elapsed / runs * 1000, 1)}


def through_redis(arch: str, batch: int, frames: int, tmp: Path) -> dict[str, Any]:
    model = f"{{architecture: {arch}, classes: [a, b, c], input_size: 416}}"
    return backlog_run(f"b{arch}{batch}", model, "{kind: tensorflow, gpu: null}", batch, frames, tmp)


def backlog_run(
    prefix: str, model: str, engine: str, batch: int, frames: int, tmp: Path,
    source: SyntheticSourceConfig | None = None, replicas: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Queue ``frames`` synthetic frames over four cameras, then let detector process(es) take them all: frames/s
    between the first and last published result, mean per-frame timings, and the share of the replicas' time
    spent outside the model (1 - inference time / elapsed time, per replica)."""
    keys = Keys(prefix)
    source = source or SyntheticSourceConfig(seed=1)
    camera = CameraConfig(name="cam", source=source, max_side=max(source.width, source.height))
    synthetic = SyntheticSource(source)
    with EmbeddedServer(tmp / f"{prefix}.sock") as server:
        client = connect(server.url)
        for seq in range(frames):
            synthetic.grab()
            frame = make_frame(camera, synthetic.retrieve(), seq // 4, time.time())
            frame = frame.model_copy(update={"stream": f"cam{seq % 4}"})  # four cameras, one batch across them
            client.xadd(keys.frames(frame.stream), {FIELD: encode(frame)})
        config = tmp / f"{prefix}.yaml"
        config.write_text(textwrap.dedent(f"""\
            streams: {{prefix: {prefix}, frames_maxlen: 100000}}
            detector:
              pools:
                - name: bench
                  model: {model}
                  engine: {engine}
                  max_batch: {batch}
                  max_wait_ms: 50
                  max_age_ms: null
            """))  # fmt: skip
        env = {**os.environ, "REDIS_URL": server.url}
        cmd = [sys.executable, "-m", "detector", "--config", str(config), "--until-idle", "3"]
        procs = [
            subprocess.Popen([*cmd, "--replica", f"r{i}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for i in range(replicas)
        ]  # fmt: skip
        for proc in procs:
            proc.wait(timeout=1800)
        results = [
            decode(cast(bytes, f[FIELD.encode()]), Result)  # type: ignore[index]
            for s in range(4)
            for _, f in client.xrange(keys.results(f"cam{s}"))  # type: ignore[union-attr]
        ]
        client.close()
    stamps = sorted(r.published_ts for r in results)
    # The first batch's results carry its start-up; count from the first publish to the last.
    counted = len(stamps) - batch * replicas
    span = stamps[-1] - stamps[0]
    timings = [r.timings for r in results]
    inference_s = sum(t.inference_ms for t in timings) / 1000 / replicas
    return {
        "frames": len(results),
        "frames_per_s": round(counted / span, 2) if span > 0 else None,
        "decode_ms": round(float(np.mean([t.decode_ms for t in timings])), 2),
        "inference_ms_per_frame": round(float(np.mean([t.inference_ms for t in timings])), 2),
        "postprocess_ms": round(float(np.mean([t.postprocess_ms for t in timings])), 2),
        "share_outside_model": round(1 - inference_s / span, 3) if span > 0 else None,
    }


def machine() -> dict[str, Any]:
    import tensorflow as tf

    return cpu_machine(tensorflow=tf.__version__)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames, shorter runs")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/detector_cpu.json")
    args = p.parse_args()
    seconds = 3.0 if args.quick else 10.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="detbench") as tmp:
        for arch, batch in track([(a, b) for a in ARCHS for b in BATCHES], description="model x batch"):
            frames = {"yolov3": 16, "tiny": 160}[arch] * (1 if args.quick else 2)
            row = {"model": f"{arch}-416", "batch": batch}
            row["model_only"] = model_only(arch, batch, seconds)
            row["through_redis"] = through_redis(arch, batch, max(frames, 3 * batch), Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'model':<12}{'batch':>6}{'model img/s':>13}{'redis frames/s':>16}{'infer ms/f':>12}{'decode ms':>11}")
    for r in rows:
        red = r["through_redis"]
        print(
            f"{r['model']:<12}{r['batch']:>6}{r['model_only']['img_per_s']:>13}{red['frames_per_s']!s:>16}"
            f"{red['inference_ms_per_frame']:>12}{red['decode_ms']:>11}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "detector throughput on CPU, TensorFlow engine, random weights, 416 px input",
        "method": __doc__.split("\n\n")[1],
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
