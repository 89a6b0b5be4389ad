"""Tracking accuracy end to end: synthetic cameras at 5 fps through the real stack (ingest, two detector replicas
running the bundled demo model, so results arrive out of order, one tracker sink), scored against the cameras'
own ground truth with py-motmetrics: IDF1, MOTA, ID switches, per camera and over all of them.

Run: ``python bench/tracker_accuracy.py [--quick] [--out PATH]``. Prints a table and writes
``bench/results/tracker_accuracy.json``. The target is IDF1 >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from bench.mot import Objects, distances, score, truth_by_seq  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect, entries_between  # noqa: E402
from common.wire import Result, Tracks, decode  # noqa: E402

PREFIX = "acc"
FPS = 5
TARGET_IDF1 = 0.9
MODEL = {"folder": str(ROOT / "detector" / "models" / "shapes"), "input_size": 256}


def config(folder: Path, names: list[str], seeds: list[int], tracker: dict[str, Any]) -> Path:
    cameras = [
        {"name": n, "source": {"kind": "synthetic", "seed": s, "width": 320, "height": 240, "fps": FPS,
                               "shapes": 3 + s % 2, "distractors": 1, "truth_path": str(folder / f"truth_{n}.jsonl")}}
        for n, s in zip(names, seeds, strict=True)
    ]  # fmt: skip
    stack = {
        "streams": {"prefix": PREFIX, "frames_maxlen": 1000},
        "ingest": {"cameras": cameras},
        "detector": {"pools": [{"name": "main", "model": MODEL, "engine": {"kind": "torch", "gpu": None},
                                "max_batch": 8, "max_age_ms": None, "ignore_labels": ["NULL"], "block_ms": 300}]},
        "sinks": [{"kind": "tracker", "name": "objects", "block_ms": 300, **tracker}],
    }  # fmt: skip
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def run(folder: Path, cameras: int, frames: int, tracker: dict[str, Any]) -> dict[str, Any]:
    names = [f"cam{i}" for i in range(cameras)]
    seeds = [70 + i for i in range(cameras)]
    path = config(folder, names, seeds, tracker)
    keys = Keys(PREFIX)
    with EmbeddedServer(folder / "v.sock") as server:
        env = {**os.environ, "REDIS_URL": server.url, "PYTHONUNBUFFERED": "1"}

        def start(name: str, *args: str) -> subprocess.Popen[bytes]:
            out = (folder / f"{name}.log").open("wb")
            return subprocess.Popen([sys.executable, "-m", *args, "--config", str(path)], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

        procs = [start(f"detector-{r}", "detector", "--replica", r, "--until-idle", "8") for r in ("a", "b")]
        procs.append(start("tracker", "sink", "--sink", "objects", "--consumer", "t", "--until-idle", "12"))
        procs.append(start("ingest", "ingest", "--max-frames", str(frames)))
        codes = [p.wait(1200) for p in procs]
        if any(codes):
            raise SystemExit(f"a process failed ({codes}); logs in {folder}")
        client = connect(server.url)
        per_camera = {}
        oracle = {}
        for name in names:
            truth = truth_by_seq(folder / f"truth_{name}.jsonl")
            tracked: dict[int, Objects] = {}
            for _, payload in entries_between(client, keys.tracks("objects", name), 0, 2**62, 10**7):
                t = decode(payload, Tracks)
                tracked[t.seq] = [(o.track_id, o.box) for o in t.objects]
            per_camera[name] = (truth, tracked)
            detected: dict[int, Objects] = {}
            raw: dict[int, list[Any]] = {}
            for _, payload in entries_between(client, keys.results(name), 0, 2**62, 10**7):
                r = decode(payload, Result)
                found = truth.get(r.seq, [])
                detected[r.seq] = [(oracle_id(found, d.box, k), d.box) for k, d in enumerate(r.detections)]
                raw[r.seq] = [(d.label, round(d.score, 3), d.box) for d in r.detections]
            oracle[name] = score(truth, detected)
            (folder / f"tracked_{name}.json").write_text(json.dumps(tracked))  # with --keep: for a closer look
            (folder / f"detected_{name}.json").write_text(json.dumps(raw))
        client.close()
    figures = {n: score(truth, tracked) for n, (truth, tracked) in per_camera.items()}
    # All cameras as one sequence: identities made unique per camera.
    merged_truth: dict[int, Objects] = {}
    merged_tracked: dict[int, Objects] = {}
    for i, (truth, tracked) in enumerate(per_camera.values()):
        for seq, objects in truth.items():
            merged_truth[i * 1_000_000 + seq] = [(i * 1000 + k, b) for k, b in objects]
        for seq, objects in tracked.items():
            merged_tracked[i * 1_000_000 + seq] = [(i * 100_000 + k, b) for k, b in objects]
    return {"cameras": figures, "all": score(merged_truth, merged_tracked), "fps": FPS, "frames_per_camera": frames,
            "tracker_settings": tracker,
            "detections_with_true_ids": oracle}  # fmt: skip


def oracle_id(objects: Objects, box: Sequence[float], k: int) -> int:
    """The identity of the true object a detection overlaps best (IoU >= 0.5): what a perfect tracker would say,
    so that scoring the detections this way shows what the detector alone allows; else an id of its own."""
    if objects:
        cost = distances([b for _, b in objects], [box])[:, 0]
        if not np.all(np.isnan(cost)):
            return objects[int(np.nanargmin(cost))][0]
    return -1 - k


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 cameras, 60 frames each (a smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker_accuracy.json")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the logs, truth and tracks here")
    p.add_argument("--tracker", type=json.loads, default={}, metavar="JSON", help="tracker settings to try")
    args = p.parse_args()
    cameras, frames = (2, 60) if args.quick else (4, 300)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report = run(folder, cameras, frames, args.tracker)
    print(f"\n{'camera':>8} {'IDF1':>6} {'MOTA':>6} {'ID sw.':>6} {'objects':>8} {'misses':>7} {'FP':>4}")
    for name, f in [*report["cameras"].items(), ("all", report["all"])]:
        print(f"{name:>8} {f['idf1']:>6.3f} {f['mota']:>6.3f} {f['id_switches']:>6} {f['objects']:>8} "
              f"{f['misses']:>7} {f['false_positives']:>4}")  # fmt: skip
    for name, f in report["detections_with_true_ids"].items():
        print(f"{name:>8} detections alone (a perfect tracker): IDF1 {f['idf1']:.3f} MOTA {f['mota']:.3f} "
              f"misses {f['misses']} FP {f['false_positives']}")  # fmt: skip
    met = report["all"]["idf1"] >= TARGET_IDF1
    print(f"target IDF1 >= {TARGET_IDF1}: {'met' if met else 'NOT met'}")
    report.update(target_idf1=TARGET_IDF1, machine=cpu_machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
