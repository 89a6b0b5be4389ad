"""Tracker cost: the results per second one tracker replica sustains on one core, at 10 and at 50 objects per frame.

Each scenario fills an embedded valkey server (unix socket, pinned to the other core) with the results of several
cameras: the shapes of a synthetic scene (``common.scenes.Scene``: objects bouncing around a 1280x720 frame) as
detections with a little position noise, scores 0.55-0.95, in the detectors' wire format. Then a real
``python -m sink`` process runs the tracker sink on them, pinned to one core (``taskset``), with one zone and one
line per camera; the rate is the results tracked (the tracks streams' entries-added) over the time from the first
tracks entry to the last, so start-up is not counted. The tracker's own log line gives the frames and events it made.

Run: ``python bench/tracker_bench.py [--quick] [--out PATH]``. Prints a table and writes
``bench/results/tracker.json``. Nothing here is asserted: the machines are shared and noisy.
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

import numpy as np
import yaml
from scipy import __version__ as scipy_version  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect, entries_added  # noqa: E402
from common.scenes import Scene  # noqa: E402
from common.wire import Detection, Result, Timings, encode  # noqa: E402

PREFIX = "tb"
WIDTH, HEIGHT = 1280, 720
TARGET = 5000.0  # results/s at 10 objects: what one H100's detector pool publishes
AREAS = {
    "zones": [{"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}],
    "lines": [{"name": "middle", "points": [[0.5, 0], [0.5, 1]]}],
}


def results(camera: str, seed: int, objects: int, frames: int) -> list[bytes]:
    scene = Scene(seed, WIDTH, HEIGHT, objects)
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(frames):
        ts = 1_700_000_000.0 + seq / 10
        detections = [
            Detection(
                label=t.label, class_id=("circle", "square", "triangle").index(t.label),
                score=float(rng.uniform(0.55, 0.95)),
                box=tuple(float(v + rng.normal(0, 1.5)) for v in t.box),  # type: ignore[arg-type]
            )
            for t in scene.truth(seq)
        ]  # fmt: skip
        result = Result(
            frame_id=f"{int(ts * 1000)}-0", stream=camera, seq=seq, capture_ts=ts, width=WIDTH, height=HEIGHT,
            pool="main", replica="bench", engine="torch", device="cuda:0", batch_size=64, published_ts=ts + 0.05,
            timings=Timings(queue_ms=1, decode_ms=1, inference_ms=1, postprocess_ms=1, end_to_end_ms=50),
            detections=detections,
        )  # fmt: skip
        out.append(encode(result))
    return out


def scenario(objects: int, cameras: int, frames: int, folder: Path) -> dict[str, Any]:
    keys = Keys(PREFIX)
    sink = {"kind": "tracker", "name": "objects", "cameras": {"*": AREAS}, "batch": 500, "block_ms": 200,
            "reorder_ms": 200}  # fmt: skip
    config = folder / f"stack_{objects}.yaml"
    config.write_text(yaml.safe_dump({"streams": {"prefix": PREFIX}, "sinks": [sink]}))
    names = [f"cam{i}" for i in range(cameras)]
    total = cameras * frames
    with EmbeddedServer(folder / f"v{objects}.sock") as server:
        subprocess.run(["taskset", "-pc", "0", str(server.pid)], check=True, capture_output=True)
        client = connect(server.url)
        for i, name in enumerate(names):
            pipe = client.pipeline(transaction=False)
            for payload in results(name, 100 + i, objects, frames):
                pipe.xadd(keys.results(name), {"msg": payload})
            pipe.execute()
        env = {**os.environ, "REDIS_URL": server.url, "PYTHONUNBUFFERED": "1"}
        log = folder / f"tracker_{objects}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", "1", sys.executable, "-m", "sink", "--config", str(config), "--sink", "objects",
                 "--consumer", "bench", "--until-idle", "3"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            first = last = None
            done = 0
            while proc.poll() is None and done < total:
                done = sum(entries_added(client, keys.tracks("objects", n)) for n in names)
                now = time.monotonic()
                if done and first is None:
                    first, first_done = now, done
                if done:
                    last = now
                time.sleep(0.05)
            proc.wait(60)
        events = sum(entries_added(client, keys.events("objects", n)) for n in names)
        client.close()
    assert first is not None and last is not None and last > first, log.read_text()[-2000:]
    rate = (done - first_done) / (last - first)
    return {"objects_per_frame": objects, "cameras": cameras, "results": total, "tracked": done, "events": events,
            "results_per_s": round(rate, 1), "seconds": round(last - first, 2)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer results (a smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker.json")
    args = p.parse_args()
    frames = 300 if args.quick else 2000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for objects in (10, 50):
            rows.append(scenario(objects, 8, frames if objects == 10 else frames // 2, Path(tmp)))
            print(rows[-1], flush=True)
    print(f"\n{'objects/frame':>14} {'cameras':>8} {'results':>8} {'events':>7} {'results/s':>10}")
    for r in rows:
        print(f"{r['objects_per_frame']:>14} {r['cameras']:>8} {r['tracked']:>8} {r['events']:>7} "
              f"{r['results_per_s']:>10}")  # fmt: skip
    target = next(r["results_per_s"] for r in rows if r["objects_per_frame"] == 10)
    print(f"target at 10 objects: >= {TARGET:.0f} results/s: {'met' if target >= TARGET else 'NOT met'}")
    report = {"scenarios": rows, "target_results_per_s_at_10": TARGET,
              "machine": cpu_machine(numpy=np.__version__, scipy=scipy_version), "one_core": True}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
