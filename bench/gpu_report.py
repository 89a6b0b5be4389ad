"""The README's GPU table and plot, from the JSON ``bench/gpu_bench.py`` wrote (``bench/results/gpu_*.json``).

Run: ``python bench/gpu_report.py`` (needs matplotlib: ``pip install matplotlib``). Prints a Markdown table and
writes ``bench/results/gpu_e2e.png``: throughput and p99 capture-to-result latency against the number of streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"gpu_{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    model = load("model")
    print("| model | precision | batch | img/s | peak GPU memory |\n| --- | --- | ---: | ---: | ---: |")
    for r in model.get("model_only", []):
        memory = r["peak_gpu_memory_mb"]
        print(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['img_per_s']:,.0f} | {memory} MB |")
    e2e = load("e2e").get("e2e", [])
    print("\n| streams | offered frames/s | frames/s | p50 ms | p99 ms | stale | detector cores | GPU memory |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in e2e:
        print(
            f"| {r['streams']} | {r['offered_frames_per_s']} | {r['frames_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
            f"| {r['stale']} | {r['detector_cpu_cores']} | {r['gpu_memory_mb']} MB |"
        )
    seed = load("seed").get("seed_design", [])
    print("\n| seed design: processes | img/s total | GPU memory, all |\n| ---: | ---: | ---: |")
    for r in seed:
        print(f"| {r['processes']} | {r['img_per_s_total']} | {r.get('gpu0_used_mb_all_processes')} MB |")
    if not e2e:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = [r["streams"] for r in e2e]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(streams, [r["frames_per_s"] for r in e2e], "o-", color="tab:blue", label="frames/s published")
    left.plot(streams, [r["offered_frames_per_s"] for r in e2e], ":", color="tab:blue", label="frames/s offered")
    left.set_xlabel("streams at 5 fps (416-px JPEG)")
    left.set_ylabel("frames/s", color="tab:blue")
    right = left.twinx()
    right.plot(streams, [r["p99_ms"] for r in e2e], "s-", color="tab:red", label="p99 latency")
    right.axhline(150, color="tab:red", linestyle="--", linewidth=0.8)
    right.set_ylabel("p99 capture-to-result, ms", color="tab:red")
    right.set_yscale("log")
    gpu = load("e2e").get("machine", {}).get("gpus", ["GPU"])[0].split(",")[0]
    left.set_title(f"YOLOv3-416, torch engine fp16, {e2e[0]['replicas']} replicas, {gpu}")
    left.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "gpu_e2e.png", dpi=110)
    print(f"\nwrote {RESULTS / 'gpu_e2e.png'}")


if __name__ == "__main__":
    main()
