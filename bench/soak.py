"""Soak: the whole stack at a steady share of its capacity for an hour, watching every process's memory.

First the stack's capacity on this machine is measured (the bundled demo model on the CPU, four synthetic cameras
pushing more than it can infer: the answered frames per second); then the cameras push ``--load`` (0.8) of it for
``--minutes`` (60). Every 30 s it samples each process's resident memory (ingest, detector, sink, the Redis
server), Redis' own memory, answered and stale frames and the latency of the answered ones. The RSS growth of a
process compares the mean of the last 15 % of the run with the mean of 10-25 % (after the warm-up).
At the end, the ledger: frames pushed = answered + stale + dead.

Run: ``python bench/soak.py [--minutes 60] [--load 0.8]``. Prints a table and writes ``bench/results/soak.json``.
Nothing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_bench import rss_mb  # noqa: E402
from bench.machine import cpu_machine  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect, group_state  # noqa: E402
from common.wire import Result, decode  # noqa: E402

PREFIX = "soak"
KEYS = Keys(PREFIX)
CAMERAS = ["a", "b", "c", "d"]
SAMPLE_S = 30.0


def config(folder: Path, fps: float) -> Path:
    cams = [{"name": n, "source": {"kind": "synthetic", "seed": i, "width": 320, "height": 240, "fps": fps,
                                   "shapes": 4, "distractors": 1}} for i, n in enumerate(CAMERAS)]  # fmt: skip
    pool = {"name": "main", "model": {"folder": str(ROOT / "detector" / "models" / "shapes"), "input_size": 256},
            "engine": {"kind": "torch", "gpu": None}, "max_batch": 8, "max_age_ms": 5000}  # fmt: skip
    stack = {
        "streams": {"prefix": PREFIX, "frames_maxlen": 2000, "results_maxlen": 10_000},
        "ingest": {"cameras": cams, "stats_interval_s": 60},
        "detector": {"pools": [pool]},
        "sinks": [{"kind": "sqlite", "name": "db", "path": str(folder / "results.db")}],
    }
    path = folder / f"stack-{fps:g}.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def start(module: str, cfg: Path, url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, "--config", str(cfg), *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def answered(client: Any) -> int:
    return sum(int(g["entries-read"] or 0) for s in CAMERAS for g in client.xinfo_groups(KEYS.results(s)))


def stale(client: Any) -> int:
    return sum(int(v) for t in KEYS.tallies("stale", KEYS.detector_group("main")) for v in client.hgetall(t).values())


def latencies(client: Any, since: dict[str, str]) -> list[float]:
    """End-to-end latency (ms) of the results published since the last call."""
    out = []
    for s in CAMERAS:
        for entry_id, fields in client.xrange(KEYS.results(s), f"({since.get(s, '0')}", "+"):
            since[s] = entry_id.decode()
            out.append(decode(fields[b"msg"], Result).timings.end_to_end_ms)
    return out


def stored_rows(folder: Path) -> int:
    with sqlite3.connect(folder / "results.db") as db:
        count: int = db.execute("SELECT count(*) FROM results").fetchone()[0]
    return count


def backlog(client: Any, key: str, group: str) -> int:
    info = group_state(client, key, group)
    return 0 if info is None else info.unread + info.pending


def sample(client: Any, pids: dict[str, int], since: dict[str, str], base_answered: int, base_stale: int,
           t_s: float) -> dict[str, Any]:  # fmt: skip
    lat = latencies(client, since)
    return {
        "t_s": round(t_s),
        "rss_mb": {name: rss_mb([pid]) for name, pid in pids.items()},
        "redis_used_mb": round(int(client.info("memory")["used_memory"]) / 1e6, 1),
        "answered": answered(client) - base_answered,
        "stale": stale(client) - base_stale,
        "latency_ms_p50": round(statistics.median(lat)) if lat else None,
        "latency_ms_p99": round(statistics.quantiles(lat, n=100)[98]) if len(lat) > 1 else None,
    }


def calibrate(folder: Path, url: str, seconds: float) -> float:
    """Answered frames per second while the cameras push more than the detector can take."""
    client = connect(url)
    ingest = start("ingest", config(folder, 60), url, folder / "calibrate-ingest.log", "--duration", str(seconds))
    time.sleep(seconds / 3)
    first, t0 = answered(client), time.monotonic()
    ingest.wait()
    rate = (answered(client) - first) / (time.monotonic() - t0)
    while any(backlog(client, KEYS.frames(s), KEYS.detector_group("main")) for s in CAMERAS):
        time.sleep(1)  # the detector works through (or drops as stale) what calibration left
    client.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--load", type=float, default=0.8, help="share of the measured capacity the cameras push")
    ap.add_argument("--calibrate-s", type=float, default=90.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    with EmbeddedServer(folder / "r.sock") as server:
        client = connect(server.url)
        services = {
            "detector": start("detector", config(folder, 1), server.url, folder / "detector.log", "--replica", "m0"),
            "sink": start("sink", config(folder, 1), server.url, folder / "sink.log"),
        }
        while b"reading" not in (folder / "detector.log").read_bytes():
            time.sleep(1)
        capacity = calibrate(folder, server.url, args.calibrate_s)
        fps = args.load * capacity / len(CAMERAS)
        print(f"capacity {capacity:.1f} frames/s; soaking at {args.load:.0%}: {fps:.1f} fps x {len(CAMERAS)} cameras")
        base_answered, base_stale, base_stored = answered(client), stale(client), stored_rows(folder)
        duration = args.minutes * 60
        services["ingest"] = start("ingest", config(folder, fps), server.url, folder / "ingest.log",
                                   "--duration", str(duration))  # fmt: skip
        pids = {name: p.pid for name, p in services.items()} | {"redis": int(client.info("server")["process_id"])}
        samples: list[dict[str, Any]] = []
        since: dict[str, str] = {}
        latencies(client, since)
        t0 = time.monotonic()
        with Progress(TextColumn("soak"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                      TimeRemainingColumn()) as bar:  # fmt: skip
            task = bar.add_task("", total=duration)
            while services["ingest"].poll() is None:
                time.sleep(SAMPLE_S)
                samples.append(sample(client, pids, since, base_answered, base_stale, time.monotonic() - t0))
                bar.console.print(json.dumps(samples[-1]))
                rss = sum(samples[-1]["rss_mb"].values())
                bar.update(task, completed=samples[-1]["t_s"], description=f"RSS {rss:.0f} MB")
        time.sleep(15)  # the last frames are answered
        for proc in services.values():
            proc.terminate()
            proc.wait(60)
        final_answered, final_stale = answered(client) - base_answered, stale(client) - base_stale
        dead = client.xlen(KEYS.dead_letters())
        client.close()
    log = (folder / "ingest.log").read_text()
    pushed = sum(int(n) for n in re.findall(r"published (\d+)", log.rsplit("stopping", 1)[-1]))
    stored = stored_rows(folder)

    def mean_rss(name: str, lo: float, hi: float) -> float:
        picked = [
            s["rss_mb"][name] for s in samples if lo * duration <= s["t_s"] <= hi * duration and s["rss_mb"][name] > 0
        ]  # 0: it had exited
        return statistics.mean(picked) if picked else float("nan")

    growth = {
        name: {"early_mb": round(mean_rss(name, 0.10, 0.25), 1), "late_mb": round(mean_rss(name, 0.85, 1.01), 1)}
        for name in pids
    }
    for g in growth.values():
        g["growth_pct"] = round(100 * (g["late_mb"] / g["early_mb"] - 1), 2)
    lat99 = [s["latency_ms_p99"] for s in samples if s["latency_ms_p99"] is not None]
    report = {
        "machine": cpu_machine(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "model": "bundled demo model (tiny YOLOv3, 256 px), torch on the CPU, 1 replica, max_batch 8",
        "minutes": args.minutes,
        "capacity_fps": round(capacity, 1),
        "load": args.load,
        "fps_per_camera": round(fps, 2),
        "ledger": {
            "pushed": pushed,
            "answered": final_answered,
            "stale": final_stale,
            "dead": dead,
            "stored_by_sink": stored - base_stored,
            "missing": pushed - final_answered - final_stale - dead,
        },
        "rss": growth,
        "latency_ms_p99_worst_interval": max(lat99) if lat99 else None,
        "samples": samples,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{'process':10} {'early MB':>9} {'late MB':>8} {'growth':>7}")
    for name, g in growth.items():
        print(f"{name:10} {g['early_mb']:9.1f} {g['late_mb']:8.1f} {g['growth_pct']:6.2f}%")
    print(
        f"ledger: {report['ledger']}; worst p99 latency of a 30 s interval: {report['latency_ms_p99_worst_interval']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
