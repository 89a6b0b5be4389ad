"""The operability figures that need a GPU: a detector replica on CUDA reports its GPU memory in /metrics and in
``python -m common.stack.status``, and both agree with what nvidia-smi sees the process hold.

Run on a GPU machine: ``python bench/gpu_ops_check.py [--out DIR]``. Writes ``gpu_ops.json`` and the status table
(``gpu_ops_status.txt``) to DIR; prints both. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.embedded import EmbeddedServer  # noqa: E402


def metric(body: str, name: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith(name)]


def smi_used_mb(pid: int) -> int | None:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    for line in out.splitlines():
        p, used = (part.strip() for part in line.split(","))
        if int(p) == pid:
            return int(used)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gpu-ops-"))
    cams = [{"name": n, "source": {"kind": "synthetic", "seed": i, "width": 640, "height": 480, "fps": 25}}
            for i, n in enumerate(("east", "west"))]  # fmt: skip
    pool = {"name": "main", "model": {"architecture": "yolov3", "classes": ["a", "b", "c"], "input_size": 416},
            "engine": {"kind": "torch", "gpu": 0, "compile": False}, "max_batch": 8}  # fmt: skip
    config = folder / "stack.yaml"
    config.write_text(yaml.safe_dump({"streams": {"prefix": "ops"}, "ingest": {"cameras": cams},
                                      "detector": {"pools": [pool]}, "sinks": []}))  # fmt: skip
    with EmbeddedServer(folder / "r.sock") as server:
        env = {**os.environ, "REDIS_URL": server.url, "PYTHONUNBUFFERED": "1"}
        run = [sys.executable, "-m"]
        detector = subprocess.Popen([*run, "detector", "--config", str(config), "--replica", "gpu0-a",
                                     "--metrics-port", "9311", "--duration", "60"], cwd=ROOT, env=env)  # fmt: skip
        ingest = subprocess.Popen([*run, "ingest", "--config", str(config), "--duration", "40"], cwd=ROOT, env=env)
        time.sleep(30)  # model load, warm-up, frames flowing
        body = urllib.request.urlopen("http://127.0.0.1:9311/metrics", timeout=10).read().decode()
        status = subprocess.run([*run, "common.stack.status", "--config", str(config), "--once"], cwd=ROOT,
                                env={**env, "COLUMNS": "160"}, capture_output=True, text=True, check=False)  # fmt: skip
        used = smi_used_mb(detector.pid)
        ingest.wait()
        detector.terminate()
        detector.wait(60)
    report: dict[str, Any] = {
        "gpu_memory_metric": metric(body, "streamyolo_gpu_memory_bytes"),
        "frames_out": metric(body, "streamyolo_frames_out_total"),
        "end_to_end_count": metric(body, "streamyolo_end_to_end_seconds_count"),
        "nvidia_smi_used_mb": used,
        "status_rc": status.returncode,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_ops.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu_ops_status.txt").write_text(status.stdout + status.stderr)
    print(json.dumps(report, indent=1))
    print(status.stdout, status.stderr)


if __name__ == "__main__":
    main()
