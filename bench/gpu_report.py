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
    decode = load("decode").get("decode", [])
    print("\n| frames | CPU OpenCV, one core | GPU nvJPEG, batch 64 | boxes matched (IoU >= 0.9) | heads max diff |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in decode:
        print(
            f"| {r['frame']} | {r['cpu_opencv_frames_per_s_one_core']:,.0f}/s | "
            f"{r['gpu_nvjpeg_frames_per_s_batch64']:,.0f}/s | {r['matched_iou_0_9_same_class']} of "
            f"{r['detections_cpu_path']} | {r['heads_max_rel_diff_gpu_vs_cpu_path']:.2%} |"
        )
    profile = load("profile")
    if "share_of_gpu_time" in profile:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in profile["share_of_gpu_time"].items())
        print(f"\nYOLOv3-416 fp16 batch 64, eager: {profile['eager_gpu_ms_per_batch']} ms, "
              f"{profile['achieved_tflop_per_s']} TFLOP/s; GPU time: {shares}")  # fmt: skip
    e2e = load("e2e").get("e2e", [])
    print(
        "\n| replicas | streams | offered frames/s | frames/s | p50 ms | p99 ms | missing | detector cores "
        "| GPU memory |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in e2e:
        print(
            f"| {r['replicas']} | {r['streams']} | {r['offered_frames_per_s']:,} | {r['frames_per_s']:,.0f} | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r.get('missing_in_window', '')} | "
            f"{r['detector_cpu_cores']} | {r['gpu_memory_mb']:,} MB |"
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

    fig, left = plt.subplots(figsize=(7, 4))
    right = left.twinx()
    everything = sorted({r["streams"] for r in e2e})
    left.plot(everything, [5 * n for n in everything], ":", color="grey", label="frames/s offered")
    for replicas, style in zip(sorted({r["replicas"] for r in e2e}), ("o-", "s--", "^-."), strict=False):
        rows = [r for r in e2e if r["replicas"] == replicas]
        streams = [r["streams"] for r in rows]
        label = f"{replicas} replica{'s' if replicas > 1 else ''}"
        left.plot(streams, [r["frames_per_s"] for r in rows], style, color="tab:blue", label=f"frames/s, {label}")
        right.plot(streams, [r["p99_ms"] for r in rows], style, color="tab:red", label=f"p99, {label}")
    left.set_xlabel("streams at 5 fps (416-px JPEG)")
    left.set_ylabel("frames/s published", color="tab:blue")
    right.axhline(150, color="tab:red", linestyle="--", linewidth=0.8)
    right.set_ylabel("p99 capture-to-result, ms", color="tab:red")
    right.set_yscale("log")
    gpu = load("e2e").get("machine", {}).get("gpus", ["GPU"])[0].split(",")[0]
    left.set_title(f"YOLOv3-416, torch engine fp16, JPEG decode on the GPU, {gpu}", fontsize=10)
    left.legend(loc="upper left", fontsize=7)
    right.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "gpu_e2e.png", dpi=110)
    print(f"\nwrote {RESULTS / 'gpu_e2e.png'}")


if __name__ == "__main__":
    main()
